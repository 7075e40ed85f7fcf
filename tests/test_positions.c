/* SPDX-License-Identifier: MIT */
/* The attention of today's decoder layers: rotary embeddings, ALiBi,
 * soft-capping, sinks, QK-norm and per-projection biases, in the forward
 * pass and in token-by-token decoding (windows, truncation, beam reorder,
 * grouped-query heads), against the double reference of ref_pos.c; and
 * every bad input of those features. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "ref.h"
#include "ref_pos.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* A layer's features, as the tests vary them. */
typedef struct {
  int64_t E, H, Hkv;
  int32_t bias_parts; /* 0 = none */
  int32_t qk_norm, unit_offset;
  int rope, pairing, table;
  int64_t rot;
  double theta, linear_factor, attention_factor;
  int32_t alibi;
  int custom_slopes;
  double softcap;
  int sinks;
} spec;

typedef struct {
  attn_layer *layer;
  ref_dec ref;
  float *w[12];
  float inv_freq[64], slopes[64];
} model;

static float *rand_weight(ref_rng *r, int64_t n, double g) {
  return ref_random(r, n, -g, g);
}

static void model_make(model *m, const spec *s, uint64_t seed) {
  memset(m, 0, sizeof *m);
  int64_t E = s->E, H = s->H, Hkv = s->Hkv ? s->Hkv : H, hd = E / H;
  int64_t KV = Hkv * hd, rot = s->rot ? s->rot : hd;
  ref_rng r;
  ref_rng_seed(&r, seed);
  attn_config cfg;
  attn_config_init(&cfg);
  cfg.embed_dim = E;
  cfg.num_heads = H;
  cfg.num_kv_heads = s->Hkv;
  cfg.bias = 0;
  cfg.bias_parts = s->bias_parts;
  cfg.qk_norm = s->qk_norm;
  cfg.qk_norm_eps = 1e-5;
  cfg.qk_norm_unit_offset = s->unit_offset;
  cfg.alibi = s->alibi;
  cfg.softcap = s->softcap;
  cfg.sinks = s->sinks;
  for (int64_t h = 0; h < H; h++)
    m->slopes[h] = (float)(0.05 + 0.3 * ref_rng_unit(&r));
  cfg.alibi_slopes = s->custom_slopes ? m->slopes : NULL;
  attn_rope_config rc;
  attn_rope_config_init(&rc);
  rc.pairing = s->pairing;
  rc.rotary_dim = s->rot;
  if (s->theta > 0)
    rc.theta = s->theta;
  if (s->linear_factor > 0)
    rc.linear_factor = s->linear_factor;
  if (s->attention_factor > 0)
    rc.attention_factor = s->attention_factor;
  for (int64_t k = 0; k < rot / 2; k++)
    m->inv_freq[k] = (float)(0.9 * pow(500.0, -2.0 * (double)k / (double)rot));
  rc.inv_freq = s->table ? m->inv_freq : NULL;
  cfg.rope = s->rope ? &rc : NULL;
  assert_int_equal(attn_layer_create(&cfg, &m->layer), ATTN_OK);

  double g = sqrt(3.0 / (double)E);
  const struct {
    attn_weight_id id;
    int64_t n;
    double lo, hi;
    int on;
  } parts[] = {
      {ATTN_W_Q, E * E, -g, g, 1},
      {ATTN_W_K, KV * E, -g, g, 1},
      {ATTN_W_V, KV * E, -g, g, 1},
      {ATTN_W_OUT, E * E, -g, g, 1},
      {ATTN_B_Q, E, -0.5, 0.5, s->bias_parts & ATTN_BIAS_Q},
      {ATTN_B_K, KV, -0.5, 0.5, s->bias_parts & ATTN_BIAS_K},
      {ATTN_B_V, KV, -0.5, 0.5, s->bias_parts & ATTN_BIAS_V},
      {ATTN_B_OUT, E, -0.5, 0.5, s->bias_parts & ATTN_BIAS_O},
      {ATTN_W_Q_NORM, s->qk_norm == ATTN_QK_NORM_ALL ? E : hd, 0.5, 1.5,
       s->qk_norm},
      {ATTN_W_K_NORM, s->qk_norm == ATTN_QK_NORM_ALL ? KV : hd, 0.5, 1.5,
       s->qk_norm},
      {ATTN_W_SINKS, H, -0.5, 2.0, s->sinks},
  };
  for (int i = 0; i < 11; i++) {
    if (!parts[i].on)
      continue;
    m->w[i] = ref_random(&r, parts[i].n, parts[i].lo, parts[i].hi);
    int64_t count = -1;
    assert_int_equal(attn_layer_weight_count(m->layer, parts[i].id, &count),
                     ATTN_OK);
    assert_int_equal(count, parts[i].n);
    assert_int_equal(
        attn_layer_set_weight(m->layer, parts[i].id, m->w[i], parts[i].n),
        ATTN_OK);
  }
  (void)rand_weight;
  m->ref =
      (ref_dec){.E = E,
                .H = H,
                .Hkv = s->Hkv,
                .wq = m->w[0],
                .wk = m->w[1],
                .wv = m->w[2],
                .wo = m->w[3],
                .bq = m->w[4],
                .bk = m->w[5],
                .bv = m->w[6],
                .bo = m->w[7],
                .qk_norm = s->qk_norm,
                .q_norm = m->w[8],
                .k_norm = m->w[9],
                .eps = 1e-5,
                .unit_offset = s->unit_offset,
                .rope = s->rope,
                .pairing = s->pairing,
                .rot = s->rot,
                .theta = s->theta > 0 ? s->theta : 10000.0,
                .linear_factor = s->linear_factor > 0 ? s->linear_factor : 1.0,
                .inv_freq = s->table ? m->inv_freq : NULL,
                .attention_factor = s->attention_factor,
                .alibi = s->alibi,
                .slopes = s->custom_slopes ? m->slopes : NULL,
                .softcap = s->softcap,
                .sinks = m->w[10]};
}

