/* SPDX-License-Identifier: MIT */
/* Linear projections y = x W^T + b in torch's weight layout: big ones as
 * cblas_sgemm, few-row ones (a decoding step's) by a kernel that reads
 * each weight once. */
#ifndef ATTN_CORE_LINEAR_H
#define ATTN_CORE_LINEAR_H

#include <stdint.h>

/* y[M, N] = x[M, K] * w[N, K]^T + b (b may be NULL), row strides ldx, ldy,
 * as cblas_sgemm calls (split when M exceeds the BLAS's int range). */
void attn_linear(int64_t M, int64_t N, int64_t K, const float *x, int64_t ldx,
                 const float *w, const float *b, float *y, int64_t ldy);

/* A projection of a few rows, in work items of ATTN_ROWS_LINEAR_BLOCK
 * output columns. */
#define ATTN_ROWS_LINEAR_BLOCK 32
struct attn_rows_linear {
  int64_t M, N, K;
  const float *x;
  int64_t ldx;
  const float *w, *b; /* b may be NULL */
  float *y;           /* must not overlap x */
  int64_t ldy;
};
typedef struct attn_rows_linear attn_rows_linear;

/* Work item `item`: output columns [item * BLOCK, (item + 1) * BLOCK). */
void attn_rows_linear_block(const attn_rows_linear *p, int64_t item);

#endif
