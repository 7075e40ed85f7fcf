/* SPDX-License-Identifier: MIT */
/* Runtimes: creation, the default runtime, and the calls' view of them. */
#include "common/runtime.h"

#include "common/blas.h"
#include "common/cpu.h"
#include "common/error.h"
#include "common/structs.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <unistd.h>

struct attn_runtime {
  attn_pool *pool;
  int32_t threads;
  int32_t blas_policy;
  pid_t pid; /* the process that started the workers */
  pthread_mutex_t lock;
  pthread_cond_t idle; /* active dropped to 0 */
  int64_t active;      /* calls running (lock) */
  void *scratch;       /* the kept scratch block (lock) */
  size_t scratch_bytes;
  bool scratch_busy; /* a call holds it (lock) */
  bool scratch_trim; /* free it when that call gives it back (lock) */
};

static void *take_kept(attn_runtime *rt, bool child);

static const attn_runtime_config config_defaults = {
    .struct_size = sizeof(attn_runtime_config),
    .num_threads = 0,
    .blas_policy = ATTN_BLAS_HOLD};

ATTN_VERSIONED_STRUCT(attn_runtime_config, config_kind,
                      ATTN_RUNTIME_CONFIG_SIZE_0_1, config_defaults,
                      attn_runtime_config_init_sized)

static attn_status check_config(const attn_runtime_config *c) {
  if (c->num_threads < 0 || c->num_threads > ATTN_MAX_THREADS)
    return attn_fail(ATTN_ERR_BAD_OPTION,
                     "runtime num_threads %d is outside [0, %d] (0 means "
                     "the CPUs this process may use)",
                     c->num_threads, ATTN_MAX_THREADS);
  if (c->blas_policy != ATTN_BLAS_HOLD && c->blas_policy != ATTN_BLAS_LEAVE)
    return attn_fail(ATTN_ERR_BAD_OPTION, "unknown blas_policy %d",
                     c->blas_policy);
  return ATTN_OK;
}

attn_status attn_runtime_create(const attn_runtime_config *cfg_in,
                                attn_runtime **out) {
  if (!out)
    return attn_fail(ATTN_ERR_NULL_POINTER, "attn_runtime_create: out is "
                                            "NULL");
  attn_runtime_config c = config_defaults;
  attn_status st;
  if (cfg_in && (st = attn_struct_load(&config_kind, &c, cfg_in)) != ATTN_OK)
    return st;
  if ((st = check_config(&c)) != ATTN_OK)
    return st;
  attn_runtime *rt = calloc(1, sizeof *rt);
  if (!rt)
    return attn_fail(ATTN_ERR_NO_MEMORY, "cannot allocate a runtime");
  rt->threads = c.num_threads > 0 ? c.num_threads : attn_cpu_count();
  rt->blas_policy = c.blas_policy;
  rt->pid = getpid();
  if ((st = attn_pool_create(rt->threads - 1, &rt->pool)) != ATTN_OK) {
    free(rt);
    return st;
  }
  pthread_mutex_init(&rt->lock, NULL);
  pthread_cond_init(&rt->idle, NULL);
  *out = rt;
  return ATTN_OK;
}

void attn_runtime_destroy(attn_runtime *rt) {
  if (!rt)
    return;
  if (getpid() != rt->pid) {
    /* A child after fork(): the workers, and whatever state the locks
     * were in, belong to the parent. Calls here never used them. */
    attn_pool_abandon(rt->pool);
    free(take_kept(rt, true));
    free(rt);
    return;
  }
  pthread_mutex_lock(&rt->lock);
  while (rt->active > 0)
    pthread_cond_wait(&rt->idle, &rt->lock);
  pthread_mutex_unlock(&rt->lock);
  attn_pool_destroy(rt->pool);
  free(rt->scratch);
  pthread_cond_destroy(&rt->idle);
  pthread_mutex_destroy(&rt->lock);
  free(rt);
}

/* The default runtime: created by the first call that needs it, then kept
 * for the life of the process (reachable, so leak checkers stay quiet). */
static _Atomic(attn_runtime *) default_rt;
static pthread_mutex_t default_lock = PTHREAD_MUTEX_INITIALIZER;

static attn_status default_runtime(attn_runtime **out) {
  attn_runtime *rt = atomic_load_explicit(&default_rt, memory_order_acquire);
  attn_status st = ATTN_OK;
  if (!rt) {
    pthread_mutex_lock(&default_lock);
    rt = atomic_load_explicit(&default_rt, memory_order_relaxed);
    if (!rt && (st = attn_runtime_create(NULL, &rt)) == ATTN_OK)
      atomic_store_explicit(&default_rt, rt, memory_order_release);
    pthread_mutex_unlock(&default_lock);
  }
  *out = rt;
  return st;
}

attn_status attn_runtime_threads(const attn_runtime *rt, int32_t *threads) {
  if (!threads)
    return attn_fail(ATTN_ERR_NULL_POINTER, "attn_runtime_threads: threads "
                                            "is NULL");
  attn_runtime *r = (attn_runtime *)rt;
  attn_status st = r ? ATTN_OK : default_runtime(&r);
  if (st == ATTN_OK)
    *threads = r->threads;
  return st;
}

