/* SPDX-License-Identifier: MIT */
/* Incremental decoding: a KV cache driven token by token and in ragged
 * chunks, with padding, sliding windows, rollbacks and beam reorders, gives
 * the same outputs as one reference forward over each row's whole history;
 * the cross-attention memory reused over many steps gives the full cross
 * forward; errors leave caches, memories and outputs untouched. */
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

static attn_config self_config(int64_t E, int64_t H, int64_t Hkv) {
  attn_config c;
  attn_config_init(&c);
  c.embed_dim = E;
  c.num_heads = H;
  c.num_kv_heads = Hkv;
  return c;
}

/* 300 single-token steps; rows skip steps at random so their lengths
 * differ, and one token in ten is padding. */
static void test_token_by_token(void **state) {
  (void)state;
  attn_config cfg = self_config(64, 4, 0);
  dsim s;
  dsim_init(&s, &cfg, 3, 320, 0, 300, 1);
  int64_t lens[3];
  for (int step = 0; step < 300; step++) {
    dsim_random_lengths(&s, 1, lens);
    dsim_step(&s, 1, lens, 0.1);
    if (step == 99 || step == 199)
      dsim_check(&s, "token by token");
  }
  assert_true(s.len[0] != s.len[1] || s.len[1] != s.len[2]);
  dsim_check(&s, "token by token");
  dsim_free(&s);
}

/* Chunks of 1 to 8 tokens, each row taking its own number of them. */
static void test_chunks(void **state) {
  (void)state;
  attn_config cfg = self_config(64, 4, 0);
  dsim s;
  dsim_init(&s, &cfg, 3, 320, 0, 320, 2);
  int64_t lens[3];
  for (;;) {
    int64_t n = ref_rng_int(&s.rng, 1, 8);
    if (s.len[0] + n > 300 || s.len[1] + n > 300 || s.len[2] + n > 300)
      break;
    dsim_random_lengths(&s, n, lens);
    dsim_step(&s, n, lens, 0.1);
  }
  assert_true(s.steps > 50);
  dsim_check(&s, "chunks");
  /* Without new_lengths every row takes all n. */
  dsim_step(&s, 5, NULL, 0.0);
  dsim_check(&s, "chunks, uniform");
  dsim_free(&s);
}

/* Batches of 1 to 9 rows, single tokens and pairs: every row count of
 * the small-projection kernel (up to 8 rows at once) and beyond. */
static void test_batch_sizes(void **state) {
  (void)state;
  attn_config cfg = self_config(32, 4, 0);
  for (int64_t B = 1; B <= 9; B++) {
    dsim s;
    dsim_init(&s, &cfg, B, 64, 0, 64, 150 + (uint64_t)B);
    for (int i = 0; i < 20; i++)
      dsim_step(&s, i % 3 == 2 ? 2 : 1, NULL, 0.0);
    char what[32];
    snprintf(what, sizeof what, "batch %lld", (long long)B);
    dsim_check(&s, what);
    dsim_free(&s);
  }
}

/* A single prefill of the whole prompt, then single tokens. */
static void test_prefill_then_tokens(void **state) {
  (void)state;
  attn_config cfg = self_config(32, 2, 0);
  dsim s;
  dsim_init(&s, &cfg, 2, 200, 0, 200, 3);
  dsim_step(&s, 150, NULL, 0.0);
  for (int i = 0; i < 40; i++)
    dsim_step(&s, 1, NULL, 0.0);
  dsim_check(&s, "prefill");
  dsim_free(&s);
}

/* Sliding window: the cache drops what falls out of the window and the
 * outputs equal a full forward under the same window. */
static void test_window(void **state) {
  (void)state;
  struct {
    int64_t W, C, nmax, E, H;
  } cases[] = {{16, 40, 8, 64, 4},
               {8, 10, 3, 32, 4},
               {5, 5, 1, 16, 2},
               {1, 4, 4, 16, 2},
               {30, 120, 6, 32, 2}};
  for (size_t k = 0; k < sizeof cases / sizeof cases[0]; k++) {
    attn_config cfg = self_config(cases[k].E, cases[k].H, 0);
    dsim s;
    dsim_init(&s, &cfg, 3, cases[k].C, cases[k].W, 300, 10 + k);
    int64_t lens[3];
    for (;;) {
      int64_t n = ref_rng_int(&s.rng, 1, cases[k].nmax);
      if (s.len[0] + n > 300 || s.len[1] + n > 300 || s.len[2] + n > 300)
        break;
      dsim_random_lengths(&s, n, lens);
      dsim_step(&s, n, lens, 0.05);
    }
    char what[64];
    snprintf(what, sizeof what, "window %lld capacity %lld",
             (long long)cases[k].W, (long long)cases[k].C);
    dsim_check(&s, what);
    int64_t len[3], first[3];
    assert_int_equal(attn_kv_cache_lengths(s.cache, 3, len, first), ATTN_OK);
    if (cases[k].C < 250)
      assert_true(first[0] > 0 && first[1] > 0 && first[2] > 0);
    dsim_free(&s);
  }
}

/* Roll rows back to random earlier lengths and continue: the result is
 * that of a run that never produced the dropped tokens. */
static void test_truncate(void **state) {
  (void)state;
  attn_config cfg = self_config(48, 4, 0);
  dsim s;
  dsim_init(&s, &cfg, 3, 200, 0, 200, 20);
  int64_t lens[3];
  for (int round = 0; round < 4; round++) {
    for (int i = 0; i < 15; i++) {
      int64_t n = ref_rng_int(&s.rng, 1, 4);
      dsim_random_lengths(&s, n, lens);
      dsim_step(&s, n, lens, 0.1);
    }
    for (int b = 0; b < 3; b++)
      lens[b] = ref_rng_int(&s.rng, 0, s.len[b]);
    dsim_truncate(&s, lens);
  }
  for (int i = 0; i < 10; i++)
    dsim_step(&s, 2, NULL, 0.1);
  dsim_check(&s, "truncate");
  /* Longer than the row, or negative: refused, nothing changes. */
  int64_t before[3], after[3];
  assert_int_equal(attn_kv_cache_lengths(s.cache, 3, before, NULL), ATTN_OK);
  lens[0] = before[0];
  lens[1] = before[1] + 1;
  lens[2] = 0;
  assert_int_equal(attn_kv_cache_truncate(s.cache, 3, lens), ATTN_ERR_BAD_SIZE);
  lens[1] = -1;
  assert_int_equal(attn_kv_cache_truncate(s.cache, 3, lens), ATTN_ERR_BAD_SIZE);
  assert_int_equal(attn_kv_cache_lengths(s.cache, 3, after, NULL), ATTN_OK);
  assert_memory_equal(before, after, sizeof before);
  dsim_step(&s, 1, NULL, 0.0);
  dsim_check(&s, "truncate after refusals");
  dsim_free(&s);
}

