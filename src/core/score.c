/* SPDX-License-Identifier: MIT */
/* Soft-capping and ALiBi on score tiles (score.h). Both loops are written
 * so that the compiler vectorizes them: soft-capping evaluates tanh from
 * its own exponential (libm's tanhf, one element at a time, made a
 * soft-capped forward pass three times slower than a plain one), and the
 * ALiBi bias of consecutive keys is a float ramp. */
#include "core/score.h"

#include "common/cpu.h"

#include <math.h>
#include <string.h>

#if defined(__x86_64__) || defined(__SSE__)
#include <xmmintrin.h>
#define HAVE_MXCSR 1
#endif

attn_fp_mode attn_score_fp_enter(const attn_score_fx *fx) {
  attn_fp_mode m = {0, false};
#ifdef HAVE_MXCSR
  if (fx && fx->slopes) {
    m.saved = _mm_getcsr();
    m.set = true;
    _mm_setcsr(m.saved | 0x8040u); /* flush to zero, denormals are zero */
  }
#else
  (void)fx;
#endif
  return m;
}

void attn_score_fp_leave(attn_fp_mode m) {
#ifdef HAVE_MXCSR
  if (m.set)
    _mm_setcsr(m.saved);
#else
  (void)m;
#endif
}

/* tanh(y) for every float y, within 2e-7 of the exact value.
 * |y| < 1/8: the Taylor series to y^9 (error below 3e-10); else
 * 1 - 2 / (e^(2|y|) + 1) with e^x by range reduction to x = n ln2 + r,
 * |r| <= ln2/2, and a degree-6 polynomial for e^r. |y| >= 9 gives +-1
 * (tanh(9) rounds to 1 in float). */
static inline float tanh_approx(float y) {
  float a = fabsf(y);
  a = a < 9.0f ? a : 9.0f;
  float a2 = a * a;
  float small =
      a * (1.0f +
           a2 * (-1.0f / 3 +
                 a2 * (2.0f / 15 + a2 * (-17.0f / 315 + a2 * (62.0f / 2835)))));
  float x = 2.0f * a;
  int32_t ni = (int32_t)(x * 1.44269504f + 0.5f); /* x >= 0: rounds */
  float n = (float)ni;
  float r = x - n * 0.693145752f - n * 1.42860677e-6f;
  float p =
      1.0f +
      r * (1.0f + r * (0.5f + r * (1.0f / 6 +
                                   r * (1.0f / 24 +
                                        r * (1.0f / 120 + r * (1.0f / 720))))));
  int32_t bits = (ni + 127) << 23;
  float scale;
  memcpy(&scale, &bits, sizeof scale);
  float big = 1.0f - 2.0f / (p * scale + 1.0f);
  float t = a < 0.125f ? small : big;
  return y < 0.0f ? -t : t;
}

static void softcap_portable(float *s, int64_t cols, float cap) {
  float inv = 1.0f / cap;
  for (int64_t j = 0; j < cols; j++)
    s[j] = cap * tanh_approx(s[j] * inv);
}

#if defined(__x86_64__) && defined(__GNUC__)
#include <immintrin.h>

/* tanh_approx() eight lanes at a time, the same operations in the same
 * order without fused multiply-adds, so the results are those of the
 * portable loop bit for bit (GCC 12 does not vectorize that loop for
 * AVX2 by itself). */
