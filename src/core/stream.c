/* SPDX-License-Identifier: MIT */
/* Attention of a few new queries over long KV cache rows: the loop that
 * bounds a decoding step's speed by the memory bandwidth of reading the
 * cache.
 *
 * The general core (core.c) runs one (batch row, head) per work item with
 * two sgemm calls per key block. For a handful of query rows that costs
 * per-call overheads and BLAS packing copies, and a head reads only its
 * head_dim floats out of each cache slot [K of every head | V of every
 * head]: one short read per 4 KiB page (E = 512), which the hardware
 * prefetchers do not follow, so the step ends up waiting on memory latency
 * instead of streaming. Here a work item is one (batch row, chunk of
 * keys): it walks the chunk's slots in order, reading every key and value
 * once for every query head and every new query row at the same time (a
 * key/value head serves its group of query heads from where it is), and
 * leaves a partial softmax (max, sum, weighted values) per query row. Once
 * all of a row's chunks are done, a merge combines them in order. Chunks
 * give the threads work even for a single sequence, and their size depends
 * only on the shapes, so results never depend on the thread count. */
#include "core/stream.h"

#include "core/mask.h"
#include "core/simd.h"

#include <math.h>
#include <stdbool.h>
#include <string.h>

/* Keys per work item. Each chunk starts its two passes (keys, then
 * values) on cold memory, so longer chunks stream better, and fewer leave
 * threads idle at the end of a short row: measured with 8 heads over 2 kv
 * heads, E = 512, one thread, 256 keys took 0.91 (B = 1) and 0.96 (B = 8)
 * of the time of 128 at 4096 keys, 512 no less than 256 on one thread but
 * 1.08 of it on two at B = 1 (eight chunks for two threads); with 8 kv
 * heads 256 and 128 were even. Its scores take rows * CHUNK floats. */
#define CHUNK 256

/* Query rows of one item: every head of each of the n new tokens, row
 * r = i * num_heads + h. */
static int64_t item_rows(const attn_stream *a) {
  return a->n * a->heads->num_heads;
}

int64_t attn_stream_chunks(int64_t max_held) {
  return max_held > 0 ? (max_held + CHUNK - 1) / CHUNK : 1;
}

int64_t attn_stream_partial_floats(const attn_heads *g, int64_t batch,
                                   int64_t n, int64_t chunks) {
  return batch * chunks * n * g->num_heads * (g->head_dim + 2);
}

int64_t attn_stream_tile_floats(const attn_heads *g, int64_t n) {
  /* Key ranges [n] int64 twice, scores [rows, CHUNK], accumulators
   * [rows, head_dim]. */
  return 4 * n + n * g->num_heads * (CHUNK + g->head_dim);
}

/* Partial results of chunk c of batch row b: per query row m, l and
 * acc[head_dim]. */
static float *partial_at(const attn_stream *a, int64_t b, int64_t c) {
  int64_t rows = item_rows(a), hd = a->heads->head_dim;
  return a->partial + (b * a->chunks + c) * rows * (hd + 2);
}

