/* SPDX-License-Identifier: MIT */
/* The caller's choice of attention core (attn_options.core), through the
 * public API: ATTN_CORE_BLAS and ATTN_CORE_PACKED (where this CPU runs it)
 * each against the double-precision reference (tests/ref.c) over cross-
 * and self-attention, grouped kv heads, every mask, both kinds of
 * attention weights and few query rows, each bit-identical on 1 and 2
 * threads; the same cores under decoding steps and cross steps; the
 * default still the library's choice; and the refusals (an unknown value,
 * the reserved field, ATTN_CORE_PACKED where the CPU or ATTN_SIMD rules it
 * out or the layer has score features) leaving outputs and weights as
 * they were. CMake runs it again under ATTN_SIMD=portable, where the
 * packed core is unavailable. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "ref.h"

#include <math.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static attn_runtime *rt2; /* two threads: calls on 1 and on 2 of them */

/* Whether the packed core should be available: AVX2 and FMA, and no
 * ATTN_SIMD cap at the portable kernels. Worked out here from the CPU and
 * the environment, independently of the library. */
static bool packed_expected(void) {
  const char *cap = getenv("ATTN_SIMD");
  if (cap && strcmp(cap, "portable") == 0)
    return false;
#if defined(__GNUC__) && (defined(__x86_64__) || defined(__i386__))
  __builtin_cpu_init();
  return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
#else
  return false;
#endif
}

/* The explicit cores to run here. */
static int cores(int32_t *c) {
  int n = 0;
  c[n++] = ATTN_CORE_BLAS;
  if (attn_core_available(ATTN_CORE_PACKED))
    c[n++] = ATTN_CORE_PACKED;
  return n;
}

static const char *core_name(int32_t c) {
  return c == ATTN_CORE_BLAS     ? "blas"
         : c == ATTN_CORE_PACKED ? "packed"
                                 : "auto";
}

static void options(attn_options *o, int32_t core, int32_t threads) {
  assert_int_equal(attn_options_init(o), ATTN_OK);
  o->core = core;
  o->num_threads = threads;
  o->runtime = rt2;
}

typedef struct {
  int64_t E, H, Hkv, kdim, vdim;
  int64_t B, Lq, Lk;
  int32_t weights; /* 0, ATTN_WEIGHTS_PER_HEAD or ATTN_WEIGHTS_AVERAGE */
  const attn_mask *mask;
} shape;

static void make_model(ref_model *m, const shape *s, uint64_t seed) {
  attn_config cfg;
  attn_config_init(&cfg);
  cfg.embed_dim = s->E;
  cfg.num_heads = s->H;
  cfg.num_kv_heads = s->Hkv;
  cfg.kdim = s->kdim;
  cfg.vdim = s->vdim;
  assert_int_equal(ref_model_create(m, &cfg, seed), ATTN_OK);
}

/* One shape on core `core`, against the reference, 1 vs 2 threads; the
 * output and weights go to keep_out and keep_w. */