static void model_free(model *m) {
  attn_layer_destroy(m->layer);
  for (int i = 0; i < 12; i++)
    free(m->w[i]);
}

/* The features the tests go through. */
static const spec specs[] = {
    /* Llama: halves, GQA, no bias. */
    {.E = 64, .H = 4, .Hkv = 2, .rope = 1},
    /* GPT-J pairs, partial rotation, linear scaling. */
    {.E = 48,
     .H = 3,
     .rope = 1,
     .pairing = ATTN_ROPE_ADJACENT,
     .rot = 8,
     .linear_factor = 4.0,
     .theta = 500.0},
    /* Qwen2: q/k/v biases, GQA; caller's table with an attention factor. */
    {.E = 64,
     .H = 4,
     .Hkv = 1,
     .rope = 1,
     .table = 1,
     .attention_factor = 1.2,
     .bias_parts = ATTN_BIAS_Q | ATTN_BIAS_K | ATTN_BIAS_V},
    /* Qwen3 / Gemma 3: per-head QK-norm (with the unit offset), partial
     * rotation. */
    {.E = 64,
     .H = 4,
     .Hkv = 2,
     .rope = 1,
     .rot = 12,
     .qk_norm = ATTN_QK_NORM_HEAD},
    {.E = 32,
     .H = 2,
     .rope = 1,
     .qk_norm = ATTN_QK_NORM_HEAD,
     .unit_offset = 1,
     .bias_parts = ATTN_BIAS_O},
    /* OLMo 2: norm over all heads. */
    {.E = 48, .H = 6, .Hkv = 3, .rope = 1, .qk_norm = ATTN_QK_NORM_ALL},
    /* BLOOM: ALiBi, 6 heads (not a power of two), all biases. */
    {.E = 48, .H = 6, .alibi = ATTN_ALIBI_CAUSAL, .bias_parts = ATTN_BIAS_ALL},
    {.E = 32,
     .H = 4,
     .Hkv = 2,
     .alibi = ATTN_ALIBI_SYMMETRIC,
     .custom_slopes = 1},
    /* Gemma 2: soft-capping with rotation and GQA. */
    {.E = 64, .H = 4, .Hkv = 2, .rope = 1, .softcap = 2.0},
    /* gpt-oss: sinks, q/k/v/o biases, rotation. */
    {.E = 64,
     .H = 4,
     .Hkv = 2,
     .rope = 1,
     .sinks = 1,
     .bias_parts = ATTN_BIAS_ALL},
    /* Everything at once. */
    {.E = 64,
     .H = 8,
     .Hkv = 4,
     .rope = 1,
     .softcap = 3.0,
     .sinks = 1,
     .alibi = ATTN_ALIBI_CAUSAL,
     .qk_norm = ATTN_QK_NORM_HEAD,
     .bias_parts = ATTN_BIAS_K | ATTN_BIAS_O},
};
#define N_SPECS (sizeof specs / sizeof specs[0])

/* Forward of a batch with per-row positions pos [B * L], causal (or not),
 * optional window, padding and attention weights, against the reference. */
