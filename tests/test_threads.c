/* Threading of the forward pass and the parallel for-loop under it.
 *
 * - attn_parallel_for runs every item exactly once, on worker ids below the
 *   thread count, for item counts below, at and above the thread count.
 * - Long sequences that take the tiled core path (several query blocks and
 *   key blocks, masks that skip whole key blocks, rows that lose every key)
 *   give bit-identical outputs and weights for 1, 2, 3 threads and 0 (all
 *   cores), and match the double-precision reference.
 * - Several caller threads running forward calls on one layer at once,
 *   each with its own thread count, get exactly the results of the same
 *   calls made one after another.
 * - With OpenBLAS, its thread count is 1 while a forward call runs, and the
 *   same after forward calls (sequential or concurrent) as before: the
 *   library restores what it held at one thread. */
#define _GNU_SOURCE /* RTLD_DEFAULT */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "kernels.h"
#include "ref.h"

#include <dlfcn.h>
#include <math.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

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

/* attn_parallel_for ------------------------------------------------------ */

typedef struct {
  atomic_int *hits;
  int32_t threads;
  atomic_int bad_worker;
} count_job;

static void count_item(void *ctx, int64_t item, int32_t worker) {
  count_job *j = ctx;
  atomic_fetch_add(&j->hits[item], 1);
  if (worker < 0 || worker >= j->threads)
    atomic_store(&j->bad_worker, 1);
}

static void test_parallel_for(void **state) {
  (void)state;
  const int64_t items[] = {0, 1, 2, 3, 7, 1000};
  const int32_t threads[] = {1, 2, 3, 8, 300};
  for (size_t a = 0; a < sizeof items / sizeof *items; a++)
    for (size_t t = 0; t < sizeof threads / sizeof *threads; t++) {
      int64_t n = items[a];
      atomic_int *hits = ref_xmalloc((size_t)(n + 1) * sizeof *hits);
      for (int64_t i = 0; i < n; i++)
        atomic_init(&hits[i], 0);
      count_job j = {hits, threads[t], 0};
      attn_parallel_for(threads[t], n, count_item, &j);
      for (int64_t i = 0; i < n; i++)
        assert_int_equal(atomic_load(&hits[i]), 1);
      assert_int_equal(atomic_load(&j.bad_worker), 0);
      free(hits);
    }
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

/* mode < 0: no weights. */
static attn_status run(const problem *p, int32_t threads, int32_t mode,
                       float *out, float *weights) {
  attn_options o;
  attn_options_init(&o);
  o.num_threads = threads;
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

static void test_blas_held(void **state) {
  (void)state;
  int before = blas_threads();
  if (before < 0)
    skip(); /* not OpenBLAS */
  set_blas_threads(2);
  problem p;
  problem_self(&p);
  busy_caller c = {&p, 0};
  pthread_t tid;
  assert_int_equal(pthread_create(&tid, NULL, busy_main, &c), 0);
  /* Calls run back to back: within seconds the count must read 1. */
  bool seen_one = false;
  for (int i = 0; i < 200000 && !seen_one; i++) {
    seen_one = blas_threads() == 1;
    struct timespec ts = {0, 100000};
    nanosleep(&ts, NULL);
  }
  atomic_store(&c.stop, 1);
  pthread_join(tid, NULL);
  assert_true(seen_one);
  assert_int_equal(blas_threads(), 2);
  set_blas_threads(before);
  problem_free(&p);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_parallel_for),
      cmocka_unit_test(test_tiled_self_thread_counts),
      cmocka_unit_test(test_tiled_cross_thread_counts),
      cmocka_unit_test(test_wide_head_thread_counts),
      cmocka_unit_test(test_concurrent_callers),
      cmocka_unit_test(test_blas_held),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
