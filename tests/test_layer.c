/* SPDX-License-Identifier: MIT */
/* Layers and their weights: element counts per weight id, the packed
 * in_proj against the separate q/k/v setters, get/set round trips,
 * attn_layer_init_weights (determinism, bounds, zero biases), and the
 * resolved configuration. */
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

static attn_layer *make_layer(int64_t E, int64_t H, int64_t kdim, int64_t vdim,
                              int64_t Hkv, int bias) {
  attn_config cfg;
  attn_config_init(&cfg);
  cfg.embed_dim = E;
  cfg.num_heads = H;
  cfg.kdim = kdim;
  cfg.vdim = vdim;
  cfg.num_kv_heads = Hkv;
  cfg.bias = bias;
  attn_layer *l = NULL;
  assert_int_equal(attn_layer_create(&cfg, &l), ATTN_OK);
  assert_non_null(l);
  return l;
}

static int64_t count_of(const attn_layer *l, attn_weight_id id) {
  int64_t n = -1;
  assert_int_equal(attn_layer_weight_count(l, id, &n), ATTN_OK);
  return n;
}

static void test_weight_counts(void **state) {
  (void)state;
  /* E H kdim vdim Hkv bias */
  static const int64_t cfgs[][6] = {{12, 3, 0, 0, 0, 1},  {12, 3, 5, 7, 0, 1},
                                    {12, 4, 0, 0, 1, 1},  {12, 4, 0, 0, 2, 0},
                                    {20, 10, 3, 3, 5, 0}, {1, 1, 1, 1, 1, 1}};
  for (size_t c = 0; c < sizeof cfgs / sizeof *cfgs; c++) {
    int64_t E = cfgs[c][0], H = cfgs[c][1];
    int64_t kdim = cfgs[c][2] ? cfgs[c][2] : E;
    int64_t vdim = cfgs[c][3] ? cfgs[c][3] : E;
    int64_t KV = (cfgs[c][4] ? cfgs[c][4] : H) * (E / H);
    int bias = (int)cfgs[c][5];
    attn_layer *l = make_layer(E, H, cfgs[c][2], cfgs[c][3], cfgs[c][4], bias);
    assert_int_equal(count_of(l, ATTN_W_Q), E * E);
    assert_int_equal(count_of(l, ATTN_W_K), KV * kdim);
    assert_int_equal(count_of(l, ATTN_W_V), KV * vdim);
    assert_int_equal(count_of(l, ATTN_W_OUT), E * E);
    int64_t n = 0;
    if (kdim == E && vdim == E)
      assert_int_equal(count_of(l, ATTN_W_IN_PROJ), (E + 2 * KV) * E);
    else
      assert_int_equal(attn_layer_weight_count(l, ATTN_W_IN_PROJ, &n),
                       ATTN_ERR_WEIGHT_LAYOUT);
    if (bias) {
      assert_int_equal(count_of(l, ATTN_B_IN_PROJ), E + 2 * KV);
      assert_int_equal(count_of(l, ATTN_B_Q), E);
      assert_int_equal(count_of(l, ATTN_B_K), KV);
      assert_int_equal(count_of(l, ATTN_B_V), KV);
      assert_int_equal(count_of(l, ATTN_B_OUT), E);
    } else {
      const attn_weight_id ids[] = {ATTN_B_IN_PROJ, ATTN_B_Q, ATTN_B_K,
                                    ATTN_B_V, ATTN_B_OUT};
      for (size_t i = 0; i < 5; i++) {
        n = -7;
        assert_int_equal(attn_layer_weight_count(l, ids[i], &n),
                         ATTN_ERR_WEIGHT_LAYOUT);
        assert_int_equal(n, -7); /* untouched on failure */
      }
    }
    attn_layer_destroy(l);
  }
}

/* Sets the layer's weights either packed (in_proj weight and bias as one
 * array each) or through the separate q/k/v setters, from the same
 * values. */
