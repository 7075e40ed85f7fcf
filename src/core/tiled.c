/* SPDX-License-Identifier: MIT */
/* The attention core: for one (batch row, head, block of queries), loop over
 * blocks of keys with scores and P*V on cblas_sgemm, and the online softmax
 * in between. Q and V are read as strided head views; each key block is
 * copied once, transposed, into the thread's tile, because OpenBLAS's small
 * kernels run the scores twice as fast from it (docs/PERFORMANCE.md). Memory
 * per thread is O(qblock * head_dim + kblock * (head_dim + 64)) floats,
 * whatever the sequence lengths (about 270 KiB with head_dim 64), except when
 * attention weights are asked for: then a key block holds whole rows (kblock =
 * Lk).
 *
 * Threading: work items run on the library's own threads, and every BLAS
 * product inside an item is kept small enough that OpenBLAS runs it in the
 * calling thread (see BLAS_SINGLE_THREAD_MNK), so BLAS threads are never
 * started underneath ours. The block sizes and measurements behind them
 * are in docs/PERFORMANCE.md. */
#include "core/tiled.h"

#include "common/cpu.h"
#include "common/policy.h"
#include "core/choice.h"
#include "core/mask.h"
#include "core/packed.h"
#include "core/simd.h"
#include "core/softmax.h"

#include <cblas.h>
#include <math.h>
#include <string.h>

/* OpenBLAS (0.3.x) runs a product with M*N*K at most 65536 times its
 * GEMM_MULTITHREAD_THRESHOLD (4 unless built otherwise) in the calling
 * thread, and splits bigger ones over its own threads. The core's products
 * stay at or below this. Other BLASes: see the thread notes in attn.h. */
#define BLAS_SINGLE_THREAD_MNK 262144

/* Query rows per work item: a transposed key block and a block of values
 * serve all of them, so more is better (measured: 85 GFLOP/s with 128
 * rows, 89 with 512 on one core, head_dim 64), up to the accumulator
 * filling an eighth of L2 or too few items to share among threads. */
#define MAX_QBLOCK 512
/* The packed core's (measured at L=4096 on one core: 8-10% less time with
 * 1024 rows than with 512; docs/PERFORMANCE.md). */
#define MAX_PACKED_QBLOCK 1024
#define MIN_QBLOCK 64
/* Items a call has at least (when its rows allow), for the threads to
 * share. */
#define MIN_ITEMS 32

/* Query rows per BLAS product (a chunk of an item's rows): scores, mask,
 * softmax and P*V of one chunk run back to back while its scores are in
 * L1. With head_dim 64 the products are then 16 x 256 x 64. */
#define CHUNK_ROWS 16
#define MAX_CHUNK_ROWS 64

/* Up to this many keys, a row's scores are computed whole and the softmax
 * runs once per row (no rescaling of the accumulator); beyond it, keys
 * are processed in blocks (measured: see docs/PERFORMANCE.md). */
#define WHOLE_ROW_MAX_KEYS 256
#define MAX_KEY_BLOCK 1024

/* Keys per block of the packed core: its scores ([keys, panel]) stay in
 * L1 while the softmax and P*V read them (measured: docs/PERFORMANCE.md).
 */
#define PACKED_KEY_BLOCK 256

static int64_t round16(int64_t n) { return (n + 15) / 16 * 16; }

static int64_t min64(int64_t a, int64_t b) { return a < b ? a : b; }
static int64_t max64(int64_t a, int64_t b) { return a > b ? a : b; }

/* Keys per BLAS product for chunks of `rows` rows: the most that keeps the
 * product in the calling thread, a multiple of 16 when possible. */
static int64_t product_keys(int64_t rows, int64_t hd) {
  int64_t n = BLAS_SINGLE_THREAD_MNK / (rows * hd);
  /* Tiny heads would allow huge blocks: keep a chunk's scores (16 rows)
   * within 64 KiB. */
  if (n > MAX_KEY_BLOCK)
    n = MAX_KEY_BLOCK;
  return n >= 16 ? n / 16 * 16 : (n > 0 ? n : 1);
}

/* Tile layout inside a thread's scratch (64-byte aligned by the callers):
 * lo[qb], hi[qb] (int64), m[qb], l[qb], then acc[qb, hd], kt[hd, kb] (the
 * key block, transposed) and s[min(qb, MAX_CHUNK_ROWS), kb], each starting
 * on a 16-float boundary. */
typedef struct {
  int64_t *lo, *hi;
  float *m, *l, *acc, *kt, *s;
} tile_parts;

