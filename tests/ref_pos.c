/* SPDX-License-Identifier: MIT */
/* The double-precision reference of decoder attention features
 * (ref_pos.h). */
#include "ref_pos.h"

#include "ref.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

void ref_alibi_slopes(int64_t H, double *slopes) {
  int64_t n = 1;
  while (2 * n <= H)
    n *= 2;
  double base = pow(2.0, -pow(2.0, -(log2((double)n) - 3.0))); /* 2^(-8/n) */
  for (int64_t h = 0; h < n && h < H; h++)
    slopes[h] = pow(base, (double)(h + 1));
  double extra = pow(2.0, -pow(2.0, -(log2((double)(2 * n)) - 3.0)));
  for (int64_t h = n; h < H; h++)
    slopes[h] = pow(extra, (double)(2 * (h - n) + 1));
}

/* y[n] = W[n, k] x + b. */
static void linear(const float *w, const float *b, int64_t N, int64_t K,
                   const double *x, double *y) {
  for (int64_t n = 0; n < N; n++) {
    double s = b ? b[n] : 0.0;
    for (int64_t k = 0; k < K; k++)
      s += (double)w[n * K + k] * x[k];
    y[n] = s;
  }
}

static void rms(double *x, int64_t n, const float *w, double eps, int off) {
  double ss = 0;
  for (int64_t i = 0; i < n; i++)
    ss += x[i] * x[i];
  double inv = 1.0 / sqrt(ss / (double)n + eps);
  for (int64_t i = 0; i < n; i++)
    x[i] = x[i] * inv * ((off ? 1.0 : 0.0) + (double)w[i]);
}

static void rotate(const ref_dec *l, double *v, int64_t hd, int64_t p) {
  int64_t rot = l->rot ? l->rot : hd, half = rot / 2;
  double f = l->attention_factor > 0 ? l->attention_factor : 1.0;
  for (int64_t k = 0; k < half; k++) {
    double w = l->inv_freq ? (double)l->inv_freq[k]
                           : pow(l->theta, -2.0 * (double)k / (double)rot) /
                                 l->linear_factor;
    double a = (double)p * w;
    int64_t i = l->pairing == ATTN_ROPE_ADJACENT ? 2 * k : k;
    int64_t j = l->pairing == ATTN_ROPE_ADJACENT ? 2 * k + 1 : k + half;
    double x1 = v[i], x2 = v[j];
    v[i] = f * (x1 * cos(a) - x2 * sin(a));
    v[j] = f * (x2 * cos(a) + x1 * sin(a));
  }
}

/* q [E] and k [KV] of one token after norm and rotation at position p. */
static void token_qk(const ref_dec *l, const double *x, int64_t p, double *q,
                     double *k, double *v) {
  int64_t E = l->E, H = l->H, Hkv = l->Hkv ? l->Hkv : H, hd = E / H;
  int64_t KV = Hkv * hd;
  linear(l->wq, l->bq, E, E, x, q);
  linear(l->wk, l->bk, KV, E, x, k);
  linear(l->wv, l->bv, KV, E, x, v);
  if (l->qk_norm == ATTN_QK_NORM_ALL) {
    rms(q, E, l->q_norm, l->eps, l->unit_offset);
    rms(k, KV, l->k_norm, l->eps, l->unit_offset);
  } else if (l->qk_norm == ATTN_QK_NORM_HEAD) {
    for (int64_t h = 0; h < H; h++)
      rms(q + h * hd, hd, l->q_norm, l->eps, l->unit_offset);
    for (int64_t h = 0; h < Hkv; h++)
      rms(k + h * hd, hd, l->k_norm, l->eps, l->unit_offset);
  }
  if (!l->rope)
    return;
  for (int64_t h = 0; h < H; h++)
    rotate(l, q + h * hd, hd, p);
  for (int64_t h = 0; h < Hkv; h++)
    rotate(l, k + h * hd, hd, p);
}

