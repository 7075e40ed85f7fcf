/* SPDX-License-Identifier: MIT */
/* The tests' double-precision attention model and shared helpers. See
 * ref.h. Nothing here calls into the library except the model helpers at
 * the end, which only use the public API to create layers and set or read
 * weights.
 *
 * Tolerances (REF_RTOL, REF_ATOL): the library computes in float32, whose
 * unit roundoff is u = 2^-24 ~ 6e-8. Every output element goes through
 * three float dot products (a projection over at most E or kdim/vdim = 256
 * terms, the scores over head_dim terms, the probability-weighted sum over
 * up to Lk = 300 keys, then out_proj over E terms) and a float exp. With
 * the tests' data every term is O(1) or smaller, so the accumulated error of
 * a sum of n terms is of order sqrt(n) * u * sum|term| in practice: a few
 * 1e-6 in absolute terms on outputs of size ~1. The relative bound 1e-4 is
 * the requirement; it cannot hold alone for outputs that cancel to
 * nearly zero (their relative error is unbounded), hence the absolute floor
 * 2e-5, still 10x below any visible error such as a dropped bias (0.5), a
 * wrong scale or a missing key (O(1e-2) and more). */
#include "ref.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

void *ref_xmalloc(size_t bytes) {
  void *p = malloc(bytes ? bytes : 1);
  if (!p) {
    fprintf(stderr, "ref_xmalloc: cannot allocate %zu bytes\n", bytes);
    abort();
  }
  return p;
}

/* ------------------------------------------------------------------------ */
/* Masks                                                                     */
/* ------------------------------------------------------------------------ */

void ref_mask_matrix(const attn_mask *mask, int64_t Lq, int64_t Lk, int64_t b,
                     int64_t h, unsigned char *visible, double *add) {
  for (int64_t i = 0; i < Lq; i++) {
    for (int64_t j = 0; j < Lk; j++) {
      int see = 1;
      double extra = 0.0;
      if (mask) {
        /* Keys this batch row really has. */
        int64_t n = mask->key_lengths ? mask->key_lengths[b] : Lk;
        if (j >= n)
          see = 0;
        /* Where query i sits on the key axis. */
        int64_t pos = i;
        if (mask->causal == ATTN_CAUSAL_BOTTOM_RIGHT)
          pos = i + (n - Lq);
        if (mask->causal != ATTN_CAUSAL_NONE && j > pos)
          see = 0;
        if (mask->window > 0 && pos - j >= mask->window)
          see = 0;
        if (mask->key_padding && mask->key_padding[b * Lk + j] != 0)
          see = 0;
        if (mask->bias) {
          float v =
              mask->bias[b * mask->bias_stride_b + h * mask->bias_stride_h +
                         i * mask->bias_stride_q + j];
          if (isinf(v) && v < 0)
            see = 0;
          else
            extra = v;
        }
      }
      visible[i * Lk + j] = (unsigned char)see;
      if (add)
        add[i * Lk + j] = see ? extra : 0.0;
    }
  }
}

/* ------------------------------------------------------------------------ */
/* Forward                                                                   */
/* ------------------------------------------------------------------------ */

/* y[rows, nout] = x[rows, nin] * w[nout, nin]^T + bias, in double. */
static void linear(int64_t rows, int64_t nout, int64_t nin, const float *x,
                   const float *w, const float *bias, double *y) {
  for (int64_t r = 0; r < rows; r++)
    for (int64_t o = 0; o < nout; o++) {
      double acc = bias ? (double)bias[o] : 0.0;
      for (int64_t c = 0; c < nin; c++)
        acc += (double)x[r * nin + c] * (double)w[o * nin + c];
      y[r * nout + o] = acc;
    }
}

static void linear_d(int64_t rows, int64_t nout, int64_t nin, const double *x,
                     const float *w, const float *bias, double *y) {
  for (int64_t r = 0; r < rows; r++)
    for (int64_t o = 0; o < nout; o++) {
      double acc = bias ? (double)bias[o] : 0.0;
      for (int64_t c = 0; c < nin; c++)
        acc += x[r * nin + c] * (double)w[o * nin + c];
      y[r * nout + o] = acc;
    }
}