static tile_parts split_tile(float *tile, int64_t qb, int64_t kb, int64_t hd) {
  tile_parts t;
  t.lo = (int64_t *)(void *)tile;
  t.hi = t.lo + qb;
  t.m = tile + 4 * qb;
  t.l = t.m + qb;
  t.acc = tile + round16(6 * qb);
  t.kt = t.acc + round16(qb * hd);
  t.s = t.kt + round16(hd * kb);
  return t;
}

int64_t attn_core_tile_floats(int64_t qb, int64_t kb, int64_t hd) {
  int64_t cblas = round16(6 * qb) + round16(qb * hd) + round16(hd * kb) +
                  min64(qb, MAX_CHUNK_ROWS) * kb;
  return max64(cblas, attn_packed_tile_floats(qb, kb, hd));
}

/* Fewer than MIN_ITEMS (batch row, head, query block) items? */
static bool too_few_items(int64_t batch, int64_t heads, int64_t len_q,
                          int64_t qb) {
  return batch < MIN_ITEMS &&
         batch * heads * ((len_q + qb - 1) / qb) < MIN_ITEMS;
}

void attn_core_blocks_for(const attn_heads *g, int64_t batch, int64_t len_q,
                          int64_t len_k, bool want_weights, bool packed,
                          int64_t *qblock, int64_t *kblock) {
  int64_t hd = g->head_dim, l2 = attn_cpu()->l2_bytes;
  /* The cblas core keeps its accumulator within an eighth of L2; the
   * packed core touches its query panels and accumulator a panel at a
   * time, and packs each key block once per item: bigger items copy less,
   * as long as both buffers fit in half of L2. */
  int64_t qb = packed ? MAX_PACKED_QBLOCK : MAX_QBLOCK;
  int64_t bytes_per_row = hd * (int64_t)sizeof(float) * (packed ? 2 : 1);
  int64_t l2_share = packed ? l2 / 2 : l2 / 8;
  /* Items are cut smaller only while the whole call has too few of them
   * (B=4, L=256 now runs one query block per head, 32 items, where
   * counting per batch row cut it into four). An item of averaged
   * weights runs every head of its block, so such a call has fewer items
   * than counted here. */
  while (qb > MIN_QBLOCK && (qb * bytes_per_row > l2_share ||
                             too_few_items(batch, g->num_heads, len_q, qb)))
    qb /= 2;
  *qblock = min64(len_q, qb);
  /* Exact weights need whole rows of probabilities: one key block. */
  if (want_weights || len_k <= WHOLE_ROW_MAX_KEYS)
    *kblock = len_k;
  else if (packed)
    *kblock = min64(len_k, PACKED_KEY_BLOCK);
  else
    *kblock = min64(len_k, product_keys(CHUNK_ROWS, hd));
}

static int64_t chunk_rows(const attn_core *c) {
  int64_t r =
      c->gemm_rows > 0 ? min64(c->gemm_rows, MAX_CHUNK_ROWS) : CHUNK_ROWS;
  return min64(r, c->qblock);
}

int32_t attn_core_threads(const attn_core *c, int32_t threads) {
  /* If even one-key products exceed the single-thread limit, the BLAS
   * threads them: our own threads stay off. */
  int64_t hd = c->heads->head_dim;
  if (threads <= 1 || chunk_rows(c) * hd > BLAS_SINGLE_THREAD_MNK)
    return 1;
  /* Scores and P*V: 4 flops per query, key and head dimension. */
  double flops = 4.0 * (double)c->batch * (double)c->heads->num_heads *
                 (double)c->len_q * (double)c->len_k * (double)hd;
  return attn_threads_for(threads, attn_core_items(c), attn_cost_flops(flops));
}

static int64_t query_blocks(const attn_core *c) {
  return (c->len_q + c->qblock - 1) / c->qblock;
}

int64_t attn_core_items(const attn_core *c) {
  int64_t per_row = query_blocks(c);
  if (!(c->weights && c->weights_mode == ATTN_WEIGHTS_AVERAGE))
    per_row *= c->heads->num_heads;
  return c->batch * per_row;
}

/* What one head of one query block works on. */
typedef struct {
  const attn_core *c;
  int64_t b, h, i0, rows, hd;
  const float *q, *k, *v; /* the block's first query row, key 0, value 0 */
  const uint8_t *pad;     /* key_padding row, or NULL */
  const float *bias;      /* bias of the block's first query, or NULL */
  tile_parts t;
  int64_t rc, kc; /* rows and keys per BLAS product */
  bool write_weights;
} head_work;

