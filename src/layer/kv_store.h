/* SPDX-License-Identifier: MIT */
/* Storage shared by the KV cache and the cross-attention memory: batch
 * rows of `capacity` slots of [K (kv_dim) | V (kv_dim)], a padding byte per
 * slot and a few int64 per row, in one block of memory (library- or
 * caller-allocated) headed by the object's handle. */
#ifndef ATTN_LAYER_KV_STORE_H
#define ATTN_LAYER_KV_STORE_H

#include "layer/layer.h"

#include <stddef.h>

/* The layer dimensions a cache or memory was made for. The layer's address
 * is only compared, never dereferenced. */
typedef struct {
  const attn_layer *layer;
  int64_t embed_dim, num_heads, num_kv_heads, head_dim, kdim, vdim;
} attn_kv_owner;

void attn_kv_owner_init(attn_kv_owner *o, const attn_layer *l);

/* ATTN_ERR_MISMATCH (naming `what`, e.g. "cache") unless l is the layer o
 * was made for and still has its dimensions. */
attn_status attn_kv_owner_check(const attn_kv_owner *o, const attn_layer *l,
                                const char *what);

/* Byte offsets of the parts from a 64-byte aligned base. */
typedef struct {
  int64_t batch, capacity, slot_ld;
  size_t kv_off, pad_off, meta_off, bytes;
} attn_kv_plan;

/* Plans a store for layer l: a handle of handle_bytes, then the slots,
 * padding bytes and meta_per_row int64 per row. `what` names the object in
 * messages ("cache", "memory"). */
attn_status attn_kv_plan_make(const attn_layer *l, int64_t batch,
                              int64_t capacity, size_t handle_bytes,
                              int64_t meta_per_row, const char *what,
                              attn_kv_plan *p);

/* The store's memory: a new allocation (*owned set to it; NULL with
 * ATTN_ERR_NO_MEMORY) or the caller's buffer (checked to be large
 * enough; `size_fn` names the size query). Returns the aligned base. */
attn_status attn_kv_store_memory(const attn_kv_plan *p, void *buffer,
                                 size_t size, const char *what,
                                 const char *size_fn, void **owned,
                                 unsigned char **base);

#endif
