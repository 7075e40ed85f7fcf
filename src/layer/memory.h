/* SPDX-License-Identifier: MIT */
/* The cross-attention memory (memory.c). */
#ifndef ATTN_LAYER_MEMORY_H
#define ATTN_LAYER_MEMORY_H

#include "layer/kv_store.h"

/* Keys and values of an encoder output, same slot layout as the cache:
 * kv[b] is capacity slots of [K | V]; len_k positions are set (0 = never
 * set), row b shows lengths[b] of them, and pad (stride len_k) hides some
 * when any_pad. */
struct attn_memory {
  attn_kv_owner owner;
  int64_t batch, capacity;
  int64_t kv_dim, slot_ld;
  int64_t len_k;
  float *kv;        /* [batch, capacity, slot_ld] */
  uint8_t *pad;     /* [batch, len_k] within [batch * capacity] bytes */
  int64_t *lengths; /* [batch] */
  bool any_pad;
  void *owned;
};

#endif
