/* SPDX-License-Identifier: MIT */
/* One test per error status the core can return. Every failing call is
 * checked for its status, for a detail message that says what was wrong,
 * and for leaving everything it could write untouched: the output and
 * attention-weight buffers (filled with a sentinel beforehand), the layer's
 * weights, and out-parameters. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "ref.h"

#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* test_no_memory asks for an allocation far beyond any machine's memory;
 * AddressSanitizer aborts on those by default instead of returning NULL as
 * malloc must. Let it return NULL in this program (no effect without
 * ASan). */
const char *__asan_default_options(void);
const char *__asan_default_options(void) {
  return "allocator_may_return_null=1";
}

/* The status and a message containing `needle`. */
#define EXPECT_FAIL(call, status, needle)                                      \
  do {                                                                         \
    attn_status st_ = (call);                                                  \
    if (st_ != (status) || !strstr(attn_last_error(), (needle)))               \
      print_error("%s: status %d, message \"%s\"; wanted %d with \"%s\"\n",    \
                  #call, (int)st_, attn_last_error(), (int)(status),           \
                  (needle));                                                   \
    assert_int_equal(st_, (status));                                           \
    assert_non_null(strstr(attn_last_error(), (needle)));                      \
  } while (0)

#define SENTINEL 0x5a

/* A forward problem with outputs filled with SENTINEL bytes. */
typedef struct {
  attn_layer *layer;
  int64_t E, kdim, vdim, H, B, Lq, Lk;
  float *q, *k, *v, *out, *w;
  size_t out_bytes, w_bytes;
  attn_options opts;
} fixture;

static void fixture_new(fixture *f, int64_t kdim, int64_t vdim) {
  memset(f, 0, sizeof *f);
  f->E = 16;
  f->H = 4;
  f->kdim = kdim ? kdim : 16;
  f->vdim = vdim ? vdim : 16;
  f->B = 2;
  f->Lq = 5;
  f->Lk = 7;
  attn_config cfg;
  attn_config_init(&cfg);
  cfg.embed_dim = f->E;
  cfg.num_heads = f->H;
  cfg.kdim = kdim;
  cfg.vdim = vdim;
  assert_int_equal(attn_layer_create(&cfg, &f->layer), ATTN_OK);
  assert_int_equal(attn_layer_init_weights(f->layer, 1), ATTN_OK);
  ref_rng r;
  ref_rng_seed(&r, 2);
  f->q = ref_random(&r, f->B * f->Lq * f->E, -1, 1);
  f->k = ref_random(&r, f->B * f->Lk * f->kdim, -1, 1);
  f->v = ref_random(&r, f->B * f->Lk * f->vdim, -1, 1);
  f->out_bytes = (size_t)(f->B * f->Lq * f->E) * sizeof(float);
  f->w_bytes = (size_t)(f->B * f->H * f->Lq * f->Lk) * sizeof(float);
  f->out = ref_xmalloc(f->out_bytes);
  f->w = ref_xmalloc(f->w_bytes);
  memset(f->out, SENTINEL, f->out_bytes);
  memset(f->w, SENTINEL, f->w_bytes);
  attn_options_init(&f->opts);
  f->opts.attn_weights = f->w;
}

static void fixture_free(fixture *f) {
  attn_layer_destroy(f->layer);
  free(f->q);
  free(f->k);
  free(f->v);
  free(f->out);
  free(f->w);
}

static void assert_bytes(const void *p, size_t n, unsigned char value) {
  const unsigned char *c = p;
  for (size_t i = 0; i < n; i++)
    if (c[i] != value)
      fail_msg("byte %zu is 0x%02x, not 0x%02x: a failed call wrote it", i,
               c[i], value);
}

/* The outputs still hold the sentinel. */
static void untouched(const fixture *f) {
  assert_bytes(f->out, f->out_bytes, SENTINEL);
  assert_bytes(f->w, f->w_bytes, SENTINEL);
}

static attn_status fwd(fixture *f, const attn_mask *mask) {
  return attn_forward(f->layer, f->B, f->Lq, f->Lk, f->q, f->k, f->v, mask,
                      &f->opts, f->out);
}

/* Every weight of a layer, concatenated, to see that failed calls change
 * none. */
static float *snapshot(const attn_layer *l, int64_t *total) {
  attn_config c;
  attn_config_init(&c);
  assert_int_equal(attn_layer_get_config(l, &c), ATTN_OK);
  const attn_weight_id ids[] = {ATTN_W_Q, ATTN_W_K, ATTN_W_V, ATTN_W_OUT,
                                ATTN_B_Q, ATTN_B_K, ATTN_B_V, ATTN_B_OUT};
  int n = c.bias ? 8 : 4;
  int64_t counts[8], sum = 0;
  for (int i = 0; i < n; i++) {
    assert_int_equal(attn_layer_weight_count(l, ids[i], &counts[i]), ATTN_OK);
    sum += counts[i];
  }
  float *all = ref_xmalloc((size_t)sum * sizeof(float)), *at = all;
  for (int i = 0; i < n; i++) {
    assert_int_equal(attn_layer_get_weight(l, ids[i], at, counts[i]), ATTN_OK);
    at += counts[i];
  }
  *total = sum;
  return all;
}

