/* The attention core: for one (batch row, head, block of queries), loop over
 * blocks of keys with scores and P*V on strided head views (cblas_sgemm),
 * and the online softmax in between. Memory per thread is
 * O(qblock * (kblock + head_dim)), whatever the sequence lengths. */
#include "kernels.h"

#include <cblas.h>
#include <math.h>
#include <string.h>

/* Tile layout inside a thread's scratch: s, acc, m, l, then lo/hi. */
int64_t attn_core_tile_floats(int64_t qb, int64_t kb, int64_t hd) {
  /* lo and hi are int64: two floats each. */
  return qb * kb + qb * hd + 2 * qb + 4 * qb;
}

void attn_core_blocks(const attn_layer *l, int64_t len_q, int64_t len_k,
                      bool want_weights, int64_t *qblock, int64_t *kblock) {
  (void)l;
  int64_t qb = 64, kb = 256;
  *qblock = len_q < qb ? len_q : qb;
  /* Exact weights need whole rows of probabilities: one key block. */
  *kblock = want_weights || len_k < kb ? len_k : kb;
}

static int64_t query_blocks(const attn_core *c) {
  return (c->len_q + c->qblock - 1) / c->qblock;
}

int64_t attn_core_items(const attn_core *c) {
  int64_t per_row = query_blocks(c);
  if (!(c->weights && c->weights_mode == ATTN_WEIGHTS_AVERAGE))
    per_row *= c->layer->num_heads;
  return c->batch * per_row;
}

/* One head of one query block. */
static void run_head(const attn_core *c, int64_t b, int64_t h, int64_t i0,
                     int64_t rows, float *tile) {
  const attn_layer *L = c->layer;
  const attn_mask *mk = c->mask;
  int64_t hd = L->head_dim, H = L->num_heads;
  int64_t g = h / (H / L->num_kv_heads);
  int64_t qb = c->qblock, kb = c->kblock;
  float *s = tile, *acc = s + qb * kb, *m = acc + qb * hd, *l = m + qb;
  int64_t *lo = (int64_t *)(void *)(l + qb), *hi = lo + qb;

  const float *qp = c->q + (b * c->len_q + i0) * c->ldq + h * hd;
  int64_t kv_rows = c->kv_rows ? c->kv_rows : c->len_k;
  const float *kp = c->k + b * kv_rows * c->ldk + g * hd;
  const float *vp = c->v + b * kv_rows * c->ldv + g * hd;
  const uint8_t *pad = mk->key_padding ? mk->key_padding + b * c->len_k : NULL;
  const float *bias = mk->bias
                          ? mk->bias + b * mk->bias_stride_b +
                                h * mk->bias_stride_h + i0 * mk->bias_stride_q
                          : NULL;

  attn_mask_ranges(mk, b, c->len_q, c->len_k, i0, rows, lo, hi);
  int64_t jmin = c->len_k, jmax = 0;
  for (int64_t r = 0; r < rows; r++) {
    if (lo[r] >= hi[r])
      continue;
    jmin = lo[r] < jmin ? lo[r] : jmin;
    jmax = hi[r] > jmax ? hi[r] : jmax;
  }
  for (int64_t r = 0; r < rows; r++) {
    m[r] = -INFINITY;
    l[r] = 0.0f;
  }
  memset(acc, 0, (size_t)(rows * hd) * sizeof(float));

  int64_t lds = 0;
  for (int64_t j0 = jmin; j0 < jmax; j0 += kb) {
    int64_t kn = jmax - j0 < kb ? jmax - j0 : kb;
    lds = kn;
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, (int)rows, (int)kn,
                (int)hd, L->scale, qp, (int)c->ldq, kp + j0 * c->ldk,
                (int)c->ldk, 0.0f, s, (int)lds);
    attn_mask_tile(s, lds, rows, kn, j0, lo, hi, pad, bias, mk->bias_stride_q);
    attn_softmax_step(s, lds, rows, kn, m, l, acc, hd, hd);
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, (int)rows, (int)hd,
                (int)kn, 1.0f, s, (int)lds, vp + j0 * c->ldv, (int)c->ldv, 1.0f,
                acc, (int)hd);
  }

  float empty = mk->empty_rows == ATTN_EMPTY_ROW_NAN ? NAN : 0.0f;
  for (int64_t r = 0; r < rows; r++) {
    float *dst = c->ctx + (b * c->len_q + i0 + r) * c->ldctx + h * hd;
    const float *a = acc + r * hd;
    if (l[r] > 0.0f) {
      float inv = 1.0f / l[r];
      for (int64_t d = 0; d < hd; d++)
        dst[d] = a[d] * inv;
    } else {
      for (int64_t d = 0; d < hd; d++)
        dst[d] = empty;
    }
  }

  if (!c->weights)
    return;
  /* The whole visible range was one tile: s holds exp(score - max). */
  bool avg = c->weights_mode == ATTN_WEIGHTS_AVERAGE;
  float f = avg ? 1.0f / (float)H : 1.0f;
  for (int64_t r = 0; r < rows; r++) {
    int64_t i = i0 + r;
    float *w = avg ? c->weights + (b * c->len_q + i) * c->len_k
                   : c->weights + ((b * H + h) * c->len_q + i) * c->len_k;
    const float *p = s + r * lds - jmin;
    float inv = l[r] > 0.0f ? f / l[r] : 0.0f;
    bool first = !avg || h == 0;
    for (int64_t j = 0; j < c->len_k; j++) {
      float x =
          l[r] > 0.0f ? (j >= jmin && j < jmax ? p[j] * inv : 0.0f) : empty;
      w[j] = first ? x : w[j] + x;
    }
  }
}

void attn_core_run(const attn_core *c, int64_t item, float *tile) {
  int64_t nqb = query_blocks(c);
  bool all_heads = c->weights && c->weights_mode == ATTN_WEIGHTS_AVERAGE;
  int64_t H = c->layer->num_heads;
  int64_t qblk = item % nqb, rest = item / nqb;
  int64_t h0 = all_heads ? 0 : rest % H;
  int64_t b = all_heads ? rest : rest / H;
  int64_t h1 = all_heads ? H : h0 + 1;
  int64_t i0 = qblk * c->qblock;
  int64_t rows = c->len_q - i0 < c->qblock ? c->len_q - i0 : c->qblock;
  for (int64_t h = h0; h < h1; h++)
    run_head(c, b, h, i0, rows, tile);
}
