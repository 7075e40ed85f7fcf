/* SPDX-License-Identifier: MIT */
/* AVX2/FMA kernels of the packed core (packed.h, simd.h): panels of 24
 * queries, three vectors wide. Both products run on one register block of
 * 4 rows by 24 columns (12 accumulators): each step broadcasts 4 floats and
 * loads 3 vectors for 12 FMAs, so the loads keep up with the FMA units.
 *
 * Scores: the rows are 4 keys, the columns the queries of the packed
 * panel. Values: the rows are 4 head dimensions, the columns the panel's
 * probabilities. The rows' 4 floats of each step lie side by side in the
 * blocks the core packed, so both kernels read memory in order. The
 * accumulator is loaded, rescaled by the softmax step's alpha and stored
 * back by the kernel itself: no zeroing pass, no second pass over it. */
#include "core/simd.h"

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))

#include "core/simd_avx2.h"

#include <math.h>

#define PANEL 24
#define ROWS 4
#define INLINE __attribute__((always_inline)) static inline

#define FMA3(r, a)                                                             \
  do {                                                                         \
    __m256 x_ = (a);                                                           \
    c##r##0 = _mm256_fmadd_ps(x_, b0, c##r##0);                                \
    c##r##1 = _mm256_fmadd_ps(x_, b1, c##r##1);                                \
    c##r##2 = _mm256_fmadd_ps(x_, b2, c##r##2);                                \
  } while (0)

