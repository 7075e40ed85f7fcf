/* SPDX-License-Identifier: MIT */
/* Threading of the forward pass, runtimes and the BLAS policy (the pool
 * under them has its own test, test_pool.c).
 *
 * - Long sequences that take the tiled core path (several query blocks and
 *   key blocks, masks that skip whole key blocks, rows that lose every key)
 *   give bit-identical outputs and weights for 1, 2, 3 threads and 0 (all
 *   cores) of the default runtime and a runtime of 3 threads, and for 1
 *   and 7 threads of an ATTN_BLAS_LEAVE runtime (more threads than this
 *   machine has cores; the two policies are not promised the same bits),
 *   and match the double-precision reference.
 * - Several caller threads running forward calls on one layer at once,
 *   each with its own thread count, get exactly the results of the same
 *   calls made one after another.
 * - With OpenBLAS and ATTN_BLAS_HOLD, its thread count is 1 while a
 *   forward call runs, and the same after forward calls (sequential or
 *   concurrent) as before; a count the program sets while calls run is
 *   kept. With ATTN_BLAS_LEAVE the count is never touched.
 * - Runtimes refuse bad settings, report their thread count, and one
 *   destroyed while a call of another thread runs waits for it. */
#define _GNU_SOURCE /* RTLD_DEFAULT */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "ref.h"
#include "tsan.h"

#include <dlfcn.h>
#include <math.h>
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

/* OpenBLAS's thread count, or -1 without OpenBLAS. */
static int blas_threads(void) {
  int (*get)(void) = NULL;
  *(void **)&get = dlsym(RTLD_DEFAULT, "openblas_get_num_threads");
  return get ? get() : -1;
}

static void set_blas_threads(int n) {
  void (*set)(int) = NULL;
  *(void **)&set = dlsym(RTLD_DEFAULT, "openblas_set_num_threads");
  if (set)
    set(n);
}

/* Long-sequence problems -------------------------------------------------- */

typedef struct {
  ref_model m;
  int64_t B, Lq, Lk, E, H, kdim;
  bool self;
  float *q, *kv;
  attn_mask mask;
  int64_t *lengths;
  uint8_t *pad;
  float *bias;
  bool weights; /* compare weights too (small enough) */
} problem;

/* Self-attention, head_dim 64: key blocks of 256, query blocks of 64. Top-
 * left causal; batch row 1 pads keys 256..511 (a whole key block, skipped)
 * and a few others; NaN for empty rows (there are none: every query sees
 * key 0 or its own position). */
static void problem_self(problem *p) {
  memset(p, 0, sizeof *p);
  attn_config cfg;
  attn_config_init(&cfg);
  cfg.embed_dim = p->E = 128;
  cfg.num_heads = p->H = 2;
  assert_int_equal(ref_model_create(&p->m, &cfg, 41), ATTN_OK);
  p->B = 2;
  p->Lq = p->Lk = 700;
  p->kdim = p->E;
  p->self = true;
  p->weights = true;
  ref_rng r;
  ref_rng_seed(&r, 42);
  p->q = ref_random(&r, p->B * p->Lq * p->E, -1, 1);
  p->pad = calloc((size_t)(p->B * p->Lk), 1);
  assert_non_null(p->pad);
  for (int64_t j = 256; j < 512; j++)
    p->pad[p->Lk + j] = 1;
  p->pad[3] = p->pad[699] = p->pad[p->Lk + 600] = 1;
  attn_mask_init(&p->mask);
  p->mask.causal = ATTN_CAUSAL_TOP_LEFT;
  p->mask.key_padding = p->pad;
  p->mask.empty_rows = ATTN_EMPTY_ROW_NAN;
}

/* Cross-attention, 16 heads of 16: query blocks of 512 rows and key blocks
 * of 1024. Bottom-right causal with a window of 300 (whole key blocks
 * before each query block are skipped), key lengths, and an [Lq, Lk] bias
 * with -inf entries, one query row hidden from every key (an empty row, NaN
 * mode off: zeros). */
