/* The cross-attention memory: an encoder output's keys and values,
 * projected once by attn_memory_set() and read by every attn_cross_step()
 * (decode.c). */
#include "decode.h"

#include <limits.h>
#include <stdlib.h>
#include <string.h>

void attn_memory_config_init(attn_memory_config *cfg) {
  if (!cfg)
    return;
  memset(cfg, 0, sizeof *cfg);
  cfg->struct_size = sizeof *cfg;
  cfg->batch = 1;
}

/* Byte offsets of the parts of a memory from a 64-byte aligned base. */
typedef struct {
  attn_memory_config cfg;
  int64_t slot_ld;
  size_t kv_off, pad_off, len_off, bytes;
} memory_plan;

static attn_status plan_memory(const attn_layer *l,
                               const attn_memory_config *in, memory_plan *p) {
  if (!l || !in)
    return attn_fail(ATTN_ERR_NULL_POINTER, "attn_memory: %s is NULL",
                     !l ? "layer" : "cfg");
  attn_memory_config_init(&p->cfg);
  attn_status st = attn_load_struct(&p->cfg, sizeof p->cfg, in, sizeof p->cfg,
                                    "attn_memory_config");
  if (st != ATTN_OK)
    return st;
  const attn_memory_config *c = &p->cfg;
  if (c->batch <= 0 || c->capacity <= 0)
    return attn_fail(ATTN_ERR_BAD_SIZE,
                     "memory batch %lld and capacity %lld must be positive",
                     (long long)c->batch, (long long)c->capacity);
  p->slot_ld = 2 * l->kv_dim;
  int64_t rows, floats;
  size_t kvb, padb, lenb, total;
  if (c->capacity > INT_MAX || p->slot_ld > INT_MAX ||
      !attn_mul64(c->batch, c->capacity, &rows) ||
      !attn_mul64(rows, p->slot_ld, &floats) ||
      (uint64_t)floats > PTRDIFF_MAX / sizeof(float) ||
      (uint64_t)c->batch > PTRDIFF_MAX / sizeof(int64_t) ||
      !attn_dec_round64(sizeof(struct attn_memory), &total) ||
      !attn_dec_round64((size_t)floats * sizeof(float), &kvb) ||
      !attn_dec_round64((size_t)rows, &padb) ||
      !attn_dec_round64((size_t)c->batch * sizeof(int64_t), &lenb))
    return attn_fail(ATTN_ERR_OVERFLOW,
                     "a memory of batch %lld and capacity %lld for width "
                     "%lld does not fit in memory",
                     (long long)c->batch, (long long)c->capacity,
                     (long long)p->slot_ld);
  p->kv_off = total;
  p->pad_off = 0;
  p->len_off = 0;
  bool ok = attn_addsz(total, kvb, &total);
  p->pad_off = total;
  ok = ok && attn_addsz(total, padb, &total);
  p->len_off = total;
  ok = ok && attn_addsz(total, lenb, &total) && attn_addsz(total, 64, &total);
  if (!ok)
    return attn_fail(ATTN_ERR_OVERFLOW,
                     "a memory of batch %lld and capacity %lld does not fit "
                     "in memory",
                     (long long)c->batch, (long long)c->capacity);
  p->bytes = total; /* + 64: room to align the caller's buffer */
  return ATTN_OK;
}

static attn_memory *build_memory(const attn_layer *l, const memory_plan *p,
                                 void *buf, void *owned) {
  unsigned char *base = buf;
  base += (64 - (uintptr_t)base % 64) % 64;
  attn_memory *m = (attn_memory *)(void *)base;
  memset(m, 0, sizeof *m);
  attn_dec_owner_init(&m->owner, l);
  m->batch = p->cfg.batch;
  m->capacity = p->cfg.capacity;
  m->kv_dim = l->kv_dim;
  m->slot_ld = p->slot_ld;
  m->kv = (float *)(void *)(base + p->kv_off);
  m->pad = base + p->pad_off;
  m->lengths = (int64_t *)(void *)(base + p->len_off);
  memset(m->lengths, 0, (size_t)m->batch * sizeof *m->lengths);
  m->owned = owned;
  return m;
}

attn_status attn_memory_size(const attn_layer *l, const attn_memory_config *cfg,
                             size_t *bytes) {
  if (!bytes)
    return attn_fail(ATTN_ERR_NULL_POINTER, "attn_memory_size: bytes is NULL");
  memory_plan p;
  attn_status st = plan_memory(l, cfg, &p);
  if (st == ATTN_OK)
    *bytes = p.bytes;
  return st;
}