static void check_core(const shape *s, int32_t core, uint64_t seed,
                       float *keep_out, float *keep_w) {
  ref_model m;
  make_model(&m, s, seed);
  int64_t kdim = s->kdim ? s->kdim : s->E, vdim = s->vdim ? s->vdim : s->E;
  bool self = s->Lq == s->Lk && kdim == s->E && vdim == s->E;
  ref_rng r;
  ref_rng_seed(&r, seed * 7 + 1);
  int64_t nq = s->B * s->Lq * s->E, nh = s->B * s->H * s->Lq * s->Lk;
  int64_t nw = s->weights == ATTN_WEIGHTS_AVERAGE ? nh / s->H : nh;
  float *q = ref_random(&r, nq, -1, 1);
  float *k = self ? q : ref_random(&r, s->B * s->Lk * kdim, -1, 1);
  float *v = self ? q : ref_random(&r, s->B * s->Lk * vdim, -1, 1);
  double *want = ref_xmalloc((size_t)nq * sizeof(double));
  double *want_w = ref_xmalloc((size_t)nh * sizeof(double));
  double *avg = ref_xmalloc((size_t)nh * sizeof(double));
  ref_forward(&m.ref, s->B, s->Lq, s->Lk, q, k, v, s->mask, want, want_w);
  if (s->weights == ATTN_WEIGHTS_AVERAGE) {
    ref_average_heads(s->B, s->H, s->Lq, s->Lk, want_w, avg);
    memcpy(want_w, avg, (size_t)nw * sizeof(double));
  }
  float *out[2], *w[2];
  char what[200];
  snprintf(what, sizeof what,
           "core=%s E=%lld H=%lld/%lld B=%lld Lq=%lld Lk=%lld weights=%d",
           core_name(core), (long long)s->E, (long long)s->H, (long long)s->Hkv,
           (long long)s->B, (long long)s->Lq, (long long)s->Lk, s->weights);
  for (int t = 0; t < 2; t++) {
    out[t] = ref_xmalloc((size_t)nq * sizeof(float));
    w[t] = ref_xmalloc((size_t)nw * sizeof(float));
    attn_options o;
    options(&o, core, t + 1);
    o.attn_weights = s->weights ? w[t] : NULL;
    o.weights_mode = s->weights ? s->weights : ATTN_WEIGHTS_PER_HEAD;
    attn_status st =
        self ? attn_self_forward(m.layer, s->B, s->Lq, q, s->mask, &o, out[t])
             : attn_forward(m.layer, s->B, s->Lq, s->Lk, q, k, v, s->mask, &o,
                            out[t]);
    if (st != ATTN_OK)
      fail_msg("%s: %s", what, attn_last_error());
    assert_true(ref_close(what, out[t], want, nq, REF_RTOL, REF_ATOL));
    if (s->weights)
      assert_true(ref_close(what, w[t], want_w, nw, REF_RTOL, REF_ATOL));
  }
  assert_memory_equal(out[0], out[1], (size_t)nq * sizeof(float));
  memcpy(keep_out, out[0], (size_t)nq * sizeof(float));
  if (s->weights) {
    assert_memory_equal(w[0], w[1], (size_t)nw * sizeof(float));
    memcpy(keep_w, w[0], (size_t)nw * sizeof(float));
  }
  for (int t = 0; t < 2; t++) {
    free(out[t]);
    free(w[t]);
  }
  if (!self) {
    free(k);
    free(v);
  }
  free(q);
  free(want);
  free(want_w);
  free(avg);
  ref_model_destroy(&m);
}

/* Every core on one shape; the default gives the same bits as the core
 * it documents choosing (the packed one from 8 query rows on, where this
 * CPU has it; these layers have no score features). */
static void check_all(const shape *s, uint64_t seed) {
  int64_t nq = s->B * s->Lq * s->E, nw = s->B * s->H * s->Lq * s->Lk;
  float *out[3], *w[3];
  int32_t c[3];
  int n = cores(c);
  c[n] = ATTN_CORE_AUTO;
  for (int i = 0; i <= n; i++) {
    out[i] = ref_xmalloc((size_t)nq * sizeof(float));
    w[i] = ref_xmalloc((size_t)nw * sizeof(float));
    check_core(s, c[i], seed, out[i], w[i]);
  }
  bool packed = attn_core_available(ATTN_CORE_PACKED) && s->Lq >= 8;
  int chosen = packed ? 1 : 0;
  assert_int_equal(c[chosen], packed ? ATTN_CORE_PACKED : ATTN_CORE_BLAS);
  assert_memory_equal(out[n], out[chosen], (size_t)nq * sizeof(float));
  if (s->weights)
    assert_memory_equal(
        w[n], w[chosen],
        (size_t)(s->weights == ATTN_WEIGHTS_AVERAGE ? nw / s->H : nw) *
            sizeof(float));
  for (int i = 0; i <= n; i++) {
    free(out[i]);
    free(w[i]);
  }
}

static void test_available(void **state) {
  (void)state;
  assert_int_equal(attn_core_available(ATTN_CORE_AUTO), 1);
  assert_int_equal(attn_core_available(ATTN_CORE_BLAS), 1);
  assert_int_equal(attn_core_available(ATTN_CORE_PACKED), packed_expected());
  assert_int_equal(attn_core_available(3), 0);
  assert_int_equal(attn_core_available(-1), 0);
  attn_options o;
  assert_int_equal(attn_options_init(&o), ATTN_OK);
  assert_int_equal(o.core, ATTN_CORE_AUTO);
  assert_int_equal(o.reserved, 0);
}

/* Self- and cross-attention, grouped kv heads, few query rows (fewer than
 * a panel: an explicit packed core runs them too), several key blocks. */