__attribute__((target("avx2"))) static void softcap_avx2(float *s, int64_t cols,
                                                         float cap) {
  const __m256 inv = _mm256_set1_ps(1.0f / cap), vcap = _mm256_set1_ps(cap);
  const __m256 sign = _mm256_set1_ps(-0.0f), one = _mm256_set1_ps(1.0f);
  int64_t j = 0;
  for (; j + 8 <= cols; j += 8) {
    __m256 y = _mm256_mul_ps(_mm256_loadu_ps(s + j), inv);
    __m256 a = _mm256_min_ps(_mm256_andnot_ps(sign, y), _mm256_set1_ps(9.0f));
    __m256 a2 = _mm256_mul_ps(a, a);
    __m256 q = _mm256_set1_ps(62.0f / 2835);
    q = _mm256_add_ps(_mm256_set1_ps(-17.0f / 315), _mm256_mul_ps(a2, q));
    q = _mm256_add_ps(_mm256_set1_ps(2.0f / 15), _mm256_mul_ps(a2, q));
    q = _mm256_add_ps(_mm256_set1_ps(-1.0f / 3), _mm256_mul_ps(a2, q));
    q = _mm256_add_ps(one, _mm256_mul_ps(a2, q));
    __m256 small = _mm256_mul_ps(a, q);
    __m256 x = _mm256_add_ps(a, a);
    __m256i ni = _mm256_cvttps_epi32(_mm256_add_ps(
        _mm256_mul_ps(x, _mm256_set1_ps(1.44269504f)), _mm256_set1_ps(0.5f)));
    __m256 n = _mm256_cvtepi32_ps(ni);
    __m256 r = _mm256_sub_ps(
        _mm256_sub_ps(x, _mm256_mul_ps(n, _mm256_set1_ps(0.693145752f))),
        _mm256_mul_ps(n, _mm256_set1_ps(1.42860677e-6f)));
    __m256 p = _mm256_set1_ps(1.0f / 720);
    p = _mm256_add_ps(_mm256_set1_ps(1.0f / 120), _mm256_mul_ps(r, p));
    p = _mm256_add_ps(_mm256_set1_ps(1.0f / 24), _mm256_mul_ps(r, p));
    p = _mm256_add_ps(_mm256_set1_ps(1.0f / 6), _mm256_mul_ps(r, p));
    p = _mm256_add_ps(_mm256_set1_ps(0.5f), _mm256_mul_ps(r, p));
    p = _mm256_add_ps(one, _mm256_mul_ps(r, p));
    p = _mm256_add_ps(one, _mm256_mul_ps(r, p));
    __m256 scale = _mm256_castsi256_ps(
        _mm256_slli_epi32(_mm256_add_epi32(ni, _mm256_set1_epi32(127)), 23));
    __m256 big = _mm256_sub_ps(
        one, _mm256_div_ps(_mm256_set1_ps(2.0f),
                           _mm256_add_ps(_mm256_mul_ps(p, scale), one)));
    __m256 t = _mm256_blendv_ps(
        big, small, _mm256_cmp_ps(a, _mm256_set1_ps(0.125f), _CMP_LT_OQ));
    t = _mm256_or_ps(t, _mm256_and_ps(sign, y)); /* t >= 0: y's sign */
    _mm256_storeu_ps(s + j, _mm256_mul_ps(vcap, t));
  }
  softcap_portable(s + j, cols - j, cap);
}
#endif

static void softcap_row(float *s, int64_t cols, float cap) {
#if defined(__x86_64__) && defined(__GNUC__)
  if (attn_cpu()->avx2_fma) {
    softcap_avx2(s, cols, cap);
    return;
  }
#endif
  softcap_portable(s, cols, cap);
}

/* ALiBi for keys at consecutive positions: key j at distance d0 + j from
 * the query. */
static void alibi_ramp(float *s, int64_t cols, float slope, int64_t d0,
                       bool symmetric) {
  float base = (float)d0;
  int32_t n = (int32_t)cols;
  if (symmetric)
    for (int32_t j = 0; j < n; j++)
      s[j] -= slope * fabsf(base + (float)j);
  else
    for (int32_t j = 0; j < n; j++)
      s[j] += slope * (base + (float)j);
}

void attn_score_rows(const attn_score_fx *fx, int64_t h, const int64_t *qpos,
                     int64_t qp0, const int64_t *kpos, int64_t j0, float *s,
                     int64_t lds, int64_t rows, int64_t cols) {
  float slope = fx->slopes ? fx->slopes[h] : 0.0f;
  for (int64_t r = 0; r < rows; r++) {
    float *row = s + r * lds;
    if (fx->softcap > 0.0f)
      softcap_row(row, cols, fx->softcap);
    if (!fx->slopes)
      continue;
    int64_t qp = qpos ? qpos[r] : qp0 + r;
    if (!kpos) {
      alibi_ramp(row, cols, slope, j0 - qp, fx->symmetric);
      continue;
    }
    for (int64_t j = 0; j < cols; j++) {
      int64_t d = kpos[j] - qp;
      if (fx->symmetric && d > 0)
        d = -d;
      row[j] += slope * (float)d;
    }
  }
}