/* One query row's attention for head h into ctx[hd] (and weights[L]). */
static void attend(const ref_dec *l, int64_t h, int64_t i, int64_t L,
                   const double *q, const double *k, const double *v,
                   const int64_t *pos, const unsigned char *vis,
                   const double *slopes, double *ctx, double *wrow) {
  int64_t H = l->H, Hkv = l->Hkv ? l->Hkv : H, hd = l->E / H;
  int64_t KV = Hkv * hd, g = h / (H / Hkv);
  double scale = l->scale > 0 ? l->scale : 1.0 / sqrt((double)hd);
  double *s = ref_xmalloc((size_t)L * sizeof(double));
  double m = l->sinks ? (double)l->sinks[h] : -INFINITY;
  for (int64_t j = 0; j < L; j++) {
    double d = 0;
    for (int64_t t = 0; t < hd; t++)
      d += q[i * l->E + h * hd + t] * k[j * KV + g * hd + t];
    d *= scale;
    if (l->softcap > 0)
      d = l->softcap * tanh(d / l->softcap);
    double dist = (double)(pos[j] - pos[i]);
    if (l->alibi == ATTN_ALIBI_CAUSAL)
      d += slopes[h] * dist;
    else if (l->alibi == ATTN_ALIBI_SYMMETRIC)
      d -= slopes[h] * fabs(dist);
    s[j] = vis[j] ? d : -INFINITY;
    if (s[j] > m)
      m = s[j];
  }
  double sum = l->sinks ? exp((double)l->sinks[h] - m) : 0.0;
  for (int64_t j = 0; j < L; j++) {
    s[j] = vis[j] ? exp(s[j] - m) : 0.0;
    sum += s[j];
  }
  for (int64_t t = 0; t < hd; t++)
    ctx[t] = 0;
  for (int64_t j = 0; j < L; j++) {
    double p = sum > 0 ? s[j] / sum : 0.0;
    if (wrow)
      wrow[j] = p;
    for (int64_t t = 0; t < hd; t++)
      ctx[t] += p * v[j * KV + g * hd + t];
  }
  free(s);
}

void ref_dec_forward(const ref_dec *l, int64_t B, int64_t L, const float *x,
                     const int64_t *pos, int causal, int64_t window,
                     const uint8_t *pad, double *out, double *weights) {
  int64_t E = l->E, H = l->H, Hkv = l->Hkv ? l->Hkv : H, hd = E / H;
  int64_t KV = Hkv * hd;
  double *slopes = ref_xmalloc((size_t)H * sizeof(double));
  if (l->slopes)
    for (int64_t h = 0; h < H; h++)
      slopes[h] = l->slopes[h];
  else
    ref_alibi_slopes(H, slopes);
  double *xt = ref_xmalloc((size_t)E * sizeof(double));
  double *q = ref_xmalloc((size_t)(L * E) * sizeof(double));
  double *k = ref_xmalloc((size_t)(L * KV) * sizeof(double));
  double *v = ref_xmalloc((size_t)(L * KV) * sizeof(double));
  double *ctx = ref_xmalloc((size_t)E * sizeof(double));
  unsigned char *vis = ref_xmalloc((size_t)L);
  for (int64_t b = 0; b < B; b++) {
    const int64_t *pb = pos + b * L;
    for (int64_t i = 0; i < L; i++) {
      for (int64_t t = 0; t < E; t++)
        xt[t] = x[(b * L + i) * E + t];
      token_qk(l, xt, pb[i], q + i * E, k + i * KV, v + i * KV);
    }
    for (int64_t i = 0; i < L; i++) {
      for (int64_t j = 0; j < L; j++)
        vis[j] = !(causal && j > i) && !(window > 0 && i - j >= window) &&
                 !(pad && pad[b * L + j]);
      for (int64_t h = 0; h < H; h++)
        attend(l, h, i, L, q, k, v, pb, vis, slopes, ctx + h * hd,
               weights ? weights + ((b * H + h) * L + i) * L : NULL);
      linear(l->wo, l->bo, E, E, ctx, out + (b * L + i) * E);
    }
  }
  free(slopes);
  free(xt);
  free(q);
  free(k);
  free(v);
  free(ctx);
  free(vis);
}
