/* SPDX-License-Identifier: MIT */
/* The self-attention decoding step over a KV cache. It projects only the
 * new tokens, appends their keys and values to the cache, and attends over
 * the cache in place, a row being capacity slots of [K | V] and a
 * key/value head serving its group of query heads straight from there:
 * ordinary steps through the streaming kernel (core/stream.c), prompts and
 * steps that want the attention weights through the tiled core. */
#include "layer/kv_cache.h"
#include "layer/project.h"
#include "layer/step.h"

#include "common/checked.h"
#include "common/cpu.h"
#include "common/error.h"
#include "common/policy.h"
#include "common/structs.h"
#include "core/linear.h"
#include "core/mask.h"
#include "core/stream.h"
#include "layer/positions.h"

#include <sched.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

/* A step with at most this many new tokens per row and no attention
 * weights asked runs the streaming kernel; longer ones (a prompt) are
 * ordinary attention for the tiled core, and so is every step whose caller
 * named a core (attn_options.core). */
#define STREAMED_MAX_NEW 16

static bool use_stream(int64_t n, const attn_options *o) {
  return n <= STREAMED_MAX_NEW && !o->attn_weights && o->core == ATTN_CORE_AUTO;
}

static const attn_decode_mask mask_defaults = {.struct_size =
                                                   sizeof(attn_decode_mask)};

ATTN_VERSIONED_STRUCT(attn_decode_mask, mask_kind, ATTN_DECODE_MASK_SIZE_0_1,
                      mask_defaults, attn_decode_mask_init_sized)

