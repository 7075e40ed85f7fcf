/* SPDX-License-Identifier: MIT */
/* Masks against the reference: every kind alone (causal in both alignments
 * with Lq < Lk and Lq > Lk, key lengths including 0, key padding, additive
 * bias in every documented layout with -inf entries, sliding windows), all
 * of them combined, and rows left with no key in both empty-row modes.
 * Each case runs three times: without attention weights (the core then
 * walks the keys in blocks with the online softmax), with per-head weights
 * and with averaged weights (one block holding whole rows), and the weights
 * are compared too. */
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

/* A mask descriptor and the arrays it points to. */
typedef struct {
  attn_mask m;
  int64_t *lengths;
  uint8_t *pad;
  float *bias;
} mask_buf;

static void mask_new(mask_buf *mb) {
  memset(mb, 0, sizeof *mb);
  attn_mask_init(&mb->m);
}

static void mask_free(mask_buf *mb) {
  free(mb->lengths);
  free(mb->pad);
  free(mb->bias);
  memset(mb, 0, sizeof *mb);
}

/* Key lengths drawn in [0, Lk]; the first rows get 0 and Lk, the next 1,
 * when with_extremes is set. */
static void add_lengths(mask_buf *mb, ref_rng *r, int64_t B, int64_t Lk,
                        int with_extremes) {
  mb->lengths = ref_xmalloc((size_t)B * sizeof(int64_t));
  for (int64_t b = 0; b < B; b++)
    mb->lengths[b] = ref_rng_int(r, 0, Lk);
  if (with_extremes) {
    const int64_t fixed[3] = {0, Lk, 1};
    for (int64_t b = 0; b < B && b < 3; b++)
      mb->lengths[b] = fixed[b];
  }
  mb->m.key_lengths = mb->lengths;
}

/* Each key hidden with probability p, by any nonzero byte value. */
static void add_padding(mask_buf *mb, ref_rng *r, int64_t B, int64_t Lk,
                        double p) {
  mb->pad = ref_xmalloc((size_t)(B * Lk));
  for (int64_t i = 0; i < B * Lk; i++)
    mb->pad[i] =
        ref_rng_unit(r) < p ? (uint8_t)ref_rng_int(r, 1, 255) : (uint8_t)0;
  mb->m.key_padding = mb->pad;
}

typedef enum {
  BIAS_QK,     /* [Lq, Lk] */
  BIAS_BQK,    /* [B, Lq, Lk] */
  BIAS_BHQK,   /* [B, H, Lq, Lk] */
  BIAS_HQK,    /* [H, Lq, Lk], broadcast over batch */
  BIAS_K,      /* [Lk], broadcast over batch, head and query */
  BIAS_PADDED, /* [B, H, Lq, Lk + 3]: row stride larger than Lk */
  BIAS_KINDS
} bias_kind;

static const char *const bias_names[BIAS_KINDS] = {
    "[Lq,Lk]", "[B,Lq,Lk]", "[B,H,Lq,Lk]", "[H,Lq,Lk]", "[Lk]", "padded"};

/* Bias values uniform in [-2, 2], each -inf with probability p_inf. */
static void add_bias(mask_buf *mb, ref_rng *r, bias_kind kind, int64_t B,
                     int64_t H, int64_t Lq, int64_t Lk, double p_inf) {
  int64_t sb = 0, sh = 0, sq = 0;
  switch (kind) {
  case BIAS_QK:
    sq = Lk;
    break;
  case BIAS_BQK:
    sq = Lk;
    sb = Lq * Lk;
    break;
  case BIAS_BHQK:
    sq = Lk;
    sh = Lq * Lk;
    sb = H * Lq * Lk;
    break;
  case BIAS_HQK:
    sq = Lk;
    sh = Lq * Lk;
    break;
  case BIAS_K:
    break;
  case BIAS_PADDED:
    sq = Lk + 3;
    sh = Lq * sq;
    sb = H * sh;
    break;
  default:
    fail();
  }
  int64_t n = (B - 1) * sb + (H - 1) * sh + (Lq - 1) * sq + Lk;
  mb->bias = ref_xmalloc((size_t)n * sizeof(float));
  for (int64_t i = 0; i < n; i++)
    mb->bias[i] = ref_rng_unit(r) < p_inf
                      ? -INFINITY
                      : (float)(-2.0 + 4.0 * ref_rng_unit(r));
  mb->m.bias = mb->bias;
  mb->m.bias_stride_b = sb;
  mb->m.bias_stride_h = sh;
  mb->m.bias_stride_q = sq;
}

