/* Decoding steps: the self-attention step over a KV cache and the
 * cross-attention step over a memory. Both project only the new tokens and
 * attend over the stored keys and values in place, a row being kv_rows =
 * capacity slots of [K | V] and a key/value head serving its group of
 * query heads straight from there: ordinary decoding steps through
 * decode_attn.c's cache-streaming kernel, prompts, steps that want the
 * attention weights and cross steps through the general core (core.c). */
#include "decode.h"

#include <limits.h>
#include <stdlib.h>
#include <string.h>

#define ALIGN_FLOATS 16 /* 64 bytes */

static int64_t round_up(int64_t n) {
  return (n + ALIGN_FLOATS - 1) / ALIGN_FLOATS * ALIGN_FLOATS;
}

/* Where a step's scratch goes, in floats from a 64-byte aligned base: the
 * projected queries (with the new keys and values beside them in a
 * self-attention step), the key lengths the core sees, merged padding
 * flags (cross step only), and one core tile per thread. */
typedef struct {
  int64_t ldq;
  int64_t lens_off, pad_off, tile_off, tile_floats;
  int64_t qblock, kblock;
  bool chunked;                /* decode_attn.c instead of the core */
  int64_t chunks, partial_off; /* its key chunks and partial results */
  int32_t threads;
  size_t bytes;
} step_plan;

/* A self-attention step with at most this many new tokens per row and no
 * attention weights asked runs decode_attn.c's cache-streaming kernel;
 * longer ones (a prompt) are ordinary attention for the core. */
#define CHUNKED_MAX_NEW 16

static attn_status overflow(const char *what) {
  return attn_fail(ATTN_ERR_OVERFLOW, "%s is too large: size overflows", what);
}

/* B rows of n queries, each row ldq floats wide, against len_k keys;
 * `chunked` plans for decode_attn.c over rows of up to len_k keys. */
static attn_status plan_step(const attn_layer *l, int64_t B, int64_t n,
                             int64_t ldq, int64_t len_k, int64_t pad_bytes,
                             bool chunked, const attn_options *o,
                             step_plan *p) {
  memset(p, 0, sizeof *p);
  p->ldq = ldq;
  int64_t rows, a, t;
  if (n > INT_MAX || ldq > INT_MAX || !attn_mul64(B, n, &rows) ||
      !attn_mul64(rows, ldq, &a) || !attn_mul64(rows, l->embed_dim, &t) ||
      a > INT64_MAX / 4)
    return overflow("the new tokens' projections");
  if (o->attn_weights) {
    int64_t w;
    if (!attn_mul64(rows, len_k, &w) ||
        (o->weights_mode == ATTN_WEIGHTS_PER_HEAD &&
         !attn_mul64(w, l->num_heads, &w)) ||
        (uint64_t)w > PTRDIFF_MAX / sizeof(float))
      return overflow("the attention weight output");
  }
  int64_t total = round_up(a);
  p->lens_off = total;
  total += round_up(2 * B); /* B int64 */
  p->pad_off = total;
  total += round_up(pad_bytes / 4 + 1);
  p->chunked = chunked;
  if (chunked) {
    /* n <= CHUNKED_MAX_NEW and len_k <= INT_MAX keep these small. */
    p->chunks = attn_dec_attn_chunks(len_k);
    int64_t part = attn_dec_attn_partial_floats(l, 1, n, p->chunks);
    if (!attn_mul64(part, B, &part) || part > INT64_MAX / 4)
      return overflow("the partial results");
    p->partial_off = total;
    total += round_up(part);
    p->tile_floats = round_up(attn_dec_attn_tile_floats(l, n));
  } else {
    attn_core_blocks(l, n, len_k, o->attn_weights != NULL, &p->qblock,
                     &p->kblock);
    p->tile_floats =
        round_up(attn_core_tile_floats(p->qblock, p->kblock, l->head_dim));
  }
  p->threads = attn_resolve_threads(o->num_threads, l->num_threads);
  p->tile_off = total;
  int64_t tiles;
  if (!attn_mul64(p->tile_floats, p->threads, &tiles) ||
      !attn_add64(total, tiles, &total) ||
      (uint64_t)total > (SIZE_MAX - 64) / sizeof(float))
    return overflow("the scratch memory");
  p->bytes = (size_t)total * sizeof(float) + 64; /* + alignment slack */
  return ATTN_OK;
}