static attn_status load_mask(const attn_decode_mask *in, int64_t B, int64_t n,
                             attn_decode_mask *m) {
  *m = mask_defaults;
  attn_status st;
  if (in && (st = attn_struct_load(&mask_kind, m, in)) != ATTN_OK)
    return st;
  if ((st = attn_check_empty_rows(m->empty_rows)) != ATTN_OK)
    return st;
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

/* New tokens of row b. */
static int64_t added(const attn_decode_mask *m, int64_t n, int64_t b) {
  return m->new_lengths ? m->new_lengths[b] : n;
}

/* The plan of a step with n new tokens per row over cache c. */
static attn_status plan(const attn_call *call, const attn_layer *l,
                        const attn_kv_cache *c, int64_t n, attn_step_plan *p) {
  attn_status st = attn_kv_owner_check(&c->owner, l, "cache");
  if (st != ATTN_OK || (st = attn_step_check_n(n, "n_new")) != ATTN_OK)
    return st;
  return attn_step_plan_make(call, l, c->batch, n, l->embed_dim + c->slot_ld,
                             c->capacity, 0, use_stream(n, &call->o), p);
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
  attn_call call;
  attn_step_plan p;
  attn_status st = attn_call_load(opts, l, &call);
  if (st != ATTN_OK || (st = plan(&call, l, c, n_new, &p)) != ATTN_OK)
    return st;
  *bytes = p.bytes;
  return ATTN_OK;
}

/* The checks of a step's data: every row has room, every new token is
 * finite. */
static attn_status check_rows(const attn_layer *l, const attn_kv_cache *c,
                              int64_t n, const float *x,
                              const attn_decode_mask *m) {
  int64_t E = l->embed_dim;
  for (int64_t b = 0; b < c->batch; b++) {
    int64_t add = added(m, n, b);
    if (attn_kv_cache_keep(c, b, add) < 0)
      return attn_fail(ATTN_ERR_CAPACITY,
                       "row %lld of the cache holds %lld of %lld tokens: "
                       "%lld more do not fit%s",
                       (long long)b, (long long)attn_kv_cache_held(c, b),
                       (long long)c->capacity, (long long)add,
                       c->window > 0 ? " (a window cache keeps window - 1 "
                                       "old tokens)"
                                     : "");
    if (!attn_all_finite(x + b * n * E, add * E))
      return attn_fail(ATTN_ERR_NOT_FINITE,
                       "x contains NaN or infinity (batch row %lld)",
                       (long long)b);
  }
  return ATTN_OK;
}

/* Every check of attn_decode_step(). */
static attn_status prepare(const attn_layer *l, const attn_kv_cache *c,
                           int64_t B, int64_t n, const float *x,
                           const attn_decode_mask *mask_in, attn_call *call,
                           attn_decode_mask *m, attn_step_plan *p) {
  attn_status st = plan(call, l, c, n, p);
  if (st != ATTN_OK)
    return st;
  if (B != c->batch)
    return attn_fail(ATTN_ERR_BAD_SIZE,
                     "attn_decode_step: batch %lld differs from the cache's "
                     "batch %lld",
                     (long long)B, (long long)c->batch);
  const int64_t *start;
  if ((st = load_mask(mask_in, B, n, m)) != ATTN_OK ||
      (st = attn_layer_check_set(l, "attn_decode_step")) != ATTN_OK ||
      (st = attn_positions_check_step(call, l, B, c->len, n, &start)) !=
          ATTN_OK)
    return st;
  return check_rows(l, c, n, x, m);
}

/* Appends each row's new keys and values (beside their queries in qkv) to
 * the cache and sets lens[b] to the keys the row's queries see (0 for a
 * row without new tokens: its queries are discarded, and skipped).
 * Returns true when some row has fewer than n new tokens. */
static bool append_rows(attn_kv_cache *c, const attn_decode_mask *m, int64_t n,
                        const float *qkv, int64_t ldq, int64_t E,
                        int64_t *lens) {
  bool ragged = false;
  for (int64_t b = 0; b < c->batch; b++) {
    int64_t add = added(m, n, b);
    ragged = ragged || add != n;
    attn_kv_cache_append(c, b, add, qkv + b * n * ldq + E, ldq,
                         m->new_padding ? m->new_padding + b * n : NULL);
    lens[b] = add > 0 ? attn_kv_cache_held(c, b) : 0;
  }
  return ragged;
}

/* The attention places a row's n queries at the end of what the row holds
 * (ATTN_CAUSAL_BOTTOM_RIGHT). A row with fewer new tokens has them moved
 * to the last of its n query rows; the rows before are zeroed queries
 * whose results are dropped. */
static void align_queries(float *qkv, int64_t ldq, int64_t E, int64_t n,
                          int64_t add) {
  int64_t shift = n - add;
  for (int64_t i = add - 1; i >= 0 && shift > 0; i--)
    memcpy(qkv + (i + shift) * ldq, qkv + i * ldq, (size_t)E * sizeof(float));
  for (int64_t i = 0; i < shift; i++)
    memset(qkv + i * ldq, 0, (size_t)E * sizeof(float));
}

/* Undoes align_queries on the results of a row (and its weight rows,
 * capacity columns each, groups of them). */
static void unalign_results(float *ctx, int64_t ldq, int64_t E, int64_t n,
                            int64_t add, float *w, int64_t groups,
                            int64_t cols) {
  int64_t shift = n - add;
  if (shift == 0)
    return;
  for (int64_t i = 0; i < add; i++)
    memcpy(ctx + i * ldq, ctx + (i + shift) * ldq, (size_t)E * sizeof(float));
  for (int64_t g = 0; w && g < groups; g++) {
    float *wg = w + g * n * cols;
    memmove(wg, wg + shift * cols, (size_t)(add * cols) * sizeof(float));
    memset(wg + add * cols, 0, (size_t)(shift * cols) * sizeof(float));
  }
}

typedef struct {
  const attn_stream *a;
  float *tiles;
  int64_t tile_floats;
  atomic_llong *done;  /* [B] chunks of the row finished */
  atomic_llong merged; /* rows merged */
} stream_job;

/* A chunk, then the merge of its row by whichever thread finishes the
 * row's last chunk: no second parallel loop (and no second hand-over to
 * the workers) per step. The merge reads the chunks in their order, so
 * who runs it does not change the result; the acquire-release count
 * makes every chunk's partial results visible to it. */
static void chunk_item(void *ctx, int64_t item, int32_t slot) {
  stream_job *j = ctx;
  attn_stream_chunk(j->a, item, j->tiles + slot * j->tile_floats);
  int64_t b = item / j->a->chunks;
  if (atomic_fetch_add_explicit(&j->done[b], 1, memory_order_acq_rel) + 1 ==
      j->a->chunks) {
    attn_stream_merge(j->a, b);
    atomic_fetch_add_explicit(&j->merged, 1, memory_order_release);
  }
}

/* The streaming kernel's description of a step over cache c whose rows
 * will hold lens[b] keys (max_held at most), and its job. */
static void stream_setup(const attn_layer *l, const attn_kv_cache *c, int64_t n,
                         float *qkv, int64_t ldq, const int64_t *lens,
                         int64_t max_held, int32_t empty,
                         const attn_step_plan *p, float *f, attn_stream *a,
                         attn_score_fx *fx, stream_job *job) {
  *a = (attn_stream){.heads = &l->heads,
                     .n = n,
                     .q = qkv,
                     .ldq = ldq,
                     .k = c->kv,
                     .v = c->kv + c->kv_dim,
                     .ldkv = c->slot_ld,
                     .kv_rows = c->capacity,
                     .held = lens,
                     .pad = c->any_pad ? c->pad : NULL,
                     .window = c->window,
                     .ctx = qkv,
                     .ldctx = ldq,
                     .empty_rows = empty,
                     .chunks = attn_stream_chunks(max_held),
                     .partial = f + p->partial_off};
  a->fx = attn_layer_score_fx(l, NULL, NULL, fx);
  job->a = a;
  job->tiles = f + p->tile_off;
  job->tile_floats = p->tile_floats;
  job->done = (atomic_llong *)(void *)(f + p->done_off);
  for (int64_t b = 0; b < c->batch; b++)
    atomic_init(&job->done[b], 0);
  atomic_init(&job->merged, 0);
}

/* The streaming kernel over the cache: chunks, each row merged as soon as
 * its chunks are done. */
static void attend_streamed(const attn_call *call, const attn_layer *l,
                            const attn_kv_cache *c, int64_t n, float *qkv,
                            int64_t ldq, const int64_t *lens, int32_t empty,
                            const attn_step_plan *p, float *f) {
  int64_t max_held = 0, all_held = 0;
  for (int64_t b = 0; b < c->batch; b++) {
    max_held = lens[b] > max_held ? lens[b] : max_held;
    all_held += lens[b];
  }
  attn_stream a;
  attn_score_fx fx;
  stream_job job;
  stream_setup(l, c, n, qkv, ldq, lens, max_held, empty, p, f, &a, &fx, &job);
  double bytes = (double)all_held * (double)c->slot_ld * sizeof(float);
  int64_t chunks = c->batch * a.chunks;
  attn_exec_for(&call->x,
                attn_threads_for(p->threads, chunks, attn_cost_bytes(bytes)),
                chunks, chunk_item, &job);
}

/* The tiled core over the cache, queries at the end of each row. */
static void attend_tiled(const attn_call *call, const attn_layer *l,
                         const attn_kv_cache *c, int64_t n, float *qkv,
                         int64_t ldq, int64_t *lens, int32_t empty,
                         const attn_step_plan *p, float *f) {
  attn_mask m;
  attn_mask_init(&m);
  m.causal = ATTN_CAUSAL_BOTTOM_RIGHT;
  m.empty_rows = empty;
  m.key_lengths = lens;
  m.key_padding = c->any_pad ? c->pad : NULL;
  m.window = c->window;
  attn_kv_view kv = {c->kv, c->kv + c->kv_dim, c->slot_ld, c->slot_ld,
                     c->capacity};
  attn_core core =
      attn_call_core(call, l, &m, c->batch, n, c->capacity, qkv, ldq, kv);
  attn_score_fx fx;
  core.fx = attn_layer_score_fx(l, NULL, NULL, &fx);
  attn_core_run_all(&core, &call->x, p->threads, f + p->tile_off,
                    p->tile_floats);
}

/* Steps of at most this many rows (the few-row projection kernel's limit
 * in project.c) may run as one parallel loop. */
#define FUSED_MAX_ROWS 8

/* One parallel loop for a whole step: its items are the Q/K/V projection's
 * column blocks, then the attention's chunks, then the output
 * projection's column blocks, handed out in that order. The thread that
 * finishes the last projection block appends the new keys and values to
 * the cache; chunks wait for that, and output blocks wait until every row
 * is merged. Every item waited for was handed out before the waiting one
 * and is running on a thread that waits for nothing later, so the waits
 * end. Workers of the runtime's pool are woken once per step instead of
 * three times (each join measured at about 40 us). The blocks and chunks
 * are those of the three loops run apart, so are the results. */
typedef struct {
  attn_rows_linear qkv, out;
  int64_t qkv_items, chunk_items, batch;
  atomic_llong projected, appended;
  attn_kv_cache *cache;
  const attn_decode_mask *m;
  int64_t n, E;
  int64_t *lens;
  stream_job sj;
} fused_job;

/* Spins briefly, then yields the core: on a loaded machine the thread
 * waited for may need it. */
static void wait_for(atomic_llong *v, int64_t want) {
  for (int spins = 0; atomic_load_explicit(v, memory_order_acquire) < want;
       spins++) {
    if (spins >= 1000) {
      sched_yield();
      continue;
    }
    attn_cpu_relax();
  }
}

static void fused_item(void *ctx, int64_t item, int32_t slot) {
  fused_job *j = ctx;
  if (item < j->qkv_items) {
    attn_rows_linear_block(&j->qkv, item);
    if (atomic_fetch_add_explicit(&j->projected, 1, memory_order_acq_rel) + 1 ==
        j->qkv_items) {
      append_rows(j->cache, j->m, j->n, j->qkv.y, j->qkv.ldy, j->E, j->lens);
      atomic_store_explicit(&j->appended, 1, memory_order_release);
    }
    return;
  }
  item -= j->qkv_items;
  if (item < j->chunk_items) {
    wait_for(&j->appended, 1);
    chunk_item(&j->sj, item, slot);
    return;
  }
  wait_for(&j->sj.merged, j->batch);
  attn_rows_linear_block(&j->out, item - j->chunk_items);
}

static int64_t blocks_of(int64_t cols) {
  return (cols + ATTN_ROWS_LINEAR_BLOCK - 1) / ATTN_ROWS_LINEAR_BLOCK;
}

/* The step as one loop when it qualifies: few rows, every row taking all
 * n tokens without padding, no rotation or QK-norm, the streaming kernel,
 * and no more threads wanted than the plan has tiles for. Returns false,
 * having done nothing, otherwise. */
static bool run_fused(const attn_call *call, const attn_layer *l,
                      attn_kv_cache *c, int64_t n, const float *x,
                      const attn_decode_mask *m, const attn_step_plan *p,
                      float *f, float *out) {
  int64_t B = c->batch, E = l->embed_dim, ldq = p->ldq;
  if (!p->streamed || B * n > FUSED_MAX_ROWS || attn_fx_post(&l->fx) ||
      m->new_lengths || m->new_padding)
    return false;
  int64_t max_held = 0, all_held = 0;
  for (int64_t b = 0; b < B; b++) {
    int64_t held = attn_kv_cache_keep(c, b, n) + n; /* checked: >= 0 */
    max_held = held > max_held ? held : max_held;
    all_held += held;
  }
  float *qkv = f;
  fused_job j = {.qkv = {B * n, ldq, E, x, E, attn_slot_ptr(l, ATTN_SLOT_WQ),
                         attn_bias_span(l, ATTN_SLOT_BQ, ATTN_SLOT_BV), qkv,
                         ldq},
                 .out = {B * n, E, E, qkv, ldq, attn_slot_ptr(l, ATTN_SLOT_WO),
                         attn_bias_ptr(l, ATTN_SLOT_BO), out, E},
                 .qkv_items = blocks_of(ldq),
                 .batch = B,
                 .cache = c,
                 .m = m,
                 .n = n,
                 .E = E,
                 .lens = (int64_t *)(void *)(f + p->lens_off)};
  attn_stream a;
  attn_score_fx fx;
  stream_setup(l, c, n, qkv, ldq, j.lens, max_held, m->empty_rows, p, f, &a,
               &fx, &j.sj);
  j.chunk_items = B * a.chunks;
  int64_t items = j.qkv_items + j.chunk_items + blocks_of(E);
  double bytes =
      ((double)(ldq + E) * (double)E + (double)all_held * (double)c->slot_ld) *
      sizeof(float);
  int32_t threads =
      attn_threads_for(call->x.threads, items, attn_cost_bytes(bytes));
  if (threads > p->threads)
    return false;
  atomic_init(&j.projected, 0);
  atomic_init(&j.appended, 0);
  attn_exec_for(&call->x, threads, items, fused_item, &j);
  return true;
}

/* Everything after the checks: nothing fails here. */
static void run_step(const attn_call *call, const attn_layer *l,
                     attn_kv_cache *c, int64_t n, const float *x,
                     const attn_decode_mask *m, const attn_step_plan *p,
                     float *f, float *out) {
  if (run_fused(call, l, c, n, x, m, p, f, out))
    return;
  int64_t B = c->batch, E = l->embed_dim, ldq = p->ldq;
  float *qkv = f;
  int64_t *lens = (int64_t *)(void *)(f + p->lens_off);
  /* New token i of row b is at the row's position len[b] + i (+ start):
   * its key goes into the cache rotated. */
  const int64_t *start = NULL;
  attn_positions_check_step(call, l, B, c->len, n, &start); /* checked */
  for (int64_t b = 0; b < B; b++)
    lens[b] = c->len[b] + (start ? start[b] : 0);
  attn_qk_post post = {l, 0, E, E, l->heads.kv_dim, NULL, NULL, lens, n};
  attn_project_step_post(&call->x, B * n, ldq, E, x, E,
                         attn_slot_ptr(l, ATTN_SLOT_WQ),
                         attn_bias_span(l, ATTN_SLOT_BQ, ATTN_SLOT_BV), qkv,
                         ldq, attn_fx_post(&l->fx) ? &post : NULL);
  bool ragged = append_rows(c, m, n, qkv, ldq, E, lens);
  for (int64_t b = 0; ragged && b < B; b++)
    align_queries(qkv + b * n * ldq, ldq, E, n, added(m, n, b));
  if (p->streamed)
    attend_streamed(call, l, c, n, qkv, ldq, lens, m->empty_rows, p, f);
  else
    attend_tiled(call, l, c, n, qkv, ldq, lens, m->empty_rows, p, f);
  float *w = call->o.attn_weights;
  int64_t groups =
      call->o.weights_mode == ATTN_WEIGHTS_AVERAGE ? 1 : l->heads.num_heads;
  for (int64_t b = 0; ragged && b < B; b++)
    unalign_results(qkv + b * n * ldq, ldq, E, n, added(m, n, b),
                    w ? w + b * groups * n * c->capacity : NULL, groups,
                    c->capacity);
  attn_project_step(&call->x, B * n, E, E, qkv, ldq,
                    attn_slot_ptr(l, ATTN_SLOT_WO),
                    attn_bias_ptr(l, ATTN_SLOT_BO), out, E);
  for (int64_t b = 0; ragged && b < B; b++) {
    int64_t add = added(m, n, b);
    memset(out + (b * n + add) * E, 0, (size_t)((n - add) * E) * sizeof(float));
  }
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
  attn_call call;
  attn_decode_mask m;
  attn_step_plan p;
  void *mem = NULL;
  float *f = NULL;
  attn_status st = attn_call_load(opts, l, &call);
  if (st != ATTN_OK ||
      (st = prepare(l, c, B, n, x, mask_in, &call, &m, &p)) != ATTN_OK ||
      (st = attn_call_scratch(&call, p.bytes, "attn_decode_scratch_size", &mem,
                              &f)) != ATTN_OK)
    return st;
  /* Nothing fails from here on: the cache changes only now. */
  attn_exec_enter(&call.x);
  run_step(&call, l, c, n, x, &m, &p, f, out);
  attn_call_scratch_done(&call, mem);
  attn_exec_leave(&call.x);
  return ATTN_OK;
}