static void make_model(ref_model *m, int64_t E, int64_t H, int64_t kdim,
                       int64_t vdim, uint64_t seed) {
  attn_config cfg;
  attn_config_init(&cfg);
  cfg.embed_dim = E;
  cfg.num_heads = H;
  cfg.kdim = kdim;
  cfg.vdim = vdim;
  assert_int_equal(ref_model_create(m, &cfg, seed), ATTN_OK);
}

/* Runs the mask on the model (self-attention through attn_self_forward when
 * self is set) without and with per-head weights, against the reference. */
static void check_mask(const ref_model *m, int64_t B, int64_t Lq, int64_t Lk,
                       const attn_mask *mask, int self, uint64_t seed,
                       const char *what) {
  const ref_layer *rl = &m->ref;
  int64_t E = rl->embed_dim, H = rl->num_heads;
  int64_t kdim = rl->kdim, vdim = rl->vdim;
  char msg[256];
  snprintf(msg, sizeof msg, "%s (B=%lld Lq=%lld Lk=%lld %s)", what,
           (long long)B, (long long)Lq, (long long)Lk, self ? "self" : "cross");
  ref_rng r;
  ref_rng_seed(&r, seed);
  int64_t nq = B * Lq * E, nw = B * H * Lq * Lk;
  float *q = ref_random(&r, nq, -1, 1);
  float *k = self ? q : ref_random(&r, B * Lk * kdim, -1, 1);
  float *v = self ? q : ref_random(&r, B * Lk * vdim, -1, 1);
  float *out = ref_xmalloc((size_t)nq * sizeof(float));
  float *out_w = ref_xmalloc((size_t)nq * sizeof(float));
  float *w = ref_xmalloc((size_t)nw * sizeof(float));
  double *want = ref_xmalloc((size_t)nq * sizeof(double));
  double *want_w = ref_xmalloc((size_t)nw * sizeof(double));

  attn_options opts;
  attn_options_init(&opts);
  opts.attn_weights = w;
  opts.weights_mode = ATTN_WEIGHTS_PER_HEAD;
  if (self) {
    assert_int_equal(attn_self_forward(m->layer, B, Lq, q, mask, NULL, out),
                     ATTN_OK);
    assert_int_equal(attn_self_forward(m->layer, B, Lq, q, mask, &opts, out_w),
                     ATTN_OK);
  } else {
    assert_int_equal(
        attn_forward(m->layer, B, Lq, Lk, q, k, v, mask, NULL, out), ATTN_OK);
    assert_int_equal(
        attn_forward(m->layer, B, Lq, Lk, q, k, v, mask, &opts, out_w),
        ATTN_OK);
  }
  ref_forward(rl, B, Lq, Lk, q, k, v, mask, want, want_w);
  assert_true(ref_close(msg, out, want, nq, REF_RTOL, REF_ATOL));
  assert_true(ref_close(msg, out_w, want, nq, REF_RTOL, REF_ATOL));
  assert_true(ref_close(msg, w, want_w, nw, REF_RTOL, REF_ATOL));

  /* Averaged weights: a row empty in some heads only averages zeros (or
   * NaN) in for those heads. */
  int64_t na = B * Lq * Lk;
  double *want_avg = ref_xmalloc((size_t)na * sizeof(double));
  ref_average_heads(B, H, Lq, Lk, want_w, want_avg);
  opts.weights_mode = ATTN_WEIGHTS_AVERAGE;
  if (self)
    assert_int_equal(attn_self_forward(m->layer, B, Lq, q, mask, &opts, out_w),
                     ATTN_OK);
  else
    assert_int_equal(
        attn_forward(m->layer, B, Lq, Lk, q, k, v, mask, &opts, out_w),
        ATTN_OK);
  assert_true(ref_close(msg, out_w, want, nq, REF_RTOL, REF_ATOL));
  assert_true(ref_close(msg, w, want_avg, na, REF_RTOL, REF_ATOL));
  free(want_avg);
  if (!self) {
    free(k);
    free(v);
  }
  free(q);
  free(out);
  free(out_w);
  free(w);
  free(want);
  free(want_w);
}

/* (Lq, Lk) pairs around the core's block sizes, both Lq < Lk and Lq > Lk. */
static const int64_t pairs[][2] = {{37, 37}, {20, 300}, {300, 20}, {70, 261},
                                   {1, 5},   {5, 1},    {129, 64}, {1, 1}};
#define NPAIRS (sizeof pairs / sizeof *pairs)

