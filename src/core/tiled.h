/* SPDX-License-Identifier: MIT */
/* The tiled attention core: for each (batch row, head, block of queries),
 * blocks of keys with the scores and P*V, and the online softmax in
 * between. The products run on the packed core's kernels where the CPU
 * has them (packed.h), else on cblas_sgemm (tiled.c). */
#ifndef ATTN_CORE_TILED_H
#define ATTN_CORE_TILED_H

#include "attn/attn.h"
#include "common/runtime.h"
#include "core/heads.h"
#include "core/score.h"
#include "core/simd.h"

#include <stdbool.h>

typedef struct {
  const attn_heads *heads;
  const attn_mask *mask; /* resolved, never NULL */
  int64_t batch, len_q, len_k;
  const float *q; /* [batch*len_q, ldq], head h at column h*head_dim */
  const float *k; /* [batch*len_k, ldk], kv head g at column g*head_dim */
  const float *v;
  int64_t ldq, ldk, ldv;
  /* Rows per batch row in k and v (>= len_k; a cache's capacity). 0 means
   * len_k. */
  int64_t kv_rows;
  float *ctx; /* may be q: each item overwrites only the Q block it read */
  int64_t ldctx;
  float *weights; /* NULL or the caller's attention weight output */
  int32_t weights_mode;
  int64_t qblock, kblock;
  /* Query rows per BLAS product (a chunk of an item's rows). 0 (the
   * normal case) means the library's choice (tiled.c); other values are
   * for measurements. */
  int64_t gemm_rows;
  /* Soft-capping, ALiBi and sinks (core/score.h); NULL = none. */
  const attn_score_fx *fx;
  /* The vector table to run with; NULL (the normal case) means
   * attn_simd_get(). With panel kernels and enough query rows the packed
   * core runs (packed.h), otherwise the products go to cblas_sgemm. Tests
   * and benchmarks pass a table to pick a path. */
  const attn_simd *simd;
  /* The caller's choice of core (attn_options.core, ATTN_CORE_*), checked
   * by the caller (core/choice.h); 0 = ATTN_CORE_AUTO. */
  int32_t choice;
  /* Room for the keys and values packed once per (batch row, kv head) for
   * the packed core: attn_core_shared_pairs() * attn_core_shared_head_floats()
   * floats, 64-byte aligned, filled by attn_core_run_all() for a group of
   * pairs at a time. NULL: each work item packs the key blocks it uses
   * itself. */
  float *shared;
  /* The first (batch row, kv head) pair, b * num_kv_heads + g, whose keys
   * and values are in shared (set by attn_core_run_all()). */
  int64_t shared_first;
  /* Bytes of shared to fill at once; 0 (the normal case) = the library's
   * budget. Tests set it small to run several groups. */
  int64_t shared_bytes;
} attn_core;

/* True when c asks for nothing but scaled, masked softmax attention (no
 * score features): what any other attention core must check before it
 * takes c's work. */
static inline bool attn_core_plain(const attn_core *c) { return !c->fx; }

/* Per-thread scratch of the core, in floats, for these block sizes: enough
 * for the cblas core and the packed one alike. */
int64_t attn_core_tile_floats(int64_t qblock, int64_t kblock, int64_t head_dim);

/* Floats per (batch row, kv head) of c->shared; 0 when c does not run on
 * the packed core or when each kv head has one reader only (one query
 * block per head, as many kv heads as heads): then each item packs its
 * keys and values in its own tile and c->shared is not used. */
int64_t attn_core_shared_head_floats(const attn_core *c);

/* (batch row, kv head) pairs whose packed keys and values c->shared holds
 * at once: all of them when they fit in a fixed budget, else groups of
 * fewer (whole batch rows when the weights are averaged over heads),
 * which attn_core_run_all() packs and runs one after the other. */
int64_t attn_core_shared_pairs(const attn_core *c);

/* Block sizes for a call whose core is known: packed or cblas. They
 * depend only on the shapes (never on the thread count), so results are
 * the same whatever the threads. */
void attn_core_blocks_for(const attn_heads *g, int64_t batch, int64_t len_q,
                          int64_t len_k, bool want_weights, bool packed,
                          int64_t *qblock, int64_t *kblock);

/* Work item `item` of attn_core_items(): computes the attention output (and
 * the weights, if asked) of one (batch row, head, query block), or of all
 * heads of one (batch row, query block) when averaged weights are asked. */
int64_t attn_core_items(const attn_core *c);
void attn_core_run(const attn_core *c, int64_t item, float *tile);

/* How many of `threads` threads the core should use for c (the policy of
 * common/policy.h; 1 when its BLAS products are too big to stay
 * single-threaded, the BLAS then threads them). The result never changes
 * the output: each item computes the same bits on any thread. */
int32_t attn_core_threads(const attn_core *c, int32_t threads);

/* Every item of c on up to `threads` threads of the call (the count
 * attn_core_threads() gave, which sized the tiles), thread slot s using
 * tiles + s * tile_floats. */
void attn_core_run_all(const attn_core *c, const attn_exec *x, int32_t threads,
                       float *tiles, int64_t tile_floats);

#endif
