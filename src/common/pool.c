/* SPDX-License-Identifier: MIT */
/* The worker pool (pool.h). Jobs are open to helpers while they sit on the
 * pool's list; a job's caller takes it off the list when it has run out of
 * items and then waits only for the helpers still inside it, so the job
 * (on the caller's stack) is never touched after its call returns.
 * Workers sleep on a condition variable: an idle pool costs no CPU. While
 * a call holds the pool, idle workers and a caller waiting for its helpers
 * poll for up to SPIN_NS before they sleep, so the jobs of a call's
 * phases, microseconds apart, start without a wake-up. */
#include "common/pool.h"

#include "common/cpu.h"
#include "common/error.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdlib.h>
#include <time.h>

/* Polling time before sleeping. A sleeping thread takes tens of
 * microseconds to wake on a virtual machine, against a few microseconds
 * between the jobs of a call (docs/PERFORMANCE.md). */
#define SPIN_NS 100000

typedef struct job {
  attn_item_fn fn;
  void *ctx;
  int64_t items;
  atomic_llong next; /* next item to hand out */
  int32_t slots;     /* threads allowed, the caller included */
  int32_t joined;    /* slots taken (pool lock) */
  atomic_int inside; /* helpers still running it (changed under the lock) */
  struct job *newer; /* the pool's list (pool lock) */
} job;

struct attn_pool {
  pthread_mutex_t lock;
  pthread_cond_t wake; /* workers: a job was posted, or stop */
  pthread_cond_t left; /* callers: a helper left a job */
  job *open;           /* jobs that take helpers */
  atomic_uint posted;  /* jobs posted so far (changed under the lock) */
  atomic_int held;     /* calls holding the pool (attn_pool_hold) */
  bool stop;
  int32_t workers;
  pthread_t *tid;
};

static void drain(job *j, int32_t slot) {
  for (;;) {
    int64_t i = (int64_t)atomic_fetch_add(&j->next, 1);
    if (i >= j->items)
      return;
    j->fn(j->ctx, i, slot);
  }
}

/* An open job with a free slot and items left, or NULL. */
static job *find_job(attn_pool *p) {
  for (job *j = p->open; j; j = j->newer)
    if (j->joined < j->slots && atomic_load(&j->next) < j->items)
      return j;
  return NULL;
}

static int64_t now_ns(void) {
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return (int64_t)t.tv_sec * 1000000000 + t.tv_nsec;
}

/* Polls until done(arg) or SPIN_NS have passed; returns done(arg). */
static bool spin_until(bool (*done)(const void *), const void *arg) {
  int64_t end = now_ns() + SPIN_NS;
  for (int n = 0;; n++) {
    if (done(arg))
      return true;
    attn_cpu_relax();
    if (n % 64 == 63 && now_ns() > end)
      return done(arg);
  }
}

typedef struct {
  const attn_pool *p;
  unsigned seen;
} post_watch;

/* A job was posted since, or no call holds the pool any more. */
static bool posted_or_released(const void *arg) {
  const post_watch *w = arg;
  return atomic_load(&w->p->posted) != w->seen || atomic_load(&w->p->held) == 0;
}

static bool helpers_left(const void *arg) {
  return atomic_load(&((const job *)arg)->inside) == 0;
}

static void *worker_main(void *arg) {
  attn_pool *p = arg;
  pthread_mutex_lock(&p->lock);
  while (!p->stop) {
    job *j = find_job(p);
    if (!j) {
      post_watch w = {p, atomic_load(&p->posted)};
      if (atomic_load(&p->held) > 0) {
        pthread_mutex_unlock(&p->lock);
        bool more = spin_until(posted_or_released, &w);
        pthread_mutex_lock(&p->lock);
        if (more)
          continue;
      }
      /* Posting takes the lock: nothing is posted between this check and
       * the wait. */
      if (atomic_load(&p->posted) == w.seen && !p->stop)
        pthread_cond_wait(&p->wake, &p->lock);
      continue;
    }
    int32_t slot = j->joined++;
    atomic_fetch_add(&j->inside, 1);
    pthread_mutex_unlock(&p->lock);
    drain(j, slot);
    pthread_mutex_lock(&p->lock);
    if (atomic_fetch_sub(&j->inside, 1) == 1)
      pthread_cond_broadcast(&p->left);
  }
  pthread_mutex_unlock(&p->lock);
  return NULL;
}