static void test_causal(void **state) {
  (void)state;
  ref_model m;
  make_model(&m, 48, 4, 40, 24, 11);
  for (int mode = ATTN_CAUSAL_TOP_LEFT; mode <= ATTN_CAUSAL_BOTTOM_RIGHT;
       mode++)
    for (size_t p = 0; p < NPAIRS; p++) {
      mask_buf mb;
      mask_new(&mb);
      mb.m.causal = mode;
      /* Lq > Lk bottom-right leaves the first rows empty: also NaN mode. */
      mb.m.empty_rows = p % 2 ? ATTN_EMPTY_ROW_NAN : ATTN_EMPTY_ROW_ZERO;
      check_mask(&m, 2, pairs[p][0], pairs[p][1], &mb.m, 0, 100 + p,
                 mode == ATTN_CAUSAL_TOP_LEFT ? "causal top-left"
                                              : "causal bottom-right");
      mask_free(&mb);
    }
  ref_model_destroy(&m);
}

/* Self-attention (fused Q/K/V) under a causal mask; with Lq == Lk and no
 * key lengths both alignments give the same bits. */
static void test_causal_self(void **state) {
  (void)state;
  ref_model m;
  make_model(&m, 32, 4, 0, 0, 12);
  const int64_t lens[] = {1, 2, 63, 64, 65, 300};
  for (size_t t = 0; t < sizeof lens / sizeof *lens; t++) {
    int64_t B = 2, L = lens[t];
    mask_buf tl, br;
    mask_new(&tl);
    mask_new(&br);
    tl.m.causal = ATTN_CAUSAL_TOP_LEFT;
    br.m.causal = ATTN_CAUSAL_BOTTOM_RIGHT;
    check_mask(&m, B, L, L, &tl.m, 1, 200 + t, "causal self");
    ref_rng r;
    ref_rng_seed(&r, 300 + t);
    float *x = ref_random(&r, B * L * 32, -1, 1);
    size_t bytes = (size_t)(B * L * 32) * sizeof(float);
    float *o1 = ref_xmalloc(bytes), *o2 = ref_xmalloc(bytes);
    assert_int_equal(attn_self_forward(m.layer, B, L, x, &tl.m, NULL, o1),
                     ATTN_OK);
    assert_int_equal(attn_self_forward(m.layer, B, L, x, &br.m, NULL, o2),
                     ATTN_OK);
    /* The same visibility said another way: equal up to rounding. */
    assert_true(ref_close_f("top-left vs bottom-right", o2, o1, B * L * 32,
                            REF_RTOL, REF_ATOL));
    free(x);
    free(o1);
    free(o2);
    mask_free(&tl);
    mask_free(&br);
  }
  ref_model_destroy(&m);
}

static void test_key_lengths(void **state) {
  (void)state;
  ref_model m;
  make_model(&m, 48, 4, 40, 24, 13);
  ref_rng r;
  ref_rng_seed(&r, 14);
  for (size_t p = 0; p < NPAIRS; p++) {
    for (int mode = 0; mode < 2; mode++) {
      mask_buf mb;
      mask_new(&mb);
      add_lengths(&mb, &r, 4, pairs[p][1], 1);
      mb.m.empty_rows = mode;
      check_mask(&m, 4, pairs[p][0], pairs[p][1], &mb.m, 0, 400 + p,
                 "key lengths");
      mask_free(&mb);
    }
  }
  ref_model_destroy(&m);
}

static void test_key_padding(void **state) {
  (void)state;
  ref_model m;
  make_model(&m, 48, 4, 40, 24, 15);
  ref_rng r;
  ref_rng_seed(&r, 16);
  const double probs[] = {0.3, 0.9};
  for (size_t p = 0; p < NPAIRS; p++)
    for (int t = 0; t < 2; t++) {
      mask_buf mb;
      mask_new(&mb);
      add_padding(&mb, &r, 3, pairs[p][1], probs[t]);
      mb.m.empty_rows = t;
      check_mask(&m, 3, pairs[p][0], pairs[p][1], &mb.m, 0, 500 + p,
                 "key padding");
      mask_free(&mb);
    }
  ref_model_destroy(&m);
}