/* With a window, a row can go back only as far as the tokens it holds. */
static void test_truncate_window(void **state) {
  (void)state;
  attn_config cfg = self_config(32, 2, 0);
  dsim s;
  int64_t W = 6;
  dsim_init(&s, &cfg, 2, 12, W, 300, 21);
  for (int i = 0; i < 40; i++)
    dsim_step(&s, 1, NULL, 0.0);
  int64_t len[2], first[2], lens[2];
  assert_int_equal(attn_kv_cache_lengths(s.cache, 2, len, first), ATTN_OK);
  assert_true(first[0] > 0);
  /* The oldest length still reachable is first + W - 1. */
  lens[0] = first[0] + W - 2;
  lens[1] = len[1];
  assert_int_equal(attn_kv_cache_truncate(s.cache, 2, lens), ATTN_ERR_BAD_SIZE);
  assert_non_null(strstr(attn_last_error(), "dropped"));
  lens[0] = first[0] + W - 1;
  lens[1] = len[1] - 1;
  dsim_truncate(&s, lens);
  for (int i = 0; i < 30; i++)
    dsim_step(&s, ref_rng_int(&s.rng, 1, 3), NULL, 0.0);
  dsim_check(&s, "window truncate");
  dsim_free(&s);
}

/* Beam search: rows are reordered (with repeats, cycles, identity) between
 * steps; every row continues the history it was given. */
static void test_reorder(void **state) {
  (void)state;
  attn_config cfg = self_config(32, 4, 0);
  dsim s;
  int64_t B = 5;
  dsim_init(&s, &cfg, B, 160, 0, 160, 30);
  int64_t lens[5], src[5];
  const int64_t fixed[][5] = {{1, 2, 3, 4, 0}, {0, 1, 2, 3, 4},
                              {2, 2, 0, 1, 1}, {4, 3, 2, 1, 0},
                              {3, 3, 3, 3, 3}, {1, 0, 3, 2, 4}};
  for (int round = 0; round < 24; round++) {
    int64_t n = ref_rng_int(&s.rng, 1, 3);
    dsim_random_lengths(&s, n, lens);
    dsim_step(&s, n, lens, 0.1);
    if (round < 6) {
      dsim_reorder(&s, fixed[round]);
    } else {
      for (int64_t b = 0; b < B; b++)
        src[b] = ref_rng_int(&s.rng, 0, B - 1);
      dsim_reorder(&s, src);
    }
  }
  dsim_step(&s, 1, NULL, 0.0);
  dsim_check(&s, "reorder");
  src[0] = 5;
  assert_int_equal(attn_kv_cache_reorder(s.cache, B, src), ATTN_ERR_BAD_SIZE);
  src[0] = -1;
  assert_int_equal(attn_kv_cache_reorder(s.cache, B, src), ATTN_ERR_BAD_SIZE);
  assert_int_equal(attn_kv_cache_reorder(s.cache, B - 1, src),
                   ATTN_ERR_BAD_SIZE);
  dsim_check(&s, "reorder after refusals");
  dsim_free(&s);
}

/* A full row refuses more tokens with ATTN_ERR_CAPACITY and nothing
 * changes: not the cache, not out, not the weights. */
static void test_capacity(void **state) {
  (void)state;
  attn_config cfg = self_config(32, 2, 0);
  dsim s;
  dsim_init(&s, &cfg, 2, 20, 0, 40, 40);
  int64_t lens[2] = {18, 15};
  dsim_step(&s, 18, lens, 0.0);
  int64_t n = 3;
  float x[8 * 32], out[8 * 32], w[2 * 2 * 3 * 20];
  for (int i = 0; i < 8 * 32; i++) {
    x[i] = 0.25f;
    out[i] = 7.0f;
  }
  for (int i = 0; i < 2 * 2 * 3 * 20; i++)
    w[i] = 9.0f;
  attn_options o;
  attn_options_init(&o);
  o.attn_weights = w;
  assert_int_equal(attn_decode_step(s.m.layer, s.cache, 2, n, x, NULL, &o, out),
                   ATTN_ERR_CAPACITY);
  assert_non_null(strstr(attn_last_error(), "row 0"));
  for (int i = 0; i < 2 * 3 * 32; i++)
    assert_true(out[i] == 7.0f);
  for (int i = 0; i < 2 * 2 * 3 * 20; i++)
    assert_true(w[i] == 9.0f);
  int64_t len[2];
  assert_int_equal(attn_kv_cache_lengths(s.cache, 2, len, NULL), ATTN_OK);
  assert_int_equal(len[0], 18);
  assert_int_equal(len[1], 15);
  /* Exactly filling both rows works, and matches the reference. */
  lens[0] = 2;
  lens[1] = 5;
  dsim_step(&s, 5, lens, 0.0);
  dsim_check(&s, "capacity");
  assert_int_equal(
      attn_decode_step(s.m.layer, s.cache, 2, 1, x, NULL, NULL, out),
      ATTN_ERR_CAPACITY);
  dsim_free(&s);

  /* A window cache takes at most capacity - window + 1 tokens at once once
   * it is full. */
  dsim_init(&s, &cfg, 1, 10, 4, 60, 41);
  dsim_step(&s, 10, NULL, 0.0);
  assert_int_equal(
      attn_decode_step(s.m.layer, s.cache, 1, 8, x, NULL, NULL, out),
      ATTN_ERR_CAPACITY);
  dsim_step(&s, 7, NULL, 0.0);
  dsim_step(&s, 7, NULL, 0.0);
  dsim_check(&s, "window capacity");
  dsim_free(&s);
}

/* Attention weights of a step: per head and averaged, against the
 * reference's weights of the same query positions. */