#define STORE3(dst, r)                                                         \
  do {                                                                         \
    _mm256_storeu_ps((dst), c##r##0);                                          \
    _mm256_storeu_ps((dst) + 8, c##r##1);                                      \
    _mm256_storeu_ps((dst) + 16, c##r##2);                                     \
  } while (0)

/* Scores of nr (1..4) keys, packed side by side in kp, against the panel
 * qp[d, 24]. */
TARGET INLINE void scores4(const float *kp, int nr, int64_t hd, const float *qp,
                           float *s) {
  __m256 c00 = _mm256_setzero_ps(), c01 = c00, c02 = c00, c10 = c00, c11 = c00,
         c12 = c00, c20 = c00, c21 = c00, c22 = c00, c30 = c00, c31 = c00,
         c32 = c00;
  for (int64_t d = 0; d < hd; d++) {
    const float *b = qp + d * PANEL, *a = kp + d * ROWS;
    __m256 b0 = _mm256_loadu_ps(b), b1 = _mm256_loadu_ps(b + 8),
           b2 = _mm256_loadu_ps(b + 16);
    FMA3(0, _mm256_broadcast_ss(a));
    FMA3(1, _mm256_broadcast_ss(a + 1));
    FMA3(2, _mm256_broadcast_ss(a + 2));
    FMA3(3, _mm256_broadcast_ss(a + 3));
  }
  STORE3(s, 0);
  if (nr > 1)
    STORE3(s + PANEL, 1);
  if (nr > 2)
    STORE3(s + 2 * PANEL, 2);
  if (nr > 3)
    STORE3(s + 3 * PANEL, 3);
}

TARGET static void scores_avx2(const float *kp, int64_t n, int64_t hd,
                               const float *qp, float *s) {
  int64_t j = 0;
  for (; j + ROWS <= n; j += ROWS)
    scores4(kp + j * hd, ROWS, hd, qp, s + j * PANEL);
  if (j < n)
    scores4(kp + j * hd, (int)(n - j), hd, qp, s + j * PANEL);
}

TARGET INLINE __m256 load_scaled(const float *x, __m256 f) {
  return _mm256_mul_ps(_mm256_loadu_ps(x), f);
}

/* Accumulator rows d .. d+nr-1 (nr 1..4) over n keys, after scaling them
 * by alpha; vp holds the 4 dimensions of each key side by side. */
TARGET INLINE void values4(const float *vp, int nr, int64_t n, const float *p,
                           const float *alpha, float *acc) {
  __m256 f0 = _mm256_loadu_ps(alpha), f1 = _mm256_loadu_ps(alpha + 8),
         f2 = _mm256_loadu_ps(alpha + 16), z = _mm256_setzero_ps();
  __m256 c00 = load_scaled(acc, f0), c01 = load_scaled(acc + 8, f1),
         c02 = load_scaled(acc + 16, f2);
  __m256 c10 = z, c11 = z, c12 = z, c20 = z, c21 = z, c22 = z, c30 = z, c31 = z,
         c32 = z;
  if (nr > 1) {
    c10 = load_scaled(acc + PANEL, f0);
    c11 = load_scaled(acc + PANEL + 8, f1);
    c12 = load_scaled(acc + PANEL + 16, f2);
  }
  if (nr > 2) {
    c20 = load_scaled(acc + 2 * PANEL, f0);
    c21 = load_scaled(acc + 2 * PANEL + 8, f1);
    c22 = load_scaled(acc + 2 * PANEL + 16, f2);
  }
  if (nr > 3) {
    c30 = load_scaled(acc + 3 * PANEL, f0);
    c31 = load_scaled(acc + 3 * PANEL + 8, f1);
    c32 = load_scaled(acc + 3 * PANEL + 16, f2);
  }
  for (int64_t j = 0; j < n; j++) {
    const float *b = p + j * PANEL, *a = vp + j * ROWS;
    __m256 b0 = _mm256_loadu_ps(b), b1 = _mm256_loadu_ps(b + 8),
           b2 = _mm256_loadu_ps(b + 16);
    FMA3(0, _mm256_broadcast_ss(a));
    FMA3(1, _mm256_broadcast_ss(a + 1));
    FMA3(2, _mm256_broadcast_ss(a + 2));
    FMA3(3, _mm256_broadcast_ss(a + 3));
  }
  STORE3(acc, 0);
  if (nr > 1)
    STORE3(acc + PANEL, 1);
  if (nr > 2)
    STORE3(acc + 2 * PANEL, 2);
  if (nr > 3)
    STORE3(acc + 3 * PANEL, 3);
}

TARGET static void values_avx2(const float *vp, int64_t ldvp, int64_t n,
                               int64_t hd, const float *p, const float *alpha,
                               float *acc) {
  int64_t d = 0;
  for (; d + ROWS <= hd; d += ROWS)
    values4(vp + (d / ROWS) * ldvp, ROWS, n, p, alpha, acc + d * PANEL);
  if (d < hd)
    values4(vp + (d / ROWS) * ldvp, (int)(hd - d), n, p, alpha,
            acc + d * PANEL);
}

/* One column vector (8 queries) of the softmax step. */
TARGET INLINE __m256 column_shift(float *m, float *alpha, __m256 tile_max) {
  const __m256 ninf = _mm256_set1_ps(-INFINITY);
  __m256 old = _mm256_loadu_ps(m);
  __m256 top = _mm256_max_ps(old, tile_max);
  /* A column with no finite score yet subtracts 0: its scores are all
   * -inf and give exact zeros, and alpha = exp(-inf) = 0 leaves its zero
   * accumulator at zero. */
  __m256 none = _mm256_cmp_ps(top, ninf, _CMP_EQ_OQ);
  __m256 shift = _mm256_andnot_ps(none, top);
  _mm256_storeu_ps(m, top);
  _mm256_storeu_ps(alpha, exp_nonpos(_mm256_sub_ps(old, shift)));
  return shift;
}

TARGET static void softmax_avx2(float *s, int64_t n, float *m, float *l,
                                float *alpha) {
  __m256 x0 = _mm256_set1_ps(-INFINITY), x1 = x0, x2 = x0;
  for (int64_t j = 0; j < n; j++) {
    const float *r = s + j * PANEL;
    x0 = _mm256_max_ps(x0, _mm256_loadu_ps(r));
    x1 = _mm256_max_ps(x1, _mm256_loadu_ps(r + 8));
    x2 = _mm256_max_ps(x2, _mm256_loadu_ps(r + 16));
  }
  __m256 m0 = column_shift(m, alpha, x0);
  __m256 m1 = column_shift(m + 8, alpha + 8, x1);
  __m256 m2 = column_shift(m + 16, alpha + 16, x2);
  __m256 s0 = _mm256_setzero_ps(), s1 = s0, s2 = s0;
  for (int64_t j = 0; j < n; j++) {
    float *r = s + j * PANEL;
    __m256 e0 = exp_nonpos(_mm256_sub_ps(_mm256_loadu_ps(r), m0));
    __m256 e1 = exp_nonpos(_mm256_sub_ps(_mm256_loadu_ps(r + 8), m1));
    __m256 e2 = exp_nonpos(_mm256_sub_ps(_mm256_loadu_ps(r + 16), m2));
    _mm256_storeu_ps(r, e0);
    _mm256_storeu_ps(r + 8, e1);
    _mm256_storeu_ps(r + 16, e2);
    s0 = _mm256_add_ps(s0, e0);
    s1 = _mm256_add_ps(s1, e1);
    s2 = _mm256_add_ps(s2, e2);
  }
  _mm256_storeu_ps(
      l, _mm256_fmadd_ps(_mm256_loadu_ps(l), _mm256_loadu_ps(alpha), s0));
  _mm256_storeu_ps(l + 8, _mm256_fmadd_ps(_mm256_loadu_ps(l + 8),
                                          _mm256_loadu_ps(alpha + 8), s1));
  _mm256_storeu_ps(l + 16, _mm256_fmadd_ps(_mm256_loadu_ps(l + 16),
                                           _mm256_loadu_ps(alpha + 16), s2));
}

const attn_panel_kernels attn_panels_avx2 = {.panel = PANEL,
                                             .rows = ROWS,
                                             .scores = scores_avx2,
                                             .softmax = softmax_avx2,
                                             .values = values_avx2};

#endif
