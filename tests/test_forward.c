/* SPDX-License-Identifier: MIT */
/* Forward pass against the double-precision reference over many shapes:
 * cross-attention with kdim/vdim != E, Lq != Lk, bias on and off, custom
 * scales, grouped K/V heads; self-attention through the fused Q/K/V path
 * and through distinct copies; key == value (fused K/V) against separate
 * buffers. */
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
  int64_t E, H, kdim, vdim, Hkv;
  int bias;
  double scale;
  int64_t B, Lq, Lk;
} shape;

static void describe(char *buf, size_t n, const char *what, const shape *s) {
  snprintf(buf, n,
           "%s E=%lld H=%lld kdim=%lld vdim=%lld Hkv=%lld bias=%d "
           "scale=%g B=%lld Lq=%lld Lk=%lld",
           what, (long long)s->E, (long long)s->H, (long long)s->kdim,
           (long long)s->vdim, (long long)s->Hkv, s->bias, s->scale,
           (long long)s->B, (long long)s->Lq, (long long)s->Lk);
}

static void make_model(ref_model *m, const shape *s, uint64_t seed) {
  attn_config cfg;
  attn_config_init(&cfg);
  cfg.embed_dim = s->E;
  cfg.num_heads = s->H;
  cfg.kdim = s->kdim;
  cfg.vdim = s->vdim;
  cfg.num_kv_heads = s->Hkv;
  cfg.bias = s->bias;
  cfg.scale = s->scale;
  assert_int_equal(ref_model_create(m, &cfg, seed), ATTN_OK);
}

/* Cross-attention with distinct query, key and value buffers. */
static void check_cross(const shape *s, uint64_t seed) {
  char what[256];
  describe(what, sizeof what, "cross", s);
  ref_model m;
  make_model(&m, s, seed);
  int64_t kdim = s->kdim ? s->kdim : s->E, vdim = s->vdim ? s->vdim : s->E;
  ref_rng r;
  ref_rng_seed(&r, seed * 31 + 7);
  int64_t nq = s->B * s->Lq * s->E;
  float *q = ref_random(&r, nq, -1, 1);
  float *k = ref_random(&r, s->B * s->Lk * kdim, -1, 1);
  float *v = ref_random(&r, s->B * s->Lk * vdim, -1, 1);
  float *out = ref_xmalloc((size_t)nq * sizeof(float));
  double *want = ref_xmalloc((size_t)nq * sizeof(double));
  assert_int_equal(
      attn_forward(m.layer, s->B, s->Lq, s->Lk, q, k, v, NULL, NULL, out),
      ATTN_OK);
  ref_forward(&m.ref, s->B, s->Lq, s->Lk, q, k, v, NULL, want, NULL);
  assert_true(ref_close(what, out, want, nq, REF_RTOL, REF_ATOL));
  free(q);
  free(k);
  free(v);
  free(out);
  free(want);
  ref_model_destroy(&m);
}

/* Self-attention three ways: attn_self_forward, attn_forward with one
 * pointer (fused Q/K/V product) and attn_forward with three equal copies
 * (three separate products). */
static void check_self(const shape *s, uint64_t seed) {
  char what[256];
  describe(what, sizeof what, "self", s);
  assert_true(s->Lq == s->Lk);
  ref_model m;
  make_model(&m, s, seed);
  ref_rng r;
  ref_rng_seed(&r, seed * 17 + 3);
  int64_t n = s->B * s->Lq * s->E;
  size_t bytes = (size_t)n * sizeof(float);
  float *x = ref_random(&r, n, -1, 1);
  float *x2 = ref_xmalloc(bytes), *x3 = ref_xmalloc(bytes);
  memcpy(x2, x, bytes);
  memcpy(x3, x, bytes);
  float *o_self = ref_xmalloc(bytes), *o_same = ref_xmalloc(bytes);
  float *o_copy = ref_xmalloc(bytes);
  double *want = ref_xmalloc((size_t)n * sizeof(double));

  assert_int_equal(
      attn_self_forward(m.layer, s->B, s->Lq, x, NULL, NULL, o_self), ATTN_OK);
  assert_int_equal(
      attn_forward(m.layer, s->B, s->Lq, s->Lq, x, x, x, NULL, NULL, o_same),
      ATTN_OK);
  assert_int_equal(
      attn_forward(m.layer, s->B, s->Lq, s->Lq, x, x2, x3, NULL, NULL, o_copy),
      ATTN_OK);
  ref_forward(&m.ref, s->B, s->Lq, s->Lq, x, x, x, NULL, want, NULL);

  assert_true(ref_close(what, o_self, want, n, REF_RTOL, REF_ATOL));
  assert_true(ref_close(what, o_copy, want, n, REF_RTOL, REF_ATOL));
  /* attn_self_forward is documented as attn_forward(x, x, x): same path,
   * same bits. */
  assert_memory_equal(o_self, o_same, bytes);
  /* Fused and unfused products differ only by float rounding. */
  assert_true(ref_close_f(what, o_copy, o_self, n, REF_RTOL, REF_ATOL));
  free(x);
  free(x2);
  free(x3);
  free(o_self);
  free(o_same);
  free(o_copy);
  free(want);
  ref_model_destroy(&m);
}