static void same_weights(const attn_layer *l, const float *before, int64_t n) {
  int64_t m = 0;
  float *now = snapshot(l, &m);
  assert_int_equal(m, n);
  assert_memory_equal(now, before, (size_t)n * sizeof(float));
  free(now);
}

/* ------------------------------------------------------------------------ */

static void test_null_pointer(void **state) {
  (void)state;
  fixture f;
  fixture_new(&f, 0, 0);
  attn_config cfg;
  attn_config_init(&cfg);
  cfg.embed_dim = 8;
  attn_layer *l = (attn_layer *)&cfg; /* any non-NULL value */
  EXPECT_FAIL(attn_layer_create(NULL, &l), ATTN_ERR_NULL_POINTER, "cfg");
  assert_ptr_equal(l, (attn_layer *)&cfg);
  EXPECT_FAIL(attn_layer_create(&cfg, NULL), ATTN_ERR_NULL_POINTER, "out");
  EXPECT_FAIL(attn_layer_get_config(NULL, &cfg), ATTN_ERR_NULL_POINTER,
              "layer");
  EXPECT_FAIL(attn_layer_get_config(f.layer, NULL), ATTN_ERR_NULL_POINTER,
              "cfg");
  int64_t n = -3;
  EXPECT_FAIL(attn_layer_weight_count(NULL, ATTN_W_Q, &n),
              ATTN_ERR_NULL_POINTER, "layer");
  assert_int_equal(n, -3);
  EXPECT_FAIL(attn_layer_weight_count(f.layer, ATTN_W_Q, NULL),
              ATTN_ERR_NULL_POINTER, "count");
  float buf[256];
  memset(buf, SENTINEL, sizeof buf);
  EXPECT_FAIL(attn_layer_set_weight(NULL, ATTN_W_Q, buf, 256),
              ATTN_ERR_NULL_POINTER, "layer");
  EXPECT_FAIL(attn_layer_set_weight(f.layer, ATTN_W_Q, NULL, 256),
              ATTN_ERR_NULL_POINTER, "data");
  EXPECT_FAIL(attn_layer_get_weight(NULL, ATTN_W_Q, buf, 256),
              ATTN_ERR_NULL_POINTER, "layer");
  assert_bytes(buf, sizeof buf, SENTINEL);
  EXPECT_FAIL(attn_layer_get_weight(f.layer, ATTN_W_Q, NULL, 256),
              ATTN_ERR_NULL_POINTER, "data");
  EXPECT_FAIL(attn_layer_init_weights(NULL, 1), ATTN_ERR_NULL_POINTER, "layer");

  EXPECT_FAIL(
      attn_forward(NULL, f.B, f.Lq, f.Lk, f.q, f.k, f.v, NULL, &f.opts, f.out),
      ATTN_ERR_NULL_POINTER, "layer");
  EXPECT_FAIL(attn_forward(f.layer, f.B, f.Lq, f.Lk, NULL, f.k, f.v, NULL,
                           &f.opts, f.out),
              ATTN_ERR_NULL_POINTER, "query");
  EXPECT_FAIL(attn_forward(f.layer, f.B, f.Lq, f.Lk, f.q, NULL, f.v, NULL,
                           &f.opts, f.out),
              ATTN_ERR_NULL_POINTER, "key");
  EXPECT_FAIL(attn_forward(f.layer, f.B, f.Lq, f.Lk, f.q, f.k, NULL, NULL,
                           &f.opts, f.out),
              ATTN_ERR_NULL_POINTER, "value");
  EXPECT_FAIL(attn_forward(f.layer, f.B, f.Lq, f.Lk, f.q, f.k, f.v, NULL,
                           &f.opts, NULL),
              ATTN_ERR_NULL_POINTER, "out");
  EXPECT_FAIL(attn_self_forward(f.layer, f.B, f.Lq, NULL, NULL, &f.opts, f.out),
              ATTN_ERR_NULL_POINTER, "query");
  EXPECT_FAIL(attn_self_forward(NULL, f.B, f.Lq, f.q, NULL, &f.opts, f.out),
              ATTN_ERR_NULL_POINTER, "layer");
  untouched(&f);
  size_t bytes = 12345;
  EXPECT_FAIL(attn_forward_scratch_size(NULL, 1, 1, 1, NULL, &bytes),
              ATTN_ERR_NULL_POINTER, "layer");
  assert_int_equal(bytes, 12345);
  EXPECT_FAIL(attn_forward_scratch_size(f.layer, 1, 1, 1, NULL, NULL),
              ATTN_ERR_NULL_POINTER, "bytes");
  fixture_free(&f);
}