static void problem_cross(problem *p) {
  memset(p, 0, sizeof *p);
  attn_config cfg;
  attn_config_init(&cfg);
  cfg.embed_dim = p->E = 256;
  cfg.num_heads = p->H = 16;
  cfg.kdim = cfg.vdim = p->kdim = 96;
  assert_int_equal(ref_model_create(&p->m, &cfg, 43), ATTN_OK);
  p->B = 1;
  p->Lq = 1100;
  p->Lk = 2300;
  ref_rng r;
  ref_rng_seed(&r, 44);
  p->q = ref_random(&r, p->B * p->Lq * p->E, -1, 1);
  p->kv = ref_random(&r, p->B * p->Lk * p->kdim, -1, 1);
  p->lengths = ref_xmalloc((size_t)p->B * sizeof(int64_t));
  p->lengths[0] = 2290;
  p->bias = ref_random(&r, p->Lq * p->Lk, -2, 2);
  for (int64_t i = 0; i < p->Lq; i++)
    for (int64_t j = 0; j < p->Lk; j++)
      if ((i * 7 + j * 3) % 11 == 0)
        p->bias[i * p->Lk + j] = -INFINITY;
  for (int64_t j = 0; j < p->Lk; j++)
    p->bias[777 * p->Lk + j] = -INFINITY;
  attn_mask_init(&p->mask);
  p->mask.causal = ATTN_CAUSAL_BOTTOM_RIGHT;
  p->mask.window = 300;
  p->mask.key_lengths = p->lengths;
  p->mask.bias = p->bias;
  p->mask.bias_stride_q = p->Lk;
}

/* One head of 256: key blocks of 64, query chunks of 16 rows. Sliding
 * window of 100 under a top-left causal mask, so most key blocks of a
 * query block are skipped and the rest cut rows' ranges. */
static void problem_wide_head(problem *p) {
  memset(p, 0, sizeof *p);
  attn_config cfg;
  attn_config_init(&cfg);
  cfg.embed_dim = p->E = 256;
  cfg.num_heads = p->H = 1;
  assert_int_equal(ref_model_create(&p->m, &cfg, 45), ATTN_OK);
  p->B = 2;
  p->Lq = p->Lk = 400;
  p->kdim = p->E;
  p->self = true;
  p->weights = true;
  ref_rng r;
  ref_rng_seed(&r, 46);
  p->q = ref_random(&r, p->B * p->Lq * p->E, -1, 1);
  attn_mask_init(&p->mask);
  p->mask.causal = ATTN_CAUSAL_TOP_LEFT;
  p->mask.window = 100;
}

static void problem_free(problem *p) {
  free(p->q);
  free(p->kv);
  free(p->lengths);
  free(p->pad);
  free(p->bias);
  ref_model_destroy(&p->m);
}

static int64_t out_count(const problem *p) { return p->B * p->Lq * p->E; }
static int64_t weight_count(const problem *p, int32_t mode) {
  return p->B * p->Lq * p->Lk * (mode == ATTN_WEIGHTS_PER_HEAD ? p->H : 1);
}

/* The runtime run() uses; NULL = the default one. */
static attn_runtime *run_rt;

/* mode < 0: no weights. */
static attn_status run(const problem *p, int32_t threads, int32_t mode,
                       float *out, float *weights) {
  attn_options o;
  attn_options_init(&o);
  o.num_threads = threads;
  o.runtime = run_rt;
  if (mode >= 0) {
    o.weights_mode = mode;
    o.attn_weights = weights;
  }
  if (p->self)
    return attn_self_forward(p->m.layer, p->B, p->Lq, p->q, &p->mask, &o, out);
  return attn_forward(p->m.layer, p->B, p->Lq, p->Lk, p->q, p->kv, p->kv,
                      &p->mask, &o, out);
}

/* The reference for p: output, and per-head and averaged weights when
 * p->weights. */
typedef struct {
  double *out, *w_head, *w_avg;
} reference;

static void reference_new(const problem *p, reference *r) {
  memset(r, 0, sizeof *r);
  r->out = ref_xmalloc((size_t)out_count(p) * sizeof(double));
  if (p->weights) {
    r->w_head = ref_xmalloc((size_t)weight_count(p, 0) * sizeof(double));
    r->w_avg = ref_xmalloc((size_t)weight_count(p, 1) * sizeof(double));
  }
  const float *kv = p->self ? p->q : p->kv;
  ref_forward(&p->m.ref, p->B, p->Lq, p->Lk, p->q, kv, kv, &p->mask, r->out,
              r->w_head);
  if (p->weights)
    ref_average_heads(p->B, p->H, p->Lq, p->Lk, r->w_head, r->w_avg);
}

