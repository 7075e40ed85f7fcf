/* SPDX-License-Identifier: MIT */
/* bench_pool: what it costs to get a second thread for a parallel loop,
 * the way the library did it before runtimes (start a thread and join it
 * for every loop), the way a call's first loop does now (wake a sleeping
 * worker of a runtime's pool and wait for it), and the way its later
 * loops do (the call holds the pool: the worker that ran the previous
 * loop is still polling). Each sample runs a loop of 2 trivial items on 2
 * threads; the ways alternate sample by sample so that all see the same
 * machine load. Prints the median and the 10th-90th percentiles of each,
 * in microseconds.
 *
 * usage: bench_pool [samples] */
#include "common/pool.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>

#include "bench_util.h"

static atomic_int sink;

static void touch(void *ctx, int64_t item, int32_t slot) {
  (void)ctx;
  atomic_fetch_add(&sink, (int)(item + slot));
}

static void *thread_main(void *arg) {
  touch(arg, 1, 1);
  return NULL;
}

/* The former way: one thread started and joined per loop. */
static double start_and_join(void) {
  double t0 = now();
  pthread_t tid;
  if (pthread_create(&tid, NULL, thread_main, NULL) != 0)
    return -1;
  touch(NULL, 0, 0);
  pthread_join(tid, NULL);
  return now() - t0;
}

static double pool_loop(attn_pool *pool) {
  double t0 = now();
  attn_pool_run(pool, 2, 2, touch, NULL);
  return now() - t0;
}

/* A call's second loop: the first one leaves the worker polling. */
static double held_loop(attn_pool *pool) {
  attn_pool_hold(pool);
  attn_pool_run(pool, 2, 2, touch, NULL);
  double t = pool_loop(pool);
  attn_pool_release(pool);
  return t;
}

static void report(const char *what, double *t, int n) {
  qsort(t, (size_t)n, sizeof *t, cmp_double);
  printf("%-28s median %7.1f us  (p10 %6.1f, p90 %7.1f)\n", what,
         1e6 * t[n / 2], 1e6 * t[n / 10], 1e6 * t[n * 9 / 10]);
}

int main(int argc, char **argv) {
  int n = argc > 1 ? atoi(argv[1]) : 2000;
  if (n < 10)
    return 2;
  attn_pool *pool = NULL;
  double *a = malloc((size_t)n * sizeof *a), *b = malloc((size_t)n * sizeof *b);
  double *c = malloc((size_t)n * sizeof *c);
  if (!a || !b || !c || attn_pool_create(1, &pool) != ATTN_OK)
    return 1;
  for (int i = 0; i < n; i++) {
    a[i] = start_and_join();
    b[i] = pool_loop(pool);
    c[i] = held_loop(pool);
  }
  report("start + join a thread", a, n);
  report("wake a pool worker", b, n);
  report("held pool, polling worker", c, n);
  attn_pool_destroy(pool);
  free(a);
  free(b);
  free(c);
  return 0;
}
