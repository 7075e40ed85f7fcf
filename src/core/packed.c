/* SPDX-License-Identifier: MIT */
/* The packed core's driver (packed.h): per work item, the query panels,
 * then for every block of keys its keys and values packed once and, for
 * every panel, the scores, mask, softmax step and P*V on the table's
 * kernels, then the normalised output. Memory per thread: two [rows,
 * head_dim] buffers (the query panels and the accumulator), a [kblock,
 * panel] score tile and the packed key and value blocks ([kblock,
 * head_dim] each). */
#include "core/packed.h"

#include "core/mask.h"
#include "core/stream.h"

#include <math.h>
#include <string.h>

/* Fewer query rows than this fill too little of a panel: the cblas core
 * runs them (decoding steps of a token or two, short cross-attention). */
#define MIN_PACKED_ROWS 8

static int64_t round16(int64_t n) { return (n + 15) / 16 * 16; }
static int64_t min64(int64_t a, int64_t b) { return a < b ? a : b; }
static int64_t max64(int64_t a, int64_t b) { return a > b ? a : b; }

/* Room for query rows rounded up to whole panels of any table. */
static int64_t padded_rows(int64_t rows) { return rows + ATTN_PANEL_MAX; }

bool attn_packed_applies(const attn_simd *v, int64_t len_q) {
  return v->panels != NULL && len_q >= MIN_PACKED_ROWS;
}

/* The most rows per register block in any table. */
#define ROWS_MAX 8

/* Keys per item of the shared packing (a multiple of every table's R). */
#define SHARE_KEYS 256

/* Tile layout (64-byte aligned by the callers), rows padded to panels:
 * lo[rows], hi[rows] (int64), m[rows], l[rows], alpha[panel], the query
 * panels [rows, hd], the accumulator [rows, hd], the scores [kb + 8,
 * panel] (a panel's keys may start up to 7 before its block, at a group
 * boundary of the shared buffer) and the packed key and value blocks
 * [kb, hd], each padded to whole groups of rows and on a 16-float
 * boundary. */
typedef struct {
  int64_t *lo, *hi;
  float *m, *l, *alpha, *qp, *acc, *s, *kp, *vp;
} panel_tile;

/* Floats of a packed key or value block of kb keys. */
static int64_t block_floats(int64_t kb, int64_t hd) {
  return round16((kb + ROWS_MAX) * (hd + ROWS_MAX));
}

static panel_tile split_tile(float *tile, int64_t qb, int64_t kb, int64_t hd) {
  int64_t n = padded_rows(qb);
  panel_tile t;
  t.lo = (int64_t *)(void *)tile;
  t.hi = t.lo + n;
  t.m = tile + round16(4 * n);
  t.l = t.m + n;
  t.alpha = tile + round16(4 * n) + round16(2 * n);
  t.qp = t.alpha + round16(ATTN_PANEL_MAX);
  t.acc = t.qp + round16(n * hd);
  t.s = t.acc + round16(n * hd);
  t.kp = t.s + round16((kb + ROWS_MAX) * ATTN_PANEL_MAX);
  t.vp = t.kp + block_floats(kb, hd);
  return t;
}

int64_t attn_packed_tile_floats(int64_t qb, int64_t kb, int64_t hd) {
  int64_t n = padded_rows(qb);
  return round16(4 * n) + round16(2 * n) + round16(ATTN_PANEL_MAX) +
         2 * round16(n * hd) + round16((kb + ROWS_MAX) * ATTN_PANEL_MAX) +
         2 * block_floats(kb, hd);
}

/* What one head of one query block works on. */
typedef struct {
  const attn_core *c;
  const attn_simd *v;
  const attn_panel_kernels *k;
  int64_t b, h, i0, rows, hd, P;
  const float *key, *value; /* key 0 and value 0 of the head's kv head */
  const uint8_t *pad;       /* key_padding row, or NULL */
  const float *bias;        /* bias of the block's first query, or NULL */
  /* The head's keys and values in the call's shared buffer, or NULL */
  const float *shared_kp, *shared_vp;
  int64_t shared_ldvp;
  panel_tile t;
  bool write_weights;
} panel_work;