/* Writes the attention weights of rows r0 .. r0+n-1, whose probabilities
 * for keys [lo, hi) are in s (row stride lds) scaled by 1/l. */
static void put_weights(const head_work *w, int64_t r0, int64_t n,
                        const float *s, int64_t lds, int64_t lo, int64_t hi) {
  const attn_core *c = w->c;
  int64_t H = c->heads->num_heads;
  bool avg = c->weights_mode == ATTN_WEIGHTS_AVERAGE;
  bool first = !avg || w->h == 0;
  float f = avg ? 1.0f / (float)H : 1.0f;
  float empty = c->mask->empty_rows == ATTN_EMPTY_ROW_NAN ? NAN : 0.0f;
  for (int64_t r = 0; r < n; r++) {
    int64_t i = w->i0 + r0 + r;
    float *dst =
        avg ? c->weights + (w->b * c->len_q + i) * c->len_k
            : c->weights + ((w->b * H + w->h) * c->len_q + i) * c->len_k;
    float l = w->t.l[r0 + r];
    const float *p = s + r * lds; /* p[0] is key lo */
    float inv = l > 0.0f ? f / l : 0.0f;
    for (int64_t j = 0; j < c->len_k; j++) {
      float x = l > 0.0f ? (j >= lo && j < hi ? p[j - lo] * inv : 0.0f) : empty;
      dst[j] = first ? x : dst[j] + x;
    }
  }
}

/* Soft-capping and ALiBi on the scores of rows r0 .. r0+n-1 and keys
 * [clo, clo + cols), before the mask. */
static void score_features(const head_work *w, int64_t r0, int64_t n,
                           int64_t clo, int64_t cols) {
  const attn_core *c = w->c;
  const attn_score_fx *fx = c->fx;
  int64_t i = w->i0 + r0;
  int64_t keys = c->mask->key_lengths ? c->mask->key_lengths[w->b] : c->len_k;
  int64_t kv_rows = c->kv_rows ? c->kv_rows : c->len_k;
  attn_score_rows(fx, w->h, fx->qpos ? fx->qpos + w->b * c->len_q + i : NULL,
                  i + (fx->top_left ? 0 : keys - c->len_q),
                  fx->kpos ? fx->kpos + w->b * kv_rows + clo : NULL, clo,
                  w->t.s, c->kblock, n, cols);
}

/* Keys [j0, j0 + kn) against every row of the block, chunk by chunk: the
 * scores, mask, online-softmax step and P*V of a chunk run back to back.
 * kn may be 0 (no visible key at all) when weights are written. */
static void run_key_block(const head_work *w, int64_t j0, int64_t kn) {
  const attn_core *c = w->c;
  const attn_mask *mk = c->mask;
  const attn_simd *vec = attn_simd_get();
  int64_t hd = w->hd, kb = c->kblock;
  const tile_parts *t = &w->t;
  if (kn > 0)
    vec->transpose(w->k + j0 * c->ldk, c->ldk, kn, hd, t->kt, kb);
  for (int64_t r0 = 0; r0 < w->rows; r0 += w->rc) {
    int64_t n = min64(w->rc, w->rows - r0);
    const int64_t *lo = t->lo + r0, *hi = t->hi + r0;
    /* The chunk's keys: the union of its rows' ranges within the block. */
    int64_t clo = j0 + kn, chi = j0;
    bool ragged = false;
    for (int64_t r = 0; r < n; r++) {
      int64_t a = max64(lo[r], j0), z = min64(hi[r], j0 + kn);
      if (a < z) {
        clo = min64(clo, a);
        chi = max64(chi, z);
      }
    }
    for (int64_t r = 0; r < n; r++)
      ragged |= lo[r] > clo || hi[r] < chi;
    if (clo < chi) {
      int64_t cols = chi - clo;
      float *s = t->s;
      const float *q = w->q + r0 * c->ldq;
      for (int64_t p = 0; p < cols; p += w->kc)
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, (int)n,
                    (int)min64(w->kc, cols - p), (int)hd, c->heads->scale, q,
                    (int)c->ldq, t->kt + (clo - j0 + p), (int)kb, 0.0f, s + p,
                    (int)kb);
      if (c->fx)
        score_features(w, r0, n, clo, cols);
      if (ragged || w->pad || w->bias)
        attn_mask_tile(s, kb, n, cols, clo, lo, hi, w->pad,
                       w->bias ? w->bias + r0 * mk->bias_stride_q : NULL,
                       mk->bias_stride_q);
      if (attn_softmax_step(s, kb, n, cols, t->m + r0, t->l + r0,
                            t->acc + r0 * hd, hd, hd) > 0)
        for (int64_t p = 0; p < cols; p += w->kc)
          cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, (int)n,
                      (int)hd, (int)min64(w->kc, cols - p), 1.0f, s + p,
                      (int)kb, w->v + (clo + p) * c->ldv, (int)c->ldv, 1.0f,
                      t->acc + r0 * hd, (int)hd);
    }
    if (w->write_weights) /* one block holds whole rows: s is final */
      put_weights(w, r0, n, t->s, kb, clo, chi);
  }
}