static void test_step_weights(void **state) {
  (void)state;
  attn_config cfg = self_config(32, 4, 2);
  for (int windowed = 0; windowed < 2; windowed++) {
    int64_t B = 2, C = windowed ? 24 : 40, H = 4, W = windowed ? 7 : 0;
    int64_t n = 3, E = 32;
    dsim s;
    dsim_init(&s, &cfg, B, C, W, 100, 50 + windowed);
    for (int i = 0; i < 10; i++)
      dsim_step(&s, 3, NULL, 0.1);
    /* The step whose weights are checked, rows taking 3 and 2 tokens. */
    int64_t lens[2] = {3, 2};
    ref_rng r;
    ref_rng_seed(&r, 77);
    float x[2 * 3 * 32], out[2 * 3 * 32], out2[2 * 3 * 32];
    ref_fill(&r, x, 2 * 3 * 32, -1, 1);
    float *w = ref_xmalloc((size_t)(B * H * n * C) * sizeof(float));
    float *wa = ref_xmalloc((size_t)(B * n * C) * sizeof(float));
    attn_decode_mask dm;
    attn_decode_mask_init(&dm);
    dm.new_lengths = lens;
    attn_options o;
    attn_options_init(&o);
    o.attn_weights = w;
    int64_t len0[2];
    assert_int_equal(attn_kv_cache_lengths(s.cache, B, len0, NULL), ATTN_OK);
    assert_int_equal(
        attn_decode_step(s.m.layer, s.cache, B, n, x, &dm, &o, out), ATTN_OK);
    /* The same step again, averaged weights, after a rollback. */
    assert_int_equal(attn_kv_cache_truncate(s.cache, B, len0), ATTN_OK);
    o.attn_weights = wa;
    o.weights_mode = ATTN_WEIGHTS_AVERAGE;
    assert_int_equal(
        attn_decode_step(s.m.layer, s.cache, B, n, x, &dm, &o, out2), ATTN_OK);
    /* Other options: the same output up to rounding. */
    assert_true(ref_close_f("averaged-weights step", out2, out,
                            (int64_t)(sizeof out / sizeof *out), REF_RTOL,
                            REF_ATOL));
    int64_t len[2], first[2];
    assert_int_equal(attn_kv_cache_lengths(s.cache, B, len, first), ATTN_OK);

    /* Reference over the history plus this step's tokens. */
    int64_t L = len[0] > len[1] ? len[0] : len[1];
    float *hx = calloc((size_t)(B * L * E), sizeof(float));
    uint8_t *hp = calloc((size_t)(B * L), 1);
    double *want = ref_xmalloc((size_t)(B * L * E) * sizeof(double));
    double *ww = ref_xmalloc((size_t)(B * H * L * L) * sizeof(double));
    for (int64_t b = 0; b < B; b++) {
      memcpy(hx + b * L * E, s.x + b * s.maxlen * E,
             (size_t)(len0[b] * E) * sizeof(float));
      memcpy(hx + (b * L + len0[b]) * E, x + b * n * E,
             (size_t)(lens[b] * E) * sizeof(float));
      memcpy(hp + b * L, s.pad + b * s.maxlen, (size_t)len0[b]);
    }
    attn_mask m;
    attn_mask_init(&m);
    m.causal = ATTN_CAUSAL_TOP_LEFT;
    m.key_lengths = len;
    m.key_padding = hp;
    m.window = W;
    ref_forward(&s.m.ref, B, L, L, hx, hx, hx, &m, want, ww);
    for (int64_t b = 0; b < B; b++)
      for (int64_t i = 0; i < n; i++) {
        int64_t p = len0[b] + i;
        for (int64_t j = 0; j < C; j++) {
          double avg = 0;
          for (int64_t h = 0; h < H; h++) {
            double ref = 0;
            if (i < lens[b] && j < len[b] - first[b])
              ref = ww[((b * H + h) * L + p) * L + first[b] + j];
            avg += ref / (double)H;
            float got = w[((b * H + h) * n + i) * C + j];
            assert_true(fabs(got - ref) <= 1e-5 + 1e-4 * fabs(ref));
          }
          float got = wa[(b * n + i) * C + j];
          assert_true(fabs(got - avg) <= 1e-5 + 1e-4 * fabs(avg));
        }
        if (i < lens[b])
          assert_true(ref_close("step output", out + (b * n + i) * E,
                                want + (b * L + p) * E, E, REF_RTOL, REF_ATOL));
      }
    free(hx);
    free(hp);
    free(want);
    free(ww);
    free(w);
    free(wa);
    dsim_free(&s);
  }
}

/* A query whose every visible key is padding: zeros (out = out_proj bias)
 * or NaN, as asked. */
static void test_empty_rows(void **state) {
  (void)state;
  attn_config cfg = self_config(16, 2, 0);
  ref_model m;
  assert_int_equal(ref_model_create(&m, &cfg, 60), ATTN_OK);
  attn_cache_config cc;
  attn_cache_config_init(&cc);
  cc.capacity = 4;
  attn_kv_cache *c;
  assert_int_equal(attn_kv_cache_create(m.layer, &cc, &c), ATTN_OK);
  float x[16], out[16];
  for (int i = 0; i < 16; i++)
    x[i] = 0.1f * (float)i;
  uint8_t pad = 1;
  attn_decode_mask dm;
  attn_decode_mask_init(&dm);
  dm.new_padding = &pad;
  assert_int_equal(attn_decode_step(m.layer, c, 1, 1, x, &dm, NULL, out),
                   ATTN_OK);
  for (int i = 0; i < 16; i++)
    assert_true(fabsf(out[i] - m.ref.bo[i]) < 1e-6f);
  dm.empty_rows = ATTN_EMPTY_ROW_NAN;
  assert_int_equal(attn_decode_step(m.layer, c, 1, 1, x, &dm, NULL, out),
                   ATTN_OK);
  for (int i = 0; i < 16; i++)
    assert_true(isnan(out[i]));
  dm.empty_rows = 7;
  assert_int_equal(attn_decode_step(m.layer, c, 1, 1, x, &dm, NULL, out),
                   ATTN_ERR_BAD_MASK);
  attn_kv_cache_destroy(c);
  ref_model_destroy(&m);
}

/* The same run in a library cache and in a caller's (misaligned) buffer
 * with caller scratch gives identical results. */
