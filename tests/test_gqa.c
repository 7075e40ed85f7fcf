/* SPDX-License-Identifier: MIT */
/* Grouped-query and multi-query attention (num_kv_heads < num_heads) in the
 * full forward, the KV cache and the cross-attention memory, against the
 * double reference and against an ordinary multi-head layer whose K/V
 * weights repeat each key/value head for its group of query heads. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "decode_sim.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static attn_config gqa_config(int64_t E, int64_t H, int64_t Hkv, int64_t kdim,
                              int64_t vdim) {
  attn_config c;
  attn_config_init(&c);
  c.embed_dim = E;
  c.num_heads = H;
  c.num_kv_heads = Hkv;
  c.kdim = kdim;
  c.vdim = vdim;
  return c;
}

/* Full forward, self- and cross-attention, with causal, window, padding
 * and bias masks, outputs and per-head weights, against ref_forward. */
static void check_forward(int64_t E, int64_t H, int64_t Hkv, int64_t kdim,
                          int64_t vdim, uint64_t seed) {
  attn_config cfg = gqa_config(E, H, Hkv, kdim, vdim);
  ref_model m;
  assert_int_equal(ref_model_create(&m, &cfg, seed), ATTN_OK);
  int64_t hd = E / H, KV = Hkv * hd;
  int64_t kd = kdim ? kdim : E, vd = vdim ? vdim : E;
  /* K/V projections have num_kv_heads * head_dim outputs. */
  int64_t count;
  assert_int_equal(attn_layer_weight_count(m.layer, ATTN_W_K, &count), ATTN_OK);
  assert_int_equal(count, KV * kd);
  assert_int_equal(attn_layer_weight_count(m.layer, ATTN_B_V, &count), ATTN_OK);
  assert_int_equal(count, KV);

  int64_t B = 2, Lq = 23, Lk = kdim ? 31 : 23;
  ref_rng r;
  ref_rng_seed(&r, seed + 5);
  float *q = ref_random(&r, B * Lq * E, -1, 1);
  float *k = kdim ? ref_random(&r, B * Lk * kd, -1, 1) : q;
  float *v = kdim ? ref_random(&r, B * Lk * vd, -1, 1) : q;
  uint8_t *pad = calloc((size_t)(B * Lk), 1);
  assert_non_null(pad);
  for (int64_t i = 0; i < B * Lk; i++)
    pad[i] = ref_rng_unit(&r) < 0.1;
  float *bias = ref_random(&r, B * H * Lq * Lk, -1, 1);
  float *out = ref_xmalloc((size_t)(B * Lq * E) * sizeof(float));
  float *w = ref_xmalloc((size_t)(B * H * Lq * Lk) * sizeof(float));
  double *want = ref_xmalloc((size_t)(B * Lq * E) * sizeof(double));
  double *ww = ref_xmalloc((size_t)(B * H * Lq * Lk) * sizeof(double));
  for (int variant = 0; variant < 3; variant++) {
    attn_mask mk;
    attn_mask_init(&mk);
    if (variant >= 1) {
      mk.causal = kdim ? ATTN_CAUSAL_BOTTOM_RIGHT : ATTN_CAUSAL_TOP_LEFT;
      mk.key_padding = pad;
      mk.window = 6;
    }
    if (variant == 2) {
      mk.bias = bias;
      mk.bias_stride_b = H * Lq * Lk;
      mk.bias_stride_h = Lq * Lk;
      mk.bias_stride_q = Lk;
    }
    attn_options o;
    attn_options_init(&o);
    o.attn_weights = w;
    assert_int_equal(attn_forward(m.layer, B, Lq, Lk, q, k, v, &mk, &o, out),
                     ATTN_OK);
    ref_forward(&m.ref, B, Lq, Lk, q, k, v, &mk, want, ww);
    char what[128];
    snprintf(what, sizeof what, "forward E=%lld H=%lld Hkv=%lld kdim=%lld %d",
             (long long)E, (long long)H, (long long)Hkv, (long long)kdim,
             variant);
    assert_true(ref_close(what, out, want, B * Lq * E, REF_RTOL, REF_ATOL));
    assert_true(ref_close(what, w, ww, B * H * Lq * Lk, REF_RTOL, REF_ATOL));
  }
  free(q);
  if (kdim) {
    free(k);
    free(v);
  }
  free(pad);
  free(bias);
  free(out);
  free(w);
  free(want);
  free(ww);
  ref_model_destroy(&m);
}