/* key == value (one K/V product when kdim == vdim) against two buffers
 * with the same contents. */
static void check_shared_kv(const shape *s, uint64_t seed) {
  char what[256];
  describe(what, sizeof what, "key==value", s);
  ref_model m;
  make_model(&m, s, seed);
  int64_t kdim = s->kdim ? s->kdim : s->E;
  assert_true((s->vdim ? s->vdim : s->E) == kdim);
  ref_rng r;
  ref_rng_seed(&r, seed * 13 + 5);
  int64_t nq = s->B * s->Lq * s->E, nk = s->B * s->Lk * kdim;
  float *q = ref_random(&r, nq, -1, 1);
  float *kv = ref_random(&r, nk, -1, 1);
  float *kv2 = ref_xmalloc((size_t)nk * sizeof(float));
  memcpy(kv2, kv, (size_t)nk * sizeof(float));
  float *o_fused = ref_xmalloc((size_t)nq * sizeof(float));
  float *o_sep = ref_xmalloc((size_t)nq * sizeof(float));
  double *want = ref_xmalloc((size_t)nq * sizeof(double));
  assert_int_equal(
      attn_forward(m.layer, s->B, s->Lq, s->Lk, q, kv, kv, NULL, NULL, o_fused),
      ATTN_OK);
  assert_int_equal(
      attn_forward(m.layer, s->B, s->Lq, s->Lk, q, kv, kv2, NULL, NULL, o_sep),
      ATTN_OK);
  ref_forward(&m.ref, s->B, s->Lq, s->Lk, q, kv, kv, NULL, want, NULL);
  assert_true(ref_close(what, o_fused, want, nq, REF_RTOL, REF_ATOL));
  assert_true(ref_close(what, o_sep, want, nq, REF_RTOL, REF_ATOL));
  assert_true(ref_close_f(what, o_fused, o_sep, nq, REF_RTOL, REF_ATOL));
  free(q);
  free(kv);
  free(kv2);
  free(o_fused);
  free(o_sep);
  free(want);
  ref_model_destroy(&m);
}

/* Reference cost of a shape in multiply-adds; sweeps keep it bounded so the
 * suite stays fast under the sanitizers. */
static double cost(const shape *s) {
  int64_t kdim = s->kdim ? s->kdim : s->E, vdim = s->vdim ? s->vdim : s->E;
  int64_t kv = (s->Hkv ? s->Hkv : s->H) * (s->E / s->H);
  return (double)s->B * (2.0 * (double)s->Lq * (double)(s->E * s->E) +
                         (double)s->Lk * (double)kv * (double)(kdim + vdim) +
                         2.0 * (double)s->Lq * (double)s->Lk * (double)s->E);
}

/* Lengths that straddle the core's query and key blocks and odd/prime
 * values; the sweep also draws uniform lengths. */
static const int64_t lengths[] = {1,   2,   3,   5,   7,   13,  31,
                                  63,  64,  65,  97,  127, 128, 129,
                                  199, 255, 256, 257, 293, 299, 300};

static int64_t draw_length(ref_rng *r) {
  if (ref_rng_int(r, 0, 1))
    return lengths[ref_rng_int(r, 0, sizeof lengths / sizeof *lengths - 1)];
  return ref_rng_int(r, 1, 300);
}