static void test_caller_buffer(void **state) {
  (void)state;
  attn_config cfg = self_config(32, 4, 2);
  ref_model m;
  assert_int_equal(ref_model_create(&m, &cfg, 70), ATTN_OK);
  attn_cache_config cc;
  attn_cache_config_init(&cc);
  cc.batch = 2;
  cc.capacity = 50;
  cc.window = 9;
  size_t bytes = 0;
  assert_int_equal(attn_kv_cache_size(m.layer, &cc, &bytes), ATTN_OK);
  assert_true(bytes >= (size_t)(2 * 50 * 2 * 16) * sizeof(float));
  unsigned char *buf = malloc(bytes + 3);
  assert_non_null(buf);
  attn_kv_cache *mine = NULL, *lib = NULL;
  assert_int_equal(
      attn_kv_cache_create_in(m.layer, &cc, buf + 3, bytes - 1, &mine),
      ATTN_ERR_SCRATCH_TOO_SMALL);
  assert_null(mine);
  assert_int_equal(attn_kv_cache_create_in(m.layer, &cc, buf + 3, bytes, &mine),
                   ATTN_OK);
  assert_int_equal(attn_kv_cache_create(m.layer, &cc, &lib), ATTN_OK);

  int64_t n = 4;
  size_t sbytes = 0;
  attn_options o;
  attn_options_init(&o);
  assert_int_equal(attn_decode_scratch_size(m.layer, mine, n, &o, &sbytes),
                   ATTN_OK);
  unsigned char *scratch = malloc(sbytes + 1);
  assert_non_null(scratch);
  ref_rng r;
  ref_rng_seed(&r, 71);
  float x[2 * 4 * 32], out1[2 * 4 * 32], out2[2 * 4 * 32];
  for (int step = 0; step < 40; step++) {
    ref_fill(&r, x, 2 * 4 * 32, -1, 1);
    o.scratch = NULL;
    o.scratch_size = 0;
    assert_int_equal(attn_decode_step(m.layer, lib, 2, n, x, NULL, &o, out1),
                     ATTN_OK);
    o.scratch = scratch + 1;
    o.scratch_size = sbytes - 1;
    assert_int_equal(attn_decode_step(m.layer, mine, 2, n, x, NULL, &o, out2),
                     ATTN_ERR_SCRATCH_TOO_SMALL);
    o.scratch_size = sbytes;
    assert_int_equal(attn_decode_step(m.layer, mine, 2, n, x, NULL, &o, out2),
                     ATTN_OK);
    assert_memory_equal(out1, out2, sizeof out1);
  }
  attn_kv_cache_destroy(mine); /* frees nothing */
  attn_kv_cache_destroy(lib);
  attn_kv_cache_destroy(NULL);
  free(buf);
  free(scratch);
  ref_model_destroy(&m);
}

/* Reset empties every row: the next run equals a fresh cache's. */
static void test_reset(void **state) {
  (void)state;
  attn_config cfg = self_config(32, 2, 0);
  dsim s;
  dsim_init(&s, &cfg, 2, 64, 0, 64, 80);
  for (int i = 0; i < 20; i++)
    dsim_step(&s, 2, NULL, 0.2);
  assert_int_equal(attn_kv_cache_reset(s.cache), ATTN_OK);
  int64_t zero[2] = {0, 0};
  memset(s.x, 0, (size_t)(2 * 64 * 32) * sizeof(float));
  memset(s.pad, 0, 2 * 64);
  s.len[0] = s.len[1] = 0;
  int64_t len[2];
  assert_int_equal(attn_kv_cache_lengths(s.cache, 2, len, NULL), ATTN_OK);
  assert_memory_equal(len, zero, sizeof zero);
  for (int i = 0; i < 20; i++)
    dsim_step(&s, 3, NULL, 0.0);
  dsim_check(&s, "reset");
  assert_int_equal(attn_kv_cache_reset(NULL), ATTN_ERR_NULL_POINTER);
  dsim_free(&s);
}

/* A cache or memory used with another layer, even of the same shape. */
static void test_mismatch(void **state) {
  (void)state;
  attn_config cfg = self_config(32, 4, 0);
  ref_model a, b, c;
  assert_int_equal(ref_model_create(&a, &cfg, 90), ATTN_OK);
  assert_int_equal(ref_model_create(&b, &cfg, 91), ATTN_OK);
  cfg.num_kv_heads = 2;
  assert_int_equal(ref_model_create(&c, &cfg, 92), ATTN_OK);
  attn_cache_config cc;
  attn_cache_config_init(&cc);
  cc.capacity = 8;
  attn_kv_cache *cache;
  assert_int_equal(attn_kv_cache_create(a.layer, &cc, &cache), ATTN_OK);
  float x[32] = {0}, out[32];
  size_t bytes;
  assert_int_equal(attn_decode_step(b.layer, cache, 1, 1, x, NULL, NULL, out),
                   ATTN_ERR_MISMATCH);
  assert_int_equal(attn_decode_step(c.layer, cache, 1, 1, x, NULL, NULL, out),
                   ATTN_ERR_MISMATCH);
  assert_int_equal(attn_decode_scratch_size(b.layer, cache, 1, NULL, &bytes),
                   ATTN_ERR_MISMATCH);
  int64_t len;
  assert_int_equal(attn_kv_cache_lengths(cache, 1, &len, NULL), ATTN_OK);
  assert_int_equal(len, 0);
  assert_int_equal(attn_decode_step(a.layer, cache, 1, 1, x, NULL, NULL, out),
                   ATTN_OK);

  attn_memory_config mc;
  attn_memory_config_init(&mc);
  mc.capacity = 4;
  attn_memory *mem;
  assert_int_equal(attn_memory_create(a.layer, &mc, &mem), ATTN_OK);
  float kv[4 * 32] = {0};
  assert_int_equal(
      attn_memory_set(b.layer, mem, 1, 4, kv, kv, NULL, NULL, NULL),
      ATTN_ERR_MISMATCH);
  assert_int_equal(
      attn_memory_set(a.layer, mem, 1, 4, kv, kv, NULL, NULL, NULL), ATTN_OK);
  assert_int_equal(attn_cross_step(c.layer, mem, 1, 1, x, NULL, NULL, out),
                   ATTN_ERR_MISMATCH);
  assert_int_equal(attn_cross_scratch_size(b.layer, mem, 1, NULL, &bytes),
                   ATTN_ERR_MISMATCH);
  assert_int_equal(attn_cross_step(a.layer, mem, 1, 1, x, NULL, NULL, out),
                   ATTN_OK);
  attn_memory_destroy(mem);
  attn_kv_cache_destroy(cache);
  ref_model_destroy(&a);
  ref_model_destroy(&b);
  ref_model_destroy(&c);
}

/* Cross-attention memory: set once, stepped over query by query and in
 * chunks, with the memory's lengths and padding and a step mask on top;
 * equals the reference forward over all queries at once. */