static void test_forward_vs_reference(void **state) {
  (void)state;
  const int64_t kv4[] = {1, 2, 4}, kv8[] = {1, 2, 4, 8};
  for (int i = 0; i < 3; i++) {
    check_forward(32, 4, kv4[i], 0, 0, 10 + (uint64_t)i);
    check_forward(32, 4, kv4[i], 24, 40, 20 + (uint64_t)i);
  }
  for (int i = 0; i < 4; i++)
    check_forward(64, 8, kv8[i], 0, 0, 30 + (uint64_t)i);
}

/* A grouped layer equals the multi-head layer whose key/value head h is a
 * copy of the grouped layer's head h / (H / Hkv). */
static void test_equals_repeated_heads(void **state) {
  (void)state;
  int64_t E = 48, H = 6, hd = 8, B = 2, L = 19;
  const int64_t groups[] = {1, 2, 3};
  for (int gi = 0; gi < 3; gi++) {
    int64_t Hkv = groups[gi], KV = Hkv * hd, group = H / Hkv;
    attn_config cfg = gqa_config(E, H, Hkv, 0, 0);
    ref_model g;
    assert_int_equal(ref_model_create(&g, &cfg, 40 + (uint64_t)gi), ATTN_OK);
    attn_config full = gqa_config(E, H, 0, 0, 0);
    attn_layer *mha;
    assert_int_equal(attn_layer_create(&full, &mha), ATTN_OK);
    float *wk = ref_xmalloc((size_t)(E * E) * sizeof(float));
    float *wv = ref_xmalloc((size_t)(E * E) * sizeof(float));
    float bk[48], bv[48];
    for (int64_t h = 0; h < H; h++) {
      int64_t src = h / group;
      memcpy(wk + h * hd * E, g.ref.wk + src * hd * E,
             (size_t)(hd * E) * sizeof(float));
      memcpy(wv + h * hd * E, g.ref.wv + src * hd * E,
             (size_t)(hd * E) * sizeof(float));
      memcpy(bk + h * hd, g.ref.bk + src * hd, (size_t)hd * sizeof(float));
      memcpy(bv + h * hd, g.ref.bv + src * hd, (size_t)hd * sizeof(float));
    }
    assert_int_equal(attn_layer_set_weight(mha, ATTN_W_Q, g.ref.wq, E * E),
                     ATTN_OK);
    assert_int_equal(attn_layer_set_weight(mha, ATTN_W_K, wk, E * E), ATTN_OK);
    assert_int_equal(attn_layer_set_weight(mha, ATTN_W_V, wv, E * E), ATTN_OK);
    assert_int_equal(attn_layer_set_weight(mha, ATTN_W_OUT, g.ref.wo, E * E),
                     ATTN_OK);
    assert_int_equal(attn_layer_set_weight(mha, ATTN_B_Q, g.ref.bq, E),
                     ATTN_OK);
    assert_int_equal(attn_layer_set_weight(mha, ATTN_B_K, bk, E), ATTN_OK);
    assert_int_equal(attn_layer_set_weight(mha, ATTN_B_V, bv, E), ATTN_OK);
    assert_int_equal(attn_layer_set_weight(mha, ATTN_B_OUT, g.ref.bo, E),
                     ATTN_OK);
    ref_rng r;
    ref_rng_seed(&r, 50);
    float *x = ref_random(&r, B * L * E, -1, 1);
    float *o1 = ref_xmalloc((size_t)(B * L * E) * sizeof(float));
    float *o2 = ref_xmalloc((size_t)(B * L * E) * sizeof(float));
    attn_mask mk;
    attn_mask_init(&mk);
    mk.causal = ATTN_CAUSAL_TOP_LEFT;
    assert_int_equal(attn_self_forward(g.layer, B, L, x, &mk, NULL, o1),
                     ATTN_OK);
    assert_int_equal(attn_self_forward(mha, B, L, x, &mk, NULL, o2), ATTN_OK);
    assert_true(ref_close_f("grouped vs repeated heads", o1, o2, B * L * E,
                            1e-5, 1e-6));
    (void)KV;
    free(x);
    free(o1);
    free(o2);
    free(wk);
    free(wv);
    attn_layer_destroy(mha);
    ref_model_destroy(&g);
  }
}

