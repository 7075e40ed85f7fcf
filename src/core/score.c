/* SPDX-License-Identifier: MIT */
/* Soft-capping and ALiBi on score tiles (score.h). Both loops are written
 * so that the compiler vectorizes them: soft-capping evaluates tanh from
 * its own exponential (libm's tanhf, one element at a time, made a
 * soft-capped forward pass three times slower than a plain one), and the
 * ALiBi bias of consecutive keys is a float ramp. */
#include "core/score.h"

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

/* Vectorized by the compiler (SSE2 lanes at least; an AVX2 copy of this
 * loop was not vectorized by GCC 12, so there is none). */
static void softcap_row(float *s, int64_t cols, float cap) {
  float inv = 1.0f / cap;
  for (int64_t j = 0; j < cols; j++)
    s[j] = cap * tanh_approx(s[j] * inv);
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