static void test_bias_layouts(void **state) {
  (void)state;
  ref_model m;
  make_model(&m, 48, 4, 40, 24, 17);
  ref_rng r;
  ref_rng_seed(&r, 18);
  const int64_t shapes[][2] = {{37, 37}, {20, 300}, {300, 20}, {3, 1}};
  for (int kind = 0; kind < BIAS_KINDS; kind++)
    for (size_t s = 0; s < sizeof shapes / sizeof *shapes; s++)
      for (int t = 0; t < 2; t++) {
        int64_t B = 3, Lq = shapes[s][0], Lk = shapes[s][1];
        mask_buf mb;
        mask_new(&mb);
        /* t = 1: mostly -inf, so that some rows lose every key. */
        add_bias(&mb, &r, (bias_kind)kind, B, 4, Lq, Lk, t ? 0.8 : 0.15);
        mb.m.empty_rows = t;
        char what[64];
        snprintf(what, sizeof what, "bias %s", bias_names[kind]);
        check_mask(&m, B, Lq, Lk, &mb.m, 0, 600 + s, what);
        mask_free(&mb);
      }
  ref_model_destroy(&m);
}

/* Bias on the self-attention path, with and without -inf entries. */
static void test_bias_self(void **state) {
  (void)state;
  ref_model m;
  make_model(&m, 32, 4, 0, 0, 19);
  ref_rng r;
  ref_rng_seed(&r, 20);
  for (int kind = 0; kind < BIAS_KINDS; kind++) {
    mask_buf mb;
    mask_new(&mb);
    add_bias(&mb, &r, (bias_kind)kind, 2, 4, 67, 67, 0.1);
    check_mask(&m, 2, 67, 67, &mb.m, 1, 700 + kind, bias_names[kind]);
    mask_free(&mb);
  }
  ref_model_destroy(&m);
}

static void test_window(void **state) {
  (void)state;
  ref_model m;
  make_model(&m, 48, 4, 40, 24, 21);
  ref_rng r;
  ref_rng_seed(&r, 22);
  const int64_t windows[] = {1, 2, 7, 64, 299, 1000};
  for (size_t w = 0; w < sizeof windows / sizeof *windows; w++)
    for (int causal = 0; causal <= ATTN_CAUSAL_BOTTOM_RIGHT; causal++)
      for (size_t p = 0; p < NPAIRS; p += 2) {
        mask_buf mb;
        mask_new(&mb);
        mb.m.window = windows[w];
        mb.m.causal = causal;
        /* Key lengths move the bottom-right anchor. */
        if (causal == ATTN_CAUSAL_BOTTOM_RIGHT && w % 2)
          add_lengths(&mb, &r, 2, pairs[p][1], 0);
        char what[64];
        snprintf(what, sizeof what, "window %lld causal %d",
                 (long long)windows[w], causal);
        check_mask(&m, 2, pairs[p][0], pairs[p][1], &mb.m, 0, 800 + p, what);
        mask_free(&mb);
      }
  ref_model_destroy(&m);
}

/* Every kind at once, with random parameters, on random shapes, both
 * paths. */
static void test_combined(void **state) {
  (void)state;
  ref_model cross, self;
  make_model(&cross, 48, 4, 40, 24, 23);
  make_model(&self, 32, 4, 0, 0, 24);
  ref_rng r;
  ref_rng_seed(&r, 25);
  for (int it = 0; it < 24; it++) {
    int is_self = it % 3 == 0;
    int64_t B = ref_rng_int(&r, 1, 4);
    int64_t Lq = ref_rng_int(&r, 1, 300), Lk = ref_rng_int(&r, 1, 300);
    if (it % 4 == 1)
      Lq = ref_rng_int(&r, 1, 8); /* decoding-like: few queries */
    if (is_self)
      Lk = Lq;
    while (B * Lq * Lk > 60000 && B > 1)
      B--;
    mask_buf mb;
    mask_new(&mb);
    mb.m.causal = (int32_t)ref_rng_int(&r, 0, 2);
    mb.m.empty_rows = (int32_t)ref_rng_int(&r, 0, 1);
    mb.m.window = ref_rng_int(&r, 0, 1) ? ref_rng_int(&r, 1, Lk) : 0;
    if (ref_rng_int(&r, 0, 1))
      add_lengths(&mb, &r, B, Lk, it % 5 == 0);
    if (ref_rng_int(&r, 0, 1))
      add_padding(&mb, &r, B, Lk, 0.2);
    if (ref_rng_int(&r, 0, 3))
      add_bias(&mb, &r, (bias_kind)ref_rng_int(&r, 0, BIAS_KINDS - 1), B, 4, Lq,
               Lk, 0.1);
    char what[128];
    snprintf(what, sizeof what,
             "combined #%d causal %d window %lld lengths %d pad %d bias %d", it,
             mb.m.causal, (long long)mb.m.window, mb.lengths != NULL,
             mb.pad != NULL, mb.bias != NULL);
    check_mask(is_self ? &self : &cross, B, Lq, Lk, &mb.m, is_self,
               900 + (uint64_t)it, what);
    mask_free(&mb);
  }
  ref_model_destroy(&cross);
  ref_model_destroy(&self);
}

