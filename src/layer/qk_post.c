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

/* x[0..n-1] *= w / rms(x) (w is 1 + weight with the unit offset). The
 * squares are summed in eight float lanes, which the compiler vectorizes
 * (a double sum, one element at a time, cost as much as the rotation),
 * and the lanes are added in double. */
static void rms_norm(float *x, int64_t n, const float *w, const attn_layer *l) {
  float lane[8] = {0};
  int64_t i = 0;
  for (; i + 8 <= n; i += 8)
    for (int k = 0; k < 8; k++)
      lane[k] += x[i + k] * x[i + k];
  double ss = 0.0;
  for (int k = 0; k < 8; k++)
    ss += lane[k];
  for (; i < n; i++)
    ss += (double)x[i] * (double)x[i];
  float inv = (float)(1.0 / sqrt(ss / (double)n + l->fx.qk_eps));
  float off = l->fx.qk_unit_offset ? 1.0f : 0.0f;
  for (i = 0; i < n; i++)
    x[i] = x[i] * inv * (off + w[i]);
}

/* Rotates frequencies [k0, k0 + nk) of every head in x[0 .. heads*hd). */
static void rotate(const attn_layer *l, float *x, int64_t heads, int64_t k0,
                   int64_t nk, const float *c, const float *s) {
  int64_t hd = l->heads.head_dim, half = l->fx.rot / 2;
  bool adjacent = l->fx.rope_cfg.pairing == ATTN_ROPE_ADJACENT;
  for (int64_t h = 0; h < heads; h++) {
    float *v = x + h * hd;
    if (adjacent) {
      for (int64_t k = 0; k < nk; k++) {
        float a = v[2 * (k0 + k)], b = v[2 * (k0 + k) + 1];
        v[2 * (k0 + k)] = a * c[k] - b * s[k];
        v[2 * (k0 + k) + 1] = b * c[k] + a * s[k];
      }
    } else {
      float *lo = v + k0, *hi = v + k0 + half; /* disjoint: k0 + nk <= half */
      for (int64_t k = 0; k < nk; k++) {
        float a = lo[k], b = hi[k];
        lo[k] = a * c[k] - b * s[k];
        hi[k] = b * c[k] + a * s[k];
      }
    }
  }
}

/* cos and sin (times the attention factor) of frequencies [k0, k0 + nk)
 * at position pos. */
static void angles(const attn_layer *l, int64_t pos, int64_t k0, int64_t nk,
                   float *c, float *s) {
  double f = l->fx.rope_cfg.attention_factor;
  for (int64_t k = 0; k < nk; k++) {
    double a = (double)pos * l->fx.inv_freq[k0 + k];
    c[k] = (float)(f * cos(a));
    s[k] = (float)(f * sin(a));
  }
}

/* The heads of columns [a, z) of a row, and their position. */
typedef struct {
  int64_t a, z, pos;
} head_span;

static head_span span(int64_t c0, int64_t c1, int64_t r0, int64_t rn,
                      int64_t pos) {
  head_span h = {c0 > r0 ? c0 : r0, c1 < r0 + rn ? c1 : r0 + rn, pos};
  if (h.a > h.z)
    h.z = h.a;
  return h;
}

/* The norm of the heads of a span (whole region with ATTN_QK_NORM_ALL). */
static void norm_span(const attn_layer *l, float *row, head_span h, int64_t r0,
                      int64_t rn, const float *w) {
  if (h.a >= h.z || l->fx.qk_norm == ATTN_QK_NORM_NONE)
    return;
  if (l->fx.qk_norm == ATTN_QK_NORM_ALL) {
    rms_norm(row + r0, rn, w, l); /* the caller's block spans the region */
    return;
  }
  for (int64_t c = h.a; c < h.z; c += l->heads.head_dim)
    rms_norm(row + c, l->heads.head_dim, w, l);
}

/* The rotation of the query and key heads of a row; the angles are
 * computed once when both are at the same position. */
static void rope_row(const attn_layer *l, float *row, head_span q,
                     head_span k) {
  int64_t half = l->fx.rot / 2, hd = l->heads.head_dim;
  float cq[FREQ_BLOCK], sq[FREQ_BLOCK], ck[FREQ_BLOCK], sk[FREQ_BLOCK];
  bool same = q.pos == k.pos;
  for (int64_t k0 = 0; k0 < half; k0 += FREQ_BLOCK) {
    int64_t nk = half - k0 < FREQ_BLOCK ? half - k0 : FREQ_BLOCK;
    if (q.a < q.z) {
      angles(l, q.pos, k0, nk, cq, sq);
      rotate(l, row + q.a, (q.z - q.a) / hd, k0, nk, cq, sq);
    }
    if (k.a < k.z) {
      if (!same || q.a >= q.z)
        angles(l, k.pos, k0, nk, ck, sk);
      rotate(l, row + k.a, (k.z - k.a) / hd, k0, nk,
             same && q.a < q.z ? cq : ck, same && q.a < q.z ? sq : sk);
    }
  }
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
    head_span q = span(c0, c1, p->q0, p->qn, p->qpos ? p->qpos[r] : at);
    head_span k = span(c0, c1, p->k0, p->kn, p->kpos ? p->kpos[r] : at);
    norm_span(l, row, q, p->q0, p->qn, qw);
    norm_span(l, row, k, p->k0, p->kn, kw);
    if (l->fx.rope)
      rope_row(l, row, q, k);
  }
}
