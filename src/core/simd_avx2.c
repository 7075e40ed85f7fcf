/* SPDX-License-Identifier: MIT */
/* The AVX2/FMA table of vector kernels (simd.h). The functions carry their
 * own target attribute, so this file builds with the library's ordinary
 * flags (GCC and Clang alike); simd.c hands the table out only after
 * checking the CPU (common/cpu.h).
 *
 * Softmax primitives: max, and exp with the sum (exp as in simd_avx2.h).
 *
 * Decoding kernels (head sizes a multiple of 8). Scores take eight keys at
 * a time for one query row: eight running dot products over head_dim,
 * summed across lanes together at the end, so the horizontal sums cost one
 * instruction per key instead of several. Values add p * v into the row's
 * accumulator eight keys at a time, 32 floats of head_dim per pass, in
 * registers. The few-row projections of a step take the same shape: eight
 * running sums per weight row, one per input row. */
#include "core/linear.h"
#include "core/simd.h"
#include "core/stream.h"

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))

#include "core/simd_avx2.h"

#include <math.h>
#include <stdbool.h>

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

/* The eight sums of a0 .. a7, lane k holding the sum of ak. */
TARGET static inline __m256 sum8(__m256 a0, __m256 a1, __m256 a2, __m256 a3,
                                 __m256 a4, __m256 a5, __m256 a6, __m256 a7) {
  __m256 t0 = _mm256_hadd_ps(a0, a1); /* a0 a0 a1 a1 | a0 a0 a1 a1 */
  __m256 t1 = _mm256_hadd_ps(a2, a3);
  __m256 t2 = _mm256_hadd_ps(a4, a5);
  __m256 t3 = _mm256_hadd_ps(a6, a7);
  __m256 u0 = _mm256_hadd_ps(t0, t1); /* a0 a1 a2 a3 | a0 a1 a2 a3 */
  __m256 u1 = _mm256_hadd_ps(t2, t3); /* a4 a5 a6 a7 | a4 a5 a6 a7 */
  __m256 lo = _mm256_permute2f128_ps(u0, u1, 0x20);
  __m256 hi = _mm256_permute2f128_ps(u0, u1, 0x31);
  return _mm256_add_ps(lo, hi);
}

TARGET static float dot1(const float *x, const float *y, int64_t n) {
  __m256 acc = _mm256_setzero_ps();
  for (int64_t d = 0; d < n; d += 8)
    acc = _mm256_fmadd_ps(_mm256_loadu_ps(x + d), _mm256_loadu_ps(y + d), acc);
  __m128 s =
      _mm_add_ps(_mm256_castps256_ps128(acc), _mm256_extractf128_ps(acc, 1));
  s = _mm_hadd_ps(s, s);
  s = _mm_hadd_ps(s, s);
  return _mm_cvtss_f32(s);
}

