/* SPDX-License-Identifier: MIT */
/* What the two decoding steps (decode_step.c, cross_step.c) share: the
 * scratch plan of a step and its attention run. */
#ifndef ATTN_LAYER_STEP_H
#define ATTN_LAYER_STEP_H

#include "layer/call.h"

/* Where a step's scratch goes, in floats from a 64-byte aligned base: the
 * projected queries (with the new keys and values beside them in a
 * self-attention step), the key lengths the attention sees, merged
 * padding flags (cross step only), and one tile per thread. */
typedef struct {
  int64_t ldq;
  int64_t lens_off, pad_off, tile_off, tile_floats;
  bool streamed;               /* core/stream.c instead of the tiled core */
  int64_t chunks, partial_off; /* the stream's key chunks and results */
  int64_t done_off;            /* [B] chunks finished per row (counters) */
  int32_t threads;             /* of the attention, which sized the tiles */
  size_t bytes;
} attn_step_plan;

/* B rows of n queries, each row ldq floats wide, against up to len_k keys
 * per row; pad_bytes of merged padding flags; `streamed` plans for the
 * streaming kernel. */
attn_status attn_step_plan_make(const attn_call *c, const attn_layer *l,
                                int64_t B, int64_t n, int64_t ldq,
                                int64_t len_k, int64_t pad_bytes, bool streamed,
                                attn_step_plan *p);

/* ATTN_ERR_BAD_SIZE unless n is positive; `what` names it ("n_new"). */
attn_status attn_step_check_n(int64_t n, const char *what);

#endif