static void check_forward_case(const model *m, int64_t B, int64_t L,
                               const int64_t *pos, const attn_positions *ap,
                               int causal, int64_t window, int with_pad,
                               int with_weights, uint64_t seed) {
  int64_t E = m->ref.E, H = m->ref.H;
  ref_rng r;
  ref_rng_seed(&r, seed);
  float *x = ref_random(&r, B * L * E, -1, 1);
  uint8_t *pad = NULL;
  if (with_pad) {
    pad = ref_xmalloc((size_t)(B * L));
    for (int64_t i = 0; i < B * L; i++)
      pad[i] = ref_rng_unit(&r) < 0.15;
  }
  float *out = ref_xmalloc((size_t)(B * L * E) * sizeof(float));
  float *w = with_weights ? ref_xmalloc((size_t)(B * H * L * L) * 4) : NULL;
  double *want = ref_xmalloc((size_t)(B * L * E) * sizeof(double));
  double *wwant =
      with_weights ? ref_xmalloc((size_t)(B * H * L * L) * 8) : NULL;
  attn_mask mask;
  attn_mask_init(&mask);
  mask.causal = causal ? ATTN_CAUSAL_TOP_LEFT : ATTN_CAUSAL_NONE;
  mask.window = window;
  mask.key_padding = pad;
  attn_options o;
  attn_options_init(&o);
  o.positions = ap;
  o.attn_weights = w;
  assert_int_equal(attn_self_forward(m->layer, B, L, x, &mask, &o, out),
                   ATTN_OK);
  ref_dec_forward(&m->ref, B, L, x, pos, causal, window, pad, want, wwant);
  assert_true(ref_close("forward", out, want, B * L * E, REF_RTOL, REF_ATOL));
  if (w)
    assert_true(
        ref_close("weights", w, wwant, B * H * L * L, REF_RTOL, REF_ATOL));
  free(x);
  free(pad);
  free(out);
  free(w);
  free(want);
  free(wwant);
}

static void test_forward_features(void **state) {
  (void)state;
  for (size_t i = 0; i < N_SPECS; i++) {
    model m;
    model_make(&m, &specs[i], 100 + i);
    int64_t B = 2, L = 19;
    int64_t pos[2 * 300];
    for (int64_t b = 0; b < B; b++)
      for (int64_t j = 0; j < L; j++)
        pos[b * L + j] = j;
    /* Default positions; causal, then bidirectional with padding and
     * weights. */
    check_forward_case(&m, B, L, pos, NULL, 1, 0, 0, 0, 7 * i + 1);
    check_forward_case(&m, B, L, pos, NULL, 0, 0, 1, 1, 7 * i + 2);
    /* Per-row start offsets, with a window. */
    int64_t start[2] = {5, 1000};
    attn_positions ap;
    attn_positions_init(&ap);
    ap.start = start;
    for (int64_t b = 0; b < B; b++)
      for (int64_t j = 0; j < L; j++)
        pos[b * L + j] = start[b] + j;
    check_forward_case(&m, B, L, pos, &ap, 1, 6, 0, 1, 7 * i + 3);
    /* Explicit positions (left padding in row 1: its first 3 tokens are
     * hidden padding at position 0). */
    int64_t expl[2 * 19];
    for (int64_t j = 0; j < L; j++) {
      expl[j] = 3 * j + 2;
      expl[L + j] = j < 3 ? 0 : j - 3;
    }
    attn_positions_init(&ap);
    ap.q_positions = expl;
    check_forward_case(&m, B, L, expl, &ap, 1, 0, 1, 0, 7 * i + 4);
    /* Long rows: keys in blocks, the online softmax across them. */
    int64_t LL = 300;
    for (int64_t b = 0; b < 2; b++)
      for (int64_t j = 0; j < LL; j++)
        pos[b * LL + j] = j;
    check_forward_case(&m, 1, LL, pos, NULL, 1, 0, 0, 0, 7 * i + 5);
    check_forward_case(&m, 1, LL, pos, NULL, 0, 100, 1, 0, 7 * i + 6);
    model_free(&m);
  }
}

/* The separate projections (query apart from key and value), and the
 * projections without the BLAS held (ATTN_BLAS_LEAVE: the norm and the
 * rotation run as a pass of their own), against the reference. */
static void test_forward_paths(void **state) {
  (void)state;
  attn_runtime_config rc;
  attn_runtime_config_init(&rc);
  rc.blas_policy = ATTN_BLAS_LEAVE;
  attn_runtime *leave = NULL;
  assert_int_equal(attn_runtime_create(&rc, &leave), ATTN_OK);
  for (size_t i = 0; i < N_SPECS; i++) {
    model m;
    model_make(&m, &specs[i], 900 + i);
    int64_t B = 2, L = 300, E = specs[i].E;
    ref_rng r;
    ref_rng_seed(&r, 31 + i);
    float *x = ref_random(&r, B * L * E, -1, 1);
    float *q = ref_xmalloc((size_t)(B * L * E) * sizeof(float));
    memcpy(q, x, (size_t)(B * L * E) * sizeof(float));
    float *out = ref_xmalloc((size_t)(B * L * E) * sizeof(float));
    double *want = ref_xmalloc((size_t)(B * L * E) * sizeof(double));
    int64_t *pos = ref_xmalloc((size_t)(B * L) * sizeof(int64_t));
    for (int64_t j = 0; j < B * L; j++)
      pos[j] = j % L;
    attn_mask mask;
    attn_mask_init(&mask);
    mask.causal = ATTN_CAUSAL_TOP_LEFT;
    ref_dec_forward(&m.ref, B, L, x, pos, 1, 0, NULL, want, NULL);
    assert_int_equal(attn_forward(m.layer, B, L, L, q, x, x, &mask, NULL, out),
                     ATTN_OK);
    assert_true(ref_close("separate projections", out, want, B * L * E,
                          REF_RTOL, REF_ATOL));
    attn_options o;
    attn_options_init(&o);
    o.runtime = leave;
    assert_int_equal(attn_self_forward(m.layer, B, L, x, &mask, &o, out),
                     ATTN_OK);
    assert_true(
        ref_close("BLAS left alone", out, want, B * L * E, REF_RTOL, REF_ATOL));
    free(x);
    free(q);
    free(out);
    free(want);
    free(pos);
    model_free(&m);
  }
  attn_runtime_destroy(leave);
}