attn_status attn_memory_create(const attn_layer *l,
                               const attn_memory_config *cfg,
                               attn_memory **out) {
  if (!out)
    return attn_fail(ATTN_ERR_NULL_POINTER, "attn_memory_create: out is NULL");
  memory_plan p;
  attn_status st = plan_memory(l, cfg, &p);
  if (st != ATTN_OK)
    return st;
  void *mem = malloc(p.bytes);
  if (!mem)
    return attn_fail(ATTN_ERR_NO_MEMORY,
                     "cannot allocate %zu bytes for a cross-attention memory",
                     p.bytes);
  *out = build_memory(l, &p, mem, mem);
  return ATTN_OK;
}

attn_status attn_memory_create_in(const attn_layer *l,
                                  const attn_memory_config *cfg, void *buffer,
                                  size_t size, attn_memory **out) {
  if (!buffer || !out)
    return attn_fail(ATTN_ERR_NULL_POINTER, "attn_memory_create_in: %s is NULL",
                     !buffer ? "buffer" : "out");
  memory_plan p;
  attn_status st = plan_memory(l, cfg, &p);
  if (st != ATTN_OK)
    return st;
  if (size < p.bytes)
    return attn_fail(ATTN_ERR_SCRATCH_TOO_SMALL,
                     "buffer of %zu bytes is smaller than the %zu bytes this "
                     "memory needs (attn_memory_size)",
                     size, p.bytes);
  *out = build_memory(l, &p, buffer, NULL);
  return ATTN_OK;
}

void attn_memory_destroy(attn_memory *mem) {
  if (mem)
    free(mem->owned);
}

attn_status attn_memory_set(const attn_layer *l, attn_memory *m, int64_t batch,
                            int64_t len_k, const float *key, const float *value,
                            const int64_t *key_lengths,
                            const uint8_t *key_padding) {
  if (!l || !m || !key || !value)
    return attn_fail(ATTN_ERR_NULL_POINTER, "attn_memory_set: %s is NULL",
                     !l     ? "layer"
                     : !m   ? "mem"
                     : !key ? "key"
                            : "value");
  attn_status st = attn_dec_owner_check(&m->owner, l, "memory");
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
  int64_t nk, t;
  if (!attn_mul64(batch, len_k, &nk) || !attn_mul64(nk, l->kdim, &t) ||
      !attn_mul64(nk, l->vdim, &t) || l->kdim > INT_MAX || l->vdim > INT_MAX)
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

  /* Nothing fails from here: the memory changes only now. */
  int64_t KV = m->kv_dim, ld = m->slot_ld, C = m->capacity;
  const float *wk = attn_slot_ptr(l, ATTN_SLOT_WK);
  const float *wv = attn_slot_ptr(l, ATTN_SLOT_WV);
  const float *bk = l->bias ? attn_slot_ptr(l, ATTN_SLOT_BK) : NULL;
  const float *bv = l->bias ? attn_slot_ptr(l, ATTN_SLOT_BV) : NULL;
  /* Wk, Wv (and bk, bv) are adjacent: with one input of one width they
   * form a single [2 KV, kdim] product. Rows of the memory are capacity
   * slots apart, so a product covers all rows only when they are full. */
  bool fused = key == value && l->kdim == l->vdim;
  int64_t rows_at_once = len_k == C ? batch : 1;
  /* As attn_forward(): on the library's threads while the BLAS is held to
   * one thread (blas_threads.c), else products the BLAS may thread. */
  bool ours = attn_blas_serial_begin();
  int32_t threads = attn_resolve_threads(0, l->num_threads);
  for (int64_t b0 = 0; b0 < batch; b0 += rows_at_once) {
    int64_t M = rows_at_once * len_k;
    float *dst = m->kv + b0 * C * ld;
    const float *kin = key + b0 * len_k * l->kdim;
    const float *vin = value + b0 * len_k * l->vdim;
    if (fused) {
      attn_project(ours, threads, M, 2 * KV, l->kdim, kin, l->kdim, wk, bk, dst,
                   ld);
    } else {
      attn_project(ours, threads, M, KV, l->kdim, kin, l->kdim, wk, bk, dst,
                   ld);
      attn_project(ours, threads, M, KV, l->vdim, vin, l->vdim, wv, bv,
                   dst + KV, ld);
    }
  }
  if (ours)
    attn_blas_serial_end();
  m->len_k = len_k;
  for (int64_t b = 0; b < batch; b++)
    m->lengths[b] = key_lengths ? key_lengths[b] : len_k;
  m->any_pad = false;
  if (key_padding) {
    for (int64_t i = 0; i < nk; i++)
      if (key_padding[i]) {
        m->any_pad = true;
        break;
      }
    if (m->any_pad)
      memcpy(m->pad, key_padding, (size_t)nk);
  }
  return ATTN_OK;
}