static void reference_free(reference *r) {
  free(r->out);
  free(r->w_head);
  free(r->w_avg);
}

/* Outputs (no weights, per-head weights, averaged weights) for one thread
 * count, checked against the reference. */
typedef struct {
  float *out[3], *w[3];
} results;

static void compute(const problem *p, const reference *ref, int32_t threads,
                    results *res) {
  memset(res, 0, sizeof *res);
  int modes = p->weights ? 3 : 1;
  for (int k = 0; k < modes; k++) {
    int32_t mode = k - 1;
    res->out[k] = ref_xmalloc((size_t)out_count(p) * sizeof(float));
    if (mode >= 0)
      res->w[k] = ref_xmalloc((size_t)weight_count(p, mode) * sizeof(float));
    assert_int_equal(run(p, threads, mode, res->out[k], res->w[k]), ATTN_OK);
    assert_true(ref_close("output", res->out[k], ref->out, out_count(p),
                          REF_RTOL, REF_ATOL));
    if (mode >= 0)
      assert_true(ref_close(mode ? "averaged weights" : "per-head weights",
                            res->w[k], mode ? ref->w_avg : ref->w_head,
                            weight_count(p, mode), REF_RTOL, REF_ATOL));
  }
}

static void assert_same(const problem *p, const results *a, const results *b) {
  for (int k = 0; k < 3; k++) {
    if (!a->out[k])
      continue;
    assert_memory_equal(a->out[k], b->out[k],
                        (size_t)out_count(p) * sizeof(float));
    if (a->w[k])
      assert_memory_equal(a->w[k], b->w[k],
                          (size_t)weight_count(p, k - 1) * sizeof(float));
  }
}

static void results_free(results *r) {
  for (int k = 0; k < 3; k++) {
    free(r->out[k]);
    free(r->w[k]);
  }
}

static attn_runtime *new_runtime(int32_t threads, int32_t policy) {
  attn_runtime_config rc;
  assert_int_equal(attn_runtime_config_init(&rc), ATTN_OK);
  rc.num_threads = threads;
  rc.blas_policy = policy;
  attn_runtime *rt = NULL;
  assert_int_equal(attn_runtime_create(&rc, &rt), ATTN_OK);
  int32_t n = 0;
  assert_int_equal(attn_runtime_threads(rt, &n), ATTN_OK);
  assert_int_equal(n, threads);
  return rt;
}

static void check_thread_counts(problem *p) {
  reference ref;
  reference_new(p, &ref);
  const int32_t counts[] = {1, 2, 3, 0};
  results first, other;
  compute(p, &ref, counts[0], &first);
  for (size_t t = 1; t < sizeof counts / sizeof *counts; t++) {
    compute(p, &ref, counts[t], &other);
    assert_same(p, &first, &other);
    results_free(&other);
  }
  /* Runtimes with more threads than cores, under either BLAS policy.
   * The policies cut the projections differently, so results are
   * bit-identical only within one (first ran under ATTN_BLAS_HOLD). */
  const int32_t sizes[] = {3, 7};
  for (size_t r = 0; r < 2; r++) {
    run_rt = new_runtime(sizes[r], r ? ATTN_BLAS_LEAVE : ATTN_BLAS_HOLD);
    compute(p, &ref, 0, &other);
    if (r) {
      results one;
      compute(p, &ref, 1, &one);
      assert_same(p, &one, &other);
      results_free(&one);
    } else {
      assert_same(p, &first, &other);
    }
    results_free(&other);
    attn_runtime_destroy(run_rt);
    run_rt = NULL;
  }
  results_free(&first);
  reference_free(&ref);
}

static void test_tiled_self_thread_counts(void **state) {
  (void)state;
  problem p;
  problem_self(&p);
  int before = blas_threads();
  check_thread_counts(&p);
  assert_int_equal(blas_threads(), before);
  problem_free(&p);
}