/* The standard ALiBi slopes, read back through attn_layer_get_config. */
static void test_alibi_slopes(void **state) {
  (void)state;
  const int64_t heads[] = {1, 2, 6, 8, 12, 16, 20};
  for (int i = 0; i < 7; i++) {
    int64_t H = heads[i];
    attn_config cfg;
    attn_config_init(&cfg);
    cfg.embed_dim = 4 * H;
    cfg.num_heads = H;
    cfg.alibi = ATTN_ALIBI_CAUSAL;
    attn_layer *l = NULL;
    assert_int_equal(attn_layer_create(&cfg, &l), ATTN_OK);
    attn_config back;
    attn_config_init(&back);
    assert_int_equal(attn_layer_get_config(l, &back), ATTN_OK);
    assert_int_equal(back.alibi, ATTN_ALIBI_CAUSAL);
    assert_non_null(back.alibi_slopes);
    double want[32];
    ref_alibi_slopes(H, want);
    for (int64_t h = 0; h < H; h++)
      assert_float_equal(back.alibi_slopes[h], want[h], 1e-7 * want[h]);
    /* 8 heads: 1/2, 1/4, ..., 1/256. */
    if (H == 8)
      assert_float_equal(back.alibi_slopes[7], 1.0 / 256, 0);
    attn_layer_destroy(l);
  }
}

/* Token-by-token decoding against the reference over each row's whole
 * history: steps of 1 to 3 tokens, a prompt through the tiled path,
 * steps with attention weights, truncation and beam reorder. */
typedef struct {
  const model *m;
  attn_kv_cache *cache;
  int64_t B, W, cap, start[4];
  float *hist[4];
  int64_t len[4];
} sim;

static void sim_step(sim *s, int64_t n, ref_rng *r, int weights) {
  int64_t E = s->m->ref.E, H = s->m->ref.H, B = s->B;
  float *x = ref_random(r, B * n * E, -1, 1);
  float *out = ref_xmalloc((size_t)(B * n * E) * sizeof(float));
  float *w = weights ? ref_xmalloc((size_t)(B * H * n * s->cap) * 4) : NULL;
  attn_options o;
  attn_options_init(&o);
  attn_positions ap;
  attn_positions_init(&ap);
  ap.start = s->start;
  o.positions = &ap;
  o.attn_weights = w;
  assert_int_equal(
      attn_decode_step(s->m->layer, s->cache, B, n, x, NULL, &o, out), ATTN_OK);
  for (int64_t b = 0; b < B; b++) {
    memcpy(s->hist[b] + s->len[b] * E, x + b * n * E,
           (size_t)(n * E) * sizeof(float));
    s->len[b] += n;
    int64_t L = s->len[b];
    int64_t *pos = ref_xmalloc((size_t)L * sizeof(int64_t));
    for (int64_t j = 0; j < L; j++)
      pos[j] = s->start[b] + j;
    double *want = ref_xmalloc((size_t)(L * E) * sizeof(double));
    ref_dec_forward(&s->m->ref, 1, L, s->hist[b], pos, 1, s->W, NULL, want,
                    NULL);
    assert_true(ref_close("decode step", out + b * n * E, want + (L - n) * E,
                          n * E, REF_RTOL, REF_ATOL));
    free(pos);
    free(want);
  }
  free(x);
  free(out);
  free(w);
}

