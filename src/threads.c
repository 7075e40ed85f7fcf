/* A parallel for-loop over independent work items, on threads started for
 * the call. Items are handed out through an atomic counter, so uneven items
 * (causal masks) balance; which thread runs an item never changes its
 * result. */
#include "kernels.h"

#include <pthread.h>
#include <stdatomic.h>

typedef struct {
  void (*fn)(void *ctx, int64_t item, int32_t worker);
  void *ctx;
  int64_t items;
  atomic_llong next;
} pool_job;

typedef struct {
  pool_job *job;
  int32_t worker;
} pool_arg;

static void drain(pool_job *job, int32_t worker) {
  for (;;) {
    int64_t i = (int64_t)atomic_fetch_add(&job->next, 1);
    if (i >= job->items)
      return;
    job->fn(job->ctx, i, worker);
  }
}

static void *thread_main(void *p) {
  pool_arg *a = p;
  drain(a->job, a->worker);
  return NULL;
}

#define MAX_THREADS 256

void attn_parallel_for(int32_t threads, int64_t items,
                       void (*fn)(void *ctx, int64_t item, int32_t worker),
                       void *ctx) {
  pool_job job = {fn, ctx, items, 0};
  if (threads > items)
    threads = (int32_t)items;
  if (threads > MAX_THREADS)
    threads = MAX_THREADS;
  pthread_t tid[MAX_THREADS];
  pool_arg args[MAX_THREADS];
  int32_t started = 0;
  for (int32_t t = 1; t < threads; t++) {
    args[t] = (pool_arg){&job, t};
    if (pthread_create(&tid[t], NULL, thread_main, &args[t]) != 0)
      break; /* run with the threads we have */
    started = t;
  }
  drain(&job, 0);
  for (int32_t t = 1; t <= started; t++)
    pthread_join(tid[t], NULL);
}
