/* AVX2/FMA versions of a decoding chunk's two inner loops (decode_attn.c),
 * for head sizes that are a multiple of 8. Built with per-function target
 * attributes, so the rest of the library keeps the baseline instruction
 * set; used only when the CPU has AVX2 and FMA.
 *
 * Scores take eight keys at a time for one query row: eight running dot
 * products over head_dim, summed across lanes together at the end, so the
 * horizontal sums cost one instruction per key instead of several. Values
 * add p * v into the row's accumulator eight keys at a time, 32 floats of
 * head_dim per pass, in registers. The small projections of a step take
 * the same shape: eight running sums per weight row, one per input row. */
#include "decode.h"

#if defined(__x86_64__) && defined(__GNUC__)

#include <immintrin.h>

#define TARGET __attribute__((target("avx2,fma")))

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

TARGET static void scores_avx2(const attn_dec_attn *a, const float *q,
                               const float *slots, int64_t jmin, int64_t jmax,
                               float *s, int64_t lds) {
  const attn_layer *L = a->layer;
  int64_t hd = L->head_dim, H = L->num_heads;
  int64_t group = H / L->num_kv_heads, ld = a->ldkv;
  __m256 scale = _mm256_set1_ps(L->scale);
  int64_t j = jmin;
  for (; j + 8 <= jmax; j += 8) {
    for (int64_t k = 8; k < 16; k++)
      attn_dec_prefetch_slot(slots, j + k, jmax, ld, L->kv_dim);
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
            L->scale *
            dot1(q + i * a->ldq + h * hd, slot + (h / group) * hd, hd);
  }
}

TARGET static void values_avx2(const attn_dec_attn *a, const float *vslots,
                               int64_t jmin, int64_t jmax, const float *p,
                               int64_t ldp, float *acc) {
  const attn_layer *L = a->layer;
  int64_t hd = L->head_dim, H = L->num_heads;
  int64_t group = H / L->num_kv_heads, ld = a->ldkv, rows = a->n * H;
  for (int64_t j0 = jmin; j0 < jmax; j0 += 8) {
    int64_t j1 = j0 + 8 < jmax ? j0 + 8 : jmax;
    for (int64_t k = 8; k < 16; k++)
      attn_dec_prefetch_slot(vslots, j0 + k, jmax, ld, L->kv_dim);
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

/* Each weight row is loaded once, eight floats at a time, and multiplied
 * into up to eight input rows' running sums; sum8 then gives the row's
 * eight outputs at once. */
TARGET static void linear_avx2(const attn_dec_linear *p, int64_t n0,
                               int64_t n1) {
  int64_t M = p->M, K = p->K;
  const float *x[8];
  for (int64_t m = 0; m < 8; m++)
    x[m] = p->x + (m < M ? m : 0) * p->ldx;
  float out[8];
  for (int64_t j = n0; j < n1; j++) {
    const float *w = p->w + j * K;
    __m256 c0 = _mm256_setzero_ps(), c1 = c0, c2 = c0, c3 = c0, c4 = c0,
           c5 = c0, c6 = c0, c7 = c0;
    for (int64_t d = 0; d < K; d += 8) {
      __m256 wv = _mm256_loadu_ps(w + d);
      c0 = _mm256_fmadd_ps(wv, _mm256_loadu_ps(x[0] + d), c0);
      c1 = _mm256_fmadd_ps(wv, _mm256_loadu_ps(x[1] + d), c1);
      c2 = _mm256_fmadd_ps(wv, _mm256_loadu_ps(x[2] + d), c2);
      c3 = _mm256_fmadd_ps(wv, _mm256_loadu_ps(x[3] + d), c3);
      c4 = _mm256_fmadd_ps(wv, _mm256_loadu_ps(x[4] + d), c4);
      c5 = _mm256_fmadd_ps(wv, _mm256_loadu_ps(x[5] + d), c5);
      c6 = _mm256_fmadd_ps(wv, _mm256_loadu_ps(x[6] + d), c6);
      c7 = _mm256_fmadd_ps(wv, _mm256_loadu_ps(x[7] + d), c7);
    }
    _mm256_storeu_ps(out, sum8(c0, c1, c2, c3, c4, c5, c6, c7));
    float bj = p->b ? p->b[j] : 0.0f;
    for (int64_t m = 0; m < M; m++)
      p->y[m * p->ldy + j] = bj + out[m];
  }
}

static bool have_avx2_fma(void) {
  __builtin_cpu_init();
  return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
}

bool attn_dec_linear_avx2(const attn_dec_linear *p, int64_t n0, int64_t n1) {
  if (p->M > 8 || p->K % 8 != 0 || !have_avx2_fma())
    return false;
  linear_avx2(p, n0, n1);
  return true;
}

static const attn_dec_kernels avx2_kernels = {scores_avx2, values_avx2};

const attn_dec_kernels *attn_dec_kernels_avx2(void) {
  return have_avx2_fma() ? &avx2_kernels : NULL;
}

#else

const attn_dec_kernels *attn_dec_kernels_avx2(void) { return NULL; }

bool attn_dec_linear_avx2(const attn_dec_linear *p, int64_t n0, int64_t n1) {
  (void)p;
  (void)n0;
  (void)n1;
  return false;
}

#endif