static void check_decode(const spec *sp, int64_t W, uint64_t seed) {
  model m;
  model_make(&m, sp, seed);
  int64_t B = 3, E = sp->E;
  sim s = {.m = &m,
           .B = B,
           .W = W,
           .cap = W ? 2 * W + 24 : 80,
           .start = {0, 7, 300}};
  attn_cache_config cc;
  attn_cache_config_init(&cc);
  cc.batch = B;
  cc.capacity = s.cap;
  cc.window = W;
  assert_int_equal(attn_kv_cache_create(m.layer, &cc, &s.cache), ATTN_OK);
  for (int64_t b = 0; b < B; b++)
    s.hist[b] = ref_xmalloc((size_t)(200 * E) * sizeof(float));
  ref_rng r;
  ref_rng_seed(&r, seed + 1);
  sim_step(&s, 20, &r, 0); /* a prompt: the tiled core over the cache */
  for (int t = 0; t < 12; t++)
    sim_step(&s, 1 + t % 3, &r, t == 5);
  /* Truncate rows back, then go on. */
  int64_t keep[3];
  for (int64_t b = 0; b < B; b++) {
    keep[b] = s.len[b] - (W ? (b % 2) * 2 : 5 + b);
    s.len[b] = keep[b];
  }
  assert_int_equal(attn_kv_cache_truncate(s.cache, B, keep), ATTN_OK);
  sim_step(&s, 2, &r, 0);
  /* Beam reorder: rows 0 and 2 continue row 1's history; the row's start
   * offsets move with it. */
  int64_t src[3] = {1, 1, 0};
  assert_int_equal(attn_kv_cache_reorder(s.cache, B, src), ATTN_OK);
  float *h0 = s.hist[0], *h1 = s.hist[1], *h2 = s.hist[2];
  int64_t l0 = s.len[0], l1 = s.len[1], s0 = s.start[0], s1 = s.start[1];
  memcpy(h2, h0, (size_t)(l0 * E) * sizeof(float));
  memcpy(h0, h1, (size_t)(l1 * E) * sizeof(float));
  s.len[2] = l0;
  s.start[2] = s0;
  s.len[0] = l1;
  s.start[0] = s1;
  for (int t = 0; t < 6; t++)
    sim_step(&s, 1 + t % 2, &r, 0);
  attn_kv_cache_destroy(s.cache);
  for (int64_t b = 0; b < B; b++)
    free(s.hist[b]);
  (void)h2;
  model_free(&m);
}

static void test_decode_features(void **state) {
  (void)state;
  for (size_t i = 0; i < N_SPECS; i++) {
    check_decode(&specs[i], 0, 500 + i);
    check_decode(&specs[i], 9, 600 + i);
  }
}

/* A layer with every feature off computes what a 0.1.0 caller's layer
 * computes: the same code path, so the same bits. */
static void test_defaults_unchanged(void **state) {
  (void)state;
  attn_config cfg;
  attn_config_init(&cfg);
  cfg.embed_dim = 32;
  cfg.num_heads = 4;
  attn_config old = cfg;
  old.struct_size = ATTN_CONFIG_SIZE_0_1;
  attn_layer *a = NULL, *b = NULL;
  assert_int_equal(attn_layer_create(&cfg, &a), ATTN_OK);
  assert_int_equal(attn_layer_create(&old, &b), ATTN_OK);
  assert_int_equal(attn_layer_init_weights(a, 3), ATTN_OK);
  assert_int_equal(attn_layer_init_weights(b, 3), ATTN_OK);
  ref_rng r;
  ref_rng_seed(&r, 9);
  float *x = ref_random(&r, 2 * 40 * 32, -1, 1);
  float ya[2 * 40 * 32], yb[2 * 40 * 32];
  attn_positions ap;
  attn_positions_init(&ap);
  int64_t start[2] = {3, 4};
  ap.start = start; /* ignored by a layer without positions */
  attn_options o;
  attn_options_init(&o);
  o.positions = &ap;
  assert_int_equal(attn_self_forward(a, 2, 40, x, NULL, &o, ya), ATTN_OK);
  assert_int_equal(attn_self_forward(b, 2, 40, x, NULL, NULL, yb), ATTN_OK);
  assert_memory_equal(ya, yb, sizeof ya);
  attn_config back;
  attn_config_init(&back);
  assert_int_equal(attn_layer_get_config(a, &back), ATTN_OK);
  assert_int_equal(back.bias_parts, ATTN_BIAS_ALL);
  assert_null(back.rope);
  assert_null(back.alibi_slopes);
  free(x);
  attn_layer_destroy(a);
  attn_layer_destroy(b);
}

#define EXPECT_FAIL(call, status, needle)                                      \
  do {                                                                         \
    attn_status st_ = (call);                                                  \
    if (st_ != (status) || !strstr(attn_last_error(), (needle)))               \
      fprintf(stderr,                                                          \
              "%s: status %d, message \"%s\"; wanted %d with \"%s\"\n", #call, \
              st_, attn_last_error(), status, needle);                         \
    assert_int_equal(st_, (status));                                           \
    assert_non_null(strstr(attn_last_error(), (needle)));                      \
  } while (0)