static void test_shapes(void **state) {
  (void)state;
  const shape shapes[] = {
      {.E = 32, .H = 4, .B = 2, .Lq = 37, .Lk = 37},
      {.E = 24, .H = 3, .kdim = 10, .vdim = 14, .B = 2, .Lq = 20, .Lk = 45},
      {.E = 64, .H = 8, .Hkv = 2, .B = 1, .Lq = 70, .Lk = 300},
      {.E = 16, .H = 2, .B = 3, .Lq = 1, .Lk = 9},
      {.E = 40, .H = 5, .B = 2, .Lq = 3, .Lk = 50},
      {.E = 32, .H = 2, .B = 1, .Lq = 7, .Lk = 7},
      {.E = 64, .H = 2, .B = 1, .Lq = 300, .Lk = 600},
  };
  for (size_t i = 0; i < sizeof shapes / sizeof shapes[0]; i++)
    check_all(&shapes[i], 100 + i);
}

static void test_masks(void **state) {
  (void)state;
  enum { B = 2, L = 40, LK = 60, H = 2 };
  int64_t lens[B] = {0, 33};
  uint8_t pad[B * LK];
  for (int j = 0; j < B * LK; j++)
    pad[j] = (uint8_t)(j % 5 == 0 || (j > 70 && j < 90));
  ref_rng r;
  ref_rng_seed(&r, 9);
  float *bias = ref_random(&r, B * H * L * LK, -2, 2);
  attn_mask m[6];
  for (int i = 0; i < 6; i++)
    attn_mask_init(&m[i]);
  m[0].causal = ATTN_CAUSAL_TOP_LEFT;
  m[1].causal = ATTN_CAUSAL_BOTTOM_RIGHT;
  m[1].key_lengths = lens; /* row 0 empty: zeros */
  m[2].key_padding = pad;
  m[2].window = 9;
  m[2].causal = ATTN_CAUSAL_BOTTOM_RIGHT;
  m[3].bias = bias;
  m[3].bias_stride_b = H * L * LK;
  m[3].bias_stride_h = L * LK;
  m[3].bias_stride_q = LK;
  m[4] = m[1];
  m[4].empty_rows = ATTN_EMPTY_ROW_NAN;
  m[5] = m[3];
  m[5].bias_stride_h = 0;
  m[5].key_padding = pad;
  for (int i = 0; i < 6; i++) {
    shape s = {.E = 16, .H = H, .B = B, .Lq = L, .Lk = LK, .mask = &m[i]};
    check_all(&s, 200 + (uint64_t)i);
    s.Lq = 5; /* few rows under the same masks */
    check_all(&s, 210 + (uint64_t)i);
  }
  free(bias);
}

static void test_weights(void **state) {
  (void)state;
  attn_mask causal;
  attn_mask_init(&causal);
  causal.causal = ATTN_CAUSAL_BOTTOM_RIGHT;
  for (int mode = 1; mode <= 2; mode++) {
    int32_t wm = mode == 1 ? ATTN_WEIGHTS_PER_HEAD : ATTN_WEIGHTS_AVERAGE;
    shape s = {.E = 24, .H = 3, .B = 2, .Lq = 30, .Lk = 41, .weights = wm};
    check_all(&s, 300 + (uint64_t)mode);
    s.mask = &causal;
    s.Lq = 4;
    check_all(&s, 310 + (uint64_t)mode);
  }
}

/* A prompt and single tokens through decoding steps on each core (the
 * tiled core, not the streaming kernel) against the reference over the
 * whole causal sequence; the same for cross steps over a memory. */
