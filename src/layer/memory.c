/* SPDX-License-Identifier: MIT */
/* The cross-attention memory: an encoder output's keys and values,
 * projected once by attn_memory_set() and read by every attn_cross_step()
 * (cross_step.c). */
#include "layer/memory.h"

#include "common/checked.h"
#include "common/error.h"
#include "common/structs.h"
#include "layer/call.h"
#include "layer/project.h"

#include <limits.h>
#include <stdlib.h>
#include <string.h>

static const attn_memory_config config_defaults = {
    .struct_size = sizeof(attn_memory_config), .batch = 1};

ATTN_VERSIONED_STRUCT(attn_memory_config, config_kind,
                      ATTN_MEMORY_CONFIG_SIZE_0_1, config_defaults,
                      attn_memory_config_init_sized)

static attn_status plan_memory(const attn_layer *l,
                               const attn_memory_config *in, attn_kv_plan *p) {
  if (!l || !in)
    return attn_fail(ATTN_ERR_NULL_POINTER, "attn_memory: %s is NULL",
                     !l ? "layer" : "cfg");
  attn_memory_config c;
  attn_status st = attn_struct_load(&config_kind, &c, in);
  if (st != ATTN_OK)
    return st;
  if (attn_fx_positional(&l->fx))
    return attn_fail(ATTN_ERR_BAD_OPTION,
                     "attn_memory: the layer has rotary embeddings or ALiBi; "
                     "a cross-attention memory has no positions (use "
                     "attn_forward with attn_options.positions)");
  /* One int64 per row: its length. */
  return attn_kv_plan_make(l, c.batch, c.capacity, sizeof(struct attn_memory),
                           1, "memory", p);
}

attn_status attn_memory_size(const attn_layer *l, const attn_memory_config *cfg,
                             size_t *bytes) {
  if (!bytes)
    return attn_fail(ATTN_ERR_NULL_POINTER, "attn_memory_size: bytes is NULL");
  attn_kv_plan p;
  attn_status st = plan_memory(l, cfg, &p);
  if (st == ATTN_OK)
    *bytes = p.bytes;
  return st;
}

/* A memory in buffer (NULL: allocated). */
static attn_status create(const attn_layer *l, const attn_memory_config *cfg,
                          void *buffer, size_t size, attn_memory **out) {
  attn_kv_plan p;
  void *owned;
  unsigned char *base;
  attn_status st = plan_memory(l, cfg, &p);
  if (st != ATTN_OK ||
      (st = attn_kv_store_memory(&p, buffer, size, "cross-attention memory",
                                 "attn_memory_size", &owned, &base)) != ATTN_OK)
    return st;
  attn_memory *m = (attn_memory *)(void *)base;
  memset(m, 0, sizeof *m);
  attn_kv_owner_init(&m->owner, l);
  m->batch = p.batch;
  m->capacity = p.capacity;
  m->kv_dim = l->heads.kv_dim;
  m->slot_ld = p.slot_ld;
  m->kv = (float *)(void *)(base + p.kv_off);
  m->pad = base + p.pad_off;
  m->lengths = (int64_t *)(void *)(base + p.meta_off);
  memset(m->lengths, 0, (size_t)m->batch * sizeof *m->lengths);
  m->owned = owned;
  *out = m;
  return ATTN_OK;
}

attn_status attn_memory_create(const attn_layer *l,
                               const attn_memory_config *cfg,
                               attn_memory **out) {
  if (!out)
    return attn_fail(ATTN_ERR_NULL_POINTER, "attn_memory_create: out is NULL");
  return create(l, cfg, NULL, 0, out);
}

attn_status attn_memory_create_in(const attn_layer *l,
                                  const attn_memory_config *cfg, void *buffer,
                                  size_t size, attn_memory **out) {
  if (!buffer || !out)
    return attn_fail(ATTN_ERR_NULL_POINTER, "attn_memory_create_in: %s is NULL",
                     !buffer ? "buffer" : "out");
  return create(l, cfg, buffer, size, out);
}

void attn_memory_destroy(attn_memory *mem) {
  if (mem)
    free(mem->owned);
}

