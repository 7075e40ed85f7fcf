/* SPDX-License-Identifier: MIT */
/* Run-time behaviour: bit-identical results on repeated calls and whatever
 * the thread count, caller-provided scratch (exact size works at any
 * alignment and whatever it holds, one byte less is refused), and
 * concurrent forward calls on one layer from several threads. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "ref.h"

#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* One forward problem with its inputs. */
typedef struct {
  ref_model m;
  int64_t B, Lq, Lk, E, H;
  int kind; /* 0 self (fused Q/K/V), 1 key == value, 2 three buffers */
  float *q, *k, *v;
  attn_mask mask;
  int64_t *lengths;
} problem;

static void problem_new(problem *p, int kind, int64_t E, int64_t H,
                        int64_t kdim, int64_t B, int64_t Lq, int64_t Lk,
                        uint64_t seed) {
  memset(p, 0, sizeof *p);
  attn_config cfg;
  attn_config_init(&cfg);
  cfg.embed_dim = E;
  cfg.num_heads = H;
  cfg.kdim = kdim;
  cfg.vdim = kind == 1 ? kdim : 0;
  assert_int_equal(ref_model_create(&p->m, &cfg, seed), ATTN_OK);
  p->B = B;
  p->Lq = Lq;
  p->Lk = kind == 0 ? Lq : Lk;
  p->E = E;
  p->H = H;
  p->kind = kind;
  ref_rng r;
  ref_rng_seed(&r, seed + 1);
  int64_t kd = p->m.ref.kdim, vd = p->m.ref.vdim;
  p->q = ref_random(&r, B * Lq * E, -1, 1);
  p->k = kind == 0 ? p->q : ref_random(&r, B * p->Lk * kd, -1, 1);
  p->v = kind == 0   ? p->q
         : kind == 1 ? p->k
                     : ref_random(&r, B * p->Lk * vd, -1, 1);
  /* Masks make the work items uneven, which is where scheduling could
   * leak into results. */
  attn_mask_init(&p->mask);
  p->mask.causal = ATTN_CAUSAL_BOTTOM_RIGHT;
  p->lengths = ref_xmalloc((size_t)B * sizeof(int64_t));
  for (int64_t b = 0; b < B; b++)
    p->lengths[b] = p->Lk - b * (p->Lk / (2 * B));
  p->mask.key_lengths = p->lengths;
}

static void problem_free(problem *p) {
  if (p->kind != 0)
    free(p->k);
  if (p->kind == 2)
    free(p->v);
  free(p->q);
  free(p->lengths);
  ref_model_destroy(&p->m);
}

static int64_t out_count(const problem *p) { return p->B * p->Lq * p->E; }

static int64_t weight_count(const problem *p, int mode) {
  return p->B * p->Lq * p->Lk * (mode == ATTN_WEIGHTS_PER_HEAD ? p->H : 1);
}

static attn_status run(const problem *p, const attn_options *o, float *out) {
  if (p->kind == 0)
    return attn_self_forward(p->m.layer, p->B, p->Lq, p->q, &p->mask, o, out);
  return attn_forward(p->m.layer, p->B, p->Lq, p->Lk, p->q, p->k, p->v,
                      &p->mask, o, out);
}

/* Widths and lengths chosen so that no buffer is a multiple of the
 * library's 16-float alignment: the fused paths then need less scratch than
 * the size reported, which must nevertheless be enforced. */
static void setup_problems(problem *ps) {
  problem_new(&ps[0], 0, 72, 8, 0, 3, 151, 0, 1);
  problem_new(&ps[1], 1, 36, 4, 40, 2, 70, 291, 2);
  problem_new(&ps[2], 2, 32, 16, 20, 4, 65, 33, 3);
  /* Fewer work items than threads. */
  problem_new(&ps[3], 2, 8, 1, 5, 1, 3, 2, 4);
}
#define NPROBLEMS 4

/* Results (output, and weights in each mode) for one thread setting. */
typedef struct {
  float *out, *w_head, *w_avg;
} results;

