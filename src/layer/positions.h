/* SPDX-License-Identifier: MIT */
/* Token positions of a call (attn_positions) and the score features of a
 * layer as the attention kernels take them (positions.c). */
#ifndef ATTN_LAYER_POSITIONS_H
#define ATTN_LAYER_POSITIONS_H

#include "core/score.h"
#include "layer/call.h"

/* Checks c->o.positions for a forward call of B rows, Lq queries and Lk
 * keys on layer l (nothing to check for a layer without positions). */
attn_status attn_positions_check(const attn_call *c, const attn_layer *l,
                                 int64_t B, int64_t Lq, int64_t Lk);

/* Writes the checked positions: qpos [B * Lq] and kpos [B * Lk]. */
void attn_positions_fill(const attn_call *c, int64_t B, int64_t Lq, int64_t Lk,
                         int64_t *qpos, int64_t *kpos);

/* True when c's positions (checked) are start[b] + i for queries and
 * keys alike: only i - j then matters to ALiBi. */
bool attn_positions_contiguous(const attn_call *c);

/* For a decoding step: checks the positions (start only) against the
 * positions rows will reach, len[b] + n - 1, and gives the start offsets
 * in *start (NULL = none). */
attn_status attn_positions_check_step(const attn_call *c, const attn_layer *l,
                                      int64_t B, const int64_t *len, int64_t n,
                                      const int64_t **start);

/* The layer's score features with positions qpos, kpos (NULL: the core's
 * implicit ones) into *fx; returns fx, or NULL when the layer has none. */
const attn_score_fx *attn_layer_score_fx(const attn_layer *l,
                                         const int64_t *qpos,
                                         const int64_t *kpos,
                                         attn_score_fx *fx);

#endif