static void test_tiled_cross_thread_counts(void **state) {
  (void)state;
  problem p;
  problem_cross(&p);
  /* The hidden query row gives zeros before out_proj: out_proj's bias. */
  check_thread_counts(&p);
  problem_free(&p);
}

/* Concurrent callers --------------------------------------------------------
 */

typedef struct {
  const problem *ps;
  const results *want; /* sequential results per problem */
  int index;
  int failures;
} caller;

static void *caller_main(void *arg) {
  caller *c = arg;
  for (int iter = 0; iter < 3; iter++)
    for (int k = 0; k < 2; k++) {
      int which = (c->index + iter + k) % 2;
      const problem *p = &c->ps[which];
      int32_t mode = which == 0 ? ATTN_WEIGHTS_AVERAGE : -1;
      int32_t threads = (c->index + iter) % 3; /* 0, 1 or 2 */
      float *out = malloc((size_t)out_count(p) * sizeof(float));
      float *w = mode >= 0
                     ? malloc((size_t)weight_count(p, mode) * sizeof(float))
                     : NULL;
      if (!out || (mode >= 0 && !w) ||
          run(p, threads, mode, out, w) != ATTN_OK) {
        c->failures++;
      } else {
        const results *r = &c->want[which];
        int slot = mode + 1;
        if (memcmp(out, r->out[slot], (size_t)out_count(p) * sizeof(float)))
          c->failures++;
        if (w && memcmp(w, r->w[slot],
                        (size_t)weight_count(p, mode) * sizeof(float)))
          c->failures++;
      }
      free(out);
      free(w);
    }
  return NULL;
}

static void test_wide_head_thread_counts(void **state) {
  (void)state;
  problem p;
  problem_wide_head(&p);
  check_thread_counts(&p);
  problem_free(&p);
}

static void test_concurrent_callers(void **state) {
  (void)state;
  problem ps[2];
  problem_self(&ps[0]);
  problem_cross(&ps[1]);
  results want[2];
  for (int k = 0; k < 2; k++) {
    reference ref;
    reference_new(&ps[k], &ref);
    compute(&ps[k], &ref, 1, &want[k]);
    reference_free(&ref);
  }
  /* A count other than 1 and the machine's, which must come back. */
  int before = blas_threads();
  if (before > 0)
    set_blas_threads(3);
  enum { CALLERS = 4 };
  pthread_t tid[CALLERS];
  caller c[CALLERS];
  for (int i = 0; i < CALLERS; i++) {
    c[i] = (caller){ps, want, i, 0};
    assert_int_equal(pthread_create(&tid[i], NULL, caller_main, &c[i]), 0);
  }
  for (int i = 0; i < CALLERS; i++) {
    pthread_join(tid[i], NULL);
    assert_int_equal(c[i].failures, 0);
  }
  if (before > 0) {
    assert_int_equal(blas_threads(), 3);
    set_blas_threads(before);
  }
  for (int k = 0; k < 2; k++) {
    results_free(&want[k]);
    problem_free(&ps[k]);
  }
}

/* OpenBLAS held at one thread during calls ---------------------------------
 */

typedef struct {
  const problem *p;
  atomic_int stop;
} busy_caller;

static void *busy_main(void *arg) {
  busy_caller *c = arg;
  float *out = ref_xmalloc((size_t)out_count(c->p) * sizeof(float));
  while (!atomic_load(&c->stop))
    if (run(c->p, 2, -1, out, NULL) != ATTN_OK)
      break;
  free(out);
  return NULL;
}

/* Polls OpenBLAS's count while c's calls run: true once it reads 1. */
static bool wait_for_one(void) {
  for (int i = 0; i < 200000; i++) {
    if (blas_threads() == 1)
      return true;
    struct timespec ts = {0, 100000};
    nanosleep(&ts, NULL);
  }
  return false;
}

/* Runs p's forward calls back to back on another thread (run_rt's
 * runtime) from OpenBLAS at 2 threads, calls during(), stops them, and
 * returns OpenBLAS's count afterwards; restores the program's count. */