/* The block's queries, scaled, as panels [hd, P] (transposed with the
 * table's vector kernel); columns past the last row are zero (their scores
 * are 0, finite, and never read back). */
static void pack_queries(const panel_work *w) {
  const attn_core *c = w->c;
  int64_t P = w->P, hd = w->hd;
  const float *q = c->q + (w->b * c->len_q + w->i0) * c->ldq + w->h * hd;
  for (int64_t p0 = 0; p0 < w->rows; p0 += P) {
    float *dst = w->t.qp + p0 * hd;
    int64_t n = min64(P, w->rows - p0);
    w->v->transpose(q + p0 * c->ldq, c->ldq, n, hd, dst, P);
    for (int64_t d = 0; d < hd; d++)
      for (int64_t r = n; r < P; r++)
        dst[d * P + r] = 0.0f;
    w->v->scale(dst, hd * P, c->heads->scale);
  }
}

/* The keys of panel rows [r0, r0 + n) within [j0, j1): their union
 * [*clo, *chi) (empty when none sees any), and whether some row sees less
 * than all of it. */
static bool panel_keys(const panel_work *w, int64_t r0, int64_t n, int64_t j0,
                       int64_t j1, int64_t *clo, int64_t *chi) {
  const int64_t *lo = w->t.lo + r0, *hi = w->t.hi + r0;
  int64_t a = j1, z = j0;
  for (int64_t r = 0; r < n; r++) {
    int64_t x = max64(lo[r], j0), y = min64(hi[r], j1);
    if (x < y) {
      a = min64(a, x);
      z = max64(z, y);
    }
  }
  bool ragged = false;
  for (int64_t r = 0; r < n; r++)
    ragged |= lo[r] > a || hi[r] < z;
  *clo = a;
  *chi = z;
  return ragged;
}

/* Masks the transposed scores s[keys clo .. clo+n-1, P] of panel rows
 * [r0, r0 + nc): padded keys, keys outside each row's range or before the
 * block's first key j0 (the previous block's), the bias. */
static void mask_panel(const panel_work *w, int64_t r0, int64_t nc, float *s,
                       int64_t clo, int64_t n, int64_t j0, bool ragged) {
  const attn_mask *mk = w->c->mask;
  int64_t P = w->P;
  if (w->pad)
    for (int64_t j = 0; j < n; j++)
      if (w->pad[clo + j])
        for (int64_t c = 0; c < P; c++)
          s[j * P + c] = -INFINITY;
  if (!ragged && !w->bias)
    return;
  for (int64_t c = 0; c < nc; c++) {
    int64_t a = min64(max64(max64(w->t.lo[r0 + c], j0) - clo, 0), n);
    int64_t z = max64(min64(w->t.hi[r0 + c] - clo, n), a);
    for (int64_t j = 0; j < a; j++)
      s[j * P + c] = -INFINITY;
    for (int64_t j = z; j < n; j++)
      s[j * P + c] = -INFINITY;
    if (w->bias) {
      /* A padded key stays at -inf: the bias is never +inf. */
      const float *br = w->bias + (r0 + c) * mk->bias_stride_q + clo;
      for (int64_t j = a; j < z; j++)
        s[j * P + c] += br[j];
    }
  }
}

/* Writes the attention weights of panel rows [r0, r0 + nc), whose
 * probabilities for keys [clo, chi) are the columns of s, scaled by 1/l. */
static void put_weights(const panel_work *w, int64_t r0, int64_t nc,
                        const float *s, int64_t clo, int64_t chi) {
  const attn_core *c = w->c;
  int64_t H = c->heads->num_heads, P = w->P;
  bool avg = c->weights_mode == ATTN_WEIGHTS_AVERAGE;
  bool first = !avg || w->h == 0;
  float f = avg ? 1.0f / (float)H : 1.0f;
  float empty = c->mask->empty_rows == ATTN_EMPTY_ROW_NAN ? NAN : 0.0f;
  for (int64_t r = 0; r < nc; r++) {
    int64_t i = w->i0 + r0 + r;
    float *dst =
        avg ? c->weights + (w->b * c->len_q + i) * c->len_k
            : c->weights + ((w->b * H + w->h) * c->len_q + i) * c->len_k;
    float l = w->t.l[r0 + r];
    float inv = l > 0.0f ? f / l : 0.0f;
    for (int64_t j = 0; j < c->len_k; j++) {
      float x = l > 0.0f
                    ? (j >= clo && j < chi ? s[(j - clo) * P + r] * inv : 0.0f)
                    : empty;
      dst[j] = first ? x : dst[j] + x;
    }
  }
}