/* Rows with no key, checked directly (not through the reference): with
 * B = 3, Lq = 6, Lk = 5, key lengths {0, 5, 3} and a bottom-right causal
 * mask, batch row 0 has no key at all, row 1 loses query 0 (its position is
 * -1) and row 2 loses queries 0..2. */
static void empty_rows(int mode) {
  const int64_t B = 3, Lq = 6, Lk = 5, E = 8, H = 2;
  static const int empty[3][6] = {
      {1, 1, 1, 1, 1, 1}, {1, 0, 0, 0, 0, 0}, {1, 1, 1, 0, 0, 0}};
  ref_model m;
  make_model(&m, E, H, 6, 7, 31);
  ref_rng r;
  ref_rng_seed(&r, 32);
  float *q = ref_random(&r, B * Lq * E, -1, 1);
  float *k = ref_random(&r, B * Lk * 6, -1, 1);
  float *v = ref_random(&r, B * Lk * 7, -1, 1);
  const int64_t lengths[3] = {0, 5, 3};
  attn_mask mask;
  attn_mask_init(&mask);
  mask.key_lengths = lengths;
  mask.causal = ATTN_CAUSAL_BOTTOM_RIGHT;
  mask.empty_rows = mode;
  float out[3 * 6 * 8], w[3 * 2 * 6 * 5], avg[3 * 6 * 5];
  attn_options opts;
  attn_options_init(&opts);
  opts.attn_weights = w;
  assert_int_equal(attn_forward(m.layer, B, Lq, Lk, q, k, v, &mask, &opts, out),
                   ATTN_OK);
  for (int64_t b = 0; b < B; b++)
    for (int64_t i = 0; i < Lq; i++) {
      const float *row = out + (b * Lq + i) * E;
      for (int64_t e = 0; e < E; e++) {
        if (!empty[b][i])
          assert_true(isfinite(row[e]));
        else if (mode == ATTN_EMPTY_ROW_NAN)
          assert_true(isnan(row[e]));
        else /* zeros before out_proj: the output is out_proj's bias */
          assert_true(row[e] == m.ref.bo[e]);
      }
      for (int64_t h = 0; h < H; h++) {
        const float *wr = w + ((b * H + h) * Lq + i) * Lk;
        double sum = 0;
        for (int64_t j = 0; j < Lk; j++) {
          if (!empty[b][i])
            assert_true(wr[j] >= 0.0f && wr[j] <= 1.0f);
          else if (mode == ATTN_EMPTY_ROW_NAN)
            assert_true(isnan(wr[j]));
          else
            assert_true(wr[j] == 0.0f);
          sum += wr[j];
        }
        if (!empty[b][i])
          assert_true(fabs(sum - 1.0) < 1e-5);
      }
    }
  /* Averaged weights follow the same rule. */
  opts.attn_weights = avg;
  opts.weights_mode = ATTN_WEIGHTS_AVERAGE;
  assert_int_equal(attn_forward(m.layer, B, Lq, Lk, q, k, v, &mask, &opts, out),
                   ATTN_OK);
  for (int64_t b = 0; b < B; b++)
    for (int64_t i = 0; i < Lq; i++)
      for (int64_t j = 0; j < Lk; j++) {
        float x = avg[(b * Lq + i) * Lk + j];
        if (!empty[b][i])
          assert_true(x >= 0.0f && x <= 1.0f);
        else if (mode == ATTN_EMPTY_ROW_NAN)
          assert_true(isnan(x));
        else
          assert_true(x == 0.0f);
      }
  /* And the reference agrees on everything. */
  check_mask(&m, B, Lq, Lk, &mask, 0, 33, "empty rows");
  free(q);
  free(k);
  free(v);
  ref_model_destroy(&m);
}

static void test_empty_rows_zero(void **state) {
  (void)state;
  empty_rows(ATTN_EMPTY_ROW_ZERO);
}

static void test_empty_rows_nan(void **state) {
  (void)state;
  empty_rows(ATTN_EMPTY_ROW_NAN);
}

/* A row empty in one head only (a per-head bias of -inf): in NaN mode the
 * whole output row is NaN, in zero mode it is finite and follows the
 * reference, and every other row stays finite. */
