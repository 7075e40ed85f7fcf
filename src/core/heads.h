/* SPDX-License-Identifier: MIT */
/* The head geometry every attention kernel works with: what the core needs
 * to know of a layer, and nothing more. */
#ifndef ATTN_CORE_HEADS_H
#define ATTN_CORE_HEADS_H

#include <stdint.h>

typedef struct {
  int64_t num_heads;    /* H query heads */
  int64_t num_kv_heads; /* H_kv key/value heads; divides H */
  int64_t head_dim;     /* d */
  int64_t kv_dim;       /* H_kv * d */
  float scale;          /* score scale */
} attn_heads;

/* The key/value head that serves query head h. */
static inline int64_t attn_kv_head(const attn_heads *g, int64_t h) {
  return h / (g->num_heads / g->num_kv_heads);
}

#endif
