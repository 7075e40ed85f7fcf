/* SPDX-License-Identifier: MIT */
/* The portable table of vector kernels (simd.h): plain C that compilers
 * vectorise for the baseline instruction set. */
#include "core/linear.h"
#include "core/simd.h"
#include "core/stream.h"

#include <math.h>
#include <stddef.h>

static float max_portable(const float *x, int64_t n) {
  float m = -INFINITY;
  for (int64_t i = 0; i < n; i++)
    m = x[i] > m ? x[i] : m;
  return m;
}

static float exp_sum_portable(float *x, int64_t n, float shift) {
  /* Eight partial sums, as the vector versions keep: long rows lose less
   * to rounding than with one running sum. */
  float part[8] = {0};
  for (int64_t i = 0; i < n; i++) {
    float e = expf(x[i] - shift);
    x[i] = e;
    part[i % 8] += e;
  }
  return ((part[0] + part[4]) + (part[1] + part[5])) +
         ((part[2] + part[6]) + (part[3] + part[7]));
}

static void scale_portable(float *x, int64_t n, float f) {
  for (int64_t i = 0; i < n; i++)
    x[i] *= f;
}

static void transpose_portable(const float *src, int64_t lds, int64_t rows,
                               int64_t cols, float *dst, int64_t ldd) {
  /* In 8 x 8 blocks, so both sides are read and written in cache lines. */
  for (int64_t r0 = 0; r0 < rows; r0 += 8)
    for (int64_t c0 = 0; c0 < cols; c0 += 8) {
      int64_t r1 = r0 + 8 < rows ? r0 + 8 : rows;
      int64_t c1 = c0 + 8 < cols ? c0 + 8 : cols;
      for (int64_t c = c0; c < c1; c++)
        for (int64_t r = r0; r < r1; r++)
          dst[c * ldd + r] = src[r * lds + c];
    }
}

/* Dot product with eight partial sums, so the compiler can vectorise it
 * without reassociating a single sum. */
static inline float dot(const float *x, const float *y, int64_t n) {
  float acc[8] = {0, 0, 0, 0, 0, 0, 0, 0};
  int64_t d = 0;
  for (; d + 8 <= n; d += 8)
    for (int k = 0; k < 8; k++)
      acc[k] += x[d + k] * y[d + k];
  for (; d < n; d++)
    acc[0] += x[d] * y[d];
  return ((acc[0] + acc[4]) + (acc[1] + acc[5])) +
         ((acc[2] + acc[6]) + (acc[3] + acc[7]));
}

/* Slots ahead that the portable loops prefetch. */
#define PREFETCH_SLOTS 4

/* s[r * lds + j - jmin] = scale * q_r . k_j for every query row r of the
 * batch row (q: its n rows) and key j in [jmin, jmax), walking the slots
 * in order. */
static void scores_portable(const attn_stream *a, const float *q,
                            const float *slots, int64_t jmin, int64_t jmax,
                            float *s, int64_t lds) {
  const attn_heads *g = a->heads;
  int64_t hd = g->head_dim, H = g->num_heads;
  int64_t group = H / g->num_kv_heads;
  for (int64_t j = jmin; j < jmax; j++) {
    const float *slot = slots + j * a->ldkv;
    attn_stream_prefetch(slots, j + PREFETCH_SLOTS, jmax, a->ldkv, g->kv_dim);
    for (int64_t i = 0; i < a->n; i++)
      for (int64_t h = 0; h < H; h++)
        s[(i * H + h) * lds + (j - jmin)] =
            g->scale *
            dot(q + i * a->ldq + h * hd, slot + (h / group) * hd, hd);
  }
}

/* acc[r] += sum over j of p[r, j] v_j, in slot order. */
static void values_portable(const attn_stream *a, const float *vslots,
                            int64_t jmin, int64_t jmax, const float *p,
                            int64_t ldp, float *acc) {
  const attn_heads *g = a->heads;
  int64_t hd = g->head_dim, H = g->num_heads;
  int64_t group = H / g->num_kv_heads, rows = a->n * H;
  for (int64_t j = jmin; j < jmax; j++) {
    const float *slot = vslots + j * a->ldkv;
    attn_stream_prefetch(vslots, j + PREFETCH_SLOTS, jmax, a->ldkv, g->kv_dim);
    for (int64_t r = 0; r < rows; r++) {
      float pj = p[r * ldp + (j - jmin)];
      if (pj == 0.0f)
        continue;
      const float *vj = slot + ((r % H) / group) * hd;
      float *ar = acc + r * hd;
      for (int64_t d = 0; d < hd; d++)
        ar[d] += pj * vj[d];
    }
  }
}

/* Each weight row is read once and meets every input row while it is in
 * the L1 cache. */
static void rows_linear_portable(const attn_rows_linear *p, int64_t n0,
                                 int64_t n1) {
  for (int64_t j = n0; j < n1; j++) {
    const float *wj = p->w + j * p->K;
    float bj = p->b ? p->b[j] : 0.0f;
    for (int64_t m = 0; m < p->M; m++)
      p->y[m * p->ldy + j] = bj + dot(p->x + m * p->ldx, wj, p->K);
  }
}

static const attn_simd portable = {.name = "portable",
                                   .max = max_portable,
                                   .exp_sum = exp_sum_portable,
                                   .scale = scale_portable,
                                   .transpose = transpose_portable,
                                   .stream_scores = scores_portable,
                                   .stream_values = values_portable,
                                   .rows_linear = rows_linear_portable};

const attn_simd *attn_simd_portable(void) { return &portable; }
