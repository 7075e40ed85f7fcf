/* SPDX-License-Identifier: MIT */
/* A pool of worker threads, started once and asleep between calls, that
 * runs parallel for-loops over independent work items. */
#ifndef ATTN_COMMON_POOL_H
#define ATTN_COMMON_POOL_H

#include "attn/attn.h"

typedef struct attn_pool attn_pool;

/* Work item `item` of a job, run by worker slot `slot` (0 is the caller;
 * every slot is below the job's thread count). */
typedef void (*attn_item_fn)(void *ctx, int64_t item, int32_t slot);

/* Starts `workers` threads (0 is allowed: every job then runs on its
 * caller). ATTN_ERR_NO_MEMORY when memory or a thread cannot be had. */
attn_status attn_pool_create(int32_t workers, attn_pool **out);

/* Stops and joins the workers. No job may be running. NULL is allowed. */
void attn_pool_destroy(attn_pool *pool);

/* Frees a pool whose workers do not exist in this process (a child after
 * fork()): nothing is joined. NULL is allowed. */
void attn_pool_abandon(attn_pool *pool);

/* Runs fn(ctx, item, slot) for every item in [0, items) on the calling
 * thread and up to threads - 1 idle workers, and returns when all are
 * done. Items are handed out in order through an atomic counter, so
 * uneven items balance; which thread runs an item never changes its
 * result. Several threads may run jobs on one pool at once; a job finds
 * fewer (or no) helpers while the workers are busy with others. pool may
 * be NULL (everything on the caller). */
void attn_pool_run(attn_pool *pool, int32_t threads, int64_t items,
                   attn_item_fn fn, void *ctx);

/* A call that will post several jobs holds the pool from its first to its
 * last: meanwhile idle workers, and callers waiting for their helpers,
 * poll for a short while before they sleep. Every hold is released; NULL
 * is allowed. */
void attn_pool_hold(attn_pool *pool);
void attn_pool_release(attn_pool *pool);

#endif