/* Calls ------------------------------------------------------------------ */

attn_status attn_exec_resolve(attn_runtime *rt, int32_t requested,
                              int32_t layer_default, attn_exec *x) {
  attn_status st = rt ? ATTN_OK : default_runtime(&rt);
  if (st != ATTN_OK)
    return st;
  int32_t n = requested > 0 ? requested : layer_default;
  if (n <= 0 || n > rt->threads)
    n = rt->threads;
  /* In a child after fork() the workers do not exist. */
  bool forked = getpid() != rt->pid;
  *x = (attn_exec){.rt = rt,
                   .pool = forked ? NULL : rt->pool,
                   .threads = forked ? 1 : n,
                   .blas_held = false,
                   .forked = forked};
  return ATTN_OK;
}

void attn_exec_enter(attn_exec *x) {
  if (x->pool) {
    pthread_mutex_lock(&x->rt->lock);
    x->rt->active++;
    pthread_mutex_unlock(&x->rt->lock);
    if (x->threads > 1)
      attn_pool_hold(x->pool);
  }
  x->blas_held = x->rt->blas_policy == ATTN_BLAS_HOLD && attn_blas_hold();
}

void attn_exec_leave(attn_exec *x) {
  if (x->blas_held)
    attn_blas_release();
  x->blas_held = false;
  if (x->pool) {
    if (x->threads > 1)
      attn_pool_release(x->pool);
    pthread_mutex_lock(&x->rt->lock);
    if (--x->rt->active == 0)
      pthread_cond_broadcast(&x->rt->idle);
    pthread_mutex_unlock(&x->rt->lock);
  }
}

void attn_exec_for(const attn_exec *x, int32_t threads, int64_t items,
                   attn_item_fn fn, void *ctx) {
  if (threads > x->threads)
    threads = x->threads;
  attn_pool_run(threads > 1 ? x->pool : NULL, threads, items, fn, ctx);
}

/* Scratch ---------------------------------------------------------------- */

/* A call counts as running on its runtime from the moment it takes scratch
 * until it gives it back (as from attn_exec_enter() to attn_exec_leave()),
 * so attn_runtime_destroy() waits for it. */
static void call_ends_locked(attn_runtime *rt) {
  if (--rt->active == 0)
    pthread_cond_broadcast(&rt->idle);
}

void *attn_exec_scratch(const attn_exec *x, size_t bytes) {
  attn_runtime *rt = x->rt;
  if (x->forked) /* the parent's lock may have been held at fork() */
    return malloc(bytes);
  pthread_mutex_lock(&rt->lock);
  rt->active++;
  void *mem;
  if (rt->scratch_busy) {
    pthread_mutex_unlock(&rt->lock);
    mem = malloc(bytes); /* the call's own, while another holds the kept */
    if (mem)
      return mem;
    pthread_mutex_lock(&rt->lock);
  } else {
    if (rt->scratch_bytes < bytes) {
      /* Free first: the old and the new block are never both held. */
      free(rt->scratch);
      rt->scratch = malloc(bytes);
      rt->scratch_bytes = rt->scratch ? bytes : 0;
    }
    mem = rt->scratch;
    rt->scratch_busy = mem != NULL;
    rt->scratch_trim = false;
  }
  if (!mem)
    call_ends_locked(rt);
  pthread_mutex_unlock(&rt->lock);
  return mem;
}

void attn_exec_scratch_done(const attn_exec *x, void *mem) {
  attn_runtime *rt = x->rt;
  if (!mem)
    return;
  if (x->forked) {
    free(mem);
    return;
  }
  pthread_mutex_lock(&rt->lock);
  if (mem == rt->scratch) {
    rt->scratch_busy = false;
    if (rt->scratch_trim) {
      rt->scratch = NULL;
      rt->scratch_bytes = 0;
    } else {
      mem = NULL; /* kept */
    }
  }
  call_ends_locked(rt);
  pthread_mutex_unlock(&rt->lock);
  free(mem);
}

/* Takes the kept block out of rt, if no call holds it (then it is freed
 * when that call gives it back). In a child after fork() the lock may
 * have been held by a thread of the parent: the block is left then. */
static void *take_kept(attn_runtime *rt, bool child) {
  if (child ? pthread_mutex_trylock(&rt->lock) != 0
            : pthread_mutex_lock(&rt->lock) != 0)
    return NULL;
  void *mem = NULL;
  if (rt->scratch_busy) {
    rt->scratch_trim = true;
  } else {
    mem = rt->scratch;
    rt->scratch = NULL;
    rt->scratch_bytes = 0;
  }
  pthread_mutex_unlock(&rt->lock);
  return mem;
}

void attn_runtime_trim(attn_runtime *rt) {
  if (!rt)
    rt = atomic_load_explicit(&default_rt, memory_order_acquire);
  if (rt)
    free(take_kept(rt, getpid() != rt->pid));
}
