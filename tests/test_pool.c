/* SPDX-License-Identifier: MIT */
/* The worker pool, the thread policy and the CPU count (src/common).
 *
 * - A job runs every item exactly once, on slots below its thread count,
 *   for item counts below, at and above the thread count and pools of 0 to
 *   7 workers; several threads running jobs on one pool at once each get
 *   all their items done.
 * - An idle pool uses no CPU: its workers sleep, after a call that held
 *   the pool too; while a call holds it, they poll only briefly before
 *   sleeping. Jobs of held and unheld calls mix; a held call's caller
 *   sees everything its helpers wrote (plain memory, checked under TSan
 *   in CI), and a job posted at any moment of a worker's polling or
 *   sleeping gets its helper.
 * - attn_threads_for stays within [1, min(max, items)] and grows with the
 *   work.
 * - attn_cpu_count is at least 1 and at most the CPUs of the affinity
 *   mask. */
#define _GNU_SOURCE /* sched_getaffinity */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "common/policy.h"
#include "common/pool.h"

#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdlib.h>
#include <time.h>

typedef struct {
  atomic_int *hits;
  int32_t threads;
  atomic_int bad_slot;
} count_job;

static void count_item(void *ctx, int64_t item, int32_t slot) {
  count_job *j = ctx;
  atomic_fetch_add(&j->hits[item], 1);
  if (slot < 0 || slot >= j->threads)
    atomic_store(&j->bad_slot, 1);
}

static void run_counted(attn_pool *pool, int32_t threads, int64_t n) {
  atomic_int *hits = calloc((size_t)(n + 1), sizeof *hits);
  assert_non_null(hits);
  for (int64_t i = 0; i < n; i++)
    atomic_init(&hits[i], 0);
  count_job j = {hits, threads, 0};
  attn_pool_run(pool, threads, n, count_item, &j);
  for (int64_t i = 0; i < n; i++)
    assert_int_equal(atomic_load(&hits[i]), 1);
  assert_int_equal(atomic_load(&j.bad_slot), 0);
  free(hits);
}

static void test_every_item_once(void **state) {
  (void)state;
  const int32_t workers[] = {0, 1, 2, 7};
  const int64_t items[] = {0, 1, 2, 3, 7, 1000};
  const int32_t threads[] = {1, 2, 3, 8, 300};
  for (size_t w = 0; w < sizeof workers / sizeof *workers; w++) {
    attn_pool *pool = NULL;
    assert_int_equal(attn_pool_create(workers[w], &pool), ATTN_OK);
    for (size_t a = 0; a < sizeof items / sizeof *items; a++)
      for (size_t t = 0; t < sizeof threads / sizeof *threads; t++)
        run_counted(pool, threads[t], items[a]);
    attn_pool_destroy(pool);
  }
  run_counted(NULL, 4, 100); /* no pool: all on the caller */
  attn_pool_destroy(NULL);
}

typedef struct {
  attn_pool *pool;
  int rounds;
  bool hold; /* as a call: hold the pool over runs of a few jobs */
} submitter;

static void *submit_main(void *arg) {
  submitter *s = arg;
  for (int r = 0; r < s->rounds; r++) {
    if (s->hold && r % 3 == 0)
      attn_pool_hold(s->pool);
    run_counted(s->pool, 1 + r % 4, 50 + r % 37);
    if (s->hold && r % 3 == 2)
      attn_pool_release(s->pool);
  }
  if (s->hold && s->rounds % 3 != 0)
    attn_pool_release(s->pool);
  return NULL;
}

/* Jobs from several threads at once share the workers, whether their
 * callers hold the pool or not. */
static void test_concurrent_jobs(void **state) {
  (void)state;
  attn_pool *pool = NULL;
  assert_int_equal(attn_pool_create(3, &pool), ATTN_OK);
  enum { SUBMITTERS = 4 };
  pthread_t tid[SUBMITTERS];
  submitter s[SUBMITTERS];
  for (int i = 0; i < SUBMITTERS; i++) {
    s[i] = (submitter){pool, 301, i % 2 == 0};
    assert_int_equal(pthread_create(&tid[i], NULL, submit_main, &s[i]), 0);
  }
  for (int i = 0; i < SUBMITTERS; i++)
    pthread_join(tid[i], NULL);
  attn_pool_destroy(pool);
}

static void spin_item(void *ctx, int64_t item, int32_t slot) {
  (void)item;
  volatile double *x = ctx; /* one sink per thread slot: no data race */
  for (int i = 0; i < 20000; i++)
    x[slot] += 1.0;
}