static void test_empty_row_one_head(void **state) {
  (void)state;
  const int64_t B = 2, Lq = 4, Lk = 9, E = 12, H = 3;
  ref_model m;
  make_model(&m, E, H, 0, 0, 41);
  float *bias = calloc((size_t)(B * H * Lq * Lk), sizeof(float));
  assert_non_null(bias);
  /* Batch 1, head 2, query 3: every key hidden. */
  for (int64_t j = 0; j < Lk; j++)
    bias[((1 * H + 2) * Lq + 3) * Lk + j] = -INFINITY;
  ref_rng r;
  ref_rng_seed(&r, 42);
  float *q = ref_random(&r, B * Lq * E, -1, 1);
  float *kv = ref_random(&r, B * Lk * E, -1, 1);
  float out[2 * 4 * 12];
  for (int mode = 0; mode < 2; mode++) {
    attn_mask mask;
    attn_mask_init(&mask);
    mask.bias = bias;
    mask.bias_stride_b = H * Lq * Lk;
    mask.bias_stride_h = Lq * Lk;
    mask.bias_stride_q = Lk;
    mask.empty_rows = mode;
    assert_int_equal(
        attn_forward(m.layer, B, Lq, Lk, q, kv, kv, &mask, NULL, out), ATTN_OK);
    for (int64_t row = 0; row < B * Lq; row++)
      for (int64_t e = 0; e < E; e++) {
        if (row == 1 * Lq + 3 && mode == ATTN_EMPTY_ROW_NAN)
          assert_true(isnan(out[row * E + e]));
        else
          assert_true(isfinite(out[row * E + e]));
      }
    check_mask(&m, B, Lq, Lk, &mask, 0, 43, "one head empty");
  }
  free(bias);
  free(q);
  free(kv);
  ref_model_destroy(&m);
}

/* The reference's own mask rules on a small case, worked out by hand from
 * attn.h, so that a misreading of the header shows up here first:
 * Lq = 3, Lk = 5, key length 4, bottom-right causal, window 2. Query i sits
 * at p = i + 4 - 3 = i + 1 and sees keys j with j <= p, p - j < 2, j < 4. */
static void test_reference_mask_rules(void **state) {
  (void)state;
  const int64_t len[1] = {4};
  attn_mask mask;
  attn_mask_init(&mask);
  mask.key_lengths = len;
  mask.causal = ATTN_CAUSAL_BOTTOM_RIGHT;
  mask.window = 2;
  unsigned char vis[15];
  ref_mask_matrix(&mask, 3, 5, 0, 0, vis, NULL);
  static const unsigned char want[15] = {1, 1, 0, 0, 0, /* p = 1 */
                                         0, 1, 1, 0, 0, /* p = 2 */
                                         0, 0, 1, 1, 0 /* p = 3 */};
  assert_memory_equal(vis, want, sizeof want);
  /* Top-left ignores the key length for the anchor: p = i. */
  mask.causal = ATTN_CAUSAL_TOP_LEFT;
  ref_mask_matrix(&mask, 3, 5, 0, 0, vis, NULL);
  static const unsigned char want_tl[15] = {1, 0, 0, 0, 0, /* p = 0 */
                                            1, 1, 0, 0, 0, /* p = 1 */
                                            0, 1, 1, 0, 0 /* p = 2 */};
  assert_memory_equal(vis, want_tl, sizeof want_tl);
  /* A window without causal mode limits only how far back a query looks. */
  mask.causal = ATTN_CAUSAL_NONE;
  ref_mask_matrix(&mask, 3, 5, 0, 0, vis, NULL);
  static const unsigned char want_w[15] = {1, 1, 1, 1, 0, /* p = 0 */
                                           1, 1, 1, 1, 0, /* p = 1 */
                                           0, 1, 1, 1, 0 /* p = 2 */};
  assert_memory_equal(vis, want_w, sizeof want_w);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_reference_mask_rules),
      cmocka_unit_test(test_empty_rows_zero),
      cmocka_unit_test(test_empty_rows_nan),
      cmocka_unit_test(test_empty_row_one_head),
      cmocka_unit_test(test_causal),
      cmocka_unit_test(test_causal_self),
      cmocka_unit_test(test_key_lengths),
      cmocka_unit_test(test_key_padding),
      cmocka_unit_test(test_bias_layouts),
      cmocka_unit_test(test_bias_self),
      cmocka_unit_test(test_window),
      cmocka_unit_test(test_combined),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