static void check_cross(const attn_config *cfg, bool fused, uint64_t seed) {
  ref_model m;
  assert_int_equal(ref_model_create(&m, cfg, seed), ATTN_OK);
  int64_t B = 3, Lk = 37, C = 50, E = cfg->embed_dim, H = cfg->num_heads;
  int64_t kdim = m.ref.kdim, vdim = m.ref.vdim, Lq = 60;
  ref_rng r;
  ref_rng_seed(&r, seed + 1);
  float *key = ref_random(&r, B * Lk * kdim, -1, 1);
  float *value = fused ? key : ref_random(&r, B * Lk * vdim, -1, 1);
  float *q = ref_random(&r, B * Lq * E, -1, 1);
  int64_t klen[3] = {37, 20, 1};
  uint8_t *kpad = calloc((size_t)(B * Lk), 1);
  uint8_t *spad = calloc((size_t)(B * Lk), 1);
  assert_non_null(kpad);
  assert_non_null(spad);
  for (int64_t i = 0; i < B * Lk; i++) {
    kpad[i] = ref_rng_unit(&r) < 0.15;
    spad[i] = ref_rng_unit(&r) < 0.1;
  }
  kpad[0] = 0; /* row 0 keeps key 0 so no row is empty everywhere */
  float *bias = ref_random(&r, Lq * Lk, -1, 1);

  attn_memory_config mc;
  attn_memory_config_init(&mc);
  mc.batch = B;
  mc.capacity = C;
  attn_memory *mem;
  assert_int_equal(attn_memory_create(m.layer, &mc, &mem), ATTN_OK);
  assert_int_equal(
      attn_memory_set(m.layer, mem, B, Lk, key, value, klen, kpad, NULL),
      ATTN_OK);

  /* Reference: every query at once, lengths and padding merged. */
  int64_t mlen[3] = {37, 15, 1};
  uint8_t *allpad = ref_xmalloc((size_t)(B * Lk));
  for (int64_t i = 0; i < B * Lk; i++)
    allpad[i] = kpad[i] | spad[i];
  for (int with_mask = 0; with_mask < 2; with_mask++) {
    attn_mask rm;
    attn_mask_init(&rm);
    rm.key_lengths = with_mask ? mlen : klen;
    rm.key_padding = with_mask ? allpad : kpad;
    double *want = ref_xmalloc((size_t)(B * Lq * E) * sizeof(double));
    double *ww = ref_xmalloc((size_t)(B * H * Lq * Lk) * sizeof(double));
    float *got = ref_xmalloc((size_t)(B * Lq * E) * sizeof(float));
    float *gw = ref_xmalloc((size_t)(B * H * Lq * Lk) * sizeof(float));
    if (with_mask) {
      rm.bias = bias;
      rm.bias_stride_q = Lk;
    }
    ref_forward(&m.ref, B, Lq, Lk, q, key, value, &rm, want, ww);

    /* Steps of 1..5 queries; the step mask's bias is [n, Lk], a slice. */
    int64_t done = 0;
    while (done < Lq) {
      int64_t n = ref_rng_int(&r, 1, 5);
      if (done + n > Lq)
        n = Lq - done;
      float *qs = ref_xmalloc((size_t)(B * n * E) * sizeof(float));
      float *os = ref_xmalloc((size_t)(B * n * E) * sizeof(float));
      float *ws = ref_xmalloc((size_t)(B * H * n * Lk) * sizeof(float));
      for (int64_t b = 0; b < B; b++)
        memcpy(qs + b * n * E, q + (b * Lq + done) * E,
               (size_t)(n * E) * sizeof(float));
      attn_mask sm;
      attn_mask_init(&sm);
      if (with_mask) {
        sm.key_lengths = mlen;
        sm.key_padding = spad;
        sm.bias = bias + done * Lk;
        sm.bias_stride_q = Lk;
      }
      attn_options o;
      attn_options_init(&o);
      o.attn_weights = ws;
      assert_int_equal(attn_cross_step(m.layer, mem, B, n, qs, &sm, &o, os),
                       ATTN_OK);
      for (int64_t b = 0; b < B; b++) {
        memcpy(got + (b * Lq + done) * E, os + b * n * E,
               (size_t)(n * E) * sizeof(float));
        for (int64_t h = 0; h < H; h++)
          memcpy(gw + ((b * H + h) * Lq + done) * Lk, ws + (b * H + h) * n * Lk,
                 (size_t)(n * Lk) * sizeof(float));
      }
      done += n;
      free(qs);
      free(os);
      free(ws);
    }
    assert_true(
        ref_close("cross steps", got, want, B * Lq * E, REF_RTOL, REF_ATOL));
    assert_true(ref_close("cross weights", gw, ww, B * H * Lq * Lk, REF_RTOL,
                          REF_ATOL));
    /* And the library's full cross forward over all queries at once. */
    float *full = ref_xmalloc((size_t)(B * Lq * E) * sizeof(float));
    assert_int_equal(
        attn_forward(m.layer, B, Lq, Lk, q, key, value, &rm, NULL, full),
        ATTN_OK);
    assert_true(ref_close_f("cross steps vs attn_forward", got, full,
                            B * Lq * E, REF_RTOL, REF_ATOL));
    free(full);
    free(want);
    free(ww);
    free(got);
    free(gw);
  }

  /* Setting again replaces everything (shorter len_k, no padding). */
  assert_int_equal(
      attn_memory_set(m.layer, mem, B, 9, key, value, NULL, NULL, NULL),
      ATTN_OK);
  double *want = ref_xmalloc((size_t)(B * E) * sizeof(double));
  float *short_k = ref_xmalloc((size_t)(B * 9 * kdim) * sizeof(float));
  float *short_v = ref_xmalloc((size_t)(B * 9 * vdim) * sizeof(float));
  for (int64_t b = 0; b < B; b++) {
    memcpy(short_k + b * 9 * kdim, key + b * 9 * kdim,
           (size_t)(9 * kdim) * sizeof(float));
    memcpy(short_v + b * 9 * vdim, value + b * 9 * vdim,
           (size_t)(9 * vdim) * sizeof(float));
  }
  float *q1 = ref_xmalloc((size_t)(B * E) * sizeof(float));
  float out1[3 * 64];
  for (int64_t b = 0; b < B; b++)
    memcpy(q1 + b * E, q + b * Lq * E, (size_t)E * sizeof(float));
  ref_forward(&m.ref, B, 1, 9, q1, short_k, short_v, NULL, want, NULL);
  assert_int_equal(attn_cross_step(m.layer, mem, B, 1, q1, NULL, NULL, out1),
                   ATTN_OK);
  assert_true(
      ref_close("cross after reset", out1, want, B * E, REF_RTOL, REF_ATOL));
  free(want);
  free(short_k);
  free(short_v);
  free(q1);

  attn_memory_destroy(mem);
  free(key);
  if (!fused)
    free(value);
  free(q);
  free(kpad);
  free(spad);
  free(allpad);
  free(bias);
  ref_model_destroy(&m);
}