static void compute(const problem *p, int32_t threads, results *res) {
  size_t ob = (size_t)out_count(p) * sizeof(float);
  res->out = ref_xmalloc(ob);
  res->w_head = ref_xmalloc((size_t)weight_count(p, ATTN_WEIGHTS_PER_HEAD) * 4);
  res->w_avg = ref_xmalloc((size_t)weight_count(p, ATTN_WEIGHTS_AVERAGE) * 4);
  attn_options o;
  attn_options_init(&o);
  o.num_threads = threads;
  assert_int_equal(run(p, &o, res->out), ATTN_OK);
  float *tmp = ref_xmalloc(ob);
  o.attn_weights = res->w_head;
  assert_int_equal(run(p, &o, tmp), ATTN_OK);
  o.attn_weights = res->w_avg;
  o.weights_mode = ATTN_WEIGHTS_AVERAGE;
  assert_int_equal(run(p, &o, tmp), ATTN_OK);
  free(tmp);
}

static void results_equal(const problem *p, const results *a,
                          const results *b) {
  assert_memory_equal(a->out, b->out, (size_t)out_count(p) * sizeof(float));
  assert_memory_equal(a->w_head, b->w_head,
                      (size_t)weight_count(p, ATTN_WEIGHTS_PER_HEAD) * 4);
  assert_memory_equal(a->w_avg, b->w_avg,
                      (size_t)weight_count(p, ATTN_WEIGHTS_AVERAGE) * 4);
}

static void results_free(results *r) {
  free(r->out);
  free(r->w_head);
  free(r->w_avg);
}

static void test_repeated_calls(void **state) {
  (void)state;
  problem ps[NPROBLEMS];
  setup_problems(ps);
  for (int i = 0; i < NPROBLEMS; i++) {
    results first;
    compute(&ps[i], 0, &first);
    /* Sanity: the results are right, not merely stable. */
    double *want = ref_xmalloc((size_t)out_count(&ps[i]) * sizeof(double));
    ref_forward(&ps[i].m.ref, ps[i].B, ps[i].Lq, ps[i].Lk, ps[i].q, ps[i].k,
                ps[i].v, &ps[i].mask, want, NULL);
    assert_true(ref_close("repeated", first.out, want, out_count(&ps[i]),
                          REF_RTOL, REF_ATOL));
    free(want);
    for (int rep = 0; rep < 3; rep++) {
      results again;
      compute(&ps[i], 0, &again);
      results_equal(&ps[i], &first, &again);
      results_free(&again);
    }
    results_free(&first);
    problem_free(&ps[i]);
  }
}

/* The thread count never changes a bit: per call (options) and per layer
 * (config). */
static void test_thread_counts(void **state) {
  (void)state;
  problem ps[NPROBLEMS];
  setup_problems(ps);
  const int32_t counts[] = {2, 0, 3, 7};
  for (int i = 0; i < NPROBLEMS; i++) {
    results one;
    compute(&ps[i], 1, &one);
    for (size_t t = 0; t < sizeof counts / sizeof *counts; t++) {
      results other;
      compute(&ps[i], counts[t], &other);
      results_equal(&ps[i], &one, &other);
      results_free(&other);
    }
    results_free(&one);
  }
  /* Layer default: same weights in layers built with num_threads 1 and 2,
   * options left at 0. */
  for (int32_t lt = 1; lt <= 2; lt++) {
    attn_config cfg;
    attn_config_init(&cfg);
    assert_int_equal(attn_layer_get_config(ps[0].m.layer, &cfg), ATTN_OK);
    cfg.num_threads = lt;
    attn_layer *l = NULL;
    assert_int_equal(attn_layer_create(&cfg, &l), ATTN_OK);
    float *w = NULL;
    int64_t n = 0;
    const attn_weight_id ids[] = {ATTN_W_IN_PROJ, ATTN_B_IN_PROJ, ATTN_W_OUT,
                                  ATTN_B_OUT};
    for (int id = 0; id < 4; id++) {
      assert_int_equal(attn_layer_weight_count(ps[0].m.layer, ids[id], &n),
                       ATTN_OK);
      w = ref_xmalloc((size_t)n * sizeof(float));
      assert_int_equal(attn_layer_get_weight(ps[0].m.layer, ids[id], w, n),
                       ATTN_OK);
      assert_int_equal(attn_layer_set_weight(l, ids[id], w, n), ATTN_OK);
      free(w);
    }
    size_t ob = (size_t)out_count(&ps[0]) * sizeof(float);
    float *a = ref_xmalloc(ob), *b = ref_xmalloc(ob);
    assert_int_equal(run(&ps[0], NULL, a), ATTN_OK);
    assert_int_equal(
        attn_self_forward(l, ps[0].B, ps[0].Lq, ps[0].q, &ps[0].mask, NULL, b),
        ATTN_OK);
    assert_memory_equal(a, b, ob);
    free(a);
    free(b);
    attn_layer_destroy(l);
  }
  for (int i = 0; i < NPROBLEMS; i++)
    problem_free(&ps[i]);
}