/* Self-attention step ----------------------------------------------------- */

static bool use_chunked(int64_t n, const attn_options *o) {
  return n <= CHUNKED_MAX_NEW && !o->attn_weights;
}

typedef struct {
  const attn_dec_attn *a;
  float *tiles;
  int64_t tile_floats;
} chunk_job;

static void chunk_item(void *ctx, int64_t item, int32_t worker) {
  chunk_job *j = ctx;
  attn_dec_attn_chunk(j->a, item, j->tiles + worker * j->tile_floats);
}

static void merge_item(void *ctx, int64_t item, int32_t worker) {
  (void)worker;
  attn_dec_attn_merge(((chunk_job *)ctx)->a, item);
}

/* Starting a thread costs tens of microseconds, and more when the other
 * cores are busy: a step's small loops take another thread only for at
 * least this much work each. */
#define MACS_PER_THREAD ((int64_t)1 << 21)
#define CACHE_BYTES_PER_THREAD ((int64_t)8 << 20)

static int32_t threads_for(int64_t work, int64_t per_thread, int32_t max) {
  int64_t t = work / per_thread;
  return t < 1 ? 1 : t < max ? (int32_t)t : max;
}

/* Rows of a projection up to which decode_attn.c's kernel runs it. */
#define SMALL_PROJECTION_ROWS 8

static void linear_item(void *ctx, int64_t item, int32_t worker) {
  (void)worker;
  attn_dec_linear_block(ctx, item);
}

/* y[M, N] = x W^T + b as attn_linear. A step's few rows make this a
 * matrix-vector product bound by reading W: a general matrix product would
 * first copy all of W into its packed layout (reading it twice, writing it
 * once), and the BLAS's own threads keep spinning after the call while the
 * attention runs on ours. So few rows go to a small kernel on our
 * threads. */
static void project(bool ours, int64_t M, int64_t N, int64_t K, const float *x,
                    int64_t ldx, const float *w, const float *b, float *y,
                    int64_t ldy, int32_t threads) {
  if (M > SMALL_PROJECTION_ROWS) {
    /* As attn_forward(): on our threads while the BLAS is held to one
     * (blas_threads.c), else one product the BLAS may thread. */
    attn_project(ours, threads, M, N, K, x, ldx, w, b, y, ldy);
    return;
  }
  attn_dec_linear p = {M, N, K, x, ldx, w, b, y, ldy};
  int64_t blocks = (N + ATTN_DEC_LINEAR_BLOCK - 1) / ATTN_DEC_LINEAR_BLOCK;
  attn_parallel_for(threads_for(M * N * K, MACS_PER_THREAD, threads), blocks,
                    linear_item, &p);
}

void attn_decode_mask_init(attn_decode_mask *mask) {
  if (!mask)
    return;
  memset(mask, 0, sizeof *mask);
  mask->struct_size = sizeof *mask;
}

static attn_status load_decode_mask(const attn_decode_mask *in, int64_t B,
                                    int64_t n, attn_decode_mask *m) {
  attn_decode_mask_init(m);
  if (!in)
    return ATTN_OK;
  attn_status st =
      attn_load_struct(m, sizeof *m, in, sizeof *m, "attn_decode_mask");
  if (st != ATTN_OK)
    return st;
  if (m->empty_rows != ATTN_EMPTY_ROW_ZERO &&
      m->empty_rows != ATTN_EMPTY_ROW_NAN)
    return attn_fail(ATTN_ERR_BAD_MASK, "unknown empty_rows mode %d",
                     m->empty_rows);
  if (m->new_lengths)
    for (int64_t b = 0; b < B; b++)
      if (m->new_lengths[b] < 0 || m->new_lengths[b] > n)
        return attn_fail(ATTN_ERR_BAD_MASK,
                         "new_lengths[%lld] = %lld is outside [0, n_new = "
                         "%lld]",
                         (long long)b, (long long)m->new_lengths[b],
                         (long long)n);
  return ATTN_OK;
}