static void set_all(attn_layer *l, int packed, const float *in_w,
                    const float *in_b, const float *wo, const float *bo,
                    int64_t E, int64_t KV) {
  if (packed) {
    assert_int_equal(
        attn_layer_set_weight(l, ATTN_W_IN_PROJ, in_w, (E + 2 * KV) * E),
        ATTN_OK);
    assert_int_equal(attn_layer_set_weight(l, ATTN_B_IN_PROJ, in_b, E + 2 * KV),
                     ATTN_OK);
  } else {
    /* Reverse order on purpose: the order of the setters does not matter. */
    assert_int_equal(attn_layer_set_weight(l, ATTN_B_V, in_b + E + KV, KV),
                     ATTN_OK);
    assert_int_equal(attn_layer_set_weight(l, ATTN_B_K, in_b + E, KV), ATTN_OK);
    assert_int_equal(attn_layer_set_weight(l, ATTN_B_Q, in_b, E), ATTN_OK);
    assert_int_equal(
        attn_layer_set_weight(l, ATTN_W_V, in_w + (E + KV) * E, KV * E),
        ATTN_OK);
    assert_int_equal(attn_layer_set_weight(l, ATTN_W_K, in_w + E * E, KV * E),
                     ATTN_OK);
    assert_int_equal(attn_layer_set_weight(l, ATTN_W_Q, in_w, E * E), ATTN_OK);
  }
  assert_int_equal(attn_layer_set_weight(l, ATTN_W_OUT, wo, E * E), ATTN_OK);
  assert_int_equal(attn_layer_set_weight(l, ATTN_B_OUT, bo, E), ATTN_OK);
}

static void packed_vs_separate(int64_t E, int64_t H, int64_t Hkv) {
  int64_t KV = (Hkv ? Hkv : H) * (E / H);
  attn_layer *a = make_layer(E, H, 0, 0, Hkv, 1);
  attn_layer *b = make_layer(E, H, 0, 0, Hkv, 1);
  ref_rng r;
  ref_rng_seed(&r, (uint64_t)(E * 100 + H));
  float *in_w = ref_random(&r, (E + 2 * KV) * E, -0.3, 0.3);
  float *in_b = ref_random(&r, E + 2 * KV, -0.5, 0.5);
  float *wo = ref_random(&r, E * E, -0.3, 0.3);
  float *bo = ref_random(&r, E, -0.5, 0.5);
  set_all(a, 1, in_w, in_b, wo, bo, E, KV);
  set_all(b, 0, in_w, in_b, wo, bo, E, KV);

  /* Either way the layer holds the same numbers, under every id. */
  const attn_weight_id ids[] = {
      ATTN_W_IN_PROJ, ATTN_B_IN_PROJ, ATTN_W_Q, ATTN_W_K, ATTN_W_V,
      ATTN_W_OUT,     ATTN_B_OUT,     ATTN_B_Q, ATTN_B_K, ATTN_B_V};
  for (size_t i = 0; i < sizeof ids / sizeof *ids; i++) {
    int64_t n = count_of(a, ids[i]);
    float *ga = ref_xmalloc((size_t)n * sizeof(float));
    float *gb = ref_xmalloc((size_t)n * sizeof(float));
    assert_int_equal(attn_layer_get_weight(a, ids[i], ga, n), ATTN_OK);
    assert_int_equal(attn_layer_get_weight(b, ids[i], gb, n), ATTN_OK);
    assert_memory_equal(ga, gb, (size_t)n * sizeof(float));
    free(ga);
    free(gb);
  }

  /* And the same output, bit for bit, on every path. */
  const int64_t B = 2, L = 37, Lk = 41;
  float *x = ref_random(&r, B * Lk * E, -1, 1);
  float *y = ref_random(&r, B * Lk * E, -1, 1);
  size_t bytes = (size_t)(B * L * E) * sizeof(float);
  float *oa = ref_xmalloc(bytes), *ob = ref_xmalloc(bytes);
  assert_int_equal(attn_self_forward(a, B, L, x, NULL, NULL, oa), ATTN_OK);
  assert_int_equal(attn_self_forward(b, B, L, x, NULL, NULL, ob), ATTN_OK);
  assert_memory_equal(oa, ob, bytes);
  assert_int_equal(attn_forward(a, B, L, Lk, x, y, y, NULL, NULL, oa), ATTN_OK);
  assert_int_equal(attn_forward(b, B, L, Lk, x, y, y, NULL, NULL, ob), ATTN_OK);
  assert_memory_equal(oa, ob, bytes);
  assert_int_equal(attn_forward(a, B, L, Lk, y, x, y, NULL, NULL, oa), ATTN_OK);
  assert_int_equal(attn_forward(b, B, L, Lk, y, x, y, NULL, NULL, ob), ATTN_OK);
  assert_memory_equal(oa, ob, bytes);

  /* The packed rows are Q, K, V in that order: check against the
   * reference with the rows split by hand. */
  ref_layer rl = {.embed_dim = E,
                  .num_heads = H,
                  .num_kv_heads = Hkv,
                  .bias = 1,
                  .wq = in_w,
                  .wk = in_w + E * E,
                  .wv = in_w + (E + KV) * E,
                  .wo = wo,
                  .bq = in_b,
                  .bk = in_b + E,
                  .bv = in_b + E + KV,
                  .bo = bo};
  double *want = ref_xmalloc((size_t)(B * L * E) * sizeof(double));
  ref_forward(&rl, B, L, Lk, y, x, y, NULL, want, NULL);
  assert_true(
      ref_close("packed layout", oa, want, B * L * E, REF_RTOL, REF_ATOL));

  free(want);
  free(x);
  free(y);
  free(oa);
  free(ob);
  free(in_w);
  free(in_b);
  free(wo);
  free(bo);
  attn_layer_destroy(a);
  attn_layer_destroy(b);
}