/* The cache stores num_kv_heads heads, not num_heads: a multi-query cache
 * is H times smaller. */
static void test_cache_size(void **state) {
  (void)state;
  attn_cache_config cc;
  attn_cache_config_init(&cc);
  cc.batch = 2;
  cc.capacity = 1024;
  size_t sizes[3];
  const int64_t kv[] = {8, 2, 1};
  for (int i = 0; i < 3; i++) {
    attn_config cfg = gqa_config(256, 8, kv[i], 0, 0);
    attn_layer *l;
    assert_int_equal(attn_layer_create(&cfg, &l), ATTN_OK);
    assert_int_equal(attn_kv_cache_size(l, &cc, &sizes[i]), ATTN_OK);
    size_t kv_bytes = (size_t)(2 * 1024 * 2 * kv[i] * 32) * sizeof(float);
    assert_true(sizes[i] >= kv_bytes);
    assert_true(sizes[i] < kv_bytes + kv_bytes / 8 + 65536);
    attn_layer_destroy(l);
  }
  assert_true(sizes[2] * 6 < sizes[0]);
}

/* The cache path: token by token, chunked, windowed, for 1, 2 and H
 * key/value heads. */
static void test_cache_paths(void **state) {
  (void)state;
  const int64_t kv[] = {1, 2, 4};
  for (int i = 0; i < 3; i++) {
    attn_config cfg = gqa_config(64, 4, kv[i], 0, 0);
    for (int mode = 0; mode < 3; mode++) {
      dsim s;
      int64_t W = mode == 2 ? 12 : 0, C = mode == 2 ? 30 : 130;
      dsim_init(&s, &cfg, 3, C, W, 130, 60 + (uint64_t)(i * 3 + mode));
      int64_t lens[3];
      for (;;) {
        int64_t n = mode == 0 ? 1 : ref_rng_int(&s.rng, 1, 6);
        if (s.len[0] + n > 120 || s.len[1] + n > 120 || s.len[2] + n > 120)
          break;
        dsim_random_lengths(&s, n, lens);
        dsim_step(&s, n, lens, 0.1);
      }
      char what[64];
      snprintf(what, sizeof what, "cache Hkv=%lld mode %d", (long long)kv[i],
               mode);
      dsim_check(&s, what);
      dsim_free(&s);
    }
  }
}

/* Head sizes that are and are not multiples of 8 (the vector kernels take
 * eight floats at a time), more and fewer than 32, with grouped heads,
 * windows and chunks of new tokens. */
static void test_head_sizes(void **state) {
  (void)state;
  const struct {
    int64_t E, H, Hkv, W;
  } cases[] = {{40, 4, 2, 0},  {60, 6, 3, 9},   {80, 2, 1, 0},
               {128, 2, 2, 0}, {128, 2, 1, 17}, {24, 8, 4, 5}};
  for (size_t k = 0; k < sizeof cases / sizeof cases[0]; k++) {
    attn_config cfg = gqa_config(cases[k].E, cases[k].H, cases[k].Hkv, 0, 0);
    dsim s;
    dsim_init(&s, &cfg, 2, cases[k].W ? 3 * cases[k].W : 300, cases[k].W, 300,
              90 + (uint64_t)k);
    int64_t lens[2];
    for (;;) {
      int64_t n = ref_rng_int(&s.rng, 1, 5);
      if (s.len[0] + n > 290 || s.len[1] + n > 290)
        break;
      dsim_random_lengths(&s, n, lens);
      dsim_step(&s, n, lens, 0.05);
    }
    char what[96];
    snprintf(what, sizeof what, "head size E=%lld H=%lld Hkv=%lld W=%lld",
             (long long)cases[k].E, (long long)cases[k].H,
             (long long)cases[k].Hkv, (long long)cases[k].W);
    dsim_check(&s, what);
    dsim_free(&s);
  }
}