static attn_status check_cache_call(const attn_layer *l, const attn_kv_cache *c,
                                    int64_t n) {
  attn_status st = attn_dec_owner_check(&c->owner, l, "cache");
  if (st != ATTN_OK)
    return st;
  if (n <= 0)
    return attn_fail(ATTN_ERR_BAD_SIZE, "n_new %lld must be positive",
                     (long long)n);
  return ATTN_OK;
}

attn_status attn_decode_scratch_size(const attn_layer *l,
                                     const attn_kv_cache *c, int64_t n_new,
                                     const attn_options *opts, size_t *bytes) {
  if (!l || !c || !bytes)
    return attn_fail(ATTN_ERR_NULL_POINTER,
                     "attn_decode_scratch_size: %s is NULL",
                     !l   ? "layer"
                     : !c ? "cache"
                          : "bytes");
  attn_options o;
  attn_status st = attn_options_load(opts, &o);
  if (st != ATTN_OK || (st = check_cache_call(l, c, n_new)) != ATTN_OK)
    return st;
  step_plan p;
  if ((st = plan_step(l, c->batch, n_new, l->embed_dim + c->slot_ld,
                      c->capacity, 0, use_chunked(n_new, &o), &o, &p)) !=
      ATTN_OK)
    return st;
  *bytes = p.bytes;
  return ATTN_OK;
}

/* Tokens row b holds. */
static int64_t held(const attn_kv_cache *c, int64_t b) {
  return c->len[b] - c->first[b];
}

/* How many held tokens row b keeps before appending `add` new ones: all of
 * them if they fit, else (with a window) the last window - 1; -1 if the
 * new tokens cannot fit. */
static int64_t keep_before_append(const attn_kv_cache *c, int64_t b,
                                  int64_t add) {
  int64_t h = held(c, b);
  if (add <= c->capacity - h)
    return h;
  if (c->window > 0) {
    int64_t keep = h < c->window - 1 ? h : c->window - 1;
    if (add <= c->capacity - keep)
      return keep;
  }
  return -1;
}

/* Drops the oldest tokens of row b so that `keep` remain, moving them to
 * the front of the row. Keys stay in order and contiguous, so the core
 * reads a row the same way whether or not it wrapped. */
static void slide_row(attn_kv_cache *c, int64_t b, int64_t keep) {
  int64_t drop = held(c, b) - keep;
  if (drop <= 0)
    return;
  float *row = c->kv + b * c->capacity * c->slot_ld;
  uint8_t *pad = c->pad + b * c->capacity;
  memmove(row, row + drop * c->slot_ld,
          (size_t)(keep * c->slot_ld) * sizeof(float));
  memmove(pad, pad + drop, (size_t)keep);
  c->first[b] += drop;
}