/* Keys [0, n) of rows k (stride ldk) in groups of R keys: dimension d of
 * key j at kp[(j / R) * hd * R + d * R + j % R], the last group padded with
 * zeros. */
static void pack_keys(const attn_simd *v, int64_t R, const float *k,
                      int64_t ldk, int64_t n, int64_t hd, float *kp) {
  for (int64_t g = 0; g * R < n; g++) {
    const float *src = k + g * R * ldk;
    float *dst = kp + g * hd * R;
    int64_t rows = min64(R, n - g * R);
    if (rows == 8 && R == 8) {
      v->transpose(src, ldk, 8, hd, dst, 8);
      continue;
    }
    for (int64_t r = 0; r < R; r++)
      for (int64_t d = 0; d < hd; d++)
        dst[d * R + r] = r < rows ? src[r * ldk + d] : 0.0f;
  }
}

/* Values [0, n) of rows val (stride ldv) in groups of R dimensions:
 * dimension d of key j at vp[(d / R) * ldvp + j * R + d % R], the last
 * group padded with zeros. */
static void pack_values(int64_t R, const float *val, int64_t ldv, int64_t n,
                        int64_t hd, float *vp, int64_t ldvp) {
  int64_t full = hd / R, tail = hd % R;
  for (int64_t j = 0; j < n; j++) {
    const float *src = val + j * ldv;
    float *dst = vp + j * R;
    /* Constant sizes for the tables' R, so the copies are single moves. */
    if (R == 8)
      for (int64_t g = 0; g < full; g++)
        memcpy(dst + g * ldvp, src + g * 8, 8 * sizeof(float));
    else if (R == 4)
      for (int64_t g = 0; g < full; g++)
        memcpy(dst + g * ldvp, src + g * 4, 4 * sizeof(float));
    else
      for (int64_t g = 0; g < full; g++)
        memcpy(dst + g * ldvp, src + g * R, (size_t)R * sizeof(float));
    if (tail) {
      float *d = dst + full * ldvp;
      for (int64_t r = 0; r < R; r++)
        d[r] = r < tail ? src[full * R + r] : 0.0f;
    }
  }
}

/* Where the packed keys and values of keys [from, ...) are: in the call's
 * shared buffer (packed once per batch row and kv head, origin key 0) or
 * in the tile (packed for this block, origin j0). */
typedef struct {
  const float *kp, *vp;
  int64_t ldvp;
} packed_kv;

static packed_kv block_kv(const panel_work *w, int64_t j0, int64_t kn,
                          int64_t from) {
  int64_t R = w->k->rows, hd = w->hd;
  packed_kv p;
  if (w->shared_kp) {
    p.kp = w->shared_kp + from * hd;
    p.vp = w->shared_vp + from * R;
    p.ldvp = w->shared_ldvp;
  } else {
    p.kp = w->t.kp + (from - j0) * hd;
    p.vp = w->t.vp + (from - j0) * R;
    p.ldvp = kn * R;
  }
  return p;
}

