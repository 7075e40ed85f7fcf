/* AVX2/FMA versions of the softmax's vector primitives. The functions carry
 * their own target attribute, so this file builds with the library's
 * ordinary flags; attn_vec() only hands them out after checking the CPU
 * (cpu.c).
 *
 * exp: x = n*ln2 + r with n = round(x*log2(e)) and |r| <= ln2/2, exp(r) by
 * a degree-6 polynomial (fitted for minimal relative error on that
 * interval: 3.1e-9 in exact arithmetic, so float rounding dominates), and
 * 2^n put straight into the exponent bits. Arguments below ln(FLT_MIN) =
 * -87.34 give 0: the true value would be a denormal below 1.2e-38, which no
 * softmax weight can tell from 0. -inf gives exactly 0. The measured error
 * is in docs/PERFORMANCE.md and checked by tests/test_softmax.c. */
#include "kernels.h"

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))

#include <immintrin.h>
#include <math.h>

#define TARGET __attribute__((target("avx2,fma")))

/* Lanes i < n of a partial vector (0 < n < 8). */
TARGET static inline __m256i tail_mask(int64_t n) {
  const __m256i lane = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
  return _mm256_cmpgt_epi32(_mm256_set1_epi32((int)n), lane);
}

/* exp(t) for t <= 0 (see the file comment for the method and range). */
TARGET static inline __m256 exp_nonpos(__m256 t) {
  const __m256 log2e = _mm256_set1_ps(1.44269504088896341f);
  /* 1.5 * 2^23: adding it rounds to an integer kept in the low mantissa
   * bits. */
  const __m256 magic = _mm256_set1_ps(12582912.0f);
  const __m256 ln2_hi = _mm256_set1_ps(0.693145751953125f);
  const __m256 ln2_lo = _mm256_set1_ps(1.428606765330187e-06f);
  const __m256 lowest = _mm256_set1_ps(-87.33654475f);
  __m256 keep = _mm256_cmp_ps(t, lowest, _CMP_GE_OQ); /* false for -inf */
  t = _mm256_max_ps(t, lowest);
  __m256 big = _mm256_fmadd_ps(t, log2e, magic);
  __m256 n = _mm256_sub_ps(big, magic);
  __m256 r = _mm256_fnmadd_ps(n, ln2_hi, t);
  r = _mm256_fnmadd_ps(n, ln2_lo, r);
  __m256 p = _mm256_set1_ps(0x1.6a2444p-10f);
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(0x1.1239d4p-7f));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(0x1.5558f2p-5f));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(0x1.555492p-3f));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(0x1.fffffcp-2f));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.0f));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.0f));
  /* The low bits of big hold n (-126 <= n <= 0): 2^n = (n + 127) << 23. */
  __m256i e = _mm256_slli_epi32(_mm256_castps_si256(big), 23);
  e = _mm256_add_epi32(e, _mm256_set1_epi32(127 << 23));
  p = _mm256_mul_ps(p, _mm256_castsi256_ps(e));
  return _mm256_and_ps(p, keep);
}

TARGET static inline float hsum(__m256 v) {
  __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  s = _mm_add_ps(s, _mm_movehl_ps(s, s));
  s = _mm_add_ss(s, _mm_movehdup_ps(s));
  return _mm_cvtss_f32(s);
}

TARGET static inline float hmax(__m256 v) {
  __m128 s = _mm_max_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  s = _mm_max_ps(s, _mm_movehl_ps(s, s));
  s = _mm_max_ss(s, _mm_movehdup_ps(s));
  return _mm_cvtss_f32(s);
}

TARGET static float max_avx2(const float *x, int64_t n) {
  __m256 m0 = _mm256_set1_ps(-INFINITY), m1 = m0, m2 = m0, m3 = m0;
  int64_t i = 0;
  for (; i + 32 <= n; i += 32) {
    m0 = _mm256_max_ps(m0, _mm256_loadu_ps(x + i));
    m1 = _mm256_max_ps(m1, _mm256_loadu_ps(x + i + 8));
    m2 = _mm256_max_ps(m2, _mm256_loadu_ps(x + i + 16));
    m3 = _mm256_max_ps(m3, _mm256_loadu_ps(x + i + 24));
  }
  for (; i + 8 <= n; i += 8)
    m0 = _mm256_max_ps(m0, _mm256_loadu_ps(x + i));
  if (i < n) {
    __m256i k = tail_mask(n - i);
    __m256 v = _mm256_maskload_ps(x + i, k);
    v = _mm256_blendv_ps(_mm256_set1_ps(-INFINITY), v, _mm256_castsi256_ps(k));
    m1 = _mm256_max_ps(m1, v);
  }
  return hmax(_mm256_max_ps(_mm256_max_ps(m0, m1), _mm256_max_ps(m2, m3)));
}