static void test_struct_size(void **state) {
  (void)state;
  fixture f;
  fixture_new(&f, 0, 0);
  attn_config cfg;
  attn_config_init(&cfg);
  cfg.embed_dim = 8;
  cfg.struct_size = ATTN_CONFIG_SIZE_0_1 - 1;
  attn_layer *l = NULL;
  EXPECT_FAIL(attn_layer_create(&cfg, &l), ATTN_ERR_STRUCT_SIZE, "struct_size");
  assert_null(l);

  attn_mask mask;
  attn_mask_init(&mask);
  mask.struct_size = 8;
  EXPECT_FAIL(fwd(&f, &mask), ATTN_ERR_STRUCT_SIZE, "attn_mask");
  untouched(&f);
  f.opts.struct_size = 0;
  EXPECT_FAIL(fwd(&f, NULL), ATTN_ERR_STRUCT_SIZE, "attn_options");
  untouched(&f);
  size_t bytes = 777;
  EXPECT_FAIL(attn_forward_scratch_size(f.layer, 1, 2, 3, &f.opts, &bytes),
              ATTN_ERR_STRUCT_SIZE, "attn_options");
  assert_int_equal(bytes, 777);

  attn_config got;
  memset(&got, SENTINEL, sizeof got);
  got.struct_size = 4;
  EXPECT_FAIL(attn_layer_get_config(f.layer, &got), ATTN_ERR_STRUCT_SIZE,
              "struct_size");
  assert_int_equal(got.struct_size, 4);
  assert_bytes((const unsigned char *)&got + sizeof got.struct_size,
               sizeof got - sizeof got.struct_size, SENTINEL);
  fixture_free(&f);
}

static void test_bad_size(void **state) {
  (void)state;
  struct {
    int64_t E, H, kdim, vdim, Hkv;
    const char *needle;
  } bad[] = {
      {0, 1, 0, 0, 0, "embed_dim 0 must be positive"},
      {-4, 1, 0, 0, 0, "embed_dim -4"},
      {8, 0, 0, 0, 0, "num_heads 0"},
      {8, -2, 0, 0, 0, "num_heads -2"},
      {510, 8, 0, 0, 0, "embed_dim 510 is not divisible by num_heads 8"},
      {16, 4, -1, 0, 0, "kdim -1"},
      {16, 4, 0, -3, 0, "vdim -3"},
      {16, 8, 0, 0, 3, "num_kv_heads 3 must divide num_heads 8"},
      {16, 8, 0, 0, -1, "num_kv_heads -1"},
  };
  for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
    attn_config cfg;
    attn_config_init(&cfg);
    cfg.embed_dim = bad[i].E;
    cfg.num_heads = bad[i].H;
    cfg.kdim = bad[i].kdim;
    cfg.vdim = bad[i].vdim;
    cfg.num_kv_heads = bad[i].Hkv;
    attn_layer *l = NULL;
    EXPECT_FAIL(attn_layer_create(&cfg, &l), ATTN_ERR_BAD_SIZE, bad[i].needle);
    assert_null(l);
  }

  fixture f;
  fixture_new(&f, 0, 0);
  const int64_t sizes[][3] = {{0, 5, 7},  {2, 0, 7},  {2, 5, 0},
                              {-1, 5, 7}, {2, -5, 7}, {2, 5, -7}};
  for (size_t i = 0; i < sizeof sizes / sizeof *sizes; i++) {
    EXPECT_FAIL(attn_forward(f.layer, sizes[i][0], sizes[i][1], sizes[i][2],
                             f.q, f.k, f.v, NULL, &f.opts, f.out),
                ATTN_ERR_BAD_SIZE, "must be positive");
    untouched(&f);
    size_t bytes = 99;
    EXPECT_FAIL(attn_forward_scratch_size(f.layer, sizes[i][0], sizes[i][1],
                                          sizes[i][2], NULL, &bytes),
                ATTN_ERR_BAD_SIZE, "must be positive");
    assert_int_equal(bytes, 99);
  }
  EXPECT_FAIL(attn_self_forward(f.layer, 0, 5, f.q, NULL, &f.opts, f.out),
              ATTN_ERR_BAD_SIZE, "batch 0");
  untouched(&f);
  fixture_free(&f);

  /* Self-attention needs kdim == vdim == embed_dim. */
  fixture g;
  fixture_new(&g, 12, 0);
  EXPECT_FAIL(attn_self_forward(g.layer, g.B, g.Lq, g.q, NULL, &g.opts, g.out),
              ATTN_ERR_BAD_SIZE, "kdim 12");
  untouched(&g);
  fixture_free(&g);
}