/* Keys [j0, j0 + kn) against every panel of the block. */
static void key_block(const panel_work *w, int64_t j0, int64_t kn) {
  const attn_core *c = w->c;
  const attn_panel_kernels *k = w->k;
  int64_t P = w->P, hd = w->hd, R = k->rows;
  const panel_tile *t = &w->t;
  bool shared = w->shared_kp != NULL;
  if (!shared) {
    pack_keys(w->v, R, w->key + j0 * c->ldk, c->ldk, kn, hd, t->kp);
    pack_values(R, w->value + j0 * c->ldv, c->ldv, kn, hd, t->vp, kn * R);
  }
  /* Packing per block: each panel asks for a share of the next block's
   * keys and values. Each row lies on its own pages, which the hardware
   * prefetchers do not cross, and spreading the requests keeps them from
   * stalling loads. */
  int64_t panels = (w->rows + P - 1) / P, share = (kn + panels - 1) / panels;
  for (int64_t r0 = 0; r0 < w->rows; r0 += P) {
    int64_t nc = min64(P, w->rows - r0), clo, chi;
    for (int64_t j = j0 + kn + r0 / P * share, e = j + share; !shared && j < e;
         j++) {
      attn_stream_prefetch(w->key, j, c->len_k, c->ldk, hd);
      attn_stream_prefetch(w->value, j, c->len_k, c->ldv, hd);
    }
    bool ragged = panel_keys(w, r0, nc, j0, j0 + kn, &clo, &chi);
    if (clo < chi) {
      /* From the group holding clo: keys before clo are hidden from every
       * row of the panel, so the mask gives them exact zeros. */
      int64_t origin = shared ? 0 : j0;
      int64_t from = origin + (clo - origin) / R * R, n = chi - from;
      packed_kv kv = block_kv(w, j0, kn, from);
      ragged |= from < clo;
      k->scores(kv.kp, n, hd, t->qp + r0 * hd, t->s);
      if (ragged || w->pad || w->bias)
        mask_panel(w, r0, nc, t->s, from, n, j0, ragged);
      k->softmax(t->s, n, t->m + r0, t->l + r0, t->alpha);
      k->values(kv.vp, kv.ldvp, n, hd, t->s, t->alpha, t->acc + r0 * hd);
      clo = from;
    }
    if (w->write_weights) /* one block holds whole rows: s is final */
      put_weights(w, r0, nc, t->s, clo, chi);
  }
}

/* The block's outputs: acc / l, or the empty-row value. */
static void put_output(const panel_work *w) {
  const attn_core *c = w->c;
  int64_t P = w->P, hd = w->hd;
  float empty = c->mask->empty_rows == ATTN_EMPTY_ROW_NAN ? NAN : 0.0f;
  for (int64_t p0 = 0; p0 < w->rows; p0 += P) {
    int64_t nc = min64(P, w->rows - p0);
    float *dst = c->ctx + (w->b * c->len_q + w->i0 + p0) * c->ldctx + w->h * hd;
    w->v->transpose(w->t.acc + p0 * hd, P, hd, nc, dst, c->ldctx);
    for (int64_t r = 0; r < nc; r++) {
      float l = w->t.l[p0 + r], *row = dst + r * c->ldctx;
      if (l > 0.0f) {
        w->v->scale(row, hd, 1.0f / l);
      } else {
        for (int64_t d = 0; d < hd; d++)
          row[d] = empty;
      }
    }
  }
}

/* The shared buffer: per (batch row, kv head), the keys packed in groups
 * of R keys, then the values in groups of R dimensions, both over all
 * len_k keys (padded to whole groups). */
static int64_t shared_half(int64_t len_k, int64_t hd) {
  return round16((len_k + ROWS_MAX) * (hd + ROWS_MAX));
}

int64_t attn_packed_shared_head_floats(const attn_core *c) {
  return 2 * shared_half(c->len_k, c->heads->head_dim);
}

typedef struct {
  float *kp, *vp;
  int64_t ldvp;
} shared_head;

static shared_head head_buffers(const attn_core *c, int64_t b, int64_t g) {
  int64_t hd = c->heads->head_dim, half = shared_half(c->len_k, hd);
  const attn_simd *v = c->simd ? c->simd : attn_simd_get();
  int64_t R = v->panels->rows;
  shared_head sh;
  sh.kp =
      c->shared + (b * c->heads->num_kv_heads + g - c->shared_first) * 2 * half;
  sh.vp = sh.kp + half;
  sh.ldvp = (c->len_k + R - 1) / R * R * R;
  return sh;
}

int64_t attn_packed_share_items(const attn_core *c) {
  return c->batch * c->heads->num_kv_heads *
         ((c->len_k + SHARE_KEYS - 1) / SHARE_KEYS);
}