static void test_cross_memory(void **state) {
  (void)state;
  attn_config cfg;
  attn_config_init(&cfg);
  cfg.embed_dim = 48;
  cfg.num_heads = 6;
  cfg.kdim = 40;
  cfg.vdim = 24;
  check_cross(&cfg, false, 100);
  cfg.kdim = cfg.vdim = 40;
  check_cross(&cfg, true, 101);
  cfg.kdim = cfg.vdim = 0;
  cfg.num_kv_heads = 2;
  check_cross(&cfg, true, 102);
  cfg.bias = 0;
  check_cross(&cfg, false, 103);
}

/* A memory in a caller's buffer, with caller scratch. */
static void test_memory_caller_buffer(void **state) {
  (void)state;
  attn_config cfg = self_config(32, 4, 0);
  ref_model m;
  assert_int_equal(ref_model_create(&m, &cfg, 110), ATTN_OK);
  attn_memory_config mc;
  attn_memory_config_init(&mc);
  mc.batch = 2;
  mc.capacity = 10;
  size_t bytes = 0;
  assert_int_equal(attn_memory_size(m.layer, &mc, &bytes), ATTN_OK);
  unsigned char *buf = malloc(bytes + 5);
  assert_non_null(buf);
  attn_memory *mem = NULL;
  assert_int_equal(
      attn_memory_create_in(m.layer, &mc, buf + 5, bytes - 1, &mem),
      ATTN_ERR_SCRATCH_TOO_SMALL);
  assert_int_equal(attn_memory_create_in(m.layer, &mc, buf + 5, bytes, &mem),
                   ATTN_OK);
  ref_rng r;
  ref_rng_seed(&r, 111);
  float src[2 * 10 * 32], q[2 * 32], out[2 * 32];
  ref_fill(&r, src, 2 * 10 * 32, -1, 1);
  ref_fill(&r, q, 2 * 32, -1, 1);
  float out_before[2 * 32];
  for (int i = 0; i < 64; i++)
    out[i] = out_before[i] = 3.0f;
  /* Never set: refused. */
  assert_int_equal(attn_cross_step(m.layer, mem, 2, 1, q, NULL, NULL, out),
                   ATTN_ERR_BAD_SIZE);
  assert_memory_equal(out, out_before, sizeof out);
  assert_int_equal(
      attn_memory_set(m.layer, mem, 2, 11, src, src, NULL, NULL, NULL),
      ATTN_ERR_CAPACITY);
  assert_int_equal(
      attn_memory_set(m.layer, mem, 2, 10, src, src, NULL, NULL, NULL),
      ATTN_OK);
  size_t sbytes = 0;
  assert_int_equal(attn_cross_scratch_size(m.layer, mem, 1, NULL, &sbytes),
                   ATTN_OK);
  void *scratch = malloc(sbytes);
  assert_non_null(scratch);
  attn_options o;
  attn_options_init(&o);
  o.scratch = scratch;
  o.scratch_size = sbytes;
  assert_int_equal(attn_cross_step(m.layer, mem, 2, 1, q, NULL, &o, out),
                   ATTN_OK);
  double want[2 * 32];
  ref_forward(&m.ref, 2, 1, 10, q, src, src, NULL, want, NULL);
  assert_true(
      ref_close("memory in caller buffer", out, want, 64, REF_RTOL, REF_ATOL));
  o.scratch_size = sbytes - 1;
  assert_int_equal(attn_cross_step(m.layer, mem, 2, 1, q, NULL, &o, out),
                   ATTN_ERR_SCRATCH_TOO_SMALL);
  attn_memory_destroy(mem);
  attn_memory_destroy(NULL);
  free(buf);
  free(scratch);
  ref_model_destroy(&m);
}