attn_status attn_decode_step(const attn_layer *l, attn_kv_cache *c, int64_t B,
                             int64_t n, const float *x,
                             const attn_decode_mask *mask_in,
                             const attn_options *opts, float *out) {
  if (!l || !c || !x || !out)
    return attn_fail(ATTN_ERR_NULL_POINTER, "attn_decode_step: %s is NULL",
                     !l   ? "layer"
                     : !c ? "cache"
                     : !x ? "x"
                          : "out");
  attn_options o;
  attn_status st = attn_options_load(opts, &o);
  if (st != ATTN_OK || (st = check_cache_call(l, c, n)) != ATTN_OK)
    return st;
  if (B != c->batch)
    return attn_fail(ATTN_ERR_BAD_SIZE,
                     "attn_decode_step: batch %lld differs from the cache's "
                     "batch %lld",
                     (long long)B, (long long)c->batch);
  attn_decode_mask dm;
  if ((st = load_decode_mask(mask_in, B, n, &dm)) != ATTN_OK)
    return st;
  if ((st = attn_layer_check_set(l, "attn_decode_step")) != ATTN_OK)
    return st;
  int64_t E = l->embed_dim, KV = c->kv_dim, C = c->capacity;
  int64_t ldq = E + c->slot_ld;
  step_plan p;
  if ((st = plan_step(l, B, n, ldq, C, 0, use_chunked(n, &o), &o, &p)) !=
      ATTN_OK)
    return st;
  for (int64_t b = 0; b < B; b++) {
    int64_t add = dm.new_lengths ? dm.new_lengths[b] : n;
    if (keep_before_append(c, b, add) < 0)
      return attn_fail(ATTN_ERR_CAPACITY,
                       "row %lld of the cache holds %lld of %lld tokens: "
                       "%lld more do not fit%s",
                       (long long)b, (long long)held(c, b), (long long)C,
                       (long long)add,
                       c->window > 0 ? " (a window cache keeps window - 1 "
                                       "old tokens)"
                                     : "");
    if (!attn_all_finite(x + b * n * E, add * E))
      return attn_fail(ATTN_ERR_NOT_FINITE,
                       "x contains NaN or infinity (batch row %lld)",
                       (long long)b);
  }
  void *mem = NULL;
  float *f = NULL;
  if ((st = attn_scratch_acquire(&o, p.bytes, "attn_decode_scratch_size", &mem,
                                 &f)) != ATTN_OK)
    return st;

  /* Nothing fails from here on: the cache changes only now. Every thread
   * of the step is the library's, as in attn_forward(). */
  bool ours = attn_blas_serial_begin();
  float *qkv = f;
  int64_t *lens = (int64_t *)(void *)(f + p.lens_off);
  project(ours, B * n, ldq, E, x, E, attn_slot_ptr(l, ATTN_SLOT_WQ),
          l->bias ? attn_slot_ptr(l, ATTN_SLOT_BQ) : NULL, qkv, ldq, p.threads);

  bool ragged = false;
  for (int64_t b = 0; b < B; b++) {
    int64_t add = dm.new_lengths ? dm.new_lengths[b] : n;
    ragged = ragged || add != n;
    slide_row(c, b, keep_before_append(c, b, add));
    int64_t h = held(c, b);
    float *slot = c->kv + (b * C + h) * c->slot_ld;
    uint8_t *pad = c->pad + b * C + h;
    for (int64_t i = 0; i < add; i++) {
      memcpy(slot + i * c->slot_ld, qkv + (b * n + i) * ldq + E,
             (size_t)c->slot_ld * sizeof(float));
      pad[i] = dm.new_padding && dm.new_padding[b * n + i] ? 1 : 0;
      c->any_pad = c->any_pad || pad[i];
    }
    c->len[b] += add;
    /* A row without new tokens gets no visible key: its queries are all
     * discarded, so the core skips them. */
    lens[b] = add > 0 ? h + add : 0;
  }

  /* The core places a row's n queries at the end of what the row holds
   * (ATTN_CAUSAL_BOTTOM_RIGHT). A row with fewer new tokens has them moved
   * to the last of its n query rows; the rows before are zeroed queries
   * whose results are dropped. */
  if (ragged)
    for (int64_t b = 0; b < B; b++) {
      int64_t add = dm.new_lengths[b], shift = n - add;
      if (shift == 0)
        continue;
      float *q = qkv + b * n * ldq;
      for (int64_t i = add - 1; i >= 0; i--)
        memcpy(q + (i + shift) * ldq, q + i * ldq, (size_t)E * sizeof(float));
      for (int64_t i = 0; i < shift; i++)
        memset(q + i * ldq, 0, (size_t)E * sizeof(float));
    }

  const uint8_t *pad = c->any_pad ? c->pad : NULL;
  if (p.chunked) {
    int64_t max_held = 0, all_held = 0;
    for (int64_t b = 0; b < B; b++) {
      max_held = lens[b] > max_held ? lens[b] : max_held;
      all_held += lens[b];
    }
    attn_dec_attn a = {.layer = l,
                       .n = n,
                       .q = qkv,
                       .ldq = ldq,
                       .k = c->kv,
                       .v = c->kv + KV,
                       .ldkv = c->slot_ld,
                       .kv_rows = C,
                       .held = lens,
                       .pad = pad,
                       .window = c->window,
                       .ctx = qkv,
                       .ldctx = ldq,
                       .empty_rows = dm.empty_rows,
                       .chunks = attn_dec_attn_chunks(max_held),
                       .partial = f + p.partial_off};
    chunk_job job = {&a, f + p.tile_off, p.tile_floats};
    int64_t bytes = all_held * c->slot_ld * (int64_t)sizeof(float);
    attn_parallel_for(threads_for(bytes, CACHE_BYTES_PER_THREAD, p.threads),
                      B * a.chunks, chunk_item, &job);
    /* The merge reads chunks * (head_dim + 2) floats per query row: only
     * worth threads when that is a lot. */
    int64_t merge_work = B * a.chunks * n * l->num_heads * l->head_dim;
    attn_parallel_for(merge_work > (1 << 20) ? p.threads : 1, B, merge_item,
                      &job);
  } else {
    attn_mask m;
    attn_mask_init(&m);
    m.causal = ATTN_CAUSAL_BOTTOM_RIGHT;
    m.empty_rows = dm.empty_rows;
    m.key_lengths = lens;
    m.key_padding = pad;
    m.window = c->window;
    attn_core core = {.layer = l,
                      .mask = &m,
                      .batch = B,
                      .len_q = n,
                      .len_k = C,
                      .q = qkv,
                      .k = c->kv,
                      .v = c->kv + KV,
                      .ldq = ldq,
                      .ldk = c->slot_ld,
                      .ldv = c->slot_ld,
                      .kv_rows = C,
                      .ctx = qkv,
                      .ldctx = ldq,
                      .weights = o.attn_weights,
                      .weights_mode = o.weights_mode,
                      .qblock = p.qblock,
                      .kblock = p.kblock};
    attn_core_run_all(&core, p.threads, f + p.tile_off, p.tile_floats);
  }

  if (ragged)
    for (int64_t b = 0; b < B; b++) {
      int64_t add = dm.new_lengths[b], shift = n - add;
      if (shift == 0)
        continue;
      float *ctx = qkv + b * n * ldq;
      for (int64_t i = 0; i < add; i++)
        memcpy(ctx + i * ldq, ctx + (i + shift) * ldq,
               (size_t)E * sizeof(float));
      if (!o.attn_weights)
        continue;
      int64_t groups =
          o.weights_mode == ATTN_WEIGHTS_AVERAGE ? 1 : l->num_heads;
      for (int64_t g = 0; g < groups; g++) {
        float *w = o.attn_weights + (b * groups + g) * n * C;
        memmove(w, w + shift * C, (size_t)(add * C) * sizeof(float));
        memset(w + add * C, 0, (size_t)(shift * C) * sizeof(float));
      }
    }

  project(ours, B * n, E, E, qkv, ldq, attn_slot_ptr(l, ATTN_SLOT_WO),
          l->bias ? attn_slot_ptr(l, ATTN_SLOT_BO) : NULL, out, E, p.threads);
  if (ragged)
    for (int64_t b = 0; b < B; b++) {
      int64_t add = dm.new_lengths[b];
      memset(out + (b * n + add) * E, 0,
             (size_t)((n - add) * E) * sizeof(float));
    }
  if (ours)
    attn_blas_serial_end();
  free(mem);
  return ATTN_OK;
}