static void test_packed_vs_separate(void **state) {
  (void)state;
  packed_vs_separate(32, 4, 0);
  packed_vs_separate(48, 8, 2); /* grouped K/V heads: [E + 2 KV, E] */
  packed_vs_separate(7, 1, 0);
}

/* Every id reads back what was last written, a weight never set reads as
 * zeros, and writing one id leaves the others alone. */
static void test_get_set_round_trip(void **state) {
  (void)state;
  const int64_t E = 18, H = 3;
  static const int64_t dims[][2] = {{0, 0}, {5, 11}};
  for (int d = 0; d < 2; d++) {
    attn_layer *l = make_layer(E, H, dims[d][0], dims[d][1], 0, 1);
    const attn_weight_id ids[] = {ATTN_W_Q, ATTN_W_K, ATTN_W_V, ATTN_W_OUT,
                                  ATTN_B_Q, ATTN_B_K, ATTN_B_V, ATTN_B_OUT};
    float *vals[8];
    int64_t ns[8];
    ref_rng r;
    ref_rng_seed(&r, 99 + (uint64_t)d);
    for (int i = 0; i < 8; i++) {
      ns[i] = count_of(l, ids[i]);
      float *z = ref_xmalloc((size_t)ns[i] * sizeof(float));
      for (int64_t j = 0; j < ns[i]; j++)
        z[j] = 1.0f;
      assert_int_equal(attn_layer_get_weight(l, ids[i], z, ns[i]), ATTN_OK);
      for (int64_t j = 0; j < ns[i]; j++)
        assert_true(z[j] == 0.0f);
      free(z);
      vals[i] = ref_random(&r, ns[i], -4, 4);
    }
    for (int i = 0; i < 8; i++)
      assert_int_equal(attn_layer_set_weight(l, ids[i], vals[i], ns[i]),
                       ATTN_OK);
    for (int i = 0; i < 8; i++) {
      float *g = ref_xmalloc((size_t)ns[i] * sizeof(float));
      assert_int_equal(attn_layer_get_weight(l, ids[i], g, ns[i]), ATTN_OK);
      assert_memory_equal(g, vals[i], (size_t)ns[i] * sizeof(float));
      free(g);
    }
    /* The packed bias is [bq | bk | bv]. */
    int64_t nb = count_of(l, ATTN_B_IN_PROJ);
    assert_int_equal(nb, ns[4] + ns[5] + ns[6]);
    float *pb = ref_xmalloc((size_t)nb * sizeof(float));
    assert_int_equal(attn_layer_get_weight(l, ATTN_B_IN_PROJ, pb, nb), ATTN_OK);
    assert_memory_equal(pb, vals[4], (size_t)ns[4] * sizeof(float));
    assert_memory_equal(pb + ns[4], vals[5], (size_t)ns[5] * sizeof(float));
    assert_memory_equal(pb + ns[4] + ns[5], vals[6],
                        (size_t)ns[6] * sizeof(float));
    free(pb);
    /* ref_layer_from_attn reads the same values back. */
    ref_layer rl;
    float *storage = NULL;
    assert_int_equal(ref_layer_from_attn(l, &rl, &storage), ATTN_OK);
    assert_memory_equal(rl.wk, vals[1], (size_t)ns[1] * sizeof(float));
    assert_memory_equal(rl.bo, vals[7], (size_t)ns[7] * sizeof(float));
    free(storage);
    for (int i = 0; i < 8; i++)
      free(vals[i]);
    attn_layer_destroy(l);
  }
}