/* Seconds on a clock: the process's CPU time or monotonic wall time. */
static double seconds(clockid_t clock) {
  struct timespec ts;
  clock_gettime(clock, &ts);
  return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static double cpu_seconds(void) { return seconds(CLOCK_PROCESS_CPUTIME_ID); }
static double wall_seconds(void) { return seconds(CLOCK_MONOTONIC); }

/* CPU time the whole process takes over 200 ms of sleeping. */
static double idle_cpu(void) {
  double t0 = cpu_seconds();
  struct timespec ts = {0, 200000000};
  nanosleep(&ts, NULL);
  return cpu_seconds() - t0;
}

/* After a job, the workers sleep: 200 ms of an idle pool with 3 workers
 * costs far less CPU time than one spinning worker would (200 ms). The
 * process's CPU time over the same sleep without the pool is taken off
 * (sanitizer runtimes have threads of their own). */
static void test_idle_pool_sleeps(void **state) {
  (void)state;
  double base = idle_cpu();
  attn_pool *pool = NULL;
  assert_int_equal(attn_pool_create(3, &pool), ATTN_OK);
  volatile double sink[4] = {0};
  attn_pool_run(pool, 4, 64, spin_item, (void *)sink);
  /* A worker that started late (thread start-up is slow under ASan) may
   * still be setting itself up: let it settle before measuring. */
  struct timespec settle = {0, 50000000};
  nanosleep(&settle, NULL);
  double used = idle_cpu();
  print_message("CPU time over 200 ms: %.2f ms with an idle pool, %.2f ms "
                "without\n",
                used * 1e3, base * 1e3);
  assert_true(used - base < 0.1);
  attn_pool_destroy(pool);
}

/* A held pool runs back-to-back jobs; its idle workers poll only briefly
 * (SPIN_NS, 0.1 ms), so 200 ms of a held pool with nothing posted cost
 * far less than one spinning worker, and once released it sleeps. */
static void test_held_pool(void **state) {
  (void)state;
  double base = idle_cpu();
  attn_pool *pool = NULL;
  assert_int_equal(attn_pool_create(3, &pool), ATTN_OK);
  attn_pool_hold(pool);
  for (int r = 0; r < 200; r++)
    run_counted(pool, 4, 1 + r % 50);
  volatile double sink[4] = {0};
  attn_pool_run(pool, 4, 64, spin_item, (void *)sink);
  struct timespec settle = {0, 50000000};
  nanosleep(&settle, NULL);
  double held = idle_cpu();
  attn_pool_release(pool);
  run_counted(pool, 4, 100);
  nanosleep(&settle, NULL);
  double released = idle_cpu();
  print_message("CPU time over 200 ms: %.2f ms held, %.2f ms released, "
                "%.2f ms without a pool\n",
                held * 1e3, released * 1e3, base * 1e3);
  assert_true(held - base < 0.1);
  assert_true(released - base < 0.1);
  attn_pool_destroy(pool);
}

/* Items write plain (non-atomic) memory that the caller reads once
 * attn_pool_run returns: the hand-over must order the writes before the
 * read, whether the caller slept or polled for its helpers. */
typedef struct {
  int64_t *out;
} plain_job;

static void plain_item(void *ctx, int64_t item, int32_t slot) {
  (void)slot;
  plain_job *j = ctx;
  volatile int64_t x = 0; /* uneven items: callers wait for helpers */
  for (int64_t i = 0; i < (item % 7) * 2000; i++)
    x = x + i;
  j->out[item] = 3 * item + 1;
}

static void test_held_results_visible(void **state) {
  (void)state;
  attn_pool *pool = NULL;
  assert_int_equal(attn_pool_create(2, &pool), ATTN_OK);
  int64_t out[24];
  plain_job j = {out};
  for (int r = 0; r < 300; r++) {
    if (r % 2 == 0)
      attn_pool_hold(pool);
    int64_t n = 2 + r % 23;
    for (int64_t i = 0; i < n; i++)
      out[i] = -1;
    attn_pool_run(pool, 3, n, plain_item, &j);
    for (int64_t i = 0; i < n; i++)
      assert_int_equal(out[i], 3 * i + 1);
    if (r % 2 == 0)
      attn_pool_release(pool);
  }
  attn_pool_destroy(pool);
}

/* Two items that wait for each other, up to 2 s: they meet only if a
 * worker takes one while the caller runs the other. */
typedef struct {
  atomic_int arrived, alone;
} meeting;

static void meet_item(void *ctx, int64_t item, int32_t slot) {
  (void)item;
  (void)slot;
  meeting *m = ctx;
  atomic_fetch_add(&m->arrived, 1);
  double t0 = wall_seconds();
  while (atomic_load(&m->arrived) < 2)
    if (wall_seconds() - t0 > 2.0) {
      atomic_fetch_add(&m->alone, 1);
      return;
    }
}

static void meet(attn_pool *pool, double delay_us, int held) {
  run_counted(pool, 2, 2); /* the worker goes idle after this */
  double t0 = wall_seconds();
  while ((wall_seconds() - t0) * 1e6 < delay_us)
    ;
  meeting m;
  atomic_init(&m.arrived, 0);
  atomic_init(&m.alone, 0);
  attn_pool_run(pool, 2, 2, meet_item, &m);
  if (atomic_load(&m.alone) != 0)
    fail_msg("no helper met the caller (delay %.2f us, held %d)", delay_us,
             held);
}

/* A job posted while the worker polls, as it stops polling (around the
 * 0.1 ms limit, swept in steps of 0.05 us) or while it sleeps, held or
 * not, finds its helper: no wake-up is lost between polling and sleeping.
 * The caller waits by polling the clock, which is exact to well under a
 * microsecond. */
static void test_no_lost_wakeup(void **state) {
  (void)state;
  attn_pool *pool = NULL;
  assert_int_equal(attn_pool_create(1, &pool), ATTN_OK);
  const double delays_us[] = {0, 20, 60, 200, 1000};
  for (int held = 0; held < 2; held++) {
    if (held)
      attn_pool_hold(pool);
    for (size_t d = 0; d < sizeof delays_us / sizeof *delays_us; d++)
      meet(pool, delays_us[d], held);
    for (int sweep = 0; sweep < 3; sweep++)
      for (int step = 0; step < 500; step++) /* 90 to 115 us */
        meet(pool, 90 + 0.05 * step, held);
    if (held)
      attn_pool_release(pool);
  }
  attn_pool_destroy(pool);
}

static void test_policy(void **state) {
  (void)state;
  /* Tiny work: one thread, whatever is allowed. */
  assert_int_equal(attn_threads_for(8, 1000, 1.0), 1);
  assert_int_equal(attn_threads_for(8, 1000, attn_cost_flops(1e3)), 1);
  /* Huge work: every thread allowed, but never more than the items. */
  assert_int_equal(attn_threads_for(8, 1000, attn_cost_flops(1e12)), 8);
  assert_int_equal(attn_threads_for(8, 3, attn_cost_flops(1e12)), 3);
  assert_int_equal(attn_threads_for(0, 3, attn_cost_flops(1e12)), 1);
  /* More work never gives fewer threads. */
  int32_t last = 1;
  for (double f = 1e3; f < 1e12; f *= 3) {
    int32_t t = attn_threads_for(64, 1 << 20, attn_cost_flops(f));
    assert_true(t >= last && t <= 64);
    last = t;
  }
  assert_true(attn_cost_bytes(1e6) > 0);
}

static void test_cpu_count(void **state) {
  (void)state;
  cpu_set_t set;
  assert_int_equal(sched_getaffinity(0, sizeof set, &set), 0);
  int32_t n = attn_cpu_count();
  print_message("attn_cpu_count() = %d (affinity %d)\n", n, CPU_COUNT(&set));
  assert_true(n >= 1);
  assert_true(n <= CPU_COUNT(&set));
  /* A narrower affinity mask is seen at once. */
  cpu_set_t one;
  CPU_ZERO(&one);
  for (int c = 0; c < CPU_SETSIZE; c++)
    if (CPU_ISSET(c, &set)) {
      CPU_SET(c, &one);
      break;
    }
  assert_int_equal(sched_setaffinity(0, sizeof one, &one), 0);
  assert_int_equal(attn_cpu_count(), 1);
  assert_int_equal(sched_setaffinity(0, sizeof set, &set), 0);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_every_item_once),
      cmocka_unit_test(test_concurrent_jobs),
      cmocka_unit_test(test_idle_pool_sleeps),
      cmocka_unit_test(test_held_pool),
      cmocka_unit_test(test_held_results_visible),
      cmocka_unit_test(test_no_lost_wakeup),
      cmocka_unit_test(test_policy),
      cmocka_unit_test(test_cpu_count),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