/* One head of one query block. */
static void run_head(const attn_core *c, int64_t b, int64_t h, int64_t i0,
                     int64_t rows, float *tile) {
  const attn_mask *mk = c->mask;
  int64_t hd = c->heads->head_dim;
  int64_t g = attn_kv_head(c->heads, h);
  int64_t kv_rows = c->kv_rows ? c->kv_rows : c->len_k;
  head_work w;
  w.c = c;
  w.b = b;
  w.h = h;
  w.i0 = i0;
  w.rows = rows;
  w.hd = hd;
  w.q = c->q + (b * c->len_q + i0) * c->ldq + h * hd;
  w.k = c->k + b * kv_rows * c->ldk + g * hd;
  w.v = c->v + b * kv_rows * c->ldv + g * hd;
  w.pad = mk->key_padding ? mk->key_padding + b * c->len_k : NULL;
  w.bias = mk->bias ? mk->bias + b * mk->bias_stride_b + h * mk->bias_stride_h +
                          i0 * mk->bias_stride_q
                    : NULL;
  w.t = split_tile(tile, c->qblock, c->kblock, hd);
  w.rc = chunk_rows(c);
  w.kc = product_keys(w.rc, hd);
  bool whole = c->kblock >= c->len_k; /* rows are never split */
  w.write_weights = whole && c->weights;

  /* Keys outside [jmin, jmax) are hidden from every row: never computed. */
  int64_t *lo = w.t.lo, *hi = w.t.hi;
  attn_mask_ranges(mk, b, c->len_q, c->len_k, i0, rows, lo, hi);
  int64_t jmin = c->len_k, jmax = 0;
  for (int64_t r = 0; r < rows; r++) {
    if (lo[r] >= hi[r])
      continue;
    jmin = min64(lo[r], jmin);
    jmax = max64(hi[r], jmax);
  }
  for (int64_t r = 0; r < rows; r++)
    attn_score_start(c->fx, h, &w.t.m[r], &w.t.l[r]);
  memset(w.t.acc, 0, (size_t)(rows * hd) * sizeof(float));

  if (whole) {
    run_key_block(&w, jmin, max64(jmax - jmin, 0));
  } else {
    for (int64_t j0 = jmin; j0 < jmax; j0 += c->kblock) {
      int64_t kn = min64(c->kblock, jmax - j0);
      if (!attn_keys_all_padded(w.pad, j0, kn))
        run_key_block(&w, j0, kn);
    }
  }

  float empty = mk->empty_rows == ATTN_EMPTY_ROW_NAN ? NAN : 0.0f;
  for (int64_t r = 0; r < rows; r++) {
    float *dst = c->ctx + (b * c->len_q + i0 + r) * c->ldctx + h * hd;
    const float *a = w.t.acc + r * hd;
    float l = w.t.l[r];
    if (l > 0.0f) {
      float inv = 1.0f / l;
      for (int64_t d = 0; d < hd; d++)
        dst[d] = a[d] * inv;
    } else {
      for (int64_t d = 0; d < hd; d++)
        dst[d] = empty;
    }
  }
}

/* The packed core runs c's items with table v (the caller's choice, or
 * the library's for ATTN_CORE_AUTO). */
static bool runs_packed(const attn_core *c, const attn_simd *v) {
  return attn_core_choose_packed(c->choice, v, c->len_q, attn_core_plain(c));
}

void attn_core_run(const attn_core *c, int64_t item, float *tile) {
  int64_t nqb = query_blocks(c);
  bool all_heads = c->weights && c->weights_mode == ATTN_WEIGHTS_AVERAGE;
  int64_t H = c->heads->num_heads;
  /* Items run head by head (a head's keys and values stay in cache), and
   * within a head from the last query block to the first: under a causal
   * mask the costly blocks go first and the cheap ones even out the end. */
  int64_t qblk = nqb - 1 - item % nqb, rest = item / nqb;
  int64_t h0 = all_heads ? 0 : rest % H;
  int64_t b = all_heads ? rest : rest / H;
  int64_t h1 = all_heads ? H : h0 + 1;
  int64_t i0 = qblk * c->qblock;
  int64_t rows = min64(c->len_q - i0, c->qblock);
  const attn_simd *v = c->simd ? c->simd : attn_simd_get();
  bool packed = runs_packed(c, v);
  attn_fp_mode fp = attn_score_fp_enter(c->fx);
  for (int64_t h = h0; h < h1; h++) {
    if (packed)
      attn_packed_head(c, v, b, h, i0, rows, tile);
    else
      run_head(c, b, h, i0, rows, tile);
  }
  attn_score_fp_leave(fp);
}