static void test_bad_config(void **state) {
  (void)state;
  attn_config cfg;
  attn_rope_config rc;
  attn_layer *l = NULL;
  float slopes[4] = {1, 2, NAN, 4};
#define BAD(setup, status, needle)                                             \
  do {                                                                         \
    attn_config_init(&cfg);                                                    \
    attn_rope_config_init(&rc);                                                \
    cfg.embed_dim = 32;                                                        \
    cfg.num_heads = 4;                                                         \
    setup;                                                                     \
    EXPECT_FAIL(attn_layer_create(&cfg, &l), status, needle);                  \
    assert_null(l);                                                            \
  } while (0)
  BAD((cfg.rope = &rc, rc.rotary_dim = 7), ATTN_ERR_BAD_SIZE, "rotary_dim");
  BAD((cfg.rope = &rc, rc.rotary_dim = 10), ATTN_ERR_BAD_SIZE, "rotary_dim");
  BAD((cfg.rope = &rc, rc.rotary_dim = -2), ATTN_ERR_BAD_SIZE, "rotary_dim");
  BAD((cfg.rope = &rc, rc.theta = 0), ATTN_ERR_BAD_OPTION, "theta");
  BAD((cfg.rope = &rc, rc.theta = -1), ATTN_ERR_BAD_OPTION, "theta");
  BAD((cfg.rope = &rc, rc.linear_factor = 0), ATTN_ERR_BAD_OPTION,
      "linear_factor");
  BAD((cfg.rope = &rc, rc.attention_factor = NAN), ATTN_ERR_BAD_OPTION,
      "attention_factor");
  BAD((cfg.rope = &rc, rc.pairing = 2), ATTN_ERR_BAD_OPTION, "pairing");
  BAD((cfg.rope = &rc, rc.struct_size = 8), ATTN_ERR_STRUCT_SIZE,
      "attn_rope_config");
  BAD(cfg.softcap = -1, ATTN_ERR_BAD_OPTION, "softcap");
  BAD(cfg.softcap = NAN, ATTN_ERR_BAD_OPTION, "softcap");
  BAD(cfg.softcap = INFINITY, ATTN_ERR_BAD_OPTION, "softcap");
  BAD(cfg.qk_norm = 3, ATTN_ERR_BAD_OPTION, "qk_norm");
  BAD((cfg.qk_norm = 1, cfg.qk_norm_eps = -1), ATTN_ERR_BAD_OPTION,
      "qk_norm_eps");
  BAD(cfg.alibi = 7, ATTN_ERR_BAD_OPTION, "alibi");
  BAD((cfg.alibi = 1, cfg.alibi_slopes = slopes), ATTN_ERR_NOT_FINITE,
      "alibi_slopes[2]");
  BAD(cfg.alibi_slopes = slopes, ATTN_ERR_BAD_OPTION, "ATTN_ALIBI_NONE");
  BAD(cfg.bias_parts = 16, ATTN_ERR_BAD_OPTION, "bias_parts");
  float table[16] = {0};
  table[3] = -1;
  BAD((cfg.rope = &rc, rc.inv_freq = table), ATTN_ERR_NOT_FINITE,
      "inv_freq[3]");
#undef BAD
}

static void test_bad_weights(void **state) {
  (void)state;
  spec sp = {.E = 32,
             .H = 4,
             .qk_norm = ATTN_QK_NORM_HEAD,
             .sinks = 1,
             .bias_parts = ATTN_BIAS_Q};
  model m;
  model_make(&m, &sp, 1);
  float data[64] = {0};
  /* Sinks are [H], norms [head_dim]. */
  EXPECT_FAIL(attn_layer_set_weight(m.layer, ATTN_W_SINKS, data, 5),
              ATTN_ERR_WEIGHT_SIZE, "needs 4 floats");
  EXPECT_FAIL(attn_layer_set_weight(m.layer, ATTN_W_Q_NORM, data, 32),
              ATTN_ERR_WEIGHT_SIZE, "needs 8 floats");
  /* Biases the layer does not have. */
  EXPECT_FAIL(attn_layer_set_weight(m.layer, ATTN_B_K, data, 32),
              ATTN_ERR_WEIGHT_LAYOUT, "k bias");
  EXPECT_FAIL(attn_layer_set_weight(m.layer, ATTN_B_IN_PROJ, data, 96),
              ATTN_ERR_WEIGHT_LAYOUT, "in_proj_bias");
  data[1] = NAN;
  EXPECT_FAIL(attn_layer_set_weight(m.layer, ATTN_W_SINKS, data, 4),
              ATTN_ERR_NOT_FINITE, "NaN");
  model_free(&m);
  /* A layer without the features has none of their weights. */
  spec plain = {.E = 32, .H = 4};
  model_make(&m, &plain, 2);
  EXPECT_FAIL(attn_layer_set_weight(m.layer, ATTN_W_SINKS, data, 4),
              ATTN_ERR_WEIGHT_LAYOUT, "sinks");
  model_free(&m);
}