static shape draw_shape(ref_rng *r, int self, double budget) {
  shape s;
  memset(&s, 0, sizeof s);
  s.H = ref_rng_int(r, 1, 16);
  int64_t hd = ref_rng_int(r, 1, 256 / s.H);
  s.E = s.H * hd;
  s.bias = (int)ref_rng_int(r, 0, 3) != 0;
  s.scale = ref_rng_int(r, 0, 3) == 0 ? 0.05 + 1.5 * ref_rng_unit(r) : 0.0;
  if (ref_rng_int(r, 0, 3) == 0) {
    /* Grouped K/V heads: any divisor of H. */
    int64_t d = ref_rng_int(r, 1, s.H);
    while (s.H % d)
      d--;
    s.Hkv = d;
  }
  if (!self && ref_rng_int(r, 0, 1)) {
    s.kdim = ref_rng_int(r, 1, 256);
    s.vdim = ref_rng_int(r, 0, 2) ? ref_rng_int(r, 1, 256) : s.kdim;
  }
  s.B = ref_rng_int(r, 1, 4);
  s.Lq = draw_length(r);
  s.Lk = self ? s.Lq : draw_length(r);
  while (cost(&s) > budget) {
    if (s.B > 1)
      s.B--;
    else if (s.Lq >= s.Lk && s.Lq > 1)
      s.Lq = (s.Lq + 1) / 2;
    else if (s.Lk > 1)
      s.Lk = (s.Lk + 1) / 2;
    else
      break;
    if (self)
      s.Lk = s.Lq;
  }
  return s;
}

#define SWEEP_BUDGET 4e6

static void test_sweep_cross(void **state) {
  (void)state;
  ref_rng r;
  ref_rng_seed(&r, 1001);
  for (int i = 0; i < 60; i++) {
    shape s = draw_shape(&r, 0, SWEEP_BUDGET);
    check_cross(&s, 5000 + (uint64_t)i);
  }
}

static void test_sweep_self(void **state) {
  (void)state;
  ref_rng r;
  ref_rng_seed(&r, 2002);
  for (int i = 0; i < 30; i++) {
    shape s = draw_shape(&r, 1, SWEEP_BUDGET);
    check_self(&s, 6000 + (uint64_t)i);
  }
}

static void test_sweep_shared_kv(void **state) {
  (void)state;
  ref_rng r;
  ref_rng_seed(&r, 3003);
  for (int i = 0; i < 20; i++) {
    shape s = draw_shape(&r, 0, SWEEP_BUDGET);
    if (i % 2)
      s.kdim = s.vdim = 0; /* kdim == vdim == E */
    else
      s.vdim = s.kdim = ref_rng_int(&r, 1, 256);
    check_shared_kv(&s, 7000 + (uint64_t)i);
  }
}

/* Hand-picked extremes the sweep may miss. */
static void test_edge_shapes(void **state) {
  (void)state;
  static const shape cases[] = {
      /* E H kdim vdim Hkv bias scale B Lq Lk */
      {1, 1, 0, 0, 0, 1, 0, 1, 1, 1},
      {1, 1, 0, 0, 0, 0, 0, 3, 1, 300},
      {16, 16, 0, 0, 0, 1, 0, 2, 17, 19},    /* head_dim 1 */
      {256, 1, 0, 0, 0, 1, 0, 2, 7, 300},    /* one 256-wide head */
      {256, 16, 0, 0, 0, 1, 0, 4, 300, 300}, /* the largest shape */
      {256, 16, 3, 256, 0, 0, 0, 4, 299, 257},
      {64, 8, 300, 1, 0, 1, 0, 3, 300, 1},
      {64, 8, 1, 300, 0, 1, 0, 3, 1, 300},
      {120, 12, 7, 11, 4, 1, 0, 2, 65, 129}, /* grouped K/V heads */
      {96, 16, 0, 0, 1, 1, 0, 2, 33, 260},   /* one K/V head */
      {130, 10, 0, 0, 0, 1, 0, 1, 2, 3},
  };
  for (size_t i = 0; i < sizeof cases / sizeof *cases; i++)
    check_cross(&cases[i], 100 + i);
  static const shape selfs[] = {
      {256, 16, 0, 0, 0, 1, 0, 4, 300, 300},
      {8, 2, 0, 0, 0, 0, 0, 4, 1, 1},
      {48, 6, 0, 0, 2, 1, 0.3, 3, 131, 131},
  };
  for (size_t i = 0; i < sizeof selfs / sizeof *selfs; i++)
    check_self(&selfs[i], 200 + i);
}

/* The configured scale is the one applied: a custom scale matches the
 * reference with that scale and clearly differs from the default one. */