static float max_abs(const float *x, int64_t n) {
  float m = 0;
  for (int64_t i = 0; i < n; i++)
    m = fabsf(x[i]) > m ? fabsf(x[i]) : m;
  return m;
}

static double mean_abs(const float *x, int64_t n) {
  double s = 0;
  for (int64_t i = 0; i < n; i++)
    s += fabs((double)x[i]);
  return s / (double)n;
}

/* Values of a weight id, freshly allocated. */
static float *get(const attn_layer *l, attn_weight_id id, int64_t *n) {
  *n = count_of(l, id);
  float *x = ref_xmalloc((size_t)*n * sizeof(float));
  assert_int_equal(attn_layer_get_weight(l, id, x, *n), ATTN_OK);
  return x;
}

/* Checks that x looks uniform in [-bound, bound]: inside the bound, reaching
 * close to it, mean |x| near bound / 2 (these matrices have >= 4096
 * elements, so the sample mean is within a few percent). */
static void check_uniform(const float *x, int64_t n, double bound) {
  assert_true(n >= 4096);
  assert_true(max_abs(x, n) <= (float)bound);
  assert_true(max_abs(x, n) > 0.99 * bound);
  double ma = mean_abs(x, n);
  assert_true(fabs(ma - bound / 2) < 0.05 * bound);
}