TARGET static void scores_avx2(const attn_stream *a, const float *q,
                               const float *slots, int64_t jmin, int64_t jmax,
                               float *s, int64_t lds) {
  const attn_heads *g = a->heads;
  int64_t hd = g->head_dim, H = g->num_heads;
  int64_t group = H / g->num_kv_heads, ld = a->ldkv;
  __m256 scale = _mm256_set1_ps(g->scale);
  int64_t j = jmin;
  for (; j + 8 <= jmax; j += 8) {
    const float *k0 = slots + j * ld;
    for (int64_t i = 0; i < a->n; i++)
      for (int64_t h = 0; h < H; h++) {
        const float *qr = q + i * a->ldq + h * hd;
        const float *kh = k0 + (h / group) * hd;
        __m256 c0 = _mm256_setzero_ps(), c1 = c0, c2 = c0, c3 = c0, c4 = c0,
               c5 = c0, c6 = c0, c7 = c0;
        for (int64_t d = 0; d < hd; d += 8) {
          __m256 qv = _mm256_loadu_ps(qr + d);
          const float *kd = kh + d;
          c0 = _mm256_fmadd_ps(qv, _mm256_loadu_ps(kd), c0);
          c1 = _mm256_fmadd_ps(qv, _mm256_loadu_ps(kd + ld), c1);
          c2 = _mm256_fmadd_ps(qv, _mm256_loadu_ps(kd + 2 * ld), c2);
          c3 = _mm256_fmadd_ps(qv, _mm256_loadu_ps(kd + 3 * ld), c3);
          c4 = _mm256_fmadd_ps(qv, _mm256_loadu_ps(kd + 4 * ld), c4);
          c5 = _mm256_fmadd_ps(qv, _mm256_loadu_ps(kd + 5 * ld), c5);
          c6 = _mm256_fmadd_ps(qv, _mm256_loadu_ps(kd + 6 * ld), c6);
          c7 = _mm256_fmadd_ps(qv, _mm256_loadu_ps(kd + 7 * ld), c7);
        }
        __m256 sum = sum8(c0, c1, c2, c3, c4, c5, c6, c7);
        _mm256_storeu_ps(s + (i * H + h) * lds + (j - jmin),
                         _mm256_mul_ps(sum, scale));
      }
  }
  for (; j < jmax; j++) {
    const float *slot = slots + j * ld;
    for (int64_t i = 0; i < a->n; i++)
      for (int64_t h = 0; h < H; h++)
        s[(i * H + h) * lds + (j - jmin)] =
            g->scale *
            dot1(q + i * a->ldq + h * hd, slot + (h / group) * hd, hd);
  }
}

/* One query row at a time (multi-head layers with one new token: no two
 * rows share a value head): 32 floats of the row's accumulator stay in
 * registers over eight keys. */
TARGET static void values_rows1(const attn_stream *a, const float *vslots,
                                int64_t jmin, int64_t jmax, const float *p,
                                int64_t ldp, float *acc) {
  const attn_heads *g = a->heads;
  int64_t hd = g->head_dim, H = g->num_heads;
  int64_t group = H / g->num_kv_heads, ld = a->ldkv, rows = a->n * H;
  for (int64_t j0 = jmin; j0 < jmax; j0 += 8) {
    int64_t j1 = j0 + 8 < jmax ? j0 + 8 : jmax;
    for (int64_t r = 0; r < rows; r++) {
      const float *pr = p + r * ldp - jmin;
      const float *vh = vslots + ((r % H) / group) * hd;
      float *ar = acc + r * hd;
      /* 32 floats of the accumulator at a time stay in registers over
       * the eight keys. */
      for (int64_t d = 0; d < hd; d += 32) {
        int64_t w = hd - d < 32 ? hd - d : 32;
        __m256 r0 = _mm256_loadu_ps(ar + d);
        __m256 r1 = w > 8 ? _mm256_loadu_ps(ar + d + 8) : _mm256_setzero_ps();
        __m256 r2 = w > 16 ? _mm256_loadu_ps(ar + d + 16) : _mm256_setzero_ps();
        __m256 r3 = w > 24 ? _mm256_loadu_ps(ar + d + 24) : _mm256_setzero_ps();
        for (int64_t j = j0; j < j1; j++) {
          if (pr[j] == 0.0f)
            continue;
          __m256 pj = _mm256_set1_ps(pr[j]);
          const float *v = vh + j * ld + d;
          r0 = _mm256_fmadd_ps(pj, _mm256_loadu_ps(v), r0);
          if (w > 8)
            r1 = _mm256_fmadd_ps(pj, _mm256_loadu_ps(v + 8), r1);
          if (w > 16)
            r2 = _mm256_fmadd_ps(pj, _mm256_loadu_ps(v + 16), r2);
          if (w > 24)
            r3 = _mm256_fmadd_ps(pj, _mm256_loadu_ps(v + 24), r3);
        }
        _mm256_storeu_ps(ar + d, r0);
        if (w > 8)
          _mm256_storeu_ps(ar + d + 8, r1);
        if (w > 16)
          _mm256_storeu_ps(ar + d + 16, r2);
        if (w > 24)
          _mm256_storeu_ps(ar + d + 24, r3);
      }
    }
  }
}