void ref_forward(const ref_layer *l, int64_t B, int64_t Lq, int64_t Lk,
                 const float *query, const float *key, const float *value,
                 const attn_mask *mask, double *out, double *weights) {
  int64_t E = l->embed_dim, H = l->num_heads, hd = E / H;
  int64_t kdim = l->kdim ? l->kdim : E, vdim = l->vdim ? l->vdim : E;
  int64_t Hkv = l->num_kv_heads ? l->num_kv_heads : H;
  int64_t KV = Hkv * hd;
  int64_t group = H / Hkv;
  double scale = l->scale > 0 ? l->scale : 1.0 / sqrt((double)hd);
  int nan_rows = mask && mask->empty_rows == ATTN_EMPTY_ROW_NAN;

  double *q = ref_xmalloc((size_t)(B * Lq * E) * sizeof(double));
  double *k = ref_xmalloc((size_t)(B * Lk * KV) * sizeof(double));
  double *v = ref_xmalloc((size_t)(B * Lk * KV) * sizeof(double));
  double *ctx = ref_xmalloc((size_t)(B * Lq * E) * sizeof(double));
  unsigned char *visible = ref_xmalloc((size_t)(Lq * Lk));
  double *add = ref_xmalloc((size_t)(Lq * Lk) * sizeof(double));
  double *p = ref_xmalloc((size_t)Lk * sizeof(double));

  linear(B * Lq, E, E, query, l->wq, l->bias ? l->bq : NULL, q);
  linear(B * Lk, KV, kdim, key, l->wk, l->bias ? l->bk : NULL, k);
  linear(B * Lk, KV, vdim, value, l->wv, l->bias ? l->bv : NULL, v);

  for (int64_t b = 0; b < B; b++) {
    for (int64_t h = 0; h < H; h++) {
      int64_t g = h / group; /* the key/value head this query head reads */
      ref_mask_matrix(mask, Lq, Lk, b, h, visible, add);
      for (int64_t i = 0; i < Lq; i++) {
        const double *qi = q + (b * Lq + i) * E + h * hd;
        double top = -INFINITY;
        int any = 0;
        for (int64_t j = 0; j < Lk; j++) {
          if (!visible[i * Lk + j])
            continue;
          const double *kj = k + (b * Lk + j) * KV + g * hd;
          double s = 0.0;
          for (int64_t d = 0; d < hd; d++)
            s += qi[d] * kj[d];
          s = s * scale + add[i * Lk + j];
          p[j] = s;
          top = any && top > s ? top : s;
          any = 1;
        }
        double *ci = ctx + (b * Lq + i) * E + h * hd;
        double *wrow = weights ? weights + ((b * H + h) * Lq + i) * Lk : NULL;
        if (!any) {
          double fill = nan_rows ? NAN : 0.0;
          for (int64_t d = 0; d < hd; d++)
            ci[d] = fill;
          if (wrow)
            for (int64_t j = 0; j < Lk; j++)
              wrow[j] = fill;
          continue;
        }
        double sum = 0.0;
        for (int64_t j = 0; j < Lk; j++) {
          p[j] = visible[i * Lk + j] ? exp(p[j] - top) : 0.0;
          sum += p[j];
        }
        for (int64_t d = 0; d < hd; d++)
          ci[d] = 0.0;
        for (int64_t j = 0; j < Lk; j++) {
          p[j] /= sum;
          if (wrow)
            wrow[j] = p[j];
          if (p[j] == 0.0)
            continue;
          const double *vj = v + (b * Lk + j) * KV + g * hd;
          for (int64_t d = 0; d < hd; d++)
            ci[d] += p[j] * vj[d];
        }
      }
    }
  }

  linear_d(B * Lq, E, E, ctx, l->wo, l->bias ? l->bo : NULL, out);

  free(q);
  free(k);
  free(v);
  free(ctx);
  free(visible);
  free(add);
  free(p);
}

void ref_average_heads(int64_t B, int64_t H, int64_t Lq, int64_t Lk,
                       const double *per_head, double *avg) {
  for (int64_t b = 0; b < B; b++)
    for (int64_t i = 0; i < Lq; i++)
      for (int64_t j = 0; j < Lk; j++) {
        double s = 0.0;
        for (int64_t h = 0; h < H; h++)
          s += per_head[((b * H + h) * Lq + i) * Lk + j];
        avg[(b * Lq + i) * Lk + j] = s / (double)H;
      }
}

/* ------------------------------------------------------------------------ */
/* Random numbers                                                            */
/* ------------------------------------------------------------------------ */

static uint64_t rotl(uint64_t x, int k) { return (x << k) | (x >> (64 - k)); }

void ref_rng_seed(ref_rng *r, uint64_t seed) {
  /* Expand the seed with a Weyl sequence and a multiply-xorshift mix so
   * that nearby seeds give unrelated streams and the state is never 0. */
  uint64_t x = seed;
  for (int i = 0; i < 4; i++) {
    x += 0x9e3779b97f4a7c15ull;
    uint64_t z = x;
    z = (z ^ (z >> 33)) * 0xff51afd7ed558ccdull;
    z = (z ^ (z >> 33)) * 0xc4ceb9fe1a85ec53ull;
    r->s[i] = (z ^ (z >> 33)) | (i == 0 ? 1u : 0u);
  }
}

