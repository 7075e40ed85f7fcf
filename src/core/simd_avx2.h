/* SPDX-License-Identifier: MIT */
/* Inline AVX2/FMA helpers shared by the AVX2 kernels (simd_avx2.c,
 * packed_avx2.c). Only x86-64 GCC/Clang builds include it; every function
 * carries its own target attribute, so callers must be TARGET functions
 * reached only after the CPU check of simd.c.
 *
 * exp: x = n*ln2 + r with n = round(x*log2(e)) and |r| <= ln2/2, exp(r) by
 * a degree-6 polynomial (fitted for minimal relative error on that
 * interval: 3.1e-9 in exact arithmetic, so float rounding dominates), and
 * 2^n put straight into the exponent bits. Arguments below ln(FLT_MIN) =
 * -87.34 give 0: the true value would be a denormal below 1.2e-38, which
 * no softmax weight can tell from 0. -inf gives exactly 0. The measured
 * error is in docs/PERFORMANCE.md and checked by tests/test_softmax.c. */
#ifndef ATTN_CORE_SIMD_AVX2_H
#define ATTN_CORE_SIMD_AVX2_H

#include <immintrin.h>
#include <stdint.h>

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

#endif