/* Caller scratch: the size the library reports is enough at any alignment
 * and whatever the buffer held before; one byte less is refused and leaves
 * the outputs alone. */
static void test_scratch(void **state) {
  (void)state;
  problem ps[NPROBLEMS];
  setup_problems(ps);
  for (int i = 0; i < NPROBLEMS; i++) {
    const problem *p = &ps[i];
    for (int variant = 0; variant < 4; variant++) {
      int64_t nw = weight_count(p, ATTN_WEIGHTS_PER_HEAD);
      float *w = ref_xmalloc((size_t)nw * sizeof(float));
      attn_options o;
      attn_options_init(&o);
      o.num_threads = variant == 3 ? 2 : 1;
      if (variant >= 1)
        o.attn_weights = w;
      if (variant == 2)
        o.weights_mode = ATTN_WEIGHTS_AVERAGE;
      size_t need = 0;
      assert_int_equal(
          attn_forward_scratch_size(p->m.layer, p->B, p->Lq, p->Lk, &o, &need),
          ATTN_OK);
      assert_true(need > 0);

      /* Library-allocated reference result. */
      size_t ob = (size_t)out_count(p) * sizeof(float);
      float *want = ref_xmalloc(ob), *got = ref_xmalloc(ob);
      float *w_want = ref_xmalloc((size_t)nw * sizeof(float));
      assert_int_equal(run(p, &o, want), ATTN_OK);
      memcpy(w_want, w, (size_t)nw * sizeof(float));

      /* Exact size, at an odd address, pre-filled with NaN bytes. */
      unsigned char *buf = ref_xmalloc(need + 3);
      for (int shift = 0; shift < 4; shift += 3) {
        memset(buf, 0xff, need + 3);
        memset(w, 0, (size_t)nw * sizeof(float));
        o.scratch = buf + shift;
        o.scratch_size = need;
        assert_int_equal(run(p, &o, got), ATTN_OK);
        assert_memory_equal(got, want, ob);
        if (o.attn_weights)
          assert_memory_equal(w, w_want,
                              (size_t)weight_count(p, o.weights_mode) *
                                  sizeof(float));
      }

      /* One byte less. */
      memset(got, 0x5a, ob);
      memset(w, 0x5a, (size_t)nw * sizeof(float));
      o.scratch = buf;
      o.scratch_size = need - 1;
      assert_int_equal(run(p, &o, got), ATTN_ERR_SCRATCH_TOO_SMALL);
      assert_non_null(strstr(attn_last_error(), "scratch"));
      for (size_t b = 0; b < ob; b++)
        assert_int_equal(((unsigned char *)got)[b], 0x5a);
      for (size_t b = 0; b < (size_t)nw * sizeof(float); b++)
        assert_int_equal(((unsigned char *)w)[b], 0x5a);

      /* A NULL scratch with a size means "the library allocates". */
      o.scratch = NULL;
      o.scratch_size = 1;
      assert_int_equal(run(p, &o, got), ATTN_OK);
      assert_memory_equal(got, want, ob);

      free(buf);
      free(want);
      free(got);
      free(w);
      free(w_want);
    }
  }
  /* opts NULL and default options report the same size. */
  size_t a = 0, b = 0;
  attn_options o;
  attn_options_init(&o);
  assert_int_equal(attn_forward_scratch_size(ps[0].m.layer, 2, 9, 9, NULL, &a),
                   ATTN_OK);
  assert_int_equal(attn_forward_scratch_size(ps[0].m.layer, 2, 9, 9, &o, &b),
                   ATTN_OK);
  assert_true(a == b && a > 0);
  for (int i = 0; i < NPROBLEMS; i++)
    problem_free(&ps[i]);
}