static void test_bad_positions(void **state) {
  (void)state;
  spec sp = {.E = 32, .H = 4, .rope = 1};
  model m;
  model_make(&m, &sp, 3);
  float x[3 * 32] = {0}, out[3 * 32], sentinel[3 * 32];
  memset(out, 0x5a, sizeof out);
  memcpy(sentinel, out, sizeof out);
  attn_positions ap;
  attn_options o;
  attn_options_init(&o);
  o.positions = &ap;
  int64_t neg[3] = {0, -1, 2}, start[1] = {-4};
  int64_t big[1] = {ATTN_MAX_POSITION - 1};
  attn_positions_init(&ap);
  ap.q_positions = neg;
  EXPECT_FAIL(attn_self_forward(m.layer, 1, 3, x, NULL, &o, out),
              ATTN_ERR_BAD_OPTION, "q_positions[1] = -1");
  attn_positions_init(&ap);
  ap.start = start;
  EXPECT_FAIL(attn_self_forward(m.layer, 1, 3, x, NULL, &o, out),
              ATTN_ERR_BAD_OPTION, "start[0]");
  ap.start = big; /* the third token would pass the limit */
  EXPECT_FAIL(attn_self_forward(m.layer, 1, 3, x, NULL, &o, out),
              ATTN_ERR_BAD_OPTION, "ATTN_MAX_POSITION");
  assert_memory_equal(out, sentinel, sizeof out);
  ap.struct_size = 4;
  EXPECT_FAIL(attn_self_forward(m.layer, 1, 3, x, NULL, &o, out),
              ATTN_ERR_STRUCT_SIZE, "attn_positions");

  /* Decoding: explicit positions are refused, and so is a start that
   * would pass the limit; the cache is untouched. */
  attn_cache_config cc;
  attn_cache_config_init(&cc);
  cc.capacity = 8;
  attn_kv_cache *c = NULL;
  assert_int_equal(attn_kv_cache_create(m.layer, &cc, &c), ATTN_OK);
  attn_positions_init(&ap);
  ap.q_positions = neg;
  EXPECT_FAIL(attn_decode_step(m.layer, c, 1, 1, x, NULL, &o, out),
              ATTN_ERR_BAD_OPTION, "q_positions");
  attn_positions_init(&ap);
  ap.start = big;
  EXPECT_FAIL(attn_decode_step(m.layer, c, 1, 3, x, NULL, &o, out),
              ATTN_ERR_BAD_OPTION, "ATTN_MAX_POSITION");
  int64_t len = -1;
  assert_int_equal(attn_kv_cache_lengths(c, 1, &len, NULL), ATTN_OK);
  assert_int_equal(len, 0);
  attn_kv_cache_destroy(c);

  /* A memory has no positions. */
  attn_memory_config mc;
  attn_memory_config_init(&mc);
  mc.capacity = 4;
  attn_memory *mem = NULL;
  EXPECT_FAIL(attn_memory_create(m.layer, &mc, &mem), ATTN_ERR_BAD_OPTION,
              "positions");
  assert_null(mem);
  model_free(&m);
}

/* QK-norm, soft-capping and sinks in cross-attention steps: the memory's
 * keys are normed once, the step matches attn_forward. */
static void test_cross_features(void **state) {
  (void)state;
  spec sp = {.E = 32,
             .H = 4,
             .Hkv = 2,
             .qk_norm = ATTN_QK_NORM_HEAD,
             .softcap = 1.5,
             .sinks = 1,
             .bias_parts = ATTN_BIAS_V};
  model m;
  model_make(&m, &sp, 4);
  int64_t B = 2, Lk = 11, n = 3, E = 32;
  ref_rng r;
  ref_rng_seed(&r, 5);
  float *kv = ref_random(&r, B * Lk * E, -1, 1);
  float *q = ref_random(&r, B * n * E, -1, 1);
  float got[2 * 3 * 32], want[2 * 3 * 32];
  attn_memory_config mc;
  attn_memory_config_init(&mc);
  mc.batch = B;
  mc.capacity = 16;
  attn_memory *mem = NULL;
  assert_int_equal(attn_memory_create(m.layer, &mc, &mem), ATTN_OK);
  assert_int_equal(
      attn_memory_set(m.layer, mem, B, Lk, kv, kv, NULL, NULL, NULL), ATTN_OK);
  assert_int_equal(attn_cross_step(m.layer, mem, B, n, q, NULL, NULL, got),
                   ATTN_OK);
  assert_int_equal(attn_forward(m.layer, B, n, Lk, q, kv, kv, NULL, NULL, want),
                   ATTN_OK);
  assert_true(ref_close_f("cross step", got, want, B * n * E, 1e-5, 1e-6));
  attn_memory_destroy(mem);
  free(kv);
  free(q);
  model_free(&m);
}

/* A layer made from spec sp with its weights loaded from path. */
static attn_status load_into(const spec *sp, const char *path,
                             attn_layer **out) {
  model m;
  model_make(&m, sp, 77);
  attn_status st = attn_layer_load_safetensors(m.layer, path, "blk.");
  *out = m.layer;
  m.layer = NULL;
  model_free(&m);
  return st;
}

static void same_weight(const attn_layer *a, const attn_layer *b,
                        attn_weight_id id) {
  int64_t n = 0;
  assert_int_equal(attn_layer_weight_count(a, id, &n), ATTN_OK);
  float *x = ref_xmalloc((size_t)n * 4), *y = ref_xmalloc((size_t)n * 4);
  assert_int_equal(attn_layer_get_weight(a, id, x, n), ATTN_OK);
  assert_int_equal(attn_layer_get_weight(b, id, y, n), ATTN_OK);
  assert_memory_equal(x, y, (size_t)n * 4);
  free(x);
  free(y);
}

