/* SPDX-License-Identifier: MIT */
/* The vector kernels of the library, as one table per instruction set,
 * chosen once per process from the CPU's features (common/cpu.h). Every
 * kernel that has a vector version is reached through this table: there
 * is no other run-time dispatch. Tables are immutable, so any thread may
 * use them. */
#ifndef ATTN_CORE_SIMD_H
#define ATTN_CORE_SIMD_H

#include <stdbool.h>
#include <stdint.h>

typedef struct attn_stream attn_stream;           /* stream.h */
typedef struct attn_rows_linear attn_rows_linear; /* linear.h */

typedef struct {
  const char *name;
  /* Largest of x[0..n-1]; -inf when n is 0. */
  float (*max)(const float *x, int64_t n);
  /* x[i] = exp(x[i] - shift) for shift >= max(x), shift finite; returns
   * the sum of the new values. -inf inputs give exactly 0. */
  float (*exp_sum)(float *x, int64_t n, float shift);
  /* x[i] *= f. */
  void (*scale)(float *x, int64_t n, float f);
  /* dst[c * ldd + r] = src[r * lds + c] for r < rows, c < cols. */
  void (*transpose)(const float *src, int64_t lds, int64_t rows, int64_t cols,
                    float *dst, int64_t ldd);
  /* Decoding's streamed scores and values (stream.h); the AVX2 versions
   * need head_dim % 8 == 0 (attn_simd_for_head). */
  void (*stream_scores)(const attn_stream *a, const float *q,
                        const float *slots, int64_t jmin, int64_t jmax,
                        float *s, int64_t lds);
  void (*stream_values)(const attn_stream *a, const float *vslots, int64_t jmin,
                        int64_t jmax, const float *p, int64_t ldp, float *acc);
  /* Output columns [n0, n1) of a few-row projection (linear.h); the AVX2
   * version needs M <= 8 and K % 8 == 0 (attn_simd_for_rows). */
  void (*rows_linear)(const attn_rows_linear *p, int64_t n0, int64_t n1);
} attn_simd;

/* The best table this CPU supports. */
const attn_simd *attn_simd_get(void);
/* The best table for kernels over heads of head_dim, and for projections
 * of M rows of width K. */
const attn_simd *attn_simd_for_head(int64_t head_dim);
const attn_simd *attn_simd_for_rows(int64_t M, int64_t K);

/* Each table; attn_simd_avx2() is NULL where it is not built (not x86-64)
 * and must only be used when attn_cpu()->avx2_fma. */
const attn_simd *attn_simd_portable(void);
const attn_simd *attn_simd_avx2(void);

#endif
