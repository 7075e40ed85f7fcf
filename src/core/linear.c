/* SPDX-License-Identifier: MIT */
/* Linear projections (linear.h). */
#include "core/linear.h"

#include "core/simd.h"

#include <cblas.h>
#include <limits.h>
#include <stddef.h>
#include <string.h>

void attn_linear(int64_t M, int64_t N, int64_t K, const float *x, int64_t ldx,
                 const float *w, const float *b, float *y, int64_t ldy) {
  /* CBLAS sizes are int: split very tall products into row chunks. */
  const int64_t chunk = INT_MAX / 2;
  for (int64_t r0 = 0; r0 < M; r0 += chunk) {
    int64_t m = M - r0 < chunk ? M - r0 : chunk;
    float *yc = y + r0 * ldy;
    if (b)
      for (int64_t r = 0; r < m; r++)
        memcpy(yc + r * ldy, b, (size_t)N * sizeof(float));
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, (int)m, (int)N, (int)K,
                1.0f, x + r0 * ldx, (int)ldx, w, (int)K, b ? 1.0f : 0.0f, yc,
                (int)ldy);
  }
}

void attn_rows_linear_block(const attn_rows_linear *p, int64_t item) {
  int64_t n0 = item * ATTN_ROWS_LINEAR_BLOCK;
  int64_t n1 =
      n0 + ATTN_ROWS_LINEAR_BLOCK < p->N ? n0 + ATTN_ROWS_LINEAR_BLOCK : p->N;
  attn_simd_for_rows(p->M, p->K)->rows_linear(p, n0, n1);
}
