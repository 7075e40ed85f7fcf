/* SPDX-License-Identifier: MIT */
/* Attention probabilities on request: per head [B, H, Lq, Lk] and averaged
 * over heads [B, Lq, Lk], against the reference; rows sum to 1, hidden keys
 * get exactly 0, every element is written, and asking for the weights does
 * not change the layer output. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "ref.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct {
  int64_t E, H, Hkv, kdim, B, Lq, Lk;
  int causal;
  int self;
} wcase;

/* A signalling pattern no computation produces, to see unwritten
 * elements. */
static void poison(float *x, int64_t n) {
  for (int64_t i = 0; i < n; i++)
    x[i] = -12345.0f;
}

static void check_weights(const wcase *c, uint64_t seed) {
  char what[200];
  snprintf(what, sizeof what,
           "weights E=%lld H=%lld Hkv=%lld kdim=%lld B=%lld Lq=%lld Lk=%lld "
           "causal=%d self=%d",
           (long long)c->E, (long long)c->H, (long long)c->Hkv,
           (long long)c->kdim, (long long)c->B, (long long)c->Lq,
           (long long)c->Lk, c->causal, c->self);
  attn_config cfg;
  attn_config_init(&cfg);
  cfg.embed_dim = c->E;
  cfg.num_heads = c->H;
  cfg.num_kv_heads = c->Hkv;
  cfg.kdim = cfg.vdim = c->kdim;
  ref_model m;
  assert_int_equal(ref_model_create(&m, &cfg, seed), ATTN_OK);
  int64_t kdim = m.ref.kdim;
  int64_t B = c->B, Lq = c->Lq, Lk = c->Lk, H = c->H;
  int64_t nq = B * Lq * c->E, nw = B * H * Lq * Lk, na = B * Lq * Lk;
  ref_rng r;
  ref_rng_seed(&r, seed + 1);
  float *q = ref_random(&r, nq, -1.5, 1.5);
  float *kv = c->self ? q : ref_random(&r, B * Lk * kdim, -1.5, 1.5);
  float *out0 = ref_xmalloc((size_t)nq * sizeof(float));
  float *out1 = ref_xmalloc((size_t)nq * sizeof(float));
  float *out2 = ref_xmalloc((size_t)nq * sizeof(float));
  float *w = ref_xmalloc((size_t)nw * sizeof(float));
  float *avg = ref_xmalloc((size_t)na * sizeof(float));
  double *want = ref_xmalloc((size_t)nq * sizeof(double));
  double *want_w = ref_xmalloc((size_t)nw * sizeof(double));
  double *want_avg = ref_xmalloc((size_t)na * sizeof(double));
  poison(w, nw);
  poison(avg, na);

  attn_mask mask;
  attn_mask_init(&mask);
  mask.causal = c->causal;
  attn_options opts;
  attn_options_init(&opts);
  assert_int_equal(
      attn_forward(m.layer, B, Lq, Lk, q, kv, kv, &mask, NULL, out0), ATTN_OK);
  opts.attn_weights = w;
  opts.weights_mode = ATTN_WEIGHTS_PER_HEAD;
  assert_int_equal(
      attn_forward(m.layer, B, Lq, Lk, q, kv, kv, &mask, &opts, out1), ATTN_OK);
  opts.attn_weights = avg;
  opts.weights_mode = ATTN_WEIGHTS_AVERAGE;
  assert_int_equal(
      attn_forward(m.layer, B, Lq, Lk, q, kv, kv, &mask, &opts, out2), ATTN_OK);

  ref_forward(&m.ref, B, Lq, Lk, q, kv, kv, &mask, want, want_w);
  ref_average_heads(B, H, Lq, Lk, want_w, want_avg);
  assert_true(ref_close(what, out0, want, nq, REF_RTOL, REF_ATOL));
  assert_true(ref_close(what, out1, want, nq, REF_RTOL, REF_ATOL));
  assert_true(ref_close(what, out2, want, nq, REF_RTOL, REF_ATOL));
  assert_true(ref_close(what, w, want_w, nw, REF_RTOL, REF_ATOL));
  assert_true(ref_close(what, avg, want_avg, na, REF_RTOL, REF_ATOL));

  /* Rows are distributions: non-negative, exact zeros where the reference
   * hides the key, summing to 1 up to float rounding of <= 300 terms, or
   * all zero when no key is left (bottom-right causal with Lq > Lk). */
  for (int64_t row = 0; row < B * H * Lq; row++) {
    double sum = 0, want_sum = 0;
    for (int64_t j = 0; j < Lk; j++) {
      float x = w[row * Lk + j];
      assert_true(x >= 0.0f && x <= 1.0f);
      if (want_w[row * Lk + j] == 0.0)
        assert_true(x == 0.0f);
      sum += x;
      want_sum += want_w[row * Lk + j];
    }
    assert_true(fabs(sum - want_sum) < 1e-5);
    assert_true(want_sum == 0.0 || fabs(want_sum - 1.0) < 1e-12);
  }
  for (int64_t row = 0; row < B * Lq; row++) {
    double sum = 0, want_sum = 0;
    for (int64_t j = 0; j < Lk; j++) {
      sum += avg[row * Lk + j];
      want_sum += want_avg[row * Lk + j];
    }
    assert_true(fabs(sum - want_sum) < 1e-5);
  }
  /* The average is the mean of the library's own per-head weights. */
  double *mean = ref_xmalloc((size_t)na * sizeof(double));
  double *wd = ref_xmalloc((size_t)nw * sizeof(double));
  for (int64_t i = 0; i < nw; i++)
    wd[i] = w[i];
  ref_average_heads(B, H, Lq, Lk, wd, mean);
  assert_true(ref_close("average of per-head", avg, mean, na, 1e-5, 1e-6));

  free(mean);
  free(wd);
  free(q);
  if (!c->self)
    free(kv);
  free(out0);
  free(out1);
  free(out2);
  free(w);
  free(avg);
  free(want);
  free(want_w);
  free(want_avg);
  ref_model_destroy(&m);
}

