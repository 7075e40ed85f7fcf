/* SPDX-License-Identifier: MIT */
/* The self-attention key/value cache: its rows and the operations on them
 * (kv_cache.c). */
#ifndef ATTN_LAYER_KV_CACHE_H
#define ATTN_LAYER_KV_CACHE_H

#include "layer/kv_store.h"

/* Rows of a cache: kv[b] is capacity slots of [K (kv_dim) | V (kv_dim)],
 * the layout the attention core reads with ldk = ldv = 2 * kv_dim and
 * kv_rows = capacity. Slot j of row b holds position first[b] + j; the row
 * holds len[b] - first[b] tokens. */
struct attn_kv_cache {
  attn_kv_owner owner;
  int64_t batch, capacity, window;
  int64_t kv_dim;  /* num_kv_heads * head_dim */
  int64_t slot_ld; /* floats per slot: 2 * kv_dim */
  float *kv;       /* [batch, capacity, slot_ld] */
  uint8_t *pad;    /* [batch, capacity]: nonzero = padding, never seen */
  int64_t *len;    /* [batch] positions appended so far */
  int64_t *first;  /* [batch] position held in slot 0 */
  int64_t *need;   /* [batch] work array of reorder */
  int64_t *stack;  /* [batch] work array of reorder */
  bool any_pad;    /* some slot may be marked as padding */
  void *owned;     /* the allocation to free, NULL for a caller buffer */
};

/* Tokens row b holds. */
static inline int64_t attn_kv_cache_held(const attn_kv_cache *c, int64_t b) {
  return c->len[b] - c->first[b];
}

/* How many held tokens row b keeps before appending `add` new ones: all of
 * them if they fit, else (with a window) the last window - 1; -1 if the
 * new tokens cannot fit. */
int64_t attn_kv_cache_keep(const attn_kv_cache *c, int64_t b, int64_t add);

/* Appends `add` tokens to row b (which must have room: attn_kv_cache_keep
 * >= 0): first drops what the window lets go, then copies slot_ld floats
 * per token from src (row stride ld) and their padding flags (pad: add
 * bytes, or NULL for none). */
void attn_kv_cache_append(attn_kv_cache *c, int64_t b, int64_t add,
                          const float *src, int64_t ld, const uint8_t *pad);

#endif