uint64_t ref_rng_u64(ref_rng *r) {
  uint64_t *s = r->s;
  uint64_t result = rotl(s[1] * 5, 7) * 9;
  uint64_t t = s[1] << 17;
  s[2] ^= s[0];
  s[3] ^= s[1];
  s[1] ^= s[2];
  s[0] ^= s[3];
  s[2] ^= t;
  s[3] = rotl(s[3], 45);
  return result;
}

double ref_rng_unit(ref_rng *r) {
  return (double)(ref_rng_u64(r) >> 11) / 9007199254740992.0; /* 2^53 */
}

int64_t ref_rng_int(ref_rng *r, int64_t lo, int64_t hi) {
  uint64_t span = (uint64_t)(hi - lo) + 1;
  return lo + (int64_t)(ref_rng_u64(r) % span);
}

void ref_fill(ref_rng *r, float *x, int64_t n, double lo, double hi) {
  for (int64_t i = 0; i < n; i++)
    x[i] = (float)(lo + (hi - lo) * ref_rng_unit(r));
}

float *ref_random(ref_rng *r, int64_t n, double lo, double hi) {
  float *x = ref_xmalloc((size_t)n * sizeof(float));
  ref_fill(r, x, n, lo, hi);
  return x;
}

/* ------------------------------------------------------------------------ */
/* Comparisons                                                               */
/* ------------------------------------------------------------------------ */

ref_cmp ref_compare(const float *got, const double *want, int64_t n,
                    double rtol, double atol) {
  ref_cmp c = {1, -1, 0.0, 0.0, 0.0, 0.0, 0};
  double worst_excess = -INFINITY;
  for (int64_t i = 0; i < n; i++) {
    double g = got[i], w = want[i];
    double excess;
    if (isnan(w) || !isfinite(g) || !isfinite(w)) {
      /* NaN must match NaN; anything else non-finite is a mismatch. */
      int same = (isnan(w) && isnan(g)) || (isinf(w) && g == w);
      excess = same ? -INFINITY : INFINITY;
    } else {
      double diff = fabs(g - w);
      excess = diff - (atol + rtol * fabs(w));
      if (diff > c.max_abs)
        c.max_abs = diff;
      if (w != 0.0 && diff / fabs(w) > c.max_rel)
        c.max_rel = diff / fabs(w);
    }
    if (excess > 0) {
      c.ok = 0;
      c.mismatches++;
    }
    if (excess > worst_excess || c.worst < 0) {
      worst_excess = excess;
      c.worst = i;
      c.got = g;
      c.want = w;
    }
  }
  return c;
}

int ref_close(const char *what, const float *got, const double *want, int64_t n,
              double rtol, double atol) {
  ref_cmp c = ref_compare(got, want, n, rtol, atol);
  if (getenv("REF_VERBOSE"))
    fprintf(stderr, "%s: n %lld, max abs err %.3g, max rel err %.3g\n", what,
            (long long)n, c.max_abs, c.max_rel);
  if (!c.ok)
    fprintf(stderr,
            "%s: %lld of %lld elements differ; worst [%lld] got %.9g want "
            "%.9g (|diff| %.3g > %.3g + %.3g*|want|); max abs %.3g\n",
            what, (long long)c.mismatches, (long long)n, (long long)c.worst,
            c.got, c.want, fabs(c.got - c.want), atol, rtol, c.max_abs);
  return c.ok;
}

int ref_close_f(const char *what, const float *got, const float *want,
                int64_t n, double rtol, double atol) {
  double *w = ref_xmalloc((size_t)n * sizeof(double));
  for (int64_t i = 0; i < n; i++)
    w[i] = want[i];
  int ok = ref_close(what, got, w, n, rtol, atol);
  free(w);
  return ok;
}

double ref_max_abs(const double *x, int64_t n) {
  double m = 0.0;
  for (int64_t i = 0; i < n; i++)
    if (!isnan(x[i]) && fabs(x[i]) > m)
      m = fabs(x[i]);
  return m;
}

/* ------------------------------------------------------------------------ */
/* Layers with random weights                                                */
/* ------------------------------------------------------------------------ */

