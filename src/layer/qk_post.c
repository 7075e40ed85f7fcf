/* SPDX-License-Identifier: MIT */
/* QK-norm and rotary embeddings of projected rows (qk_post.h). */
#include "layer/qk_post.h"

#include <math.h>

/* Frequencies whose cosine and sine one pass holds. */
#define FREQ_BLOCK 32

int64_t attn_qk_post_align(const attn_qk_post *p) {
  if (!p)
    return 1;
  return p->l->fx.qk_norm == ATTN_QK_NORM_ALL ? 0 : p->l->heads.head_dim;
}

/* x[0..n-1] *= w / rms(x) (w is 1 + weight with the unit offset). */
static void rms_norm(float *x, int64_t n, const float *w, const attn_layer *l) {
  double ss = 0.0;
  for (int64_t i = 0; i < n; i++)
    ss += (double)x[i] * (double)x[i];
  float inv = (float)(1.0 / sqrt(ss / (double)n + l->fx.qk_eps));
  float off = l->fx.qk_unit_offset ? 1.0f : 0.0f;
  for (int64_t i = 0; i < n; i++)
    x[i] = x[i] * inv * (off + w[i]);
}

/* Rotates frequencies [k0, k0 + nk) of every head in x[0 .. heads*hd). */
static void rotate(const attn_layer *l, float *x, int64_t heads, int64_t k0,
                   int64_t nk, const float *c, const float *s) {
  int64_t hd = l->heads.head_dim, half = l->fx.rot / 2;
  bool adjacent = l->fx.rope_cfg.pairing == ATTN_ROPE_ADJACENT;
  for (int64_t h = 0; h < heads; h++) {
    float *v = x + h * hd;
    for (int64_t k = 0; k < nk; k++) {
      int64_t i = adjacent ? 2 * (k0 + k) : k0 + k;
      int64_t j = adjacent ? i + 1 : i + half;
      float a = v[i], b = v[j];
      v[i] = a * c[k] - b * s[k];
      v[j] = b * c[k] + a * s[k];
    }
  }
}

/* The rotation of `heads` heads at x for position pos. */
static void rope_heads(const attn_layer *l, float *x, int64_t heads,
                       int64_t pos) {
  int64_t half = l->fx.rot / 2;
  double f = l->fx.rope_cfg.attention_factor;
  float c[FREQ_BLOCK], s[FREQ_BLOCK];
  for (int64_t k0 = 0; k0 < half; k0 += FREQ_BLOCK) {
    int64_t nk = half - k0 < FREQ_BLOCK ? half - k0 : FREQ_BLOCK;
    for (int64_t k = 0; k < nk; k++) {
      double a = (double)pos * l->fx.inv_freq[k0 + k];
      c[k] = (float)(f * cos(a));
      s[k] = (float)(f * sin(a));
    }
    rotate(l, x, heads, k0, nk, c, s);
  }
}

/* Norm and rotation of the heads of one region within [c0, c1) of row y:
 * region [r0, r0 + rn) of the row's columns, norm weights w, position pos. */
static void region(const attn_layer *l, float *y, int64_t c0, int64_t c1,
                   int64_t r0, int64_t rn, const float *w, int64_t pos) {
  int64_t a = c0 > r0 ? c0 : r0, z = c1 < r0 + rn ? c1 : r0 + rn;
  int64_t hd = l->heads.head_dim;
  if (a >= z)
    return;
  if (l->fx.qk_norm == ATTN_QK_NORM_ALL)
    rms_norm(y + r0, rn, w, l); /* the caller's block spans the region */
  else if (l->fx.qk_norm == ATTN_QK_NORM_HEAD)
    for (int64_t c = a; c < z; c += hd)
      rms_norm(y + c, hd, w, l);
  if (l->fx.rope)
    rope_heads(l, y + a, (z - a) / hd, pos);
}

void attn_qk_post_rows(const attn_qk_post *p, float *y, int64_t ldy, int64_t r0,
                       int64_t rows, int64_t c0, int64_t c1) {
  const attn_layer *l = p->l;
  const float *qw = l->extras ? attn_slot_ptr(l, ATTN_SLOT_QN) : NULL;
  const float *kw = l->extras ? attn_slot_ptr(l, ATTN_SLOT_KN) : NULL;
  for (int64_t r = r0; r < r0 + rows; r++) {
    float *row = y + r * ldy;
    int64_t at =
        p->row_base ? p->row_base[r / p->per_base] + r % p->per_base : 0;
    if (p->qn)
      region(l, row, c0, c1, p->q0, p->qn, qw, p->qpos ? p->qpos[r] : at);
    if (p->kn)
      region(l, row, c0, c1, p->k0, p->kn, kw, p->kpos ? p->kpos[r] : at);
  }
}