/* Every check of attn_memory_set() but the options'. */
static attn_status check_set(const attn_layer *l, const attn_memory *m,
                             int64_t batch, int64_t len_k, const float *key,
                             const float *value, const int64_t *key_lengths) {
  attn_status st = attn_kv_owner_check(&m->owner, l, "memory");
  if (st != ATTN_OK)
    return st;
  if (batch != m->batch)
    return attn_fail(ATTN_ERR_BAD_SIZE,
                     "attn_memory_set: batch %lld differs from the memory's "
                     "batch %lld",
                     (long long)batch, (long long)m->batch);
  if (len_k <= 0)
    return attn_fail(ATTN_ERR_BAD_SIZE,
                     "attn_memory_set: len_k %lld must be positive",
                     (long long)len_k);
  if (len_k > m->capacity)
    return attn_fail(ATTN_ERR_CAPACITY,
                     "attn_memory_set: len_k %lld is larger than the "
                     "memory's capacity %lld",
                     (long long)len_k, (long long)m->capacity);
  /* batch * capacity * slot_ld was checked at creation; kdim and vdim may
   * be wider than the slots. */
  int64_t nk = batch * len_k, t;
  if (!attn_mul64(nk, l->kdim, &t) || !attn_float_count_ok(t) ||
      !attn_mul64(nk, l->vdim, &t) || !attn_float_count_ok(t) ||
      l->kdim > INT_MAX || l->vdim > INT_MAX)
    return attn_fail(ATTN_ERR_OVERFLOW,
                     "attn_memory_set: key/value of batch %lld and len_k "
                     "%lld are too large",
                     (long long)batch, (long long)len_k);
  if ((st = attn_layer_check_set(l, "attn_memory_set")) != ATTN_OK)
    return st;
  if (key_lengths)
    for (int64_t b = 0; b < batch; b++)
      if (key_lengths[b] < 0 || key_lengths[b] > len_k)
        return attn_fail(ATTN_ERR_BAD_MASK,
                         "attn_memory_set: key_lengths[%lld] = %lld is "
                         "outside [0, len_k = %lld]",
                         (long long)b, (long long)key_lengths[b],
                         (long long)len_k);
  if (!attn_all_finite(key, nk * l->kdim))
    return attn_fail(ATTN_ERR_NOT_FINITE, "attn_memory_set: key contains NaN "
                                          "or infinity");
  if (value != key && !attn_all_finite(value, nk * l->vdim))
    return attn_fail(ATTN_ERR_NOT_FINITE, "attn_memory_set: value contains "
                                          "NaN or infinity");
  return ATTN_OK;
}

/* The K/V projections into the slots. Wk, Wv (and bk, bv) are adjacent:
 * with one input of one width they form a single [2 KV, kdim] product.
 * Rows of the memory are capacity slots apart, so a product covers all
 * rows only when they are full. */
static void project_memory(const attn_exec *x, const attn_layer *l,
                           attn_memory *m, int64_t batch, int64_t len_k,
                           const float *key, const float *value) {
  int64_t KV = m->kv_dim, ld = m->slot_ld, C = m->capacity;
  const float *wk = attn_slot_ptr(l, ATTN_SLOT_WK);
  const float *wv = attn_slot_ptr(l, ATTN_SLOT_WV);
  const float *bk = attn_bias_ptr(l, ATTN_SLOT_BK);
  const float *bv = attn_bias_ptr(l, ATTN_SLOT_BV);
  bool fused = key == value && l->kdim == l->vdim;
  /* The memory's keys are normed once here (no rotation: refused). */
  attn_qk_post pk = {l, 0, 0, 0, KV, NULL, NULL, NULL, 1};
  const attn_qk_post *post = attn_fx_post(&l->fx) ? &pk : NULL;
  int64_t rows_at_once = len_k == C ? batch : 1;
  for (int64_t b0 = 0; b0 < batch; b0 += rows_at_once) {
    int64_t M = rows_at_once * len_k;
    float *dst = m->kv + b0 * C * ld;
    const float *kin = key + b0 * len_k * l->kdim;
    const float *vin = value + b0 * len_k * l->vdim;
    if (fused) {
      attn_project_post(x, M, 2 * KV, l->kdim, kin, l->kdim, wk,
                        attn_bias_span(l, ATTN_SLOT_BK, ATTN_SLOT_BV), dst, ld,
                        post);
    } else {
      attn_project_post(x, M, KV, l->kdim, kin, l->kdim, wk, bk, dst, ld, post);
      attn_project(x, M, KV, l->vdim, vin, l->vdim, wv, bv, dst + KV, ld);
    }
  }
}

attn_status attn_memory_set(const attn_layer *l, attn_memory *m, int64_t batch,
                            int64_t len_k, const float *key, const float *value,
                            const int64_t *key_lengths,
                            const uint8_t *key_padding,
                            const attn_options *opts) {
  if (!l || !m || !key || !value)
    return attn_fail(ATTN_ERR_NULL_POINTER, "attn_memory_set: %s is NULL",
                     !l     ? "layer"
                     : !m   ? "mem"
                     : !key ? "key"
                            : "value");
  attn_call c;
  attn_status st = attn_call_load(opts, l, &c);
  if (st != ATTN_OK ||
      (st = check_set(l, m, batch, len_k, key, value, key_lengths)) != ATTN_OK)
    return st;

  /* Nothing fails from here: the memory changes only now. */
  attn_exec_enter(&c.x);
  project_memory(&c.x, l, m, batch, len_k, key, value);
  attn_exec_leave(&c.x);
  int64_t nk = batch * len_k;
  m->len_k = len_k;
  for (int64_t b = 0; b < batch; b++)
    m->lengths[b] = key_lengths ? key_lengths[b] : len_k;
  m->any_pad = false;
  for (int64_t i = 0; key_padding && i < nk && !m->any_pad; i++)
    m->any_pad = key_padding[i] != 0;
  if (m->any_pad)
    memcpy(m->pad, key_padding, (size_t)nk);
  return ATTN_OK;
}
