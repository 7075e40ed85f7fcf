/* SPDX-License-Identifier: MIT */
/* Options, scratch and the core's description of a call (call.h). */
#include "layer/call.h"

#include "common/checked.h"
#include "common/error.h"
#include "common/policy.h"
#include "common/structs.h"
#include "core/choice.h"
#include "layer/positions.h"

#include <stdatomic.h>
#include <stdlib.h>

static const attn_options options_defaults = {.struct_size =
                                                  sizeof(attn_options)};

ATTN_VERSIONED_STRUCT(attn_options, options_kind, ATTN_OPTIONS_SIZE_0_1,
                      options_defaults, attn_options_init_sized)

attn_status attn_call_load(const attn_options *in, const attn_layer *l,
                           attn_call *c) {
  attn_options *o = &c->o;
  *o = options_defaults;
  attn_status st;
  if (in && (st = attn_struct_load(&options_kind, o, in)) != ATTN_OK)
    return st;
  if (o->weights_mode != ATTN_WEIGHTS_PER_HEAD &&
      o->weights_mode != ATTN_WEIGHTS_AVERAGE)
    return attn_fail(ATTN_ERR_BAD_OPTION, "unknown weights_mode %d",
                     o->weights_mode);
  if (o->num_threads < 0)
    return attn_fail(ATTN_ERR_BAD_OPTION,
                     "num_threads %d must not be negative (0 means the "
                     "layer's setting)",
                     o->num_threads);
  if (o->reserved != 0)
    return attn_fail(ATTN_ERR_BAD_OPTION,
                     "attn_options.reserved is %d; it must be 0", o->reserved);
  attn_score_fx fx;
  if ((st = attn_core_check(
           o->core, attn_layer_score_fx(l, NULL, NULL, &fx))) != ATTN_OK)
    return st;
  return attn_exec_resolve(o->runtime, o->num_threads, l->num_threads, &c->x);
}

int64_t attn_layout_add(attn_layout *s, int64_t n, int64_t count) {
  int64_t off = s->floats, total, rounded;
  if (s->overflow || !attn_mul64(n, count, &total) ||
      !attn_round_floats(total, &rounded) ||
      !attn_add64(s->floats, rounded, &s->floats))
    s->overflow = true;
  return off;
}

attn_status attn_layout_bytes(const attn_layout *s, size_t *bytes) {
  if (s->overflow || (uint64_t)s->floats > (SIZE_MAX - 64) / sizeof(float))
    return attn_fail_overflow("the scratch memory");
  *bytes = (size_t)s->floats * sizeof(float) + 64; /* + alignment slack */
  return ATTN_OK;
}

void attn_layout_core(const attn_call *c, const attn_layer *l, int64_t batch,
                      int64_t len_q, int64_t len_k, attn_layout *s,
                      int32_t *threads, int64_t *tile_off,
                      int64_t *tile_floats) {
  attn_core core = attn_call_core(c, l, NULL, batch, len_q, len_k, NULL, 0,
                                  (attn_kv_view){0});
  *threads = attn_core_threads(&core, c->x.threads);
  *tile_floats =
      attn_core_tile_floats(core.qblock, core.kblock, l->heads.head_dim);
  attn_round_floats(*tile_floats, tile_floats);
  *tile_off = attn_layout_add(s, *tile_floats, *threads);
}

attn_status attn_check_weights_out(const attn_layer *l, int64_t rows,
                                   int64_t len_k, const attn_options *o) {
  int64_t w;
  if (!o->attn_weights)
    return ATTN_OK;
  if (!attn_mul64(rows, len_k, &w) ||
      (o->weights_mode == ATTN_WEIGHTS_PER_HEAD &&
       !attn_mul64(w, l->heads.num_heads, &w)) ||
      !attn_float_count_ok(w))
    return attn_fail_overflow("the attention weight output");
  return ATTN_OK;
}

attn_status attn_call_scratch(const attn_call *c, size_t need, const char *who,
                              void **mem, float **f) {
  void *base;
  *mem = NULL;
  if (c->o.scratch) {
    if (c->o.scratch_size < need)
      return attn_fail(ATTN_ERR_SCRATCH_TOO_SMALL,
                       "scratch of %zu bytes is smaller than the %zu bytes "
                       "this call needs (%s)",
                       c->o.scratch_size, need, who);
    base = c->o.scratch;
  } else {
    *mem = attn_exec_scratch(&c->x, need);
    if (!*mem)
      return attn_fail(ATTN_ERR_NO_MEMORY,
                       "cannot allocate %zu bytes of scratch", need);
    base = *mem;
  }
  *f = attn_align64(base);
  return ATTN_OK;
}

void attn_call_scratch_done(const attn_call *c, void *mem) {
  attn_exec_scratch_done(&c->x, mem);
}

/* Floats per block of the finite check (256 KiB). */
#define FINITE_BLOCK ((int64_t)1 << 16)

typedef struct {
  const float *p;
  int64_t n;
  atomic_bool bad;
} finite_job;

static void finite_item(void *ctx, int64_t item, int32_t slot) {
  (void)slot;
  finite_job *j = ctx;
  int64_t i0 = item * FINITE_BLOCK;
  int64_t n = j->n - i0 < FINITE_BLOCK ? j->n - i0 : FINITE_BLOCK;
  if (!atomic_load_explicit(&j->bad, memory_order_relaxed) &&
      !attn_all_finite(j->p + i0, n))
    atomic_store_explicit(&j->bad, true, memory_order_relaxed);
}

bool attn_call_all_finite(const attn_call *c, const float *p, int64_t n) {
  int64_t items = (n + FINITE_BLOCK - 1) / FINITE_BLOCK;
  double bytes = (double)n * sizeof(float);
  int32_t threads =
      attn_threads_for(c->x.threads, items, attn_cost_bytes(bytes));
  if (threads <= 1)
    return attn_all_finite(p, n);
  finite_job j = {p, n, false};
  attn_exec_for(&c->x, threads, items, finite_item, &j);
  return !atomic_load_explicit(&j.bad, memory_order_relaxed);
}

attn_core attn_call_core(const attn_call *c, const attn_layer *l,
                         const attn_mask *m, int64_t batch, int64_t len_q,
                         int64_t len_k, float *q, int64_t ldq,
                         attn_kv_view kv) {
  attn_core core = {.heads = &l->heads,
                    .mask = m,
                    .batch = batch,
                    .len_q = len_q,
                    .len_k = len_k,
                    .q = q,
                    .k = kv.k,
                    .v = kv.v,
                    .ldq = ldq,
                    .ldk = kv.ldk,
                    .ldv = kv.ldv,
                    .kv_rows = kv.rows,
                    .ctx = q,
                    .ldctx = ldq,
                    .weights = c->o.attn_weights,
                    .weights_mode = c->o.weights_mode,
                    .choice = c->o.core};
  /* Blocks for the core that will run; score features (core.fx, set by
   * the callers) do not change them. */
  bool packed =
      attn_core_choose_packed(c->o.core, attn_simd_get(), len_q, true);
  attn_core_blocks_for(&l->heads, batch, len_q, len_k,
                       c->o.attn_weights != NULL, packed, &core.qblock,
                       &core.kblock);
  return core;
}
