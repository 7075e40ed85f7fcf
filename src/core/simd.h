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

/* The kernels of the packed attention core (packed.h): register-blocked
 * products over panels of `panel` queries, each `panel` floats wide. Any
 * head_dim; every row stride is in floats. */
typedef struct {
  int64_t panel;
  /* Rows per register block, R: keys in scores, head dimensions in
   * values. Both products read their first operand packed in groups of R
   * rows side by side (the last group padded with zeros). */
  int64_t rows;
  /* s[j * panel + c] = sum over d < hd of K[j, d] * qp[d * panel + c], for
   * keys j < n and every column c: the scores of n keys against a query
   * panel qp packed (and scaled) by the core. K comes packed: K[j, d] at
   * kp[(j / R) * hd * R + d * R + j % R]. */
  void (*scores)(const float *kp, int64_t n, int64_t hd, const float *qp,
                 float *s);
  /* One online-softmax step over the scores s[n, panel] of the panel's
   * columns: per column c, the running max m[c] is raised to the largest
   * score, alpha[c] = exp(old m[c] - new m[c]) (0 while no key was seen),
   * l[c] = l[c] * alpha[c] + the sum of exp(s - m[c]) over the column, and
   * s is replaced by those exponentials (-inf scores give exactly 0). A
   * column that has seen no finite score keeps m = -inf and l = 0. */
  void (*softmax)(float *s, int64_t n, float *m, float *l, float *alpha);
  /* acc[d * panel + c] = alpha[c] * acc[d * panel + c] + sum over j < n of
   * V[j, d] * p[j * panel + c], for d < hd: the accumulator of a query
   * panel, stored transposed ([hd, panel]). V comes packed: V[j, d] at
   * vp[(d / R) * ldvp + j * R + d % R]. */
  void (*values)(const float *vp, int64_t ldvp, int64_t n, int64_t hd,
                 const float *p, const float *alpha, float *acc);
} attn_panel_kernels;

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

  /* The packed core's products (packed.h); NULL in a table without them,
   * where the core runs on cblas_sgemm (tiled.c). */
  const attn_panel_kernels *panels;
} attn_simd;

/* The best table this CPU supports. The environment variable ATTN_SIMD,
 * read once, caps it: "portable" gives the portable table (the cblas
 * core), "avx2" at most the AVX2 one; tests run every path on one CPU
 * this way. */
const attn_simd *attn_simd_get(void);
/* The best table for kernels over heads of head_dim, and for projections
 * of M rows of width K. */
const attn_simd *attn_simd_for_head(int64_t head_dim);
const attn_simd *attn_simd_for_rows(int64_t M, int64_t K);

/* Each table; attn_simd_avx2() and attn_simd_avx512() are NULL where they
 * are not built (not x86-64) and must only be used when attn_cpu() has
 * avx2_fma, and avx512f too. The AVX-512 table differs from the AVX2 one
 * only in its packed-core kernels. */
const attn_simd *attn_simd_portable(void);
const attn_simd *attn_simd_avx2(void);
const attn_simd *attn_simd_avx512(void);
/* The packed-core kernels of those tables (packed_avx2.c,
 * packed_avx512.c); defined only where the tables are. */
extern const attn_panel_kernels attn_panels_avx2;
extern const attn_panel_kernels attn_panels_avx512;

#endif
