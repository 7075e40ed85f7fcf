/* SPDX-License-Identifier: MIT */
/* The cross-attention step: new decoder queries against a memory projected
 * once by attn_memory_set(), through the tiled core. */
#include "layer/memory.h"
#include "layer/positions.h"
#include "layer/project.h"
#include "layer/step.h"

#include "common/checked.h"
#include "common/error.h"
#include "core/mask.h"

#include <stdlib.h>

/* The plan of a step with n queries per row over memory m; pad_bytes of
 * merged padding flags. */
static attn_status plan(const attn_call *call, const attn_layer *l,
                        const attn_memory *m, int64_t n, int64_t len_k,
                        int64_t pad_bytes, attn_step_plan *p) {
  attn_status st = attn_kv_owner_check(&m->owner, l, "memory");
  if (st != ATTN_OK || (st = attn_step_check_n(n, "n")) != ATTN_OK)
    return st;
  return attn_step_plan_make(call, l, m->batch, n, l->embed_dim, len_k,
                             pad_bytes, false, p);
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
  attn_call call;
  attn_step_plan p;
  int64_t len_k = m->len_k > 0 ? m->len_k : m->capacity;
  /* Room for merged padding flags whether or not a mask will need it. */
  attn_status st = attn_call_load(opts, l, &call);
  if (st != ATTN_OK ||
      (st = plan(&call, l, m, n, len_k, m->batch * len_k, &p)) != ATTN_OK)
    return st;
  *bytes = p.bytes;
  return ATTN_OK;
}

/* Every check of attn_cross_step(). */
static attn_status prepare(const attn_layer *l, const attn_memory *mem,
                           int64_t B, int64_t n, const float *query,
                           const attn_mask *mask_in, attn_call *call,
                           attn_mask *m, attn_step_plan *p) {
  attn_status st = attn_kv_owner_check(&mem->owner, l, "memory");
  if (st != ATTN_OK || (st = attn_step_check_n(n, "n")) != ATTN_OK)
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
  int64_t Lk = mem->len_k;
  if ((st = attn_mask_load(mask_in, B, l->heads.num_heads, n, Lk, m)) !=
          ATTN_OK ||
      (st = attn_layer_check_set(l, "attn_cross_step")) != ATTN_OK)
    return st;
  bool merge_pad = m->key_padding && mem->any_pad;
  if ((st = plan(call, l, mem, n, Lk, merge_pad ? B * Lk : 0, p)) != ATTN_OK)
    return st;
  if (!attn_all_finite(query, B * n * l->embed_dim))
    return attn_fail(ATTN_ERR_NOT_FINITE, "query contains NaN or infinity");
  return ATTN_OK;
}

/* The memory's lengths and padding, narrowed by the step's mask m, into
 * the scratch; m then points at them. */
static void merge_mask(const attn_memory *mem, const attn_step_plan *p,
                       float *f, attn_mask *m) {
  int64_t B = mem->batch, Lk = mem->len_k;
  int64_t *lens = (int64_t *)(void *)(f + p->lens_off);
  for (int64_t b = 0; b < B; b++) {
    int64_t k = mem->lengths[b];
    lens[b] = m->key_lengths && m->key_lengths[b] < k ? m->key_lengths[b] : k;
  }
  m->key_lengths = lens;
  if (m->key_padding && mem->any_pad) {
    uint8_t *pad = (uint8_t *)(f + p->pad_off);
    for (int64_t i = 0; i < B * Lk; i++)
      pad[i] = (uint8_t)(mem->pad[i] | m->key_padding[i]);
    m->key_padding = pad;
  } else if (mem->any_pad) {
    m->key_padding = mem->pad;
  }
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
  attn_call call;
  attn_mask m;
  attn_step_plan p;
  void *scratch = NULL;
  float *f = NULL;
  attn_status st = attn_call_load(opts, l, &call);
  if (st != ATTN_OK ||
      (st = prepare(l, mem, B, n, query, mask_in, &call, &m, &p)) != ATTN_OK ||
      (st = attn_call_scratch(&call, p.bytes, "attn_cross_scratch_size",
                              &scratch, &f)) != ATTN_OK)
    return st;

  int64_t E = l->embed_dim;
  attn_qk_post pq = {l, 0, E, 0, 0, NULL, NULL, NULL, 1};
  attn_exec_enter(&call.x);
  attn_project_step_post(
      &call.x, B * n, E, E, query, E, attn_slot_ptr(l, ATTN_SLOT_WQ),
      attn_bias_ptr(l, ATTN_SLOT_BQ), f, E, attn_fx_post(&l->fx) ? &pq : NULL);
  merge_mask(mem, &p, f, &m);
  attn_kv_view kv = {mem->kv, mem->kv + mem->kv_dim, mem->slot_ld, mem->slot_ld,
                     mem->capacity};
  attn_core core = attn_call_core(&call, l, &m, B, n, mem->len_k, f, E, kv);
  attn_score_fx fx;
  core.fx = attn_layer_score_fx(l, NULL, NULL, &fx);
  attn_core_run_all(&core, &call.x, p.threads, f + p.tile_off, p.tile_floats);
  attn_project_step(&call.x, B * n, E, E, f, E, attn_slot_ptr(l, ATTN_SLOT_WO),
                    attn_bias_ptr(l, ATTN_SLOT_BO), out, E);
  attn_call_scratch_done(&call, scratch);
  attn_exec_leave(&call.x);
  return ATTN_OK;
}