static void chunk(const attn_stream *a, int64_t item, float *tile) {
  int64_t hd = a->heads->head_dim, H = a->heads->num_heads;
  int64_t rows = item_rows(a), n = a->n;
  int64_t c = item % a->chunks, b = item / a->chunks;
  int64_t held = a->held[b];
  float *out = partial_at(a, b, c);
  /* Tile: key ranges first (8-byte aligned), then scores, accumulators. */
  int64_t *lo = (int64_t *)(void *)tile, *hi = lo + n;
  float *s = (float *)(void *)(hi + n), *acc = s + rows * CHUNK;

  for (int64_t r = 0; r < rows; r++) {
    out[r * (hd + 2)] = -INFINITY;
    out[r * (hd + 2) + 1] = 0.0f;
  }
  /* Visible keys of each new token within this chunk: token i sits at
   * slot held - n + i and sees itself and what precedes it (within the
   * window), as ATTN_CAUSAL_BOTTOM_RIGHT in the tiled core. */
  int64_t j0 = c * CHUNK, j1 = j0 + CHUNK < held ? j0 + CHUNK : held;
  int64_t jmin = j1, jmax = j0;
  for (int64_t i = 0; i < n; i++) {
    attn_key_range(held - n + i, held, true, a->window, &lo[i], &hi[i]);
    lo[i] = lo[i] > j0 ? lo[i] : j0;
    hi[i] = hi[i] < j1 ? hi[i] : j1;
    if (lo[i] < hi[i]) {
      jmin = lo[i] < jmin ? lo[i] : jmin;
      jmax = hi[i] > jmax ? hi[i] : jmax;
    }
  }
  if (held == 0 || jmin >= jmax)
    return;

  const float *slots = a->k + b * a->kv_rows * a->ldkv;
  const float *vslots = a->v + b * a->kv_rows * a->ldkv;
  const uint8_t *pad = a->pad ? a->pad + b * a->kv_rows : NULL;
  const float *q = a->q + b * n * a->ldq;
  int64_t cols = jmax - jmin;

  const attn_simd *vec = attn_simd_get(), *kern = attn_simd_for_head(hd);
  kern->stream_scores(a, q, slots, jmin, jmax, s, CHUNK);
  /* Mask, then exp(score - row max) in place. */
  bool any = false;
  for (int64_t r = 0; r < rows; r++) {
    float *sr = s + r * CHUNK;
    int64_t i = r / H;
    if (a->fx)
      attn_score_rows(a->fx, r % H, NULL, held - n + i, NULL, jmin, sr, CHUNK,
                      1, cols);
    /* Most rows see the whole chunk: nothing to mask. */
    if (pad || lo[i] > jmin || hi[i] < jmax)
      for (int64_t j = jmin; j < jmax; j++)
        if (j < lo[i] || j >= hi[i] || (pad && pad[j]))
          sr[j - jmin] = -INFINITY;
    float m = vec->max(sr, cols);
    if (m == -INFINITY) {
      for (int64_t j = 0; j < cols; j++)
        sr[j] = 0.0f;
      continue;
    }
    out[r * (hd + 2)] = m;
    out[r * (hd + 2) + 1] = vec->exp_sum(sr, cols, m);
    any = true;
  }
  if (!any)
    return;
  /* Weighted values, again in slot order. */
  memset(acc, 0, (size_t)(rows * hd) * sizeof(float));
  kern->stream_values(a, vslots, jmin, jmax, s, CHUNK, acc);
  for (int64_t r = 0; r < rows; r++)
    memcpy(out + r * (hd + 2) + 2, acc + r * hd, (size_t)hd * sizeof(float));
}

void attn_stream_chunk(const attn_stream *a, int64_t item, float *tile) {
  attn_fp_mode fp = attn_score_fp_enter(a->fx); /* ALiBi: see score.h */
  chunk(a, item, tile);
  attn_score_fp_leave(fp);
}

void attn_stream_merge(const attn_stream *a, int64_t b) {
  int64_t hd = a->heads->head_dim, H = a->heads->num_heads;
  int64_t rows = item_rows(a);
  float empty = a->empty_rows == ATTN_EMPTY_ROW_NAN ? NAN : 0.0f;
  for (int64_t r = 0; r < rows; r++) {
    int64_t i = r / H, h = r % H;
    float *dst = a->ctx + (b * a->n + i) * a->ldctx + h * hd;
    float m, l;
    attn_score_start(a->fx, h, &m, &l);
    for (int64_t c = 0; c < a->chunks; c++) {
      const float *o = partial_at(a, b, c) + r * (hd + 2);
      m = o[0] > m ? o[0] : m;
    }
    if (m == -INFINITY) {
      for (int64_t d = 0; d < hd; d++)
        dst[d] = empty;
      continue;
    }
    l = l > 0.0f ? expf(a->fx->sinks[h] - m) : 0.0f; /* the sink's share */
    for (int64_t d = 0; d < hd; d++)
      dst[d] = 0.0f;
    for (int64_t c = 0; c < a->chunks; c++) {
      const float *o = partial_at(a, b, c) + r * (hd + 2);
      if (o[1] == 0.0f)
        continue;
      float f = expf(o[0] - m);
      l += o[1] * f;
      for (int64_t d = 0; d < hd; d++)
        dst[d] += o[2 + d] * f;
    }
    float inv = 1.0f / l;
    for (int64_t d = 0; d < hd; d++)
      dst[d] *= inv;
  }
}