/* The memory path: cross-attention with kdim != vdim != E, steps of a few
 * queries against one memory, for 1, 2 and H key/value heads. */
static void test_memory_paths(void **state) {
  (void)state;
  const int64_t kv[] = {1, 2, 4};
  for (int i = 0; i < 3; i++) {
    attn_config cfg = gqa_config(32, 4, kv[i], 20, 12);
    ref_model m;
    assert_int_equal(ref_model_create(&m, &cfg, 70 + (uint64_t)i), ATTN_OK);
    int64_t B = 2, Lk = 17, Lq = 25, E = 32;
    ref_rng r;
    ref_rng_seed(&r, 80 + (uint64_t)i);
    float *k = ref_random(&r, B * Lk * 20, -1, 1);
    float *v = ref_random(&r, B * Lk * 12, -1, 1);
    float *q = ref_random(&r, B * Lq * E, -1, 1);
    int64_t klen[2] = {17, 9};
    attn_memory_config mc;
    attn_memory_config_init(&mc);
    mc.batch = B;
    mc.capacity = 20;
    attn_memory *mem;
    assert_int_equal(attn_memory_create(m.layer, &mc, &mem), ATTN_OK);
    assert_int_equal(
        attn_memory_set(m.layer, mem, B, Lk, k, v, klen, NULL, NULL), ATTN_OK);
    float *got = ref_xmalloc((size_t)(B * Lq * E) * sizeof(float));
    for (int64_t done = 0; done < Lq;) {
      int64_t n = done % 2 ? 1 : 4;
      if (done + n > Lq)
        n = Lq - done;
      float qs[4 * 2 * 32], os[4 * 2 * 32];
      for (int64_t b = 0; b < B; b++)
        memcpy(qs + b * n * E, q + (b * Lq + done) * E,
               (size_t)(n * E) * sizeof(float));
      assert_int_equal(attn_cross_step(m.layer, mem, B, n, qs, NULL, NULL, os),
                       ATTN_OK);
      for (int64_t b = 0; b < B; b++)
        memcpy(got + (b * Lq + done) * E, os + b * n * E,
               (size_t)(n * E) * sizeof(float));
      done += n;
    }
    attn_mask mk;
    attn_mask_init(&mk);
    mk.key_lengths = klen;
    double *want = ref_xmalloc((size_t)(B * Lq * E) * sizeof(double));
    ref_forward(&m.ref, B, Lq, Lk, q, k, v, &mk, want, NULL);
    char what[64];
    snprintf(what, sizeof what, "memory Hkv=%lld", (long long)kv[i]);
    assert_true(ref_close(what, got, want, B * Lq * E, REF_RTOL, REF_ATOL));
    attn_memory_destroy(mem);
    free(k);
    free(v);
    free(q);
    free(got);
    free(want);
    ref_model_destroy(&m);
  }
}

/* num_kv_heads must divide num_heads. */
static void test_bad_group(void **state) {
  (void)state;
  attn_config cfg = gqa_config(48, 6, 4, 0, 0);
  attn_layer *l = NULL;
  assert_int_equal(attn_layer_create(&cfg, &l), ATTN_ERR_BAD_SIZE);
  assert_null(l);
  cfg.num_kv_heads = -2;
  assert_int_equal(attn_layer_create(&cfg, &l), ATTN_ERR_BAD_SIZE);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_forward_vs_reference),
      cmocka_unit_test(test_equals_repeated_heads),
      cmocka_unit_test(test_cache_size),
      cmocka_unit_test(test_cache_paths),
      cmocka_unit_test(test_head_sizes),
      cmocka_unit_test(test_memory_paths),
      cmocka_unit_test(test_bad_group),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
