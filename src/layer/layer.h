/* SPDX-License-Identifier: MIT */
/* The layer object: configuration, head geometry and weights in torch's
 * layout (layer.c: creation and configuration; weights.c: the weights). */
#ifndef ATTN_LAYER_LAYER_H
#define ATTN_LAYER_LAYER_H

#include "attn/attn.h"
#include "core/heads.h"
#include "layer/features.h"

#include <stdbool.h>
#include <stdint.h>

/* Weight slots, in storage order. */
enum {
  ATTN_SLOT_WQ,
  ATTN_SLOT_WK,
  ATTN_SLOT_WV,
  ATTN_SLOT_WO,
  ATTN_SLOT_BQ,
  ATTN_SLOT_BK,
  ATTN_SLOT_BV,
  ATTN_SLOT_BO,
  ATTN_SLOT_QN, /* QK-norm weights and sink logits (features.h) */
  ATTN_SLOT_KN,
  ATTN_SLOT_SINK,
  ATTN_SLOT_COUNT
};

struct attn_layer {
  int64_t embed_dim; /* E */
  int64_t kdim;
  int64_t vdim;
  attn_heads heads; /* H, H_kv, head_dim, kv_dim, float scale */
  int32_t bias;
  int32_t num_threads;
  double scale; /* as configured, resolved; heads.scale is it in float */
  /* Weights [Wq | Wk | Wv | Wo], contiguous; with kdim == vdim == E the
   * first three form torch's packed in_proj_weight. */
  float *weights;
  /* Biases [bq | bk | bv | bo] (NULL without bias). */
  float *biases;
  int64_t slot_offset[ATTN_SLOT_COUNT]; /* into weights or biases */
  int64_t slot_count[ATTN_SLOT_COUNT];
  uint32_t slots_set; /* bit per slot */
  /* QK-norm weights and sinks [qn | kn | sink] (NULL when none). */
  float *extras;
  attn_layer_fx fx; /* positions and score features (features.h) */
};

static inline float *attn_slot_ptr(const struct attn_layer *l, int slot) {
  float *base = slot >= ATTN_SLOT_QN   ? l->extras
                : slot >= ATTN_SLOT_BQ ? l->biases
                                       : l->weights;
  return base + l->slot_offset[slot];
}

/* True when the layer has the bias of `slot` (ATTN_SLOT_BQ .. BO). */
static inline bool attn_has_bias(const struct attn_layer *l, int slot) {
  return (l->fx.bias_parts >> (slot - ATTN_SLOT_BQ)) & 1;
}

/* A slot's bias, or NULL for a layer without it. */
static inline const float *attn_bias_ptr(const struct attn_layer *l, int slot) {
  return attn_has_bias(l, slot) ? attn_slot_ptr(l, slot) : NULL;
}

/* The biases of slots first .. last, adjacent in storage, for one fused
 * product: NULL when none of them exists, else from first on (a missing
 * one reads as zeros). */
static inline const float *attn_bias_span(const struct attn_layer *l, int first,
                                          int last) {
  for (int s = first; s <= last; s++)
    if (attn_has_bias(l, s))
      return attn_slot_ptr(l, first);
  return NULL;
}

/* torch's name of a slot's tensor in messages ("k_proj_weight", "q bias"). */
const char *attn_slot_name(int slot);

/* ATTN_ERR_WEIGHTS_NOT_SET, naming the first weight never set, unless every
 * weight the layer needs is set; `action` starts the message. */
attn_status attn_layer_check_set(const struct attn_layer *l,
                                 const char *action);

/* Bit per slot the layer has (weights, its biases, norms, sinks). */
uint32_t attn_layer_slots(const struct attn_layer *l);

/* Sets the norm weights to one (zero with the unit offset) and the sinks
 * to zero, and marks them set: those weights have defaults. */
void attn_layer_default_extras(struct attn_layer *l);

/* Marks every slot the layer has as set. */
void attn_layer_mark_all_set(struct attn_layer *l);

/* True when the layer's keys and values have the model width (packed
 * in_proj, self-attention). */
static inline bool attn_layer_is_square(const struct attn_layer *l) {
  return l->kdim == l->embed_dim && l->vdim == l->embed_dim;
}

#endif
