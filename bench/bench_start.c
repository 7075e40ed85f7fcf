/* bench_start: what starting a parallel step costs. Times a step of two
 * trivial work items on a runtime's persistent pool (attn_exec_for), a
 * whole call's worth (enter, three steps, leave), and, for comparison,
 * starting and joining one thread per step, as the library did before its
 * runtimes had a pool. Prints the median and the range over 20 batches of
 * 500, in microseconds. Built from the library's objects (attn_internal).
 *
 * usage: bench_start */
#include "common/runtime.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

#include "bench_util.h"

#define BATCHES 20
#define STEPS 500

static volatile long sink;

static void item(void *ctx, int64_t i, int32_t slot) {
  (void)ctx;
  sink += i + slot;
}

static void *thread_item(void *arg) {
  item(NULL, (int64_t)(intptr_t)arg, 1);
  return NULL;
}

static void report(const char *what, double *t) {
  qsort(t, BATCHES, sizeof *t, cmp_double);
  printf("%s: median %.2f us (%.2f-%.2f)\n", what, t[BATCHES / 2], t[0],
         t[BATCHES - 1]);
}

int main(void) {
  attn_runtime_config rc;
  attn_runtime_config_init(&rc);
  rc.num_threads = 2;
  attn_runtime *rt = NULL;
  attn_exec x;
  if (attn_runtime_create(&rc, &rt) != ATTN_OK ||
      attn_exec_resolve(rt, 2, 0, &x) != ATTN_OK)
    return 1;
  double step[BATCHES], call[BATCHES], spawn[BATCHES];
  for (int r = 0; r < BATCHES; r++) {
    double t = now();
    attn_exec_enter(&x);
    for (int i = 0; i < STEPS; i++)
      attn_exec_for(&x, 2, 2, item, NULL);
    attn_exec_leave(&x);
    step[r] = (now() - t) / STEPS * 1e6;
    t = now();
    for (int i = 0; i < STEPS; i++) {
      attn_exec_enter(&x);
      for (int k = 0; k < 3; k++)
        attn_exec_for(&x, 2, 2, item, NULL);
      attn_exec_leave(&x);
    }
    call[r] = (now() - t) / STEPS * 1e6;
    t = now();
    for (int i = 0; i < STEPS; i++) {
      pthread_t p;
      if (pthread_create(&p, NULL, thread_item, NULL) != 0)
        return 1;
      item(NULL, 0, 0);
      pthread_join(p, NULL);
    }
    spawn[r] = (now() - t) / STEPS * 1e6;
  }
  report("pool: one step of 2 items", step);
  report("pool: one call (enter, 3 steps, leave)", call);
  report("a thread started and joined per step", spawn);
  attn_runtime_destroy(rt);
  return 0;
}