static void test_custom_scale(void **state) {
  (void)state;
  const double scales[] = {0.01, 0.5, 3.0};
  for (int t = 0; t < 3; t++) {
    shape s = {32, 4, 0, 0, 0, 1, scales[t], 2, 9, 23};
    ref_model m;
    make_model(&m, &s, 42);
    attn_config got;
    attn_config_init(&got);
    assert_int_equal(attn_layer_get_config(m.layer, &got), ATTN_OK);
    assert_true(got.scale == scales[t]);

    ref_rng r;
    ref_rng_seed(&r, 43);
    int64_t nq = s.B * s.Lq * s.E, nk = s.B * s.Lk * s.E;
    /* Larger inputs so that scores, and thus the scale, matter. */
    float *q = ref_random(&r, nq, -3, 3), *kv = ref_random(&r, nk, -3, 3);
    float *out = ref_xmalloc((size_t)nq * sizeof(float));
    double *want = ref_xmalloc((size_t)nq * sizeof(double));
    double *dflt = ref_xmalloc((size_t)nq * sizeof(double));
    assert_int_equal(
        attn_forward(m.layer, s.B, s.Lq, s.Lk, q, kv, kv, NULL, NULL, out),
        ATTN_OK);
    ref_forward(&m.ref, s.B, s.Lq, s.Lk, q, kv, kv, NULL, want, NULL);
    /* Scores reach tens here (inputs of +-3, scale up to 3): float score
     * errors grow with |score| and the outputs are larger, so the floor
     * follows the output's size. */
    double atol = REF_ATOL * fmax(1.0, ref_max_abs(want, nq));
    assert_true(ref_close("custom scale", out, want, nq, REF_RTOL, atol));
    ref_layer d = m.ref;
    d.scale = 0.0;
    ref_forward(&d, s.B, s.Lq, s.Lk, q, kv, kv, NULL, dflt, NULL);
    assert_false(ref_compare(out, dflt, nq, 1e-2, 1e-2).ok);
    free(q);
    free(kv);
    free(out);
    free(want);
    free(dflt);
    ref_model_destroy(&m);
  }
}

/* A default-scale layer reports 1/sqrt(head_dim). */
static void test_default_scale(void **state) {
  (void)state;
  attn_config cfg;
  attn_config_init(&cfg);
  cfg.embed_dim = 96;
  cfg.num_heads = 6;
  attn_layer *l = NULL;
  assert_int_equal(attn_layer_create(&cfg, &l), ATTN_OK);
  attn_config got;
  attn_config_init(&got);
  assert_int_equal(attn_layer_get_config(l, &got), ATTN_OK);
  assert_true(fabs(got.scale - 0.25) < 1e-15);
  assert_int_equal(got.kdim, 96);
  assert_int_equal(got.vdim, 96);
  assert_int_equal(got.num_kv_heads, 6);
  attn_layer_destroy(l);
}

/* Batch rows are independent: row b of a batched call equals a call on
 * that row alone (to rounding), so no row leaks into another. */
static void test_batch_rows_independent(void **state) {
  (void)state;
  shape s = {40, 5, 24, 0, 0, 1, 0, 3, 21, 34};
  ref_model m;
  make_model(&m, &s, 77);
  ref_rng r;
  ref_rng_seed(&r, 78);
  int64_t nq = s.B * s.Lq * s.E;
  float *q = ref_random(&r, nq, -1, 1);
  float *k = ref_random(&r, s.B * s.Lk * 24, -1, 1);
  float *v = ref_random(&r, s.B * s.Lk * s.E, -1, 1);
  float *out = ref_xmalloc((size_t)nq * sizeof(float));
  float *one = ref_xmalloc((size_t)(s.Lq * s.E) * sizeof(float));
  assert_int_equal(
      attn_forward(m.layer, s.B, s.Lq, s.Lk, q, k, v, NULL, NULL, out),
      ATTN_OK);
  for (int64_t b = 0; b < s.B; b++) {
    assert_int_equal(attn_forward(m.layer, 1, s.Lq, s.Lk, q + b * s.Lq * s.E,
                                  k + b * s.Lk * 24, v + b * s.Lk * s.E, NULL,
                                  NULL, one),
                     ATTN_OK);
    assert_true(ref_close_f("batch row alone", one, out + b * s.Lq * s.E,
                            s.Lq * s.E, REF_RTOL, REF_ATOL));
  }
  free(q);
  free(k);
  free(v);
  free(out);
  free(one);
  ref_model_destroy(&m);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_default_scale),
      cmocka_unit_test(test_custom_scale),
      cmocka_unit_test(test_edge_shapes),
      cmocka_unit_test(test_batch_rows_independent),
      cmocka_unit_test(test_sweep_cross),
      cmocka_unit_test(test_sweep_self),
      cmocka_unit_test(test_sweep_shared_kv),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