static attn_status no_threads(int32_t workers) {
  return attn_fail(ATTN_ERR_NO_MEMORY,
                   "cannot start a pool of %d worker threads", (int)workers);
}

static void stop_workers(attn_pool *p, int32_t started) {
  pthread_mutex_lock(&p->lock);
  p->stop = true;
  atomic_fetch_add(&p->posted, 1);
  pthread_cond_broadcast(&p->wake);
  pthread_mutex_unlock(&p->lock);
  for (int32_t t = 0; t < started; t++)
    pthread_join(p->tid[t], NULL);
}

static void free_pool(attn_pool *p) {
  pthread_cond_destroy(&p->left);
  pthread_cond_destroy(&p->wake);
  pthread_mutex_destroy(&p->lock);
  free(p->tid);
  free(p);
}

attn_status attn_pool_create(int32_t workers, attn_pool **out) {
  attn_pool *p = calloc(1, sizeof *p);
  pthread_t *tid = calloc(workers > 0 ? (size_t)workers : 1, sizeof *tid);
  if (!p || !tid) {
    free(p);
    free(tid);
    return no_threads(workers);
  }
  p->tid = tid;
  pthread_mutex_init(&p->lock, NULL);
  pthread_cond_init(&p->wake, NULL);
  pthread_cond_init(&p->left, NULL);
  for (int32_t t = 0; t < workers; t++)
    if (pthread_create(&p->tid[t], NULL, worker_main, p) != 0) {
      stop_workers(p, t);
      free_pool(p);
      return no_threads(workers);
    }
  p->workers = workers;
  *out = p;
  return ATTN_OK;
}

void attn_pool_destroy(attn_pool *p) {
  if (!p)
    return;
  stop_workers(p, p->workers);
  free_pool(p);
}

void attn_pool_abandon(attn_pool *p) {
  if (p) {
    free(p->tid);
    free(p);
  }
}

void attn_pool_run(attn_pool *p, int32_t threads, int64_t items,
                   attn_item_fn fn, void *ctx) {
  job j = {.fn = fn, .ctx = ctx, .items = items, .slots = threads, .joined = 1};
  atomic_init(&j.next, 0);
  atomic_init(&j.inside, 0);
  int32_t helpers = p ? threads - 1 : 0;
  if (p && helpers > p->workers)
    helpers = p->workers;
  if (helpers <= 0 || items <= 1) {
    drain(&j, 0);
    return;
  }
  pthread_mutex_lock(&p->lock);
  j.newer = p->open;
  p->open = &j;
  atomic_fetch_add(&p->posted, 1);
  for (int32_t h = 0; h < helpers; h++)
    pthread_cond_signal(&p->wake);
  pthread_mutex_unlock(&p->lock);

  drain(&j, 0);

  pthread_mutex_lock(&p->lock);
  job **link = &p->open;
  while (*link != &j)
    link = &(*link)->newer;
  *link = j.newer;
  if (atomic_load(&j.inside) > 0 && atomic_load(&p->held) > 0) {
    pthread_mutex_unlock(&p->lock);
    if (spin_until(helpers_left, &j))
      return; /* no helper touches j after leaving it */
    pthread_mutex_lock(&p->lock);
  }
  while (atomic_load(&j.inside) > 0)
    pthread_cond_wait(&p->left, &p->lock);
  pthread_mutex_unlock(&p->lock);
}

void attn_pool_hold(attn_pool *p) {
  if (p)
    atomic_fetch_add(&p->held, 1);
}

void attn_pool_release(attn_pool *p) {
  if (p)
    atomic_fetch_sub(&p->held, 1);
}