static void test_overflow(void **state) {
  (void)state;
  /* Weight element counts beyond int64 / addressable memory. */
  const int64_t huge[][3] = {{(int64_t)1 << 32, 1, 0},
                             {8, 1, INT64_MAX / 4},
                             {(int64_t)1 << 31, 1, 0}};
  for (int i = 0; i < 3; i++) {
    attn_config cfg;
    attn_config_init(&cfg);
    cfg.embed_dim = huge[i][0];
    cfg.num_heads = huge[i][1];
    cfg.kdim = huge[i][2];
    cfg.bias = 0;
    attn_layer *l = NULL;
    EXPECT_FAIL(attn_layer_create(&cfg, &l), ATTN_ERR_OVERFLOW,
                "do not fit in memory");
    assert_null(l);
  }

  fixture f;
  fixture_new(&f, 0, 0);
  /* batch * length overflows: rejected before any input is read. */
  EXPECT_FAIL(attn_forward(f.layer, INT64_MAX / 2, 3, 3, f.q, f.k, f.v, NULL,
                           &f.opts, f.out),
              ATTN_ERR_OVERFLOW, "batch * length");
  untouched(&f);
  EXPECT_FAIL(attn_forward(f.layer, 2, 3, INT64_MAX / 3, f.q, f.k, f.v, NULL,
                           &f.opts, f.out),
              ATTN_ERR_OVERFLOW, "too large");
  untouched(&f);
  /* Element counts that fit int64 only before multiplying by E. */
  EXPECT_FAIL(attn_forward(f.layer, (int64_t)1 << 31, (int64_t)1 << 30, 3, f.q,
                           f.k, f.v, NULL, &f.opts, f.out),
              ATTN_ERR_OVERFLOW, "too large");
  untouched(&f);
  size_t bytes = 5;
  EXPECT_FAIL(attn_forward_scratch_size(f.layer, INT64_MAX, 2, 2, NULL, &bytes),
              ATTN_ERR_OVERFLOW, "too large");
  assert_int_equal(bytes, 5);
  /* A mask bias whose strides address beyond memory. */
  float bias[5 * 7] = {0};
  attn_mask mask;
  attn_mask_init(&mask);
  mask.bias = bias;
  mask.bias_stride_b = INT64_MAX / 2;
  mask.bias_stride_q = 7;
  EXPECT_FAIL(fwd(&f, &mask), ATTN_ERR_OVERFLOW, "bias strides");
  untouched(&f);
  fixture_free(&f);
}

static void test_weight_size(void **state) {
  (void)state;
  fixture f;
  fixture_new(&f, 0, 0);
  int64_t n0 = 0;
  float *before = snapshot(f.layer, &n0);
  float data[1024];
  memset(data, 0, sizeof data);
  const struct {
    attn_weight_id id;
    int64_t count;
    const char *needle;
  } bad[] = {{ATTN_W_Q, 255, "needs 256 floats for this layer, got 255"},
             {ATTN_W_Q, 257, "got 257"},
             {ATTN_W_IN_PROJ, 256, "needs 768"},
             {ATTN_B_IN_PROJ, 16, "needs 48"},
             {ATTN_B_OUT, 0, "got 0"},
             {ATTN_W_OUT, -1, "got -1"}};
  for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
    EXPECT_FAIL(attn_layer_set_weight(f.layer, bad[i].id, data, bad[i].count),
                ATTN_ERR_WEIGHT_SIZE, bad[i].needle);
    same_weights(f.layer, before, n0);
    float got[1024];
    memset(got, SENTINEL, sizeof got);
    EXPECT_FAIL(attn_layer_get_weight(f.layer, bad[i].id, got, bad[i].count),
                ATTN_ERR_WEIGHT_SIZE, bad[i].needle);
    assert_bytes(got, sizeof got, SENTINEL);
  }
  free(before);
  fixture_free(&f);
}