/* Cross-attention step --------------------------------------------------- */

static attn_status check_memory_call(const attn_layer *l, const attn_memory *m,
                                     int64_t n) {
  attn_status st = attn_dec_owner_check(&m->owner, l, "memory");
  if (st != ATTN_OK)
    return st;
  if (n <= 0)
    return attn_fail(ATTN_ERR_BAD_SIZE, "n %lld must be positive",
                     (long long)n);
  return ATTN_OK;
}

attn_status attn_cross_scratch_size(const attn_layer *l, const attn_memory *m,
                                    int64_t n, const attn_options *opts,
                                    size_t *bytes) {
  if (!l || !m || !bytes)
    return attn_fail(ATTN_ERR_NULL_POINTER,
                     "attn_cross_scratch_size: %s is NULL",
                     !l   ? "layer"
                     : !m ? "mem"
                          : "bytes");
  attn_options o;
  attn_status st = attn_options_load(opts, &o);
  if (st != ATTN_OK || (st = check_memory_call(l, m, n)) != ATTN_OK)
    return st;
  int64_t len_k = m->len_k > 0 ? m->len_k : m->capacity;
  step_plan p;
  /* Room for merged padding flags whether or not a mask will need it. */
  if ((st = plan_step(l, m->batch, n, l->embed_dim, len_k, m->batch * len_k,
                      false, &o, &p)) != ATTN_OK)
    return st;
  *bytes = p.bytes;
  return ATTN_OK;
}