static void test_init_weights(void **state) {
  (void)state;
  /* Packed: one xavier bound over the whole [E + 2 KV, E] matrix. */
  static const int64_t packed[][3] = {{64, 4, 0}, {64, 8, 2}, {256, 16, 0}};
  for (int c = 0; c < 3; c++) {
    int64_t E = packed[c][0], H = packed[c][1], Hkv = packed[c][2];
    int64_t KV = (Hkv ? Hkv : H) * (E / H);
    attn_layer *a = make_layer(E, H, 0, 0, Hkv, 1);
    attn_layer *b = make_layer(E, H, 0, 0, Hkv, 1);
    /* Biases set before must be zeroed by the initialisation. */
    float *ones = ref_xmalloc((size_t)(E + 2 * KV) * sizeof(float));
    for (int64_t i = 0; i < E + 2 * KV; i++)
      ones[i] = 1.0f;
    assert_int_equal(attn_layer_set_weight(a, ATTN_B_IN_PROJ, ones, E + 2 * KV),
                     ATTN_OK);
    assert_int_equal(attn_layer_set_weight(a, ATTN_B_OUT, ones, E), ATTN_OK);
    free(ones);
    assert_int_equal(attn_layer_init_weights(a, 1234), ATTN_OK);
    assert_int_equal(attn_layer_init_weights(b, 1234), ATTN_OK);

    int64_t n, m;
    float *wa = get(a, ATTN_W_IN_PROJ, &n), *wb = get(b, ATTN_W_IN_PROJ, &m);
    assert_memory_equal(wa, wb, (size_t)n * sizeof(float));
    check_uniform(wa, n, sqrt(6.0 / (double)(E + (E + 2 * KV))));
    float *oa = get(a, ATTN_W_OUT, &m), *ob = get(b, ATTN_W_OUT, &m);
    assert_memory_equal(oa, ob, (size_t)m * sizeof(float));
    check_uniform(oa, m, 1.0 / sqrt((double)E));
    float *ba = get(a, ATTN_B_IN_PROJ, &m);
    for (int64_t i = 0; i < m; i++)
      assert_true(ba[i] == 0.0f);
    free(ba);
    ba = get(a, ATTN_B_OUT, &m);
    for (int64_t i = 0; i < m; i++)
      assert_true(ba[i] == 0.0f);
    free(ba);

    /* Another seed gives other weights. */
    assert_int_equal(attn_layer_init_weights(b, 1235), ATTN_OK);
    free(wb);
    wb = get(b, ATTN_W_IN_PROJ, &m);
    int64_t same = 0;
    for (int64_t i = 0; i < n; i++)
      same += wa[i] == wb[i];
    assert_true(same < n / 100);
    /* The same seed again gives the first weights back. */
    assert_int_equal(attn_layer_init_weights(b, 1234), ATTN_OK);
    free(wb);
    wb = get(b, ATTN_W_IN_PROJ, &m);
    assert_memory_equal(wa, wb, (size_t)n * sizeof(float));

    free(wa);
    free(wb);
    free(oa);
    free(ob);
    attn_layer_destroy(a);
    attn_layer_destroy(b);
  }

  /* kdim/vdim != E: each of q/k/v_proj_weight has its own xavier bound. */
  const int64_t E = 64, H = 4, kdim = 96, vdim = 80;
  attn_layer *l = make_layer(E, H, kdim, vdim, 0, 0);
  assert_int_equal(attn_layer_init_weights(l, 7), ATTN_OK);
  int64_t n;
  float *w = get(l, ATTN_W_Q, &n);
  check_uniform(w, n, sqrt(6.0 / (double)(E + E)));
  free(w);
  w = get(l, ATTN_W_K, &n);
  check_uniform(w, n, sqrt(6.0 / (double)(E + kdim)));
  free(w);
  w = get(l, ATTN_W_V, &n);
  check_uniform(w, n, sqrt(6.0 / (double)(E + vdim)));
  free(w);
  w = get(l, ATTN_W_OUT, &n);
  check_uniform(w, n, 1.0 / sqrt((double)E));
  free(w);
  attn_layer_destroy(l);
}

/* After attn_layer_init_weights the layer runs and agrees with the
 * reference built from its weights as read back. */
static void test_init_weights_forward(void **state) {
  (void)state;
  attn_layer *l = make_layer(40, 5, 24, 0, 0, 1);
  assert_int_equal(attn_layer_init_weights(l, 3), ATTN_OK);
  /* A nonzero out_proj bias, set after the initialisation, is used. */
  float bo[40];
  for (int i = 0; i < 40; i++)
    bo[i] = 0.25f * (float)(i % 7) - 0.5f;
  assert_int_equal(attn_layer_set_weight(l, ATTN_B_OUT, bo, 40), ATTN_OK);
  ref_layer rl;
  float *storage = NULL;
  assert_int_equal(ref_layer_from_attn(l, &rl, &storage), ATTN_OK);
  assert_memory_equal(rl.bo, bo, sizeof bo);
  ref_rng r;
  ref_rng_seed(&r, 4);
  const int64_t B = 3, Lq = 11, Lk = 29;
  float *q = ref_random(&r, B * Lq * 40, -1, 1);
  float *k = ref_random(&r, B * Lk * 24, -1, 1);
  float *v = ref_random(&r, B * Lk * 40, -1, 1);
  float out[3 * 11 * 40];
  double want[3 * 11 * 40];
  assert_int_equal(attn_forward(l, B, Lq, Lk, q, k, v, NULL, NULL, out),
                   ATTN_OK);
  ref_forward(&rl, B, Lq, Lk, q, k, v, NULL, want, NULL);
  assert_true(
      ref_close("init weights", out, want, B * Lq * 40, REF_RTOL, REF_ATOL));
  free(storage);
  free(q);
  free(k);
  free(v);
  attn_layer_destroy(l);
}