static void test_weight_layout(void **state) {
  (void)state;
  /* Packed in_proj needs kdim == vdim == embed_dim. */
  fixture f;
  fixture_new(&f, 12, 0);
  int64_t n0 = 0;
  float *before = snapshot(f.layer, &n0);
  float data[2048];
  memset(data, 0, sizeof data);
  int64_t count = -9;
  EXPECT_FAIL(attn_layer_weight_count(f.layer, ATTN_W_IN_PROJ, &count),
              ATTN_ERR_WEIGHT_LAYOUT, "kdim 12");
  assert_int_equal(count, -9);
  EXPECT_FAIL(attn_layer_set_weight(f.layer, ATTN_W_IN_PROJ, data, 704),
              ATTN_ERR_WEIGHT_LAYOUT, "packed in_proj_weight");
  same_weights(f.layer, before, n0);
  float got[2048];
  memset(got, SENTINEL, sizeof got);
  EXPECT_FAIL(attn_layer_get_weight(f.layer, ATTN_W_IN_PROJ, got, 704),
              ATTN_ERR_WEIGHT_LAYOUT, "packed in_proj_weight");
  assert_bytes(got, sizeof got, SENTINEL);
  /* Unknown ids. */
  const attn_weight_id unknown[] = {-1, 13, 1000, INT32_MAX};
  for (int i = 0; i < 4; i++) {
    char needle[64];
    snprintf(needle, sizeof needle, "unknown weight id %d", (int)unknown[i]);
    EXPECT_FAIL(attn_layer_set_weight(f.layer, unknown[i], data, 16),
                ATTN_ERR_WEIGHT_LAYOUT, needle);
    EXPECT_FAIL(attn_layer_get_weight(f.layer, unknown[i], got, 16),
                ATTN_ERR_WEIGHT_LAYOUT, needle);
    EXPECT_FAIL(attn_layer_weight_count(f.layer, unknown[i], &count),
                ATTN_ERR_WEIGHT_LAYOUT, needle);
  }
  same_weights(f.layer, before, n0);
  assert_bytes(got, sizeof got, SENTINEL);
  assert_int_equal(count, -9);
  free(before);
  fixture_free(&f);

  /* Biases do not exist in a layer made with bias off. */
  attn_config cfg;
  attn_config_init(&cfg);
  cfg.embed_dim = 8;
  cfg.num_heads = 2;
  cfg.bias = 0;
  attn_layer *l = NULL;
  assert_int_equal(attn_layer_create(&cfg, &l), ATTN_OK);
  assert_int_equal(attn_layer_init_weights(l, 5), ATTN_OK);
  before = snapshot(l, &n0);
  const attn_weight_id biases[] = {ATTN_B_IN_PROJ, ATTN_B_OUT, ATTN_B_Q,
                                   ATTN_B_K, ATTN_B_V};
  const char *names[] = {"in_proj_bias", "out_proj.bias", "q bias", "k bias",
                         "v bias"};
  for (int i = 0; i < 5; i++) {
    int64_t n = i == 0 ? 24 : 8;
    EXPECT_FAIL(attn_layer_set_weight(l, biases[i], data, n),
                ATTN_ERR_WEIGHT_LAYOUT, names[i]);
    assert_non_null(strstr(attn_last_error(), "bias off"));
    memset(got, SENTINEL, sizeof got);
    EXPECT_FAIL(attn_layer_get_weight(l, biases[i], got, n),
                ATTN_ERR_WEIGHT_LAYOUT, "bias off");
    assert_bytes(got, sizeof got, SENTINEL);
  }
  same_weights(l, before, n0);
  free(before);
  attn_layer_destroy(l);
}

static void test_weights_not_set(void **state) {
  (void)state;
  fixture f;
  fixture_new(&f, 0, 0);
  attn_layer_destroy(f.layer);
  attn_config cfg;
  attn_config_init(&cfg);
  cfg.embed_dim = f.E;
  cfg.num_heads = f.H;
  assert_int_equal(attn_layer_create(&cfg, &f.layer), ATTN_OK);
  EXPECT_FAIL(fwd(&f, NULL), ATTN_ERR_WEIGHTS_NOT_SET,
              "q_proj_weight has never been set");
  untouched(&f);
  /* Set everything but one piece at a time, in order: each missing piece is
   * named. */
  const attn_weight_id ids[] = {ATTN_W_Q, ATTN_W_K, ATTN_W_V, ATTN_W_OUT,
                                ATTN_B_Q, ATTN_B_K, ATTN_B_V, ATTN_B_OUT};
  const char *next[] = {"k_proj_weight", "v_proj_weight", "out_proj.weight",
                        "q bias",        "k bias",        "v bias",
                        "out_proj.bias"};
  float data[256];
  memset(data, 0, sizeof data);
  for (int i = 0; i < 7; i++) {
    int64_t n = 0;
    assert_int_equal(attn_layer_weight_count(f.layer, ids[i], &n), ATTN_OK);
    assert_int_equal(attn_layer_set_weight(f.layer, ids[i], data, n), ATTN_OK);
    EXPECT_FAIL(fwd(&f, NULL), ATTN_ERR_WEIGHTS_NOT_SET, next[i]);
    untouched(&f);
    EXPECT_FAIL(
        attn_self_forward(f.layer, f.B, f.Lq, f.q, NULL, &f.opts, f.out),
        ATTN_ERR_WEIGHTS_NOT_SET, next[i]);
    untouched(&f);
  }
  assert_int_equal(attn_layer_set_weight(f.layer, ATTN_B_OUT, data, 16),
                   ATTN_OK);
  assert_int_equal(fwd(&f, NULL), ATTN_OK);

  /* Without bias the four matrices are all a layer needs. */
  attn_layer_destroy(f.layer);
  cfg.bias = 0;
  assert_int_equal(attn_layer_create(&cfg, &f.layer), ATTN_OK);
  for (int i = 0; i < 4; i++) {
    int64_t n = 0;
    assert_int_equal(attn_layer_weight_count(f.layer, ids[i], &n), ATTN_OK);
    if (i == 3) {
      memset(f.out, SENTINEL, f.out_bytes);
      memset(f.w, SENTINEL, f.w_bytes);
      EXPECT_FAIL(fwd(&f, NULL), ATTN_ERR_WEIGHTS_NOT_SET, "out_proj.weight");
      untouched(&f);
    }
    assert_int_equal(attn_layer_set_weight(f.layer, ids[i], data, n), ATTN_OK);
  }
  assert_int_equal(fwd(&f, NULL), ATTN_OK);
  fixture_free(&f);
}