/* Bad arguments: a clear status, nothing changed. */
static void test_errors(void **state) {
  (void)state;
  attn_config cfg = self_config(16, 2, 0);
  ref_model m;
  assert_int_equal(ref_model_create(&m, &cfg, 120), ATTN_OK);
  attn_cache_config cc;
  attn_cache_config_init(&cc);
  attn_kv_cache *c = NULL;
  size_t bytes;
  /* capacity must be set */
  assert_int_equal(attn_kv_cache_create(m.layer, &cc, &c), ATTN_ERR_BAD_SIZE);
  assert_null(c);
  cc.capacity = 8;
  cc.window = -1;
  assert_int_equal(attn_kv_cache_create(m.layer, &cc, &c), ATTN_ERR_BAD_SIZE);
  cc.window = 0;
  cc.batch = 0;
  assert_int_equal(attn_kv_cache_size(m.layer, &cc, &bytes), ATTN_ERR_BAD_SIZE);
  cc.batch = INT64_MAX / 4;
  assert_int_equal(attn_kv_cache_size(m.layer, &cc, &bytes), ATTN_ERR_OVERFLOW);
  cc.batch = 1;
  cc.capacity = (int64_t)1 << 40;
  assert_int_equal(attn_kv_cache_size(m.layer, &cc, &bytes), ATTN_ERR_OVERFLOW);
  cc.capacity = 8;
  cc.struct_size = 4;
  assert_int_equal(attn_kv_cache_create(m.layer, &cc, &c),
                   ATTN_ERR_STRUCT_SIZE);
  attn_cache_config_init(&cc);
  cc.capacity = 8;
  cc.batch = 2;
  assert_int_equal(attn_kv_cache_create(NULL, &cc, &c), ATTN_ERR_NULL_POINTER);
  assert_int_equal(attn_kv_cache_create(m.layer, NULL, &c),
                   ATTN_ERR_NULL_POINTER);
  assert_int_equal(attn_kv_cache_create(m.layer, &cc, NULL),
                   ATTN_ERR_NULL_POINTER);
  assert_int_equal(attn_kv_cache_create(m.layer, &cc, &c), ATTN_OK);

  float x[2 * 2 * 16], out[2 * 2 * 16];
  for (int i = 0; i < 64; i++) {
    x[i] = 0.5f;
    out[i] = -2.0f;
  }
  assert_int_equal(attn_decode_step(m.layer, c, 2, 2, x, NULL, NULL, out),
                   ATTN_OK);
  for (int i = 0; i < 64; i++)
    out[i] = -2.0f;
  int64_t len[2];
  assert_int_equal(attn_decode_step(m.layer, c, 3, 2, x, NULL, NULL, out),
                   ATTN_ERR_BAD_SIZE);
  assert_int_equal(attn_decode_step(m.layer, c, 2, 0, x, NULL, NULL, out),
                   ATTN_ERR_BAD_SIZE);
  assert_int_equal(attn_decode_step(NULL, c, 2, 1, x, NULL, NULL, out),
                   ATTN_ERR_NULL_POINTER);
  assert_int_equal(attn_decode_step(m.layer, NULL, 2, 1, x, NULL, NULL, out),
                   ATTN_ERR_NULL_POINTER);
  assert_int_equal(attn_decode_step(m.layer, c, 2, 1, NULL, NULL, NULL, out),
                   ATTN_ERR_NULL_POINTER);
  assert_int_equal(attn_decode_step(m.layer, c, 2, 1, x, NULL, NULL, NULL),
                   ATTN_ERR_NULL_POINTER);
  int64_t bad[2] = {1, 3};
  attn_decode_mask dm;
  attn_decode_mask_init(&dm);
  dm.new_lengths = bad;
  assert_int_equal(attn_decode_step(m.layer, c, 2, 2, x, &dm, NULL, out),
                   ATTN_ERR_BAD_MASK);
  bad[1] = -1;
  assert_int_equal(attn_decode_step(m.layer, c, 2, 2, x, &dm, NULL, out),
                   ATTN_ERR_BAD_MASK);
  dm.struct_size = 0;
  assert_int_equal(attn_decode_step(m.layer, c, 2, 2, x, &dm, NULL, out),
                   ATTN_ERR_STRUCT_SIZE);
  attn_options o;
  attn_options_init(&o);
  o.weights_mode = 5;
  assert_int_equal(attn_decode_step(m.layer, c, 2, 2, x, NULL, &o, out),
                   ATTN_ERR_BAD_OPTION);
  o.weights_mode = 0;
  o.num_threads = -1;
  assert_int_equal(attn_decode_step(m.layer, c, 2, 2, x, NULL, &o, out),
                   ATTN_ERR_BAD_OPTION);
  /* NaN in a row that is read; the same NaN in a row that is not. */
  x[32 + 16 + 3] = NAN; /* row 1, token 1 */
  assert_int_equal(attn_decode_step(m.layer, c, 2, 2, x, NULL, NULL, out),
                   ATTN_ERR_NOT_FINITE);
  for (int i = 0; i < 64; i++)
    assert_true(out[i] == -2.0f);
  assert_int_equal(attn_kv_cache_lengths(c, 2, len, NULL), ATTN_OK);
  assert_int_equal(len[0], 2);
  assert_int_equal(len[1], 2);
  int64_t some[2] = {2, 1};
  dm.struct_size = sizeof dm;
  dm.new_lengths = some;
  assert_int_equal(attn_decode_step(m.layer, c, 2, 2, x, &dm, NULL, out),
                   ATTN_OK);
  assert_int_equal(attn_kv_cache_lengths(c, 2, len, NULL), ATTN_OK);
  assert_int_equal(len[1], 3);
  assert_int_equal(attn_kv_cache_lengths(c, 1, len, NULL), ATTN_ERR_BAD_SIZE);
  assert_int_equal(attn_kv_cache_lengths(c, 2, NULL, NULL),
                   ATTN_ERR_NULL_POINTER);
  assert_int_equal(attn_kv_cache_truncate(NULL, 2, len), ATTN_ERR_NULL_POINTER);

  /* Weights not set; a cross-attention layer cannot have a cache. */
  attn_layer *bare;
  assert_int_equal(attn_layer_create(&cfg, &bare), ATTN_OK);
  attn_kv_cache *c2;
  assert_int_equal(attn_kv_cache_create(bare, &cc, &c2), ATTN_OK);
  assert_int_equal(attn_decode_step(bare, c2, 2, 1, out, NULL, NULL, out),
                   ATTN_ERR_WEIGHTS_NOT_SET);
  attn_kv_cache_destroy(c2);
  attn_layer_destroy(bare);
  attn_config cross = cfg;
  cross.kdim = 8;
  assert_int_equal(attn_layer_create(&cross, &bare), ATTN_OK);
  assert_int_equal(attn_kv_cache_size(bare, &cc, &bytes), ATTN_ERR_BAD_SIZE);
  attn_layer_destroy(bare);

  /* Memory errors. */
  attn_memory_config mc;
  attn_memory_config_init(&mc);
  attn_memory *mem = NULL;
  assert_int_equal(attn_memory_create(m.layer, &mc, &mem), ATTN_ERR_BAD_SIZE);
  mc.capacity = 4;
  mc.batch = 2;
  assert_int_equal(attn_memory_create(m.layer, &mc, &mem), ATTN_OK);
  float kv[2 * 4 * 16];
  for (int i = 0; i < 128; i++)
    kv[i] = 0.1f;
  int64_t klen[2] = {4, 5};
  assert_int_equal(
      attn_memory_set(m.layer, mem, 2, 4, kv, kv, klen, NULL, NULL),
      ATTN_ERR_BAD_MASK);
  assert_int_equal(
      attn_memory_set(m.layer, mem, 1, 4, kv, kv, NULL, NULL, NULL),
      ATTN_ERR_BAD_SIZE);
  assert_int_equal(
      attn_memory_set(m.layer, mem, 2, 0, kv, kv, NULL, NULL, NULL),
      ATTN_ERR_BAD_SIZE);
  assert_int_equal(
      attn_memory_set(m.layer, mem, 2, 4, kv, NULL, NULL, NULL, NULL),
      ATTN_ERR_NULL_POINTER);
  kv[100] = INFINITY;
  assert_int_equal(
      attn_memory_set(m.layer, mem, 2, 4, kv, kv, NULL, NULL, NULL),
      ATTN_ERR_NOT_FINITE);
  /* Still never set. */
  assert_int_equal(attn_cross_step(m.layer, mem, 2, 1, x, NULL, NULL, out),
                   ATTN_ERR_BAD_SIZE);
  kv[100] = 0.0f;
  assert_int_equal(
      attn_memory_set(m.layer, mem, 2, 4, kv, kv, NULL, NULL, NULL), ATTN_OK);
  attn_mask bm;
  attn_mask_init(&bm);
  bm.causal = 9;
  assert_int_equal(attn_cross_step(m.layer, mem, 2, 1, x, &bm, NULL, out),
                   ATTN_ERR_BAD_MASK);
  attn_mask_init(&bm);
  int64_t mlen[2] = {0, 5};
  bm.key_lengths = mlen;
  assert_int_equal(attn_cross_step(m.layer, mem, 2, 1, x, &bm, NULL, out),
                   ATTN_ERR_BAD_MASK);
  assert_int_equal(attn_cross_step(m.layer, mem, 1, 1, x, NULL, NULL, out),
                   ATTN_ERR_BAD_SIZE);
  assert_int_equal(attn_cross_step(m.layer, mem, 2, 2, x, NULL, NULL, out),
                   ATTN_ERR_NOT_FINITE);
  x[32 + 16 + 3] = 0.0f;
  assert_int_equal(attn_cross_step(m.layer, mem, 2, 2, x, NULL, NULL, out),
                   ATTN_OK);
  assert_int_equal(attn_cross_step(m.layer, NULL, 2, 2, x, NULL, NULL, out),
                   ATTN_ERR_NULL_POINTER);

  attn_memory_destroy(mem);
  attn_kv_cache_destroy(c);
  ref_model_destroy(&m);
}