static int with_busy_calls(void (*during)(void *), void *arg) {
  int before = blas_threads();
  set_blas_threads(2);
  problem p;
  problem_self(&p);
  busy_caller c = {&p, 0};
  pthread_t tid;
  assert_int_equal(pthread_create(&tid, NULL, busy_main, &c), 0);
  during(arg);
  atomic_store(&c.stop, 1);
  pthread_join(tid, NULL);
  int after = blas_threads();
  set_blas_threads(before);
  problem_free(&p);
  return after;
}

/* Calls run back to back: within seconds the count must read 1. */
static void see_one(void *seen) { *(bool *)seen = wait_for_one(); }

static void test_blas_held(void **state) {
  (void)state;
  if (blas_threads() < 0)
    skip(); /* not OpenBLAS */
  bool seen_one = false;
  assert_int_equal(with_busy_calls(see_one, &seen_one), 2);
  assert_true(seen_one);
}

/* A count the program sets while calls hold OpenBLAS is kept, not
 * overwritten when the calls end. */
static void see_one_then_set(void *seen) {
  see_one(seen);
  set_blas_threads(3); /* the program's own choice, mid-call */
}

static void test_blas_program_count_kept(void **state) {
  (void)state;
  if (blas_threads() < 0)
    skip();
  bool seen_one = false;
  assert_int_equal(with_busy_calls(see_one_then_set, &seen_one), 3);
  assert_true(seen_one);
}

/* ATTN_BLAS_LEAVE: the count is never changed, even while calls run. */
static void count_changes(void *changed) {
  for (int i = 0; i < 3000; i++) {
    *(int *)changed += blas_threads() != 2;
    struct timespec ts = {0, 100000};
    nanosleep(&ts, NULL);
  }
}

static void test_blas_leave(void **state) {
  (void)state;
  if (blas_threads() < 0)
    skip();
  run_rt = new_runtime(2, ATTN_BLAS_LEAVE);
  int changed = 0;
  assert_int_equal(with_busy_calls(count_changes, &changed), 2);
  assert_int_equal(changed, 0);
  attn_runtime_destroy(run_rt);
  run_rt = NULL;
}

static void test_runtime_errors(void **state) {
  (void)state;
  attn_runtime_config rc;
  attn_runtime *rt = (attn_runtime *)&rc; /* must stay untouched */
  attn_runtime *const sentinel = rt;
  assert_int_equal(attn_runtime_config_init(&rc), ATTN_OK);
  assert_int_equal(rc.num_threads, 0);
  assert_int_equal(rc.blas_policy, ATTN_BLAS_HOLD);
  assert_int_equal(attn_runtime_create(&rc, NULL), ATTN_ERR_NULL_POINTER);
  rc.num_threads = -1;
  assert_int_equal(attn_runtime_create(&rc, &rt), ATTN_ERR_BAD_OPTION);
  rc.num_threads = ATTN_MAX_THREADS + 1;
  assert_int_equal(attn_runtime_create(&rc, &rt), ATTN_ERR_BAD_OPTION);
  assert_non_null(strstr(attn_last_error(), "num_threads"));
  rc.num_threads = 2;
  rc.blas_policy = 7;
  assert_int_equal(attn_runtime_create(&rc, &rt), ATTN_ERR_BAD_OPTION);
  assert_non_null(strstr(attn_last_error(), "blas_policy"));
  rc.blas_policy = ATTN_BLAS_LEAVE;
  rc.struct_size = 4;
  assert_int_equal(attn_runtime_create(&rc, &rt), ATTN_ERR_STRUCT_SIZE);
  assert_ptr_equal(rt, sentinel);
  assert_int_equal(attn_runtime_threads(NULL, NULL), ATTN_ERR_NULL_POINTER);
  /* NULL config: the defaults, one thread per CPU this process may use. */
  assert_int_equal(attn_runtime_create(NULL, &rt), ATTN_OK);
  int32_t n = 0, d = 0;
  assert_int_equal(attn_runtime_threads(rt, &n), ATTN_OK);
  assert_int_equal(n, attn_cpu_count());
  assert_int_equal(attn_runtime_threads(NULL, &d), ATTN_OK);
  assert_int_equal(d, attn_cpu_count());
  attn_runtime_destroy(rt);
  attn_runtime_destroy(NULL);
}