static void test_bad_mask(void **state) {
  (void)state;
  fixture f;
  fixture_new(&f, 0, 0);
  attn_mask m;
  float bias[2 * 4 * 5 * 7] = {0};

  attn_mask_init(&m);
  m.causal = 3;
  EXPECT_FAIL(fwd(&f, &m), ATTN_ERR_BAD_MASK, "unknown causal mode 3");
  untouched(&f);
  m.causal = -1;
  EXPECT_FAIL(fwd(&f, &m), ATTN_ERR_BAD_MASK, "unknown causal mode -1");
  untouched(&f);

  attn_mask_init(&m);
  m.empty_rows = 2;
  EXPECT_FAIL(fwd(&f, &m), ATTN_ERR_BAD_MASK, "empty_rows");
  untouched(&f);

  attn_mask_init(&m);
  int64_t lengths[2] = {7, 8};
  m.key_lengths = lengths;
  EXPECT_FAIL(fwd(&f, &m), ATTN_ERR_BAD_MASK, "key_lengths[1] = 8");
  untouched(&f);
  lengths[1] = -1;
  EXPECT_FAIL(fwd(&f, &m), ATTN_ERR_BAD_MASK, "key_lengths[1] = -1");
  untouched(&f);

  attn_mask_init(&m);
  m.window = -1;
  EXPECT_FAIL(fwd(&f, &m), ATTN_ERR_BAD_MASK, "window -1");
  untouched(&f);

  for (int which = 0; which < 3; which++) {
    attn_mask_init(&m);
    m.bias = bias;
    m.bias_stride_b = 4 * 5 * 7;
    m.bias_stride_h = 5 * 7;
    m.bias_stride_q = 7;
    if (which == 0)
      m.bias_stride_b = -1;
    else if (which == 1)
      m.bias_stride_h = -35;
    else
      m.bias_stride_q = -7;
    EXPECT_FAIL(fwd(&f, &m), ATTN_ERR_BAD_MASK, "must not be negative");
    untouched(&f);
  }

  /* Rows closer than len_k would overlap. */
  attn_mask_init(&m);
  m.bias = bias;
  m.bias_stride_q = 6;
  EXPECT_FAIL(fwd(&f, &m), ATTN_ERR_BAD_MASK, "bias_stride_q 6");
  untouched(&f);

  /* Strides without a bias are a mistake, not silently ignored. */
  attn_mask_init(&m);
  m.bias_stride_q = 7;
  EXPECT_FAIL(fwd(&f, &m), ATTN_ERR_BAD_MASK, "bias is NULL");
  untouched(&f);
  fixture_free(&f);
}

static void test_bad_option(void **state) {
  (void)state;
  fixture f;
  fixture_new(&f, 0, 0);
  f.opts.weights_mode = 2;
  EXPECT_FAIL(fwd(&f, NULL), ATTN_ERR_BAD_OPTION, "weights_mode 2");
  untouched(&f);
  size_t bytes = 3;
  EXPECT_FAIL(attn_forward_scratch_size(f.layer, 1, 1, 1, &f.opts, &bytes),
              ATTN_ERR_BAD_OPTION, "weights_mode 2");
  assert_int_equal(bytes, 3);
  f.opts.weights_mode = -1;
  EXPECT_FAIL(fwd(&f, NULL), ATTN_ERR_BAD_OPTION, "weights_mode -1");
  untouched(&f);
  f.opts.weights_mode = ATTN_WEIGHTS_PER_HEAD;
  f.opts.num_threads = -1;
  EXPECT_FAIL(fwd(&f, NULL), ATTN_ERR_BAD_OPTION, "num_threads -1");
  untouched(&f);

  const struct {
    int32_t threads;
    double scale;
    const char *needle;
  } cfgs[] = {{-2, 0, "num_threads -2"},  {0, -1.0, "scale -1"},
              {0, NAN, "scale nan"},      {0, INFINITY, "scale inf"},
              {0, 1e300, "scale 1e+300"}, {0, 1e-50, "scale 1e-50"}};
  for (size_t i = 0; i < sizeof cfgs / sizeof *cfgs; i++) {
    attn_config cfg;
    attn_config_init(&cfg);
    cfg.embed_dim = 8;
    cfg.num_threads = cfgs[i].threads;
    cfg.scale = cfgs[i].scale;
    attn_layer *l = NULL;
    EXPECT_FAIL(attn_layer_create(&cfg, &l), ATTN_ERR_BAD_OPTION,
                cfgs[i].needle);
    assert_null(l);
  }
  fixture_free(&f);
}