/* Keys [j0, j1) into R query rows that share one value head vh: 16
 * floats of each row's accumulator at a time, so that every value vector
 * loaded serves the R rows and the 2 R accumulators are independent
 * chains of products (one row alone is a chain as long as the keys, bound
 * by the FMA latency). The rows are added to in key order, as one row
 * alone would be. */
TARGET static inline __attribute__((always_inline)) void
values_group(const float *vh, int64_t ld, int64_t hd, int64_t j0, int64_t j1,
             const float *const *pr, float *const *ar, const int R) {
  for (int64_t d = 0; d < hd; d += 16) {
    bool two = hd - d > 8;
    __m256 c[4][2];
    for (int k = 0; k < R; k++) {
      c[k][0] = _mm256_loadu_ps(ar[k] + d);
      c[k][1] = two ? _mm256_loadu_ps(ar[k] + d + 8) : _mm256_setzero_ps();
    }
    for (int64_t j = j0; j < j1; j++) {
      const float *v = vh + j * ld + d;
      __m256 v0 = _mm256_loadu_ps(v);
      __m256 v1 = two ? _mm256_loadu_ps(v + 8) : _mm256_setzero_ps();
      for (int k = 0; k < R; k++) {
        __m256 pj = _mm256_broadcast_ss(pr[k] + j);
        c[k][0] = _mm256_fmadd_ps(pj, v0, c[k][0]);
        c[k][1] = _mm256_fmadd_ps(pj, v1, c[k][1]);
      }
    }
    for (int k = 0; k < R; k++) {
      _mm256_storeu_ps(ar[k] + d, c[k][0]);
      if (two)
        _mm256_storeu_ps(ar[k] + d + 8, c[k][1]);
    }
  }
}

/* Grouped-query layers (and several new tokens): the rows of each value
 * head, up to four at a time, take each eight keys' values while they are
 * in L1. Keys with a zero weight are not skipped here: adding 0 * v
 * leaves a sum unchanged. */
TARGET static void values_grouped(const attn_stream *a, const float *vslots,
                                  int64_t jmin, int64_t jmax, const float *p,
                                  int64_t ldp, float *acc) {
  const attn_heads *g = a->heads;
  int64_t hd = g->head_dim, H = g->num_heads, G = g->num_kv_heads;
  int64_t group = H / G, per = a->n * group, ld = a->ldkv;
  for (int64_t j0 = jmin; j0 < jmax; j0 += 8) {
    int64_t j1 = j0 + 8 < jmax ? j0 + 8 : jmax;
    for (int64_t kv = 0; kv < G; kv++)
      for (int64_t t = 0; t < per; t += 4) {
        const float *pr[4];
        float *ar[4];
        int64_t R = per - t < 4 ? per - t : 4;
        for (int64_t k = 0; k < R; k++) {
          /* Row of token i, head kv * group + e. */
          int64_t i = (t + k) / group, e = (t + k) % group;
          int64_t r = i * H + kv * group + e;
          pr[k] = p + r * ldp - jmin;
          ar[k] = acc + r * hd;
        }
        const float *vh = vslots + kv * hd;
        if (R == 4) {
          values_group(vh, ld, hd, j0, j1, pr, ar, 4);
          continue;
        }
        int64_t k = 0;
        if (R >= 2) {
          values_group(vh, ld, hd, j0, j1, pr, ar, 2);
          k = 2;
        }
        if (R - k == 1)
          values_group(vh, ld, hd, j0, j1, pr + k, ar + k, 1);
      }
  }
}

TARGET static void values_avx2(const attn_stream *a, const float *vslots,
                               int64_t jmin, int64_t jmax, const float *p,
                               int64_t ldp, float *acc) {
  if (a->n * (a->heads->num_heads / a->heads->num_kv_heads) > 1)
    values_grouped(a, vslots, jmin, jmax, p, ldp, acc);
  else
    values_rows1(a, vslots, jmin, jmax, p, ldp, acc);
}