static void test_steps(void **state) {
  (void)state;
  enum { E = 32, H = 4, L = 24, P = 17, C = 32, LK = 29 };
  shape s = {.E = E, .H = H, .Hkv = 2, .B = 1, .Lq = L, .Lk = L};
  ref_model m;
  make_model(&m, &s, 400);
  ref_rng r;
  ref_rng_seed(&r, 401);
  float *x = ref_random(&r, L * E, -1, 1);
  float *mem_in = ref_random(&r, LK * E, -1, 1);
  double *want = ref_xmalloc(L * E * sizeof(double));
  double *want_x = ref_xmalloc(L * E * sizeof(double));
  float *got = ref_xmalloc(L * E * sizeof(float));
  attn_mask causal;
  attn_mask_init(&causal);
  causal.causal = ATTN_CAUSAL_TOP_LEFT;
  ref_forward(&m.ref, 1, L, L, x, x, x, &causal, want, NULL);
  ref_forward(&m.ref, 1, L, LK, x, mem_in, mem_in, NULL, want_x, NULL);
  int32_t c[2];
  int n = cores(c);
  for (int i = 0; i < n; i++) {
    attn_options o;
    options(&o, c[i], 2);
    attn_cache_config cc;
    attn_cache_config_init(&cc);
    cc.capacity = C;
    attn_kv_cache *cache = NULL;
    assert_int_equal(attn_kv_cache_create(m.layer, &cc, &cache), ATTN_OK);
    assert_int_equal(attn_decode_step(m.layer, cache, 1, P, x, NULL, &o, got),
                     ATTN_OK);
    for (int64_t t = P; t < L; t++)
      assert_int_equal(attn_decode_step(m.layer, cache, 1, 1, x + t * E, NULL,
                                        &o, got + t * E),
                       ATTN_OK);
    assert_true(
        ref_close(core_name(c[i]), got, want, L * E, REF_RTOL, REF_ATOL));
    attn_kv_cache_destroy(cache);

    attn_memory_config mc;
    attn_memory_config_init(&mc);
    mc.capacity = LK;
    attn_memory *mem = NULL;
    assert_int_equal(attn_memory_create(m.layer, &mc, &mem), ATTN_OK);
    assert_int_equal(
        attn_memory_set(m.layer, mem, 1, LK, mem_in, mem_in, NULL, NULL, &o),
        ATTN_OK);
    assert_int_equal(attn_cross_step(m.layer, mem, 1, 3, x, NULL, &o, got),
                     ATTN_OK);
    assert_int_equal(attn_cross_step(m.layer, mem, 1, L - 3, x + 3 * E, NULL,
                                     &o, got + 3 * E),
                     ATTN_OK);
    assert_true(
        ref_close(core_name(c[i]), got, want_x, L * E, REF_RTOL, REF_ATOL));
    attn_memory_destroy(mem);
  }
  free(x);
  free(mem_in);
  free(want);
  free(want_x);
  free(got);
  ref_model_destroy(&m);
}

/* A refused call: the status, a message containing `says`, and out and
 * the weights untouched. */
static void expect_refused(const attn_layer *l, const attn_options *o,
                           attn_status want, const char *says) {
  enum { B = 1, L = 12, E = 16, H = 2 };
  float x[B * L * E], out[B * L * E], w[B * H * L * L];
  for (int i = 0; i < B * L * E; i++)
    x[i] = (float)(i % 7) / 7.0f - 0.5f;
  memset(out, 0x7F, sizeof out);
  memset(w, 0x7F, sizeof w);
  attn_options oo = *o;
  oo.attn_weights = w;
  assert_int_equal(attn_self_forward(l, B, L, x, NULL, &oo, out), want);
  if (!strstr(attn_last_error(), says))
    fail_msg("message \"%s\" does not say \"%s\"", attn_last_error(), says);
  const unsigned char *ob = (const unsigned char *)out;
  const unsigned char *wb = (const unsigned char *)w;
  for (size_t i = 0; i < sizeof out; i++)
    assert_int_equal(ob[i], 0x7F);
  for (size_t i = 0; i < sizeof w; i++)
    assert_int_equal(wb[i], 0x7F);
  size_t bytes = 0;
  assert_int_equal(attn_forward_scratch_size(l, B, L, L, &oo, &bytes), want);
  assert_int_equal(bytes, 0);
}

static attn_layer *small_layer(double softcap, int32_t sinks) {
  attn_config cfg;
  attn_config_init(&cfg);
  cfg.embed_dim = 16;
  cfg.num_heads = 2;
  cfg.softcap = softcap;
  cfg.sinks = sinks;
  attn_layer *l = NULL;
  assert_int_equal(attn_layer_create(&cfg, &l), ATTN_OK);
  assert_int_equal(attn_layer_init_weights(l, 3), ATTN_OK);
  return l;
}