/* Several threads share one layer, each with its own outputs (and, for
 * half of them, their own scratch). */
typedef struct {
  const problem *p;
  int32_t inner_threads;
  int use_scratch;
  int reps;
  float *out;
  float *w;
  int failures;
} worker;

static void *worker_main(void *arg) {
  worker *wk = arg;
  const problem *p = wk->p;
  size_t ob = (size_t)out_count(p) * sizeof(float);
  int64_t nw = weight_count(p, ATTN_WEIGHTS_PER_HEAD);
  float *tmp = malloc(ob), *wtmp = malloc((size_t)nw * sizeof(float));
  attn_options o;
  attn_options_init(&o);
  o.num_threads = wk->inner_threads;
  o.attn_weights = wtmp;
  void *scratch = NULL;
  size_t need = 0;
  if (!tmp || !wtmp ||
      attn_forward_scratch_size(p->m.layer, p->B, p->Lq, p->Lk, &o, &need) !=
          ATTN_OK) {
    wk->failures++;
    goto done;
  }
  if (wk->use_scratch) {
    scratch = malloc(need);
    o.scratch = scratch;
    o.scratch_size = need;
  }
  for (int rep = 0; rep < wk->reps; rep++) {
    if (run(p, &o, tmp) != ATTN_OK) {
      wk->failures++;
      continue;
    }
    if (rep == 0) {
      memcpy(wk->out, tmp, ob);
      memcpy(wk->w, wtmp, (size_t)nw * sizeof(float));
    } else if (memcmp(wk->out, tmp, ob) != 0 ||
               memcmp(wk->w, wtmp, (size_t)nw * sizeof(float)) != 0) {
      wk->failures++;
    }
  }
done:
  free(scratch);
  free(tmp);
  free(wtmp);
  return NULL;
}

static void test_concurrent_calls(void **state) {
  (void)state;
  problem ps[NPROBLEMS];
  setup_problems(ps);
  /* Two problems share ps[1]'s layer: same layer, different inputs. */
  problem alt = ps[1];
  ref_rng r;
  ref_rng_seed(&r, 77);
  alt.q = ref_random(&r, alt.B * alt.Lq * alt.E, -1, 1);

  enum { NW = 6 };
  const problem *which[NW] = {&ps[1], &alt, &ps[1], &alt, &ps[0], &ps[2]};
  worker wk[NW];
  pthread_t tid[NW];
  for (int i = 0; i < NW; i++) {
    const problem *p = which[i];
    wk[i] =
        (worker){p,
                 (int32_t)(i % 3), /* 0 = all cores, 1, 2 */
                 i % 2,
                 3,
                 ref_xmalloc((size_t)out_count(p) * sizeof(float)),
                 ref_xmalloc((size_t)weight_count(p, ATTN_WEIGHTS_PER_HEAD) *
                             sizeof(float)),
                 0};
  }
  for (int i = 0; i < NW; i++)
    assert_int_equal(pthread_create(&tid[i], NULL, worker_main, &wk[i]), 0);
  for (int i = 0; i < NW; i++)
    assert_int_equal(pthread_join(tid[i], NULL), 0);

  /* Serial results on this thread, compared bit for bit. */
  for (int i = 0; i < NW; i++) {
    const problem *p = which[i];
    assert_int_equal(wk[i].failures, 0);
    size_t ob = (size_t)out_count(p) * sizeof(float);
    int64_t nw = weight_count(p, ATTN_WEIGHTS_PER_HEAD);
    float *out = ref_xmalloc(ob), *w = ref_xmalloc((size_t)nw * 4);
    attn_options o;
    attn_options_init(&o);
    o.attn_weights = w;
    o.num_threads = 1;
    assert_int_equal(run(p, &o, out), ATTN_OK);
    assert_memory_equal(out, wk[i].out, ob);
    assert_memory_equal(w, wk[i].w, (size_t)nw * 4);
    free(out);
    free(w);
    free(wk[i].out);
    free(wk[i].w);
  }
  free(alt.q);
  for (int i = 0; i < NPROBLEMS; i++)
    problem_free(&ps[i]);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_repeated_calls),
      cmocka_unit_test(test_thread_counts),
      cmocka_unit_test(test_scratch),
      cmocka_unit_test(test_concurrent_calls),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