static void test_weight_shapes(void **state) {
  (void)state;
  static const wcase cases[] = {
      /* E H Hkv kdim B Lq Lk causal self */
      {8, 1, 0, 0, 1, 1, 1, 0, 0},
      {8, 2, 0, 0, 2, 1, 300, 0, 0},
      {32, 4, 0, 24, 3, 300, 7, 0, 0},
      {64, 16, 0, 0, 2, 65, 257, 0, 0},  /* more keys than a key block */
      {64, 16, 4, 40, 2, 70, 130, 0, 0}, /* grouped K/V heads */
      {48, 3, 0, 0, 4, 129, 129, 1, 1},  /* self, causal */
      {48, 3, 0, 0, 2, 20, 299, 2, 0},   /* bottom-right, Lq < Lk */
      {48, 6, 0, 0, 2, 299, 20, 1, 0},   /* top-left, Lq > Lk */
      {256, 16, 0, 0, 1, 300, 300, 0, 1},
  };
  for (size_t i = 0; i < sizeof cases / sizeof *cases; i++)
    check_weights(&cases[i], 10 + i);
}

/* Random shapes. */
static void test_weight_sweep(void **state) {
  (void)state;
  ref_rng r;
  ref_rng_seed(&r, 4242);
  for (int it = 0; it < 16; it++) {
    wcase c;
    memset(&c, 0, sizeof c);
    c.H = ref_rng_int(&r, 1, 16);
    c.E = c.H * ref_rng_int(&r, 1, 64 / c.H + 1);
    c.B = ref_rng_int(&r, 1, 4);
    c.Lq = ref_rng_int(&r, 1, 300);
    c.Lk = ref_rng_int(&r, 1, 300);
    while (c.B * c.Lq * c.Lk * c.H > 400000 && c.Lq > 1)
      c.Lq = (c.Lq + 1) / 2;
    c.causal = (int)ref_rng_int(&r, 0, 2);
    c.kdim = ref_rng_int(&r, 0, 1) ? ref_rng_int(&r, 1, 100) : 0;
    check_weights(&c, 100 + (uint64_t)it);
  }
}

/* A single head: the average is the per-head output itself (up to float
 * rounding: another weights mode is not promised the same bits). */
static void test_single_head_average(void **state) {
  (void)state;
  attn_config cfg;
  attn_config_init(&cfg);
  cfg.embed_dim = 24;
  ref_model m;
  assert_int_equal(ref_model_create(&m, &cfg, 5), ATTN_OK);
  ref_rng r;
  ref_rng_seed(&r, 6);
  const int64_t B = 2, L = 33;
  float *x = ref_random(&r, B * L * 24, -1, 1);
  float out[2 * 33 * 24], w1[2 * 33 * 33], w2[2 * 33 * 33];
  attn_options opts;
  attn_options_init(&opts);
  opts.attn_weights = w1;
  assert_int_equal(attn_self_forward(m.layer, B, L, x, NULL, &opts, out),
                   ATTN_OK);
  opts.attn_weights = w2;
  opts.weights_mode = ATTN_WEIGHTS_AVERAGE;
  assert_int_equal(attn_self_forward(m.layer, B, L, x, NULL, &opts, out),
                   ATTN_OK);
  assert_true(ref_close_f("single-head average", w2, w1,
                          (int64_t)(sizeof w1 / sizeof *w1), 1e-6, 1e-7));
  free(x);
  ref_model_destroy(&m);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_single_head_average),
      cmocka_unit_test(test_weight_shapes),
      cmocka_unit_test(test_weight_sweep),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
