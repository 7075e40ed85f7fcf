/* SPDX-License-Identifier: MIT */
/* Storage of caches and memories (kv_store.h). */
#include "layer/kv_store.h"

#include "common/alloc.h"
#include "common/checked.h"
#include "common/error.h"

#include <limits.h>
#include <stdlib.h>

void attn_kv_owner_init(attn_kv_owner *o, const attn_layer *l) {
  o->layer = l;
  o->embed_dim = l->embed_dim;
  o->num_heads = l->heads.num_heads;
  o->num_kv_heads = l->heads.num_kv_heads;
  o->head_dim = l->heads.head_dim;
  o->kdim = l->kdim;
  o->vdim = l->vdim;
}

attn_status attn_kv_owner_check(const attn_kv_owner *o, const attn_layer *l,
                                const char *what) {
  if (o->layer != l || o->embed_dim != l->embed_dim ||
      o->num_heads != l->heads.num_heads ||
      o->num_kv_heads != l->heads.num_kv_heads || o->kdim != l->kdim ||
      o->vdim != l->vdim)
    return attn_fail(ATTN_ERR_MISMATCH,
                     "this %s was created for another layer (embed_dim "
                     "%lld, num_heads %lld, num_kv_heads %lld): a %s holds "
                     "keys and values projected by its own layer's weights",
                     what, (long long)o->embed_dim, (long long)o->num_heads,
                     (long long)o->num_kv_heads, what);
  return ATTN_OK;
}

attn_status attn_kv_plan_make(const attn_layer *l, int64_t batch,
                              int64_t capacity, size_t handle_bytes,
                              int64_t meta_per_row, const char *what,
                              attn_kv_plan *p) {
  if (batch <= 0 || capacity <= 0)
    return attn_fail(ATTN_ERR_BAD_SIZE,
                     "%s batch %lld and capacity %lld must be positive", what,
                     (long long)batch, (long long)capacity);
  p->batch = batch;
  p->capacity = capacity;
  p->slot_ld = 2 * l->heads.kv_dim;
  int64_t rows, floats, metas;
  size_t kvb = 0, padb = 0, metab = 0, total = 0;
  bool ok = capacity <= INT_MAX && p->slot_ld <= INT_MAX &&
            attn_mul64(batch, capacity, &rows) &&
            attn_mul64(rows, p->slot_ld, &floats) &&
            attn_float_count_ok(floats) &&
            attn_mul64(batch, meta_per_row, &metas) &&
            (uint64_t)metas <= PTRDIFF_MAX / sizeof(int64_t) &&
            attn_round64(handle_bytes, &total) &&
            attn_round64((size_t)floats * sizeof(float), &kvb) &&
            attn_round64((size_t)rows, &padb) &&
            attn_round64((size_t)metas * sizeof(int64_t), &metab);
  p->kv_off = total;
  ok = ok && attn_addsz(total, kvb, &total);
  p->pad_off = total;
  ok = ok && attn_addsz(total, padb, &total);
  p->meta_off = total;
  /* + 64: room to align a caller's buffer. */
  ok = ok && attn_addsz(total, metab, &total) && attn_addsz(total, 64, &total);
  if (!ok)
    return attn_fail(ATTN_ERR_OVERFLOW,
                     "a %s of batch %lld and capacity %lld for width %lld "
                     "does not fit in memory",
                     what, (long long)batch, (long long)capacity,
                     (long long)p->slot_ld);
  p->bytes = total;
  return ATTN_OK;
}

attn_status attn_kv_store_memory(const attn_kv_plan *p, void *buffer,
                                 size_t size, const char *what,
                                 const char *size_fn, void **owned,
                                 unsigned char **base) {
  *owned = NULL;
  if (buffer) {
    if (size < p->bytes)
      return attn_fail(ATTN_ERR_SCRATCH_TOO_SMALL,
                       "buffer of %zu bytes is smaller than the %zu bytes "
                       "this %s needs (%s)",
                       size, p->bytes, what, size_fn);
  } else {
    /* The slots are not cleared: only slots written are ever read. */
    buffer = *owned = attn_alloc_large(p->bytes);
    if (!buffer)
      return attn_fail(ATTN_ERR_NO_MEMORY, "cannot allocate %zu bytes for a %s",
                       p->bytes, what);
  }
  *base = attn_align64(buffer);
  return ATTN_OK;
}