attn_status attn_cross_step(const attn_layer *l, const attn_memory *mem,
                            int64_t B, int64_t n, const float *query,
                            const attn_mask *mask_in, const attn_options *opts,
                            float *out) {
  if (!l || !mem || !query || !out)
    return attn_fail(ATTN_ERR_NULL_POINTER, "attn_cross_step: %s is NULL",
                     !l       ? "layer"
                     : !mem   ? "mem"
                     : !query ? "query"
                              : "out");
  attn_options o;
  attn_status st = attn_options_load(opts, &o);
  if (st != ATTN_OK || (st = check_memory_call(l, mem, n)) != ATTN_OK)
    return st;
  if (B != mem->batch)
    return attn_fail(ATTN_ERR_BAD_SIZE,
                     "attn_cross_step: batch %lld differs from the memory's "
                     "batch %lld",
                     (long long)B, (long long)mem->batch);
  if (mem->len_k == 0)
    return attn_fail(ATTN_ERR_BAD_SIZE,
                     "attn_cross_step: the memory is empty (call "
                     "attn_memory_set first)");
  int64_t E = l->embed_dim, Lk = mem->len_k;
  attn_mask m;
  if ((st = attn_mask_load(mask_in, B, l->num_heads, n, Lk, &m)) != ATTN_OK)
    return st;
  if ((st = attn_layer_check_set(l, "attn_cross_step")) != ATTN_OK)
    return st;
  bool merge_pad = m.key_padding && mem->any_pad;
  step_plan p;
  if ((st = plan_step(l, B, n, E, Lk, merge_pad ? B * Lk : 0, false, &o, &p)) !=
      ATTN_OK)
    return st;
  if (!attn_all_finite(query, B * n * E))
    return attn_fail(ATTN_ERR_NOT_FINITE, "query contains NaN or infinity");
  void *scratch;
  float *f = NULL;
  if ((st = attn_scratch_acquire(&o, p.bytes, "attn_cross_scratch_size",
                                 &scratch, &f)) != ATTN_OK)
    return st;

  bool ours = attn_blas_serial_begin();
  float *q = f;
  project(ours, B * n, E, E, query, E, attn_slot_ptr(l, ATTN_SLOT_WQ),
          l->bias ? attn_slot_ptr(l, ATTN_SLOT_BQ) : NULL, q, E, p.threads);
  /* The memory's lengths and padding, narrowed by the step's mask. */
  int64_t *lens = (int64_t *)(void *)(f + p.lens_off);
  for (int64_t b = 0; b < B; b++) {
    int64_t k = mem->lengths[b];
    lens[b] = m.key_lengths && m.key_lengths[b] < k ? m.key_lengths[b] : k;
  }
  m.key_lengths = lens;
  if (merge_pad) {
    uint8_t *pad = (uint8_t *)(f + p.pad_off);
    for (int64_t i = 0; i < B * Lk; i++)
      pad[i] = (uint8_t)(mem->pad[i] | m.key_padding[i]);
    m.key_padding = pad;
  } else if (mem->any_pad) {
    m.key_padding = mem->pad;
  }
  attn_core core = {.layer = l,
                    .mask = &m,
                    .batch = B,
                    .len_q = n,
                    .len_k = Lk,
                    .q = q,
                    .k = mem->kv,
                    .v = mem->kv + mem->kv_dim,
                    .ldq = E,
                    .ldk = mem->slot_ld,
                    .ldv = mem->slot_ld,
                    .kv_rows = mem->capacity,
                    .ctx = q,
                    .ldctx = E,
                    .weights = o.attn_weights,
                    .weights_mode = o.weights_mode,
                    .qblock = p.qblock,
                    .kblock = p.kblock};
  attn_core_run_all(&core, p.threads, f + p.tile_off, p.tile_floats);
  project(ours, B * n, E, E, q, E, attn_slot_ptr(l, ATTN_SLOT_WO),
          l->bias ? attn_slot_ptr(l, ATTN_SLOT_BO) : NULL, out, E, p.threads);
  if (ours)
    attn_blas_serial_end();
  free(scratch);
  return ATTN_OK;
}