/* Inputs of several MiB are scanned in blocks on the call's threads: a
 * non-finite value anywhere (first, inner or last block, a block's edge)
 * is still found, and nothing is written. */
static void test_not_finite_large(void **state) {
  (void)state;
  attn_config cfg;
  attn_config_init(&cfg);
  cfg.embed_dim = 16;
  cfg.num_heads = 4;
  cfg.num_threads = 2;
  attn_layer *l = NULL;
  assert_int_equal(attn_layer_create(&cfg, &l), ATTN_OK);
  assert_int_equal(attn_layer_init_weights(l, 1), ATTN_OK);
  const int64_t Lq = 4, Lk = 100003, nk = Lk * 16; /* 6.1 MiB, ragged */
  ref_rng r;
  ref_rng_seed(&r, 9);
  float *q = ref_random(&r, Lq * 16, -1, 1);
  float *k = ref_random(&r, nk, -1, 1);
  size_t out_bytes = (size_t)(Lq * 16) * sizeof(float);
  float *out = ref_xmalloc(out_bytes);
  memset(out, SENTINEL, out_bytes);
  /* 65536 floats: the scan's block (FINITE_BLOCK, src/layer/call.c). */
  const int64_t at[] = {0, 65535, 65536, nk / 2, nk - 65536, nk - 1};
  for (size_t i = 0; i < sizeof at / sizeof *at; i++) {
    float saved = k[at[i]];
    k[at[i]] = i % 2 ? INFINITY : NAN;
    EXPECT_FAIL(attn_forward(l, 1, Lq, Lk, q, k, k, NULL, NULL, out),
                ATTN_ERR_NOT_FINITE, "key contains NaN or infinity");
    assert_bytes(out, out_bytes, SENTINEL);
    k[at[i]] = saved;
  }
  assert_int_equal(attn_forward(l, 1, Lq, Lk, q, k, k, NULL, NULL, out),
                   ATTN_OK);
  for (int64_t i = 0; i < Lq * 16; i++)
    assert_true(isfinite(out[i]));
  free(q);
  free(k);
  free(out);
  attn_layer_destroy(l);
}

static void test_not_finite(void **state) {
  (void)state;
  fixture f;
  fixture_new(&f, 0, 0);
  int64_t nq = f.B * f.Lq * f.E, nk = f.B * f.Lk * f.kdim;
  /* In each input, at its last element (the whole tensor is checked). */
  float saved = f.q[nq - 1];
  f.q[nq - 1] = NAN;
  EXPECT_FAIL(fwd(&f, NULL), ATTN_ERR_NOT_FINITE, "query");
  untouched(&f);
  EXPECT_FAIL(attn_self_forward(f.layer, f.B, f.Lq, f.q, NULL, &f.opts, f.out),
              ATTN_ERR_NOT_FINITE, "query");
  untouched(&f);
  f.q[nq - 1] = saved;
  saved = f.k[nk - 1];
  f.k[nk - 1] = INFINITY;
  EXPECT_FAIL(fwd(&f, NULL), ATTN_ERR_NOT_FINITE, "key");
  untouched(&f);
  /* key == value: still checked. */
  EXPECT_FAIL(attn_forward(f.layer, f.B, f.Lq, f.Lk, f.q, f.k, f.k, NULL,
                           &f.opts, f.out),
              ATTN_ERR_NOT_FINITE, "key");
  untouched(&f);
  f.k[nk - 1] = saved;
  f.v[0] = -INFINITY;
  EXPECT_FAIL(fwd(&f, NULL), ATTN_ERR_NOT_FINITE, "value");
  untouched(&f);
  f.v[0] = 0.5f;

  /* An input passed for two roles is checked over the larger extent: here
   * x is query (Lq rows) and key or value (Lk > Lq rows), and the NaN lies
   * beyond the query's part. */
  int64_t nx = f.B * f.Lk * f.E;
  float *x = ref_xmalloc((size_t)nx * sizeof(float));
  for (int64_t i = 0; i < nx; i++)
    x[i] = 0.25f;
  x[nx - 1] = NAN;
  EXPECT_FAIL(
      attn_forward(f.layer, f.B, f.Lq, f.Lk, x, x, f.v, NULL, &f.opts, f.out),
      ATTN_ERR_NOT_FINITE, "key");
  untouched(&f);
  EXPECT_FAIL(
      attn_forward(f.layer, f.B, f.Lq, f.Lk, x, f.k, x, NULL, &f.opts, f.out),
      ATTN_ERR_NOT_FINITE, "value");
  untouched(&f);
  EXPECT_FAIL(
      attn_forward(f.layer, f.B, f.Lq, f.Lk, x, x, x, NULL, &f.opts, f.out),
      ATTN_ERR_NOT_FINITE, "key");
  untouched(&f);
  free(x);

  /* Weights: NaN, +inf and -inf are all refused. */
  int64_t n0 = 0;
  float *before = snapshot(f.layer, &n0);
  float w[768];
  for (int i = 0; i < 768; i++)
    w[i] = 0.01f;
  const float bad[3] = {NAN, INFINITY, -INFINITY};
  for (int i = 0; i < 3; i++) {
    w[100] = bad[i];
    EXPECT_FAIL(attn_layer_set_weight(f.layer, ATTN_W_IN_PROJ, w, 768),
                ATTN_ERR_NOT_FINITE, "NaN or infinity");
    EXPECT_FAIL(attn_layer_set_weight(f.layer, ATTN_B_OUT, w + 90, 16),
                ATTN_ERR_NOT_FINITE, "NaN or infinity");
    same_weights(f.layer, before, n0);
  }
  free(before);

  /* Mask bias: -inf is allowed, NaN and +inf are not. */
  float bias[5 * 7] = {0};
  attn_mask m;
  attn_mask_init(&m);
  m.bias = bias;
  m.bias_stride_q = 7;
  bias[4 * 7 + 6] = NAN;
  EXPECT_FAIL(fwd(&f, &m), ATTN_ERR_NOT_FINITE, "[0, 0, 4, 6] is NaN");
  untouched(&f);
  bias[4 * 7 + 6] = INFINITY;
  EXPECT_FAIL(fwd(&f, &m), ATTN_ERR_NOT_FINITE, "+inf");
  untouched(&f);
  bias[4 * 7 + 6] = -INFINITY;
  assert_int_equal(fwd(&f, &m), ATTN_OK);
  fixture_free(&f);
}