/* Hugging Face files of Qwen2-, Qwen3- and gpt-oss-style layers: saved
 * and loaded with exactly the tensors the configuration says; anything
 * missing or extra is named. */
static void test_safetensors_names(void **state) {
  (void)state;
  char path[64];
  snprintf(path, sizeof path, "/tmp/attn-test-positions-%d.st", (int)getpid());
  spec qwen2 = {.E = 32,
                .H = 4,
                .Hkv = 2,
                .rope = 1,
                .bias_parts = ATTN_BIAS_Q | ATTN_BIAS_K | ATTN_BIAS_V};
  spec qwen3 = {
      .E = 32, .H = 4, .Hkv = 2, .rope = 1, .qk_norm = ATTN_QK_NORM_HEAD};
  spec oss = {.E = 32,
              .H = 4,
              .Hkv = 2,
              .rope = 1,
              .sinks = 1,
              .bias_parts = ATTN_BIAS_ALL};
  const spec *all[3] = {&qwen2, &qwen3, &oss};
  for (int i = 0; i < 3; i++) {
    model m;
    model_make(&m, all[i], 10 + i);
    assert_int_equal(attn_layer_save_safetensors(m.layer, path, "blk.",
                                                 ATTN_NAMES_HF_O_PROJ),
                     ATTN_OK);
    attn_layer *back = NULL;
    assert_int_equal(load_into(all[i], path, &back), ATTN_OK);
    same_weight(m.layer, back, ATTN_W_Q);
    same_weight(m.layer, back, ATTN_W_OUT);
    if (all[i]->bias_parts)
      same_weight(m.layer, back, ATTN_B_K);
    if (all[i]->qk_norm) {
      same_weight(m.layer, back, ATTN_W_Q_NORM);
      same_weight(m.layer, back, ATTN_W_K_NORM);
    }
    if (all[i]->sinks)
      same_weight(m.layer, back, ATTN_W_SINKS);
    attn_layer_destroy(back);
    model_free(&m);
  }
  /* Wrong configurations for each file. */
  attn_layer *l = NULL;
  model m;
  model_make(&m, &qwen2, 20);
  assert_int_equal(
      attn_layer_save_safetensors(m.layer, path, "blk.", ATTN_NAMES_HF_O_PROJ),
      ATTN_OK);
  model_free(&m);
  spec all_bias = qwen2;
  all_bias.bias_parts = ATTN_BIAS_ALL;
  EXPECT_FAIL(load_into(&all_bias, path, &l), ATTN_ERR_TENSOR_MISSING,
              "blk.o_proj.bias' not found");
  assert_non_null(strstr(attn_last_error(), "bias_parts"));
  attn_layer_destroy(l);
  spec no_bias = qwen2;
  no_bias.bias_parts = ATTN_BIAS_Q | ATTN_BIAS_V;
  EXPECT_FAIL(load_into(&no_bias, path, &l), ATTN_ERR_WEIGHT_LAYOUT,
              "blk.k_proj.bias");
  attn_layer_destroy(l);
  /* torch's packed in_proj_bias cannot hold a part of the biases. */
  model_make(&m, &no_bias, 22);
  EXPECT_FAIL(
      attn_layer_save_safetensors(m.layer, path, "blk.", ATTN_NAMES_TORCH),
      ATTN_ERR_BAD_OPTION, "in_proj_bias");
  model_free(&m);
  spec normed = qwen2;
  normed.qk_norm = ATTN_QK_NORM_HEAD;
  EXPECT_FAIL(load_into(&normed, path, &l), ATTN_ERR_TENSOR_MISSING,
              "blk.q_norm.weight");
  attn_layer_destroy(l);
  model_make(&m, &oss, 21);
  assert_int_equal(
      attn_layer_save_safetensors(m.layer, path, "blk.", ATTN_NAMES_HF_O_PROJ),
      ATTN_OK);
  model_free(&m);
  spec sinkless = oss;
  sinkless.sinks = 0;
  EXPECT_FAIL(load_into(&sinkless, path, &l), ATTN_ERR_WEIGHT_LAYOUT,
              "blk.sinks");
  attn_layer_destroy(l);
  remove(path);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_forward_features),
      cmocka_unit_test(test_forward_paths),
      cmocka_unit_test(test_alibi_slopes),
      cmocka_unit_test(test_decode_features),
      cmocka_unit_test(test_defaults_unchanged),
      cmocka_unit_test(test_bad_config),
      cmocka_unit_test(test_bad_weights),
      cmocka_unit_test(test_bad_positions),
      cmocka_unit_test(test_cross_features),
      cmocka_unit_test(test_safetensors_names),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
