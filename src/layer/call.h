/* SPDX-License-Identifier: MIT */
/* What every computing entry point (forward, steps, memory_set) does
 * alike: load the caller's options, resolve its runtime and thread count,
 * lay out and acquire its scratch, and describe the attention for the
 * core. */
#ifndef ATTN_LAYER_CALL_H
#define ATTN_LAYER_CALL_H

#include "common/runtime.h"
#include "core/tiled.h"
#include "layer/layer.h"

/* A call's resolved options and execution context. */
typedef struct {
  attn_options o; /* the caller's options over the defaults */
  attn_exec x;    /* runtime, thread bound, BLAS hold */
} attn_call;

/* Loads the caller's options (NULL = defaults), checks them and resolves
 * the runtime and thread bound for layer l. Nothing is held yet. */
attn_status attn_call_load(const attn_options *opts, const attn_layer *l,
                           attn_call *c);

/* A scratch layout in floats from a 64-byte aligned base: buffers are
 * appended, each on a 16-float boundary, with overflow checks. */
typedef struct {
  int64_t floats;
  bool overflow;
} attn_layout;

/* Appends n floats (n * count, checked) and returns their offset. */
int64_t attn_layout_add(attn_layout *s, int64_t n, int64_t count);

/* Bytes of the layout, alignment slack included; ATTN_ERR_OVERFLOW when
 * it does not fit. */
attn_status attn_layout_bytes(const attn_layout *s, size_t *bytes);

/* Plans the tiled core for batch rows of len_q queries over len_k keys:
 * *threads it will use (of the call's) and one tile per thread appended
 * to the layout at *tile_off, *tile_floats each. */
void attn_layout_core(const attn_call *c, const attn_layer *l, int64_t batch,
                      int64_t len_q, int64_t len_k, attn_layout *s,
                      int32_t *threads, int64_t *tile_off,
                      int64_t *tile_floats);

/* ATTN_ERR_OVERFLOW unless an attention weight output of rows query rows
 * by len_k keys (per head or averaged, as o asks) is addressable. */
attn_status attn_check_weights_out(const attn_layer *l, int64_t rows,
                                   int64_t len_k, const attn_options *o);

/* The call's scratch: the caller's (o.scratch, refused when smaller than
 * `need` bytes; `who` names the size query in the message) or the
 * runtime's, returned in *mem for attn_call_scratch_done(). *f is the
 * scratch's first 64-byte-aligned float. */
attn_status attn_call_scratch(const attn_call *c, size_t need, const char *who,
                              void **mem, float **f);

/* Gives back the *mem of attn_call_scratch() (NULL is allowed). */
void attn_call_scratch_done(const attn_call *c, void *mem);

/* attn_all_finite(p, n), in blocks on the call's threads when p is large
 * (the call has entered its execution context). */
bool attn_call_all_finite(const attn_call *c, const float *p, int64_t n);

/* Keys and values as the core reads them. */
typedef struct {
  const float *k, *v;
  int64_t ldk, ldv;
  int64_t rows; /* rows per batch row; 0 = len_k */
} attn_kv_view;

/* The core's description of an attention over projected queries q (row
 * stride ldq, the context written back over them) and keys/values kv. */
attn_core attn_call_core(const attn_call *c, const attn_layer *l,
                         const attn_mask *m, int64_t batch, int64_t len_q,
                         int64_t len_k, float *q, int64_t ldq, attn_kv_view kv);

#endif
