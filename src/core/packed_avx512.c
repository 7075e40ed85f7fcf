/* SPDX-License-Identifier: MIT */
/* AVX-512F kernels of the packed core (packed.h, simd.h): panels of 32
 * queries, two vectors wide, the same scheme as packed_avx2.c on a block
 * of 8 rows by 32 columns (16 accumulators): each step broadcasts 8 floats
 * (side by side in the block the core packed) and loads 2 vectors for 16
 * FMAs. Scores: the rows are 8 keys; values: the rows are 8 head
 * dimensions. exp as in simd_avx2.h, on 16 lanes. */
#include "core/simd.h"

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))

#include <immintrin.h>
#include <math.h>

#define TARGET512 __attribute__((target("avx512f,avx2,fma")))
#define INLINE __attribute__((always_inline)) static inline
#define PANEL 32
#define ROWS 8

/* exp(t) for t <= 0, as exp_nonpos() of simd_avx2.h. */
TARGET512 INLINE __m512 exp16(__m512 t) {
  const __m512 log2e = _mm512_set1_ps(1.44269504088896341f);
  const __m512 magic = _mm512_set1_ps(12582912.0f);
  const __m512 ln2_hi = _mm512_set1_ps(0.693145751953125f);
  const __m512 ln2_lo = _mm512_set1_ps(1.428606765330187e-06f);
  const __m512 lowest = _mm512_set1_ps(-87.33654475f);
  __mmask16 keep = _mm512_cmp_ps_mask(t, lowest, _CMP_GE_OQ);
  t = _mm512_max_ps(t, lowest);
  __m512 big = _mm512_fmadd_ps(t, log2e, magic);
  __m512 n = _mm512_sub_ps(big, magic);
  __m512 r = _mm512_fnmadd_ps(n, ln2_hi, t);
  r = _mm512_fnmadd_ps(n, ln2_lo, r);
  __m512 p = _mm512_set1_ps(0x1.6a2444p-10f);
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(0x1.1239d4p-7f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(0x1.5558f2p-5f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(0x1.555492p-3f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(0x1.fffffcp-2f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f));
  __m512i e = _mm512_slli_epi32(_mm512_castps_si512(big), 23);
  e = _mm512_add_epi32(e, _mm512_set1_epi32(127 << 23));
  return _mm512_maskz_mul_ps(keep, p, _mm512_castsi512_ps(e));
}

#define FMA2(r, a)                                                             \
  do {                                                                         \
    __m512 x_ = (a);                                                           \
    c##r##0 = _mm512_fmadd_ps(x_, b0, c##r##0);                                \
    c##r##1 = _mm512_fmadd_ps(x_, b1, c##r##1);                                \
  } while (0)

#define STORE2(dst, r)                                                         \
  do {                                                                         \
    _mm512_storeu_ps((dst), c##r##0);                                          \
    _mm512_storeu_ps((dst) + 16, c##r##1);                                     \
  } while (0)

#define STORE_ROWS(dst, nr)                                                    \
  do {                                                                         \
    STORE2(dst, 0);                                                            \
    if (nr > 1)                                                                \
      STORE2((dst) + PANEL, 1);                                                \
    if (nr > 2)                                                                \
      STORE2((dst) + 2 * PANEL, 2);                                            \
    if (nr > 3)                                                                \
      STORE2((dst) + 3 * PANEL, 3);                                            \
    if (nr > 4)                                                                \
      STORE2((dst) + 4 * PANEL, 4);                                            \
    if (nr > 5)                                                                \
      STORE2((dst) + 5 * PANEL, 5);                                            \
    if (nr > 6)                                                                \
      STORE2((dst) + 6 * PANEL, 6);                                            \
    if (nr > 7)                                                                \
      STORE2((dst) + 7 * PANEL, 7);                                            \
  } while (0)

#define STEP8(a, o)                                                            \
  do {                                                                         \
    FMA2(0, _mm512_set1_ps(a[0][o]));                                          \
    FMA2(1, _mm512_set1_ps(a[1][o]));                                          \
    FMA2(2, _mm512_set1_ps(a[2][o]));                                          \
    FMA2(3, _mm512_set1_ps(a[3][o]));                                          \
    FMA2(4, _mm512_set1_ps(a[4][o]));                                          \
    FMA2(5, _mm512_set1_ps(a[5][o]));                                          \
    FMA2(6, _mm512_set1_ps(a[6][o]));                                          \
    FMA2(7, _mm512_set1_ps(a[7][o]));                                          \
  } while (0)

#define ZERO16                                                                 \
  __m512 c00 = _mm512_setzero_ps(), c01 = c00, c10 = c00, c11 = c00,           \
         c20 = c00, c21 = c00, c30 = c00, c31 = c00, c40 = c00, c41 = c00,     \
         c50 = c00, c51 = c00, c60 = c00, c61 = c00, c70 = c00, c71 = c00

/* Scores of nr (1..8) keys, packed side by side in kp, against the panel
 * qp[d, 32]. */
TARGET512 INLINE void scores8(const float *kp, int nr, int64_t hd,
                              const float *qp, float *s) {
  const float *a[ROWS];
  for (int r = 0; r < ROWS; r++)
    a[r] = kp + r;
  ZERO16;
  for (int64_t d = 0; d < hd; d++) {
    __m512 b0 = _mm512_loadu_ps(qp + d * PANEL);
    __m512 b1 = _mm512_loadu_ps(qp + d * PANEL + 16);
    int64_t o = d * ROWS;
    STEP8(a, o);
  }
  STORE_ROWS(s, nr);
}

TARGET512 static void scores_avx512(const float *kp, int64_t n, int64_t hd,
                                    const float *qp, float *s) {
  int64_t j = 0;
  for (; j + ROWS <= n; j += ROWS)
    scores8(kp + j * hd, ROWS, hd, qp, s + j * PANEL);
  if (j < n)
    scores8(kp + j * hd, (int)(n - j), hd, qp, s + j * PANEL);
}

/* Accumulator rows d .. d+nr-1 (nr 1..8) over n keys, after scaling them
 * by alpha; vp holds the 8 dimensions of each key side by side. */
TARGET512 INLINE void values8(const float *vp, int nr, int64_t n,
                              const float *p, const float *alpha, float *acc) {
  __m512 f0 = _mm512_loadu_ps(alpha), f1 = _mm512_loadu_ps(alpha + 16);
  ZERO16;
#define LOAD_ROW(r)                                                            \
  if (nr > r) {                                                                \
    c##r##0 = _mm512_mul_ps(_mm512_loadu_ps(acc + r * PANEL), f0);             \
    c##r##1 = _mm512_mul_ps(_mm512_loadu_ps(acc + r * PANEL + 16), f1);        \
  }
  LOAD_ROW(0)
  LOAD_ROW(1)
  LOAD_ROW(2)
  LOAD_ROW(3)
  LOAD_ROW(4)
  LOAD_ROW(5)
  LOAD_ROW(6)
  LOAD_ROW(7)
#undef LOAD_ROW
  const float *a[ROWS];
  for (int r = 0; r < ROWS; r++)
    a[r] = vp + r;
  for (int64_t j = 0; j < n; j++) {
    __m512 b0 = _mm512_loadu_ps(p + j * PANEL);
    __m512 b1 = _mm512_loadu_ps(p + j * PANEL + 16);
    int64_t o = j * ROWS;
    STEP8(a, o);
  }
  STORE_ROWS(acc, nr);
}

TARGET512 static void values_avx512(const float *vp, int64_t ldvp, int64_t n,
                                    int64_t hd, const float *p,
                                    const float *alpha, float *acc) {
  int64_t d = 0;
  for (; d + ROWS <= hd; d += ROWS)
    values8(vp + (d / ROWS) * ldvp, ROWS, n, p, alpha, acc + d * PANEL);
  if (d < hd)
    values8(vp + (d / ROWS) * ldvp, (int)(hd - d), n, p, alpha,
            acc + d * PANEL);
}

/* One column vector (16 queries) of the softmax step; see packed_avx2.c. */
TARGET512 INLINE __m512 column_shift(float *m, float *alpha, __m512 tile_max) {
  __m512 old = _mm512_loadu_ps(m);
  __m512 top = _mm512_max_ps(old, tile_max);
  __mmask16 seen =
      _mm512_cmp_ps_mask(top, _mm512_set1_ps(-INFINITY), _CMP_NEQ_OQ);
  __m512 shift = _mm512_maskz_mov_ps(seen, top);
  _mm512_storeu_ps(m, top);
  _mm512_storeu_ps(alpha, exp16(_mm512_sub_ps(old, shift)));
  return shift;
}

TARGET512 static void softmax_avx512(float *s, int64_t n, float *m, float *l,
                                     float *alpha) {
  __m512 x0 = _mm512_set1_ps(-INFINITY), x1 = x0;
  for (int64_t j = 0; j < n; j++) {
    x0 = _mm512_max_ps(x0, _mm512_loadu_ps(s + j * PANEL));
    x1 = _mm512_max_ps(x1, _mm512_loadu_ps(s + j * PANEL + 16));
  }
  __m512 m0 = column_shift(m, alpha, x0);
  __m512 m1 = column_shift(m + 16, alpha + 16, x1);
  __m512 s0 = _mm512_setzero_ps(), s1 = s0;
  for (int64_t j = 0; j < n; j++) {
    float *r = s + j * PANEL;
    __m512 e0 = exp16(_mm512_sub_ps(_mm512_loadu_ps(r), m0));
    __m512 e1 = exp16(_mm512_sub_ps(_mm512_loadu_ps(r + 16), m1));
    _mm512_storeu_ps(r, e0);
    _mm512_storeu_ps(r + 16, e1);
    s0 = _mm512_add_ps(s0, e0);
    s1 = _mm512_add_ps(s1, e1);
  }
  _mm512_storeu_ps(
      l, _mm512_fmadd_ps(_mm512_loadu_ps(l), _mm512_loadu_ps(alpha), s0));
  _mm512_storeu_ps(l + 16, _mm512_fmadd_ps(_mm512_loadu_ps(l + 16),
                                           _mm512_loadu_ps(alpha + 16), s1));
}

const attn_panel_kernels attn_panels_avx512 = {.panel = PANEL,
                                               .rows = ROWS,
                                               .scores = scores_avx512,
                                               .softmax = softmax_avx512,
                                               .values = values_avx512};

#endif
