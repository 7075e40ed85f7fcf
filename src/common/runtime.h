/* SPDX-License-Identifier: MIT */
/* Runtimes (the public attn_runtime) and what one call runs with: its
 * thread bound, its pool and whether it holds the BLAS. */
#ifndef ATTN_COMMON_RUNTIME_H
#define ATTN_COMMON_RUNTIME_H

#include "attn/attn.h"
#include "common/pool.h"

#include <stdbool.h>

/* What one call runs with. */
typedef struct {
  attn_runtime *rt;
  attn_pool *pool; /* NULL: everything on the calling thread */
  int32_t threads; /* the call's bound: requested, clamped to the runtime */
  bool blas_held;  /* the BLAS runs every product in its calling thread */
  bool forked;     /* a child after fork(): nothing of rt's is shared */
} attn_exec;

/* Resolves a call's runtime (NULL: the default one, created on first use)
 * and thread bound from the options' and the layer's requests (0 = not
 * set). Fails only when the default runtime cannot be created. */
attn_status attn_exec_resolve(attn_runtime *rt, int32_t requested,
                              int32_t layer_default, attn_exec *x);

/* The call starts running: counted on its runtime, and the BLAS held when
 * the runtime's policy says so. Every enter needs one leave. */
void attn_exec_enter(attn_exec *x);
void attn_exec_leave(attn_exec *x);

/* attn_pool_run() on the call's pool with at most `threads` threads (the
 * caller's share of attn_threads_for()). */
void attn_exec_for(const attn_exec *x, int32_t threads, int64_t items,
                   attn_item_fn fn, void *ctx);

/* Scratch of `bytes` for a call: the runtime's kept block when no other
 * call holds it (replaced by a larger one when it is too small), else a
 * block of the call's own. NULL when the system has no memory. */
void *attn_exec_scratch(const attn_exec *x, size_t bytes);

/* Gives back what attn_exec_scratch() returned (NULL is allowed). */
void attn_exec_scratch_done(const attn_exec *x, void *mem);

#endif