void attn_packed_share(const attn_core *c, int64_t item) {
  const attn_simd *v = c->simd ? c->simd : attn_simd_get();
  int64_t blocks = (c->len_k + SHARE_KEYS - 1) / SHARE_KEYS;
  int64_t j0 = item % blocks * SHARE_KEYS, bg = item / blocks;
  int64_t Hkv = c->heads->num_kv_heads, b = bg / Hkv, g = bg % Hkv;
  int64_t hd = c->heads->head_dim, R = v->panels->rows;
  int64_t kv_rows = c->kv_rows ? c->kv_rows : c->len_k;
  int64_t n = min64(SHARE_KEYS, c->len_k - j0);
  shared_head sh = head_buffers(c, b, g);
  const float *k = c->k + (b * kv_rows + j0) * c->ldk + g * hd;
  const float *val = c->v + (b * kv_rows + j0) * c->ldv + g * hd;
  pack_keys(v, R, k, c->ldk, n, hd, sh.kp + j0 * hd);
  pack_values(R, val, c->ldv, n, hd, sh.vp + j0 * R, sh.ldvp);
}

static void init_work(panel_work *w, const attn_core *c, const attn_simd *v,
                      int64_t b, int64_t h, int64_t i0, int64_t rows,
                      float *tile) {
  const attn_mask *mk = c->mask;
  int64_t hd = c->heads->head_dim;
  int64_t g = attn_kv_head(c->heads, h);
  int64_t kv_rows = c->kv_rows ? c->kv_rows : c->len_k;
  w->c = c;
  w->v = v;
  w->k = v->panels;
  w->b = b;
  w->h = h;
  w->i0 = i0;
  w->rows = rows;
  w->hd = hd;
  w->P = v->panels->panel;
  w->key = c->k + b * kv_rows * c->ldk + g * hd;
  w->value = c->v + b * kv_rows * c->ldv + g * hd;
  w->pad = mk->key_padding ? mk->key_padding + b * c->len_k : NULL;
  w->bias = mk->bias ? mk->bias + b * mk->bias_stride_b +
                           h * mk->bias_stride_h + i0 * mk->bias_stride_q
                     : NULL;
  w->t = split_tile(tile, c->qblock, c->kblock, hd);
  w->shared_kp = w->shared_vp = NULL;
  if (c->shared) {
    shared_head sh = head_buffers(c, b, g);
    w->shared_kp = sh.kp;
    w->shared_vp = sh.vp;
    w->shared_ldvp = sh.ldvp;
  }
  w->write_weights = c->kblock >= c->len_k && c->weights;
}

void attn_packed_head(const attn_core *c, const attn_simd *v, int64_t b,
                      int64_t h, int64_t i0, int64_t rows, float *tile) {
  panel_work w;
  init_work(&w, c, v, b, h, i0, rows, tile);
  int64_t *lo = w.t.lo, *hi = w.t.hi;
  attn_mask_ranges(c->mask, b, c->len_q, c->len_k, i0, rows, lo, hi);
  /* Keys outside [jmin, jmax) are hidden from every row: never computed. */
  int64_t jmin = c->len_k, jmax = 0;
  for (int64_t r = 0; r < rows; r++) {
    if (lo[r] >= hi[r])
      continue;
    jmin = min64(lo[r], jmin);
    jmax = max64(hi[r], jmax);
  }
  int64_t n = (rows + w.P - 1) / w.P * w.P;
  for (int64_t r = 0; r < n; r++) {
    w.t.m[r] = -INFINITY;
    w.t.l[r] = 0.0f;
  }
  pack_queries(&w);
  memset(w.t.acc, 0, (size_t)(n * w.hd) * sizeof(float));

  if (c->kblock >= c->len_k) {
    /* Whole rows: one block, even an empty one (the weights are then
     * written all the same). */
    key_block(&w, jmin, max64(jmax - jmin, 0));
  } else {
    for (int64_t j0 = jmin; j0 < jmax; j0 += c->kblock) {
      int64_t kn = min64(c->kblock, jmax - j0);
      if (!attn_keys_all_padded(w.pad, j0, kn))
        key_block(&w, j0, kn);
    }
  }
  put_output(&w);
}
