/* SPDX-License-Identifier: MIT */
/* What a layer adds to torch's multi-head attention: per-projection biases,
 * QK-norm, rotary embeddings, ALiBi, soft-capping and sinks (features.c:
 * their checks and tables; qk_post.c: the norm and rotation of projected
 * rows). */
#ifndef ATTN_LAYER_FEATURES_H
#define ATTN_LAYER_FEATURES_H

#include "attn/attn.h"
#include "core/heads.h"

#include <stdbool.h>
#include <stdint.h>

typedef struct {
  int32_t bias_parts; /* ATTN_BIAS_* bits present */
  int32_t qk_norm;    /* ATTN_QK_NORM_* */
  int32_t qk_unit_offset;
  double qk_eps;
  int32_t alibi;  /* ATTN_ALIBI_* */
  float *slopes;  /* [H], owned, NULL without ALiBi */
  double softcap; /* 0 = none */
  int32_t sinks;
  bool rope;
  attn_rope_config rope_cfg; /* resolved; inv_freq = rope_table */
  int64_t rot;               /* rotary dimensions */
  double *inv_freq;          /* [rot / 2], owned */
  float *rope_table;         /* owned copy of the caller's table, or NULL */
} attn_layer_fx;

/* Checks the feature fields of a configuration (loaded in full) for heads
 * of head_dim dimensions; the rope struct is loaded into *rope (when
 * cfg->rope is set). */
attn_status attn_fx_check(const attn_config *cfg, int64_t num_heads,
                          int64_t head_dim, attn_rope_config *rope);

/* Fills *fx from a checked configuration, allocating its tables; false
 * when out of memory (nothing is then owned). */
bool attn_fx_create(attn_layer_fx *fx, const attn_config *cfg,
                    const attn_rope_config *rope, const attn_heads *g);
void attn_fx_destroy(attn_layer_fx *fx);

/* Writes the feature fields of a read-back configuration. */
void attn_fx_to_config(const attn_layer_fx *fx, attn_config *cfg);

/* True when q or k rows need work after their projection. */
static inline bool attn_fx_post(const attn_layer_fx *fx) {
  return fx->rope || fx->qk_norm != ATTN_QK_NORM_NONE;
}

/* True when the layer needs token positions (rotation or ALiBi). */
static inline bool attn_fx_positional(const attn_layer_fx *fx) {
  return fx->rope || fx->alibi != ATTN_ALIBI_NONE;
}

/* The standard ALiBi slopes of H heads into slopes[H]. */
void attn_alibi_slopes(int64_t H, float *slopes);

#endif