static void test_get_config(void **state) {
  (void)state;
  attn_config cfg;
  attn_config_init(&cfg);
  assert_int_equal(cfg.struct_size, sizeof cfg);
  assert_int_equal(cfg.embed_dim, 0);
  assert_int_equal(cfg.num_heads, 1);
  assert_int_equal(cfg.bias, 1);
  assert_int_equal(cfg.num_threads, 0);
  assert_true(cfg.scale == 0.0);
  cfg.embed_dim = 60;
  cfg.num_heads = 6;
  cfg.kdim = 13;
  cfg.bias = 0;
  cfg.num_threads = 3;
  cfg.num_kv_heads = 2;
  attn_layer *l = NULL;
  assert_int_equal(attn_layer_create(&cfg, &l), ATTN_OK);
  attn_config got;
  memset(&got, 0xab, sizeof got);
  got.struct_size = sizeof got;
  assert_int_equal(attn_layer_get_config(l, &got), ATTN_OK);
  assert_int_equal(got.struct_size, sizeof got);
  assert_int_equal(got.embed_dim, 60);
  assert_int_equal(got.num_heads, 6);
  assert_int_equal(got.kdim, 13);
  assert_int_equal(got.vdim, 60); /* 0 resolved to embed_dim */
  assert_int_equal(got.bias, 0);
  assert_int_equal(got.num_threads, 3);
  assert_true(fabs(got.scale - 1.0 / sqrt(10.0)) < 1e-15);
  assert_int_equal(got.num_kv_heads, 2);
  attn_layer_destroy(l);
}

/* Changing a weight after forward calls changes the next call. */
static void test_reset_weight(void **state) {
  (void)state;
  attn_config cfg;
  attn_config_init(&cfg);
  cfg.embed_dim = 16;
  cfg.num_heads = 2;
  ref_model m;
  assert_int_equal(ref_model_create(&m, &cfg, 8), ATTN_OK);
  ref_rng r;
  ref_rng_seed(&r, 9);
  float *x = ref_random(&r, 2 * 5 * 16, -1, 1);
  float o1[160], o2[160];
  assert_int_equal(attn_self_forward(m.layer, 2, 5, x, NULL, NULL, o1),
                   ATTN_OK);
  float bo[16];
  for (int i = 0; i < 16; i++)
    bo[i] = m.ref.bo[i] + 1.0f;
  assert_int_equal(attn_layer_set_weight(m.layer, ATTN_B_OUT, bo, 16), ATTN_OK);
  assert_int_equal(attn_self_forward(m.layer, 2, 5, x, NULL, NULL, o2),
                   ATTN_OK);
  for (int i = 0; i < 160; i++)
    assert_true(fabsf(o2[i] - o1[i] - 1.0f) < 1e-5f);
  free(x);
  ref_model_destroy(&m);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_weight_counts),
      cmocka_unit_test(test_packed_vs_separate),
      cmocka_unit_test(test_get_set_round_trip),
      cmocka_unit_test(test_init_weights),
      cmocka_unit_test(test_init_weights_forward),
      cmocka_unit_test(test_get_config),
      cmocka_unit_test(test_reset_weight),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