int64_t attn_core_shared_head_floats(const attn_core *c) {
  const attn_simd *v = c->simd ? c->simd : attn_simd_get();
  /* A kv head read by one item only (one query block per head, no
   * grouping) is packed in that item's tile: a pass of its own would only
   * add a hand-over between threads and a trip through the shared buffer
   * (B=8, L=64: 1.02x faster without, bench/ab_forward; with the block
   * rule above 1.02-1.03x at B=4, L=256; docs/PERFORMANCE.md). */
  int64_t users =
      query_blocks(c) * (c->heads->num_heads / c->heads->num_kv_heads);
  if (users == 1)
    return 0;
  return runs_packed(c, v) ? attn_packed_shared_head_floats(c) : 0;
}

/* Bytes of packed keys and values held at once. At L = 16384 (E = 512,
 * 8 heads: 8 MiB per head) packing every head first took the peak memory
 * of a forward pass from 169 to 234 MiB; up to L = 4096 every head of a
 * batch row fits. */
#define SHARED_BYTES (16 << 20)

int64_t attn_core_shared_pairs(const attn_core *c) {
  int64_t Hkv = c->heads->num_kv_heads, pairs = c->batch * Hkv;
  int64_t head = attn_core_shared_head_floats(c) * (int64_t)sizeof(float);
  int64_t budget = c->shared_bytes > 0 ? c->shared_bytes : SHARED_BYTES;
  if (head == 0 || pairs <= budget / head)
    return pairs;
  /* With averaged weights an item runs every head of its batch row. */
  bool rows = c->weights && c->weights_mode == ATTN_WEIGHTS_AVERAGE;
  int64_t least = rows ? Hkv : 1;
  int64_t n = budget / head / least * least;
  return n < least ? least : n;
}

typedef struct {
  const attn_core *core;
  float *tiles;
  int64_t tile_floats;
  int64_t first; /* item offset of the group */
} core_job;

static void share_item(void *ctx, int64_t item, int32_t slot) {
  (void)slot;
  const core_job *j = ctx;
  attn_packed_share(j->core, j->first + item);
}

static void core_item(void *ctx, int64_t item, int32_t slot) {
  const core_job *j = ctx;
  attn_core_run(j->core, j->first + item, j->tiles + slot * j->tile_floats);
}

/* The first core item of (batch row, kv head) pair p (a batch row's
 * items are its heads' in order; with averaged weights p is a whole batch
 * row, p % Hkv == 0). */
static int64_t first_item(int64_t p, int64_t Hkv, int64_t per_row) {
  return p / Hkv * per_row + p % Hkv * (per_row / Hkv);
}

void attn_core_run_all(const attn_core *c, const attn_exec *x, int32_t threads,
                       float *tiles, int64_t tile_floats) {
  attn_core run = *c;
  int64_t pairs = c->batch * c->heads->num_kv_heads;
  if (attn_core_shared_head_floats(c) == 0)
    run.shared = NULL;
  int64_t group = run.shared ? attn_core_shared_pairs(c) : pairs;
  /* Items are ordered by batch row, then head (core items) or kv head
   * (share items), so a group of pairs is a range of each. With averaged
   * weights a core item runs all heads of a batch row, and groups are
   * whole batch rows. */
  int64_t Hkv = c->heads->num_kv_heads;
  int64_t per_row = attn_core_items(c) / c->batch;
  int64_t per_pair = attn_packed_share_items(c) / pairs;
  core_job job = {&run, tiles, tile_floats, 0};
  for (int64_t p0 = 0; p0 < pairs; p0 += group) {
    int64_t p1 = min64(pairs, p0 + group);
    if (run.shared) {
      run.shared_first = p0;
      job.first = p0 * per_pair;
      attn_exec_for(x, threads, (p1 - p0) * per_pair, share_item, &job);
    }
    job.first = first_item(p0, Hkv, per_row);
    attn_exec_for(x, threads, first_item(p1, Hkv, per_row) - job.first,
                  core_item, &job);
  }
}