attn_status ref_model_create(ref_model *m, const attn_config *cfg,
                             uint64_t seed) {
  memset(m, 0, sizeof *m);
  attn_layer *layer = NULL;
  attn_status st = attn_layer_create(cfg, &layer);
  if (st != ATTN_OK)
    return st;
  int64_t E = cfg->embed_dim, H = cfg->num_heads, hd = E / H;
  int64_t kdim = cfg->kdim ? cfg->kdim : E, vdim = cfg->vdim ? cfg->vdim : E;
  int64_t Hkv = cfg->num_kv_heads ? cfg->num_kv_heads : H;
  int64_t KV = Hkv * hd;
  int bias = cfg->bias != 0;
  int64_t n_w = E * E + KV * kdim + KV * vdim + E * E;
  int64_t n_b = bias ? 2 * E + 2 * KV : 0;
  float *mem = ref_xmalloc((size_t)(n_w + n_b) * sizeof(float));
  float *wq = mem, *wk = wq + E * E, *wv = wk + KV * kdim, *wo = wv + KV * vdim;
  float *bq = wo + E * E, *bk = bq + E, *bv = bk + KV, *bo = bv + KV;

  ref_rng r;
  ref_rng_seed(&r, seed);
  double gq = sqrt(3.0 / (double)E), gk = sqrt(3.0 / (double)kdim);
  double gv = sqrt(3.0 / (double)vdim);
  ref_fill(&r, wq, E * E, -gq, gq);
  ref_fill(&r, wk, KV * kdim, -gk, gk);
  ref_fill(&r, wv, KV * vdim, -gv, gv);
  ref_fill(&r, wo, E * E, -gq, gq);
  if (bias)
    ref_fill(&r, bq, n_b, -0.5, 0.5);

  struct {
    attn_weight_id id;
    const float *data;
    int64_t count;
  } sets[] = {{ATTN_W_Q, wq, E * E},     {ATTN_W_K, wk, KV * kdim},
              {ATTN_W_V, wv, KV * vdim}, {ATTN_W_OUT, wo, E * E},
              {ATTN_B_Q, bq, E},         {ATTN_B_K, bk, KV},
              {ATTN_B_V, bv, KV},        {ATTN_B_OUT, bo, E}};
  int nsets = bias ? 8 : 4;
  for (int i = 0; i < nsets && st == ATTN_OK; i++)
    st = attn_layer_set_weight(layer, sets[i].id, sets[i].data, sets[i].count);
  if (st != ATTN_OK) {
    attn_layer_destroy(layer);
    free(mem);
    return st;
  }

  m->layer = layer;
  m->storage = mem;
  m->ref = (ref_layer){.embed_dim = E,
                       .num_heads = H,
                       .kdim = kdim,
                       .vdim = vdim,
                       .num_kv_heads = Hkv,
                       .bias = bias,
                       .scale = cfg->scale,
                       .wq = wq,
                       .wk = wk,
                       .wv = wv,
                       .wo = wo,
                       .bq = bias ? bq : NULL,
                       .bk = bias ? bk : NULL,
                       .bv = bias ? bv : NULL,
                       .bo = bias ? bo : NULL};
  return ATTN_OK;
}

void ref_model_destroy(ref_model *m) {
  attn_layer_destroy(m->layer);
  free(m->storage);
  memset(m, 0, sizeof *m);
}

attn_status ref_layer_from_attn(const attn_layer *layer, ref_layer *rl,
                                float **storage) {
  attn_config c;
  attn_config_init(&c);
  attn_status st = attn_layer_get_config(layer, &c);
  if (st != ATTN_OK)
    return st;
  static const attn_weight_id ids[8] = {ATTN_W_Q,   ATTN_W_K,  ATTN_W_V,
                                        ATTN_W_OUT, ATTN_B_Q,  ATTN_B_K,
                                        ATTN_B_V,   ATTN_B_OUT};
  int nids = c.bias ? 8 : 4;
  int64_t counts[8], total = 0;
  for (int i = 0; i < nids; i++) {
    if ((st = attn_layer_weight_count(layer, ids[i], &counts[i])) != ATTN_OK)
      return st;
    total += counts[i];
  }
  float *mem = ref_xmalloc((size_t)total * sizeof(float));
  const float *ptrs[8] = {NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL};
  float *at = mem;
  for (int i = 0; i < nids; i++) {
    if ((st = attn_layer_get_weight(layer, ids[i], at, counts[i])) != ATTN_OK) {
      free(mem);
      return st;
    }
    ptrs[i] = at;
    at += counts[i];
  }
  *rl = (ref_layer){.embed_dim = c.embed_dim,
                    .num_heads = c.num_heads,
                    .kdim = c.kdim,
                    .vdim = c.vdim,
                    .num_kv_heads = c.num_kv_heads,
                    .bias = c.bias != 0,
                    .scale = c.scale,
                    .wq = ptrs[0],
                    .wk = ptrs[1],
                    .wv = ptrs[2],
                    .wo = ptrs[3],
                    .bq = ptrs[4],
                    .bk = ptrs[5],
                    .bv = ptrs[6],
                    .bo = ptrs[7]};
  *storage = mem;
  return ATTN_OK;
}