/* A runtime destroyed while another thread's call runs on it: the destroy
 * waits for the call, which completes normally (ASan would see a use after
 * free otherwise). Under ATTN_BLAS_HOLD the count reads 1 only once the
 * call is inside the runtime, which tells the test when to destroy. */
typedef struct {
  const problem *p;
  attn_status st;
} long_caller;

static void *long_main(void *arg) {
  long_caller *c = arg;
  float *out = ref_xmalloc((size_t)out_count(c->p) * sizeof(float));
  c->st = run(c->p, 0, -1, out, NULL);
  free(out);
  return NULL;
}

static void test_runtime_destroy_waits(void **state) {
  (void)state;
  int before = blas_threads();
  if (before < 0)
    skip();
  set_blas_threads(2);
  problem p;
  problem_self(&p);
  p.B = 1;
  p.Lq = p.Lk = 1400; /* tens of milliseconds, from p's inputs */
  p.mask.key_padding = NULL;
  run_rt = new_runtime(2, ATTN_BLAS_HOLD);
  long_caller c = {&p, -1};
  pthread_t tid;
  assert_int_equal(pthread_create(&tid, NULL, long_main, &c), 0);
  bool inside = false;
  for (int i = 0; i < 2000000 && !inside; i++)
    inside = blas_threads() == 1;
  if (inside)
    attn_runtime_destroy(run_rt);
  pthread_join(tid, NULL);
  if (!inside)
    attn_runtime_destroy(run_rt);
  run_rt = NULL;
  assert_int_equal(c.st, ATTN_OK);
  assert_int_equal(blas_threads(), 2);
  set_blas_threads(before);
  problem_free(&p);
}

/* After fork(), a child runs calls of runtimes made before it on its
 * calling thread (the workers stayed in the parent), with the same bits,
 * and can destroy them. */
static int child_calls(const problem *p, const float *want) {
  float *out = ref_xmalloc((size_t)out_count(p) * sizeof(float));
  int bad = run(p, 0, -1, out, NULL) != ATTN_OK ||
            memcmp(out, want, (size_t)out_count(p) * sizeof(float)) != 0;
  attn_runtime_destroy(run_rt);
  run_rt = NULL;
  bad |= run(p, 0, -1, out, NULL) != ATTN_OK || /* the default runtime */
         memcmp(out, want, (size_t)out_count(p) * sizeof(float)) != 0;
  free(out);
  return bad;
}

static void test_runtime_after_fork(void **state) {
  (void)state;
#ifdef UNDER_TSAN
  skip();
#endif
  problem p;
  problem_self(&p);
  run_rt = new_runtime(2, ATTN_BLAS_HOLD);
  float *want = ref_xmalloc((size_t)out_count(&p) * sizeof(float));
  assert_int_equal(run(&p, 0, -1, want, NULL), ATTN_OK);
  attn_runtime *parent_rt = run_rt;
  fflush(NULL);
  pid_t pid = fork();
  assert_true(pid >= 0);
  if (pid == 0)
    _exit(child_calls(&p, want));
  int status = 0;
  assert_int_equal(waitpid(pid, &status, 0), pid);
  assert_true(WIFEXITED(status));
  assert_int_equal(WEXITSTATUS(status), 0);
  run_rt = parent_rt; /* still whole in the parent */
  float *again = ref_xmalloc((size_t)out_count(&p) * sizeof(float));
  assert_int_equal(run(&p, 0, -1, again, NULL), ATTN_OK);
  assert_memory_equal(again, want, (size_t)out_count(&p) * sizeof(float));
  attn_runtime_destroy(run_rt);
  run_rt = NULL;
  free(again);
  free(want);
  problem_free(&p);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_tiled_self_thread_counts),
      cmocka_unit_test(test_tiled_cross_thread_counts),
      cmocka_unit_test(test_wide_head_thread_counts),
      cmocka_unit_test(test_concurrent_callers),
      cmocka_unit_test(test_blas_held),
      cmocka_unit_test(test_blas_program_count_kept),
      cmocka_unit_test(test_blas_leave),
      cmocka_unit_test(test_runtime_errors),
      cmocka_unit_test(test_runtime_destroy_waits),
      cmocka_unit_test(test_runtime_after_fork),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