/* Each weight row is loaded once, eight floats at a time, and multiplied
 * into the M (<= 8) input rows' running sums; sum8 then gives the row's
 * outputs at once (lane m from row m's sum alone, so a row's result does
 * not depend on M). The body is compiled for M rows (at least p->M; rows
 * past p->M repeat row 0 and are dropped): a step's usual single row then
 * costs one product per weight vector, not eight. */
TARGET static inline __attribute__((always_inline)) void
linear_rows(const attn_rows_linear *p, int64_t n0, int64_t n1, const int M) {
  int64_t K = p->K;
  const float *x[8];
  for (int64_t m = 0; m < 8; m++)
    x[m] = p->x + (m < p->M ? m : 0) * p->ldx;
  float out[8];
  for (int64_t j = n0; j < n1; j++) {
    const float *w = p->w + j * K;
    __m256 c0 = _mm256_setzero_ps(), c1 = c0, c2 = c0, c3 = c0, c4 = c0,
           c5 = c0, c6 = c0, c7 = c0;
    for (int64_t d = 0; d < K; d += 8) {
      __m256 wv = _mm256_loadu_ps(w + d);
      c0 = _mm256_fmadd_ps(wv, _mm256_loadu_ps(x[0] + d), c0);
      if (M > 1)
        c1 = _mm256_fmadd_ps(wv, _mm256_loadu_ps(x[1] + d), c1);
      if (M > 2)
        c2 = _mm256_fmadd_ps(wv, _mm256_loadu_ps(x[2] + d), c2);
      if (M > 3)
        c3 = _mm256_fmadd_ps(wv, _mm256_loadu_ps(x[3] + d), c3);
      if (M > 4)
        c4 = _mm256_fmadd_ps(wv, _mm256_loadu_ps(x[4] + d), c4);
      if (M > 5)
        c5 = _mm256_fmadd_ps(wv, _mm256_loadu_ps(x[5] + d), c5);
      if (M > 6)
        c6 = _mm256_fmadd_ps(wv, _mm256_loadu_ps(x[6] + d), c6);
      if (M > 7)
        c7 = _mm256_fmadd_ps(wv, _mm256_loadu_ps(x[7] + d), c7);
    }
    _mm256_storeu_ps(out, sum8(c0, c1, c2, c3, c4, c5, c6, c7));
    float bj = p->b ? p->b[j] : 0.0f;
    for (int64_t m = 0; m < p->M; m++)
      p->y[m * p->ldy + j] = bj + out[m];
  }
}

TARGET static void linear_avx2(const attn_rows_linear *p, int64_t n0,
                               int64_t n1) {
  switch (p->M) {
  case 1:
    linear_rows(p, n0, n1, 1);
    break;
  case 2:
    linear_rows(p, n0, n1, 2);
    break;
  case 3:
  case 4:
    linear_rows(p, n0, n1, 4);
    break;
  default:
    linear_rows(p, n0, n1, 8);
    break;
  }
}

static const attn_simd avx2 = {.name = "avx2-fma",
                               .max = max_avx2,
                               .exp_sum = exp_sum_avx2,
                               .scale = scale_avx2,
                               .transpose = transpose_avx2,
                               .stream_scores = scores_avx2,
                               .stream_values = values_avx2,
                               .rows_linear = linear_avx2,
                               .panels = &attn_panels_avx2};

/* The same kernels with the packed core's AVX-512 products
 * (packed_avx512.c), for CPUs that also have AVX-512F. */
static const attn_simd avx512 = {.name = "avx512f",
                                 .max = max_avx2,
                                 .exp_sum = exp_sum_avx2,
                                 .scale = scale_avx2,
                                 .transpose = transpose_avx2,
                                 .stream_scores = scores_avx2,
                                 .stream_values = values_avx2,
                                 .rows_linear = linear_avx2,
                                 .panels = &attn_panels_avx512};

const attn_simd *attn_simd_avx2(void) { return &avx2; }
const attn_simd *attn_simd_avx512(void) { return &avx512; }

#else

const attn_simd *attn_simd_avx2(void) { return NULL; }
const attn_simd *attn_simd_avx512(void) { return NULL; }

#endif