/* Many threads per step or one: the same results. */
static void test_threads(void **state) {
  (void)state;
  attn_config cfg = self_config(64, 8, 2);
  float *outs[2];
  for (int t = 0; t < 2; t++) {
    dsim s;
    dsim_init(&s, &cfg, 2, 100, 0, 100, 130);
    s.threads = t == 0 ? 1 : 4;
    for (int i = 0; i < 30; i++)
      dsim_step(&s, 3, NULL, 0.05);
    dsim_check(&s, "threads");
    outs[t] = ref_xmalloc((size_t)(2 * 100 * 64) * sizeof(float));
    memcpy(outs[t], s.y, (size_t)(2 * 100 * 64) * sizeof(float));
    dsim_free(&s);
  }
  assert_memory_equal(outs[0], outs[1], (size_t)(2 * 100 * 64) * sizeof(float));
  free(outs[0]);
  free(outs[1]);
}

/* A cache large enough for the step to split its keys over several
 * threads: the same bits on one thread and on two, and the reference's
 * output for the newest tokens; H heads over Hkv key/value heads. */
static void large_cache(int64_t H, int64_t Hkv) {
  attn_config cfg = self_config(256, H, Hkv);
  ref_model m;
  assert_int_equal(ref_model_create(&m, &cfg, 140), ATTN_OK);
  int64_t B = 2, E = 256, L = 4200, C = 4300;
  int64_t lens[2] = {4200, 4100};
  attn_cache_config cc;
  attn_cache_config_init(&cc);
  cc.batch = B;
  cc.capacity = C;
  attn_kv_cache *c1, *c2;
  assert_int_equal(attn_kv_cache_create(m.layer, &cc, &c1), ATTN_OK);
  assert_int_equal(attn_kv_cache_create(m.layer, &cc, &c2), ATTN_OK);
  ref_rng r;
  ref_rng_seed(&r, 141);
  int64_t steps = 3, total = L + steps;
  float *hist = ref_random(&r, B * total * E, -1, 1); /* [B, total, E] */
  float *x = ref_xmalloc((size_t)(B * L * E) * sizeof(float));
  float *out = ref_xmalloc((size_t)(B * L * E) * sizeof(float));
  for (int64_t b = 0; b < B; b++)
    memcpy(x + b * L * E, hist + b * total * E,
           (size_t)(lens[b] * E) * sizeof(float));
  attn_decode_mask dm;
  attn_decode_mask_init(&dm);
  dm.new_lengths = lens;
  assert_int_equal(attn_decode_step(m.layer, c1, B, L, x, &dm, NULL, out),
                   ATTN_OK);
  assert_int_equal(attn_decode_step(m.layer, c2, B, L, x, &dm, NULL, out),
                   ATTN_OK);
  float tok[2 * 256], o1[2 * 256], o2[2 * 256];
  attn_options one, two;
  attn_options_init(&one);
  attn_options_init(&two);
  one.num_threads = 1;
  two.num_threads = 2;
  for (int64_t t = 0; t < steps; t++) {
    for (int64_t b = 0; b < B; b++)
      memcpy(tok + b * E, hist + (b * total + lens[b] + t) * E,
             (size_t)E * sizeof(float));
    assert_int_equal(attn_decode_step(m.layer, c1, B, 1, tok, NULL, &one, o1),
                     ATTN_OK);
    assert_int_equal(attn_decode_step(m.layer, c2, B, 1, tok, NULL, &two, o2),
                     ATTN_OK);
    assert_memory_equal(o1, o2, sizeof o1);
  }
  /* The last token of each row against the reference over its history. */
  for (int64_t b = 0; b < B; b++) {
    int64_t n = lens[b] + steps;
    double want[256];
    attn_mask mk;
    attn_mask_init(&mk);
    mk.causal = ATTN_CAUSAL_BOTTOM_RIGHT;
    const float *h = hist + b * total * E;
    ref_forward(&m.ref, 1, 1, n, h + (n - 1) * E, h, h, &mk, want, NULL);
    assert_true(
        ref_close("large cache", o1 + b * E, want, E, REF_RTOL, REF_ATOL));
  }
  attn_kv_cache_destroy(c1);
  attn_kv_cache_destroy(c2);
  free(hist);
  free(x);
  free(out);
  ref_model_destroy(&m);
}

static void test_large_cache(void **state) {
  (void)state;
  large_cache(4, 0);
}

/* Grouped queries: four query heads per value head (the value pass's
 * rows four at a time), and two. */
static void test_large_cache_grouped(void **state) {
  (void)state;
  large_cache(8, 2);
  large_cache(4, 2);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_token_by_token),
      cmocka_unit_test(test_chunks),
      cmocka_unit_test(test_batch_sizes),
      cmocka_unit_test(test_prefill_then_tokens),
      cmocka_unit_test(test_window),
      cmocka_unit_test(test_truncate),
      cmocka_unit_test(test_truncate_window),
      cmocka_unit_test(test_reorder),
      cmocka_unit_test(test_capacity),
      cmocka_unit_test(test_step_weights),
      cmocka_unit_test(test_empty_rows),
      cmocka_unit_test(test_caller_buffer),
      cmocka_unit_test(test_reset),
      cmocka_unit_test(test_mismatch),
      cmocka_unit_test(test_cross_memory),
      cmocka_unit_test(test_memory_caller_buffer),
      cmocka_unit_test(test_errors),
      cmocka_unit_test(test_threads),
      cmocka_unit_test(test_large_cache),
      cmocka_unit_test(test_large_cache_grouped),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