TARGET static float exp_sum_avx2(float *x, int64_t n, float shift) {
  /* One vector per iteration: the exp's constants fill the registers, and
   * out-of-order execution overlaps the iterations anyway. */
  const __m256 s = _mm256_set1_ps(shift);
  __m256 acc = _mm256_setzero_ps();
  int64_t i = 0;
  for (; i + 8 <= n; i += 8) {
    __m256 e = exp_nonpos(_mm256_sub_ps(_mm256_loadu_ps(x + i), s));
    _mm256_storeu_ps(x + i, e);
    acc = _mm256_add_ps(acc, e);
  }
  if (i < n) {
    __m256i k = tail_mask(n - i);
    __m256 v = _mm256_maskload_ps(x + i, k);
    v = _mm256_blendv_ps(_mm256_set1_ps(-INFINITY), v, _mm256_castsi256_ps(k));
    __m256 e = exp_nonpos(_mm256_sub_ps(v, s));
    _mm256_maskstore_ps(x + i, k, e);
    acc = _mm256_add_ps(acc, e);
  }
  return hsum(acc);
}

TARGET static void scale_avx2(float *x, int64_t n, float f) {
  const __m256 v = _mm256_set1_ps(f);
  int64_t i = 0;
  for (; i + 8 <= n; i += 8)
    _mm256_storeu_ps(x + i, _mm256_mul_ps(_mm256_loadu_ps(x + i), v));
  for (; i < n; i++)
    x[i] *= f;
}

/* An 8 x 8 block: rows of src become columns of dst. */
TARGET static inline void transpose8(const float *src, int64_t lds, float *dst,
                                     int64_t ldd) {
  __m256 r0 = _mm256_loadu_ps(src), r1 = _mm256_loadu_ps(src + lds);
  __m256 r2 = _mm256_loadu_ps(src + 2 * lds);
  __m256 r3 = _mm256_loadu_ps(src + 3 * lds);
  __m256 r4 = _mm256_loadu_ps(src + 4 * lds);
  __m256 r5 = _mm256_loadu_ps(src + 5 * lds);
  __m256 r6 = _mm256_loadu_ps(src + 6 * lds);
  __m256 r7 = _mm256_loadu_ps(src + 7 * lds);
  __m256 t0 = _mm256_unpacklo_ps(r0, r1), t1 = _mm256_unpackhi_ps(r0, r1);
  __m256 t2 = _mm256_unpacklo_ps(r2, r3), t3 = _mm256_unpackhi_ps(r2, r3);
  __m256 t4 = _mm256_unpacklo_ps(r4, r5), t5 = _mm256_unpackhi_ps(r4, r5);
  __m256 t6 = _mm256_unpacklo_ps(r6, r7), t7 = _mm256_unpackhi_ps(r6, r7);
  __m256 u0 = _mm256_shuffle_ps(t0, t2, 0x44),
         u1 = _mm256_shuffle_ps(t0, t2, 0xEE);
  __m256 u2 = _mm256_shuffle_ps(t1, t3, 0x44),
         u3 = _mm256_shuffle_ps(t1, t3, 0xEE);
  __m256 u4 = _mm256_shuffle_ps(t4, t6, 0x44),
         u5 = _mm256_shuffle_ps(t4, t6, 0xEE);
  __m256 u6 = _mm256_shuffle_ps(t5, t7, 0x44),
         u7 = _mm256_shuffle_ps(t5, t7, 0xEE);
  _mm256_storeu_ps(dst, _mm256_permute2f128_ps(u0, u4, 0x20));
  _mm256_storeu_ps(dst + ldd, _mm256_permute2f128_ps(u1, u5, 0x20));
  _mm256_storeu_ps(dst + 2 * ldd, _mm256_permute2f128_ps(u2, u6, 0x20));
  _mm256_storeu_ps(dst + 3 * ldd, _mm256_permute2f128_ps(u3, u7, 0x20));
  _mm256_storeu_ps(dst + 4 * ldd, _mm256_permute2f128_ps(u0, u4, 0x31));
  _mm256_storeu_ps(dst + 5 * ldd, _mm256_permute2f128_ps(u1, u5, 0x31));
  _mm256_storeu_ps(dst + 6 * ldd, _mm256_permute2f128_ps(u2, u6, 0x31));
  _mm256_storeu_ps(dst + 7 * ldd, _mm256_permute2f128_ps(u3, u7, 0x31));
}

TARGET static void transpose_avx2(const float *src, int64_t lds, int64_t rows,
                                  int64_t cols, float *dst, int64_t ldd) {
  int64_t r8 = rows / 8 * 8, c8 = cols / 8 * 8;
  for (int64_t r = 0; r < r8; r += 8)
    for (int64_t c = 0; c < c8; c += 8)
      transpose8(src + r * lds + c, lds, dst + c * ldd + r, ldd);
  /* Edges. */
  for (int64_t r = 0; r < rows; r++)
    for (int64_t c = r < r8 ? c8 : 0; c < cols; c++)
      dst[c * ldd + r] = src[r * lds + c];
}

static const attn_vec_ops avx2_ops = {max_avx2, exp_sum_avx2, "avx2-fma",
                                      scale_avx2, transpose_avx2};

const attn_vec_ops *attn_vec_avx2(void) { return &avx2_ops; }

#else

const attn_vec_ops *attn_vec_avx2(void) { return NULL; }

#endif