static void test_no_memory(void **state) {
  (void)state;
  /* embed_dim 2^28, one head, no bias: 2^58 floats (2^60 bytes) of
   * weights. The counts fit in int64 and size_t, so this is not an
   * overflow, but no machine can allocate it. */
  attn_config cfg;
  attn_config_init(&cfg);
  cfg.embed_dim = (int64_t)1 << 28;
  cfg.bias = 0;
  attn_layer *l = (attn_layer *)&cfg;
  EXPECT_FAIL(attn_layer_create(&cfg, &l), ATTN_ERR_NO_MEMORY,
              "cannot allocate");
  assert_ptr_equal(l, (attn_layer *)&cfg);
}

static void test_scratch_too_small(void **state) {
  (void)state;
  fixture f;
  fixture_new(&f, 0, 0);
  size_t need = 0;
  assert_int_equal(
      attn_forward_scratch_size(f.layer, f.B, f.Lq, f.Lk, &f.opts, &need),
      ATTN_OK);
  unsigned char *buf = ref_xmalloc(need);
  const size_t sizes[] = {0, 1, need / 2, need - 1};
  for (int i = 0; i < 4; i++) {
    memset(buf, 0x33, need);
    f.opts.scratch = buf;
    f.opts.scratch_size = sizes[i];
    char needle[64];
    snprintf(needle, sizeof needle, "scratch of %zu bytes", sizes[i]);
    EXPECT_FAIL(fwd(&f, NULL), ATTN_ERR_SCRATCH_TOO_SMALL, needle);
    untouched(&f);
    /* Nor is the scratch itself written. */
    assert_bytes(buf, need, 0x33);
  }
  f.opts.scratch_size = need;
  assert_int_equal(fwd(&f, NULL), ATTN_OK);
  free(buf);
  fixture_free(&f);
}

/* The first failing check decides the status: a NULL pointer wins over
 * every later problem, and the message belongs to the failing call. */
static void test_message_follows_call(void **state) {
  (void)state;
  fixture f;
  fixture_new(&f, 0, 0);
  EXPECT_FAIL(
      attn_forward(f.layer, 0, 5, 7, f.q, f.k, f.v, NULL, &f.opts, NULL),
      ATTN_ERR_NULL_POINTER, "out");
  EXPECT_FAIL(
      attn_forward(f.layer, 0, 5, 7, f.q, f.k, f.v, NULL, &f.opts, f.out),
      ATTN_ERR_BAD_SIZE, "batch 0");
  assert_null(strstr(attn_last_error(), "NULL"));
  untouched(&f);
  fixture_free(&f);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_null_pointer),
      cmocka_unit_test(test_struct_size),
      cmocka_unit_test(test_bad_size),
      cmocka_unit_test(test_overflow),
      cmocka_unit_test(test_weight_size),
      cmocka_unit_test(test_weight_layout),
      cmocka_unit_test(test_weights_not_set),
      cmocka_unit_test(test_bad_mask),
      cmocka_unit_test(test_bad_option),
      cmocka_unit_test(test_not_finite),
      cmocka_unit_test(test_not_finite_large),
      cmocka_unit_test(test_no_memory),
      cmocka_unit_test(test_scratch_too_small),
      cmocka_unit_test(test_message_follows_call),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