static void test_refusals(void **state) {
  (void)state;
  attn_layer *plain = small_layer(0.0, 0);
  attn_options o;
  const int32_t unknown[] = {3, -1, 1000, INT32_MIN};
  for (size_t i = 0; i < sizeof unknown / sizeof unknown[0]; i++) {
    options(&o, unknown[i], 0);
    expect_refused(plain, &o, ATTN_ERR_BAD_OPTION, "unknown core");
  }
  options(&o, ATTN_CORE_BLAS, 0);
  o.reserved = 1;
  expect_refused(plain, &o, ATTN_ERR_BAD_OPTION, "reserved");

  /* Score features: the cblas core runs them, the packed core refuses. */
  attn_layer *capped = small_layer(20.0, 0), *sinks = small_layer(0.0, 1);
  float x[12 * 16], out[12 * 16];
  for (int i = 0; i < 12 * 16; i++)
    x[i] = (float)(i % 5) / 5.0f;
  options(&o, ATTN_CORE_BLAS, 0);
  assert_int_equal(attn_self_forward(capped, 1, 12, x, NULL, &o, out), ATTN_OK);
  assert_int_equal(attn_self_forward(sinks, 1, 12, x, NULL, &o, out), ATTN_OK);
  options(&o, ATTN_CORE_PACKED, 0);
  if (attn_core_available(ATTN_CORE_PACKED)) {
    expect_refused(capped, &o, ATTN_ERR_UNSUPPORTED, "soft-capping");
    expect_refused(sinks, &o, ATTN_ERR_UNSUPPORTED, "sinks");
  } else {
    /* Where the CPU or ATTN_SIMD rules it out, for every layer. */
    expect_refused(plain, &o, ATTN_ERR_UNSUPPORTED, "AVX2");
    expect_refused(capped, &o, ATTN_ERR_UNSUPPORTED, "AVX2");
    attn_cache_config cc;
    attn_cache_config_init(&cc);
    cc.capacity = 16;
    attn_kv_cache *cache = NULL;
    assert_int_equal(attn_kv_cache_create(plain, &cc, &cache), ATTN_OK);
    memset(out, 0x7F, sizeof out);
    assert_int_equal(attn_decode_step(plain, cache, 1, 1, x, NULL, &o, out),
                     ATTN_ERR_UNSUPPORTED);
    int64_t len = -1;
    assert_int_equal(attn_kv_cache_lengths(cache, 1, &len, NULL), ATTN_OK);
    assert_int_equal(len, 0); /* nothing appended */
    assert_int_equal(((unsigned char *)out)[0], 0x7F);
    attn_kv_cache_destroy(cache);
  }
  attn_layer_destroy(plain);
  attn_layer_destroy(capped);
  attn_layer_destroy(sinks);
}

/* A forward pass whose packed keys and values exceed the packed core's
 * budget (4 batch rows x 8 heads x 1100 keys x head_dim 64, keys and
 * values: about 18 MB against 16 MiB), so they are packed and run in two
 * groups, the first ending inside a batch row: the packed core's output
 * against the cblas core's, on 1 and 2 threads, causal and not. */
static void test_packed_groups(void **state) {
  (void)state;
  if (!attn_core_available(ATTN_CORE_PACKED))
    skip();
  const int64_t B = 4, L = 1100, E = 512, n = B * L * E;
  attn_config cfg;
  attn_config_init(&cfg);
  cfg.embed_dim = E;
  cfg.num_heads = 8;
  attn_layer *l = NULL;
  assert_int_equal(attn_layer_create(&cfg, &l), ATTN_OK);
  assert_int_equal(attn_layer_init_weights(l, 11), ATTN_OK);
  ref_rng r;
  ref_rng_seed(&r, 12);
  float *x = ref_random(&r, n, -1, 1);
  float *got[2], *want = ref_xmalloc((size_t)n * sizeof(float));
  double *wantd = ref_xmalloc((size_t)n * sizeof(double));
  for (int t = 0; t < 2; t++)
    got[t] = ref_xmalloc((size_t)n * sizeof(float));
  for (int32_t causal = 0; causal < 2; causal++) {
    attn_mask m;
    attn_mask_init(&m);
    m.causal = causal;
    attn_options o;
    options(&o, ATTN_CORE_BLAS, 2);
    assert_int_equal(attn_self_forward(l, B, L, x, &m, &o, want), ATTN_OK);
    for (int64_t i = 0; i < n; i++)
      wantd[i] = want[i];
    for (int t = 0; t < 2; t++) {
      options(&o, ATTN_CORE_PACKED, t + 1);
      assert_int_equal(attn_self_forward(l, B, L, x, &m, &o, got[t]), ATTN_OK);
      assert_true(
          ref_close("packed in groups", got[t], wantd, n, REF_RTOL, REF_ATOL));
    }
    assert_memory_equal(got[0], got[1], (size_t)n * sizeof(float));
  }
  for (int t = 0; t < 2; t++)
    free(got[t]);
  free(want);
  free(wantd);
  free(x);
  attn_layer_destroy(l);
}

static int setup(void **state) {
  (void)state;
  attn_runtime_config rc;
  attn_runtime_config_init(&rc);
  rc.num_threads = 2;
  return attn_runtime_create(&rc, &rt2) == ATTN_OK ? 0 : -1;
}

static int teardown(void **state) {
  (void)state;
  attn_runtime_destroy(rt2);
  return 0;
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_available),     cmocka_unit_test(test_shapes),
      cmocka_unit_test(test_masks),         cmocka_unit_test(test_weights),
      cmocka_unit_test(test_steps),         cmocka_unit_test(test_refusals),
      cmocka_unit_test(test_packed_groups),
  };
  return cmocka_run_group_tests(tests, setup, teardown);
}
