/* SPDX-License-Identifier: MIT */
/* The decoding simulator of decode_sim.h. */
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

void dsim_init(dsim *s, const attn_config *cfg, int64_t B, int64_t C, int64_t W,
               int64_t maxlen, uint64_t seed) {
  memset(s, 0, sizeof *s);
  assert_int_equal(ref_model_create(&s->m, cfg, seed), ATTN_OK);
  s->B = B;
  s->E = cfg->embed_dim;
  s->H = cfg->num_heads;
  s->C = C;
  s->W = W;
  s->maxlen = maxlen;
  attn_cache_config cc;
  attn_cache_config_init(&cc);
  cc.batch = B;
  cc.capacity = C;
  cc.window = W;
  assert_int_equal(attn_kv_cache_create(s->m.layer, &cc, &s->cache), ATTN_OK);
  s->x = calloc((size_t)(B * maxlen * s->E), sizeof(float));
  s->y = calloc((size_t)(B * maxlen * s->E), sizeof(float));
  s->pad = calloc((size_t)(B * maxlen), 1);
  s->len = calloc((size_t)B, sizeof(int64_t));
  assert_non_null(s->x);
  assert_non_null(s->y);
  assert_non_null(s->pad);
  assert_non_null(s->len);
  ref_rng_seed(&s->rng, seed ^ 0x5eedu);
}

void dsim_free(dsim *s) {
  attn_kv_cache_destroy(s->cache);
  ref_model_destroy(&s->m);
  free(s->x);
  free(s->y);
  free(s->pad);
  free(s->len);
  memset(s, 0, sizeof *s);
}

static void check_lengths(dsim *s) {
  int64_t *got = ref_xmalloc((size_t)s->B * sizeof(int64_t));
  int64_t *first = ref_xmalloc((size_t)s->B * sizeof(int64_t));
  assert_int_equal(attn_kv_cache_lengths(s->cache, s->B, got, first), ATTN_OK);
  for (int64_t b = 0; b < s->B; b++) {
    assert_int_equal(got[b], s->len[b]);
    /* A row holds at most C tokens and, with a window, never drops one a
     * query may still need. */
    assert_true(first[b] >= 0 && got[b] - first[b] <= s->C);
    if (s->W == 0)
      assert_int_equal(first[b], 0);
    else
      assert_true(first[b] <= (got[b] >= s->W ? got[b] - s->W + 1 : 0));
  }
  free(got);
  free(first);
}

void dsim_random_lengths(dsim *s, int64_t n, int64_t *lens) {
  for (int64_t b = 0; b < s->B; b++)
    lens[b] = ref_rng_unit(&s->rng) < 0.7 ? n : ref_rng_int(&s->rng, 0, n);
}

void dsim_step(dsim *s, int64_t n, const int64_t *new_lengths,
               double pad_rate) {
  int64_t B = s->B, E = s->E;
  float *x = ref_xmalloc((size_t)(B * n * E) * sizeof(float));
  float *out = ref_xmalloc((size_t)(B * n * E) * sizeof(float));
  uint8_t *pad = ref_xmalloc((size_t)(B * n));
  for (int64_t b = 0; b < B; b++) {
    int64_t add = new_lengths ? new_lengths[b] : n;
    assert_true(s->len[b] + add <= s->maxlen);
    ref_fill(&s->rng, x + b * n * E, add * E, -1, 1);
    /* Tokens beyond a row's new length must not be read. */
    for (int64_t i = add * E; i < n * E; i++)
      x[b * n * E + i] = NAN;
    for (int64_t i = 0; i < n; i++)
      pad[b * n + i] = ref_rng_unit(&s->rng) < pad_rate;
  }
  for (int64_t i = 0; i < B * n * E; i++)
    out[i] = 1234.5f;
  attn_decode_mask dm;
  attn_decode_mask_init(&dm);
  dm.new_lengths = new_lengths;
  dm.new_padding = pad_rate > 0 ? pad : NULL;
  attn_options o;
  attn_options_init(&o);
  o.num_threads = s->threads;
  attn_status st =
      attn_decode_step(s->m.layer, s->cache, B, n, x, &dm, &o, out);
  if (st != ATTN_OK)
    print_message("attn_decode_step: %s\n", attn_last_error());
  assert_int_equal(st, ATTN_OK);
  for (int64_t b = 0; b < B; b++) {
    int64_t add = new_lengths ? new_lengths[b] : n;
    int64_t p = s->len[b];
    memcpy(s->x + (b * s->maxlen + p) * E, x + b * n * E,
           (size_t)(add * E) * sizeof(float));
    memcpy(s->y + (b * s->maxlen + p) * E, out + b * n * E,
           (size_t)(add * E) * sizeof(float));
    if (pad_rate > 0)
      memcpy(s->pad + b * s->maxlen + p, pad + b * n, (size_t)add);
    for (int64_t i = add * E; i < n * E; i++)
      assert_true(out[b * n * E + i] == 0.0f);
    s->len[b] += add;
  }
  s->steps++;
  check_lengths(s);
  free(x);
  free(out);
  free(pad);
}

void dsim_truncate(dsim *s, const int64_t *lens) {
  assert_int_equal(attn_kv_cache_truncate(s->cache, s->B, lens), ATTN_OK);
  for (int64_t b = 0; b < s->B; b++) {
    assert_true(lens[b] <= s->len[b]);
    int64_t keep = lens[b], L = s->maxlen, E = s->E;
    /* Forget the history past the new length, as a fresh run would. */
    memset(s->x + (b * L + keep) * E, 0,
           (size_t)((L - keep) * E) * sizeof(float));
    memset(s->y + (b * L + keep) * E, 0,
           (size_t)((L - keep) * E) * sizeof(float));
    memset(s->pad + b * L + keep, 0, (size_t)(L - keep));
    s->len[b] = keep;
  }
  check_lengths(s);
}

void dsim_reorder(dsim *s, const int64_t *src) {
  assert_int_equal(attn_kv_cache_reorder(s->cache, s->B, src), ATTN_OK);
  int64_t B = s->B, L = s->maxlen, E = s->E;
  float *x = ref_xmalloc((size_t)(B * L * E) * sizeof(float));
  float *y = ref_xmalloc((size_t)(B * L * E) * sizeof(float));
  uint8_t *pad = ref_xmalloc((size_t)(B * L));
  int64_t *len = ref_xmalloc((size_t)B * sizeof(int64_t));
  for (int64_t b = 0; b < B; b++) {
    memcpy(x + b * L * E, s->x + src[b] * L * E,
           (size_t)(L * E) * sizeof(float));
    memcpy(y + b * L * E, s->y + src[b] * L * E,
           (size_t)(L * E) * sizeof(float));
    memcpy(pad + b * L, s->pad + src[b] * L, (size_t)L);
    len[b] = s->len[src[b]];
  }
  free(s->x);
  free(s->y);
  free(s->pad);
  free(s->len);
  s->x = x;
  s->y = y;
  s->pad = pad;
  s->len = len;
  check_lengths(s);
}

void dsim_check(dsim *s, const char *what) {
  int64_t B = s->B, E = s->E, L = 0;
  for (int64_t b = 0; b < B; b++)
    L = s->len[b] > L ? s->len[b] : L;
  if (L == 0)
    return;
  /* The history as one batch [B, L, E]; rows shorter than L are cut by
   * key_lengths (their later queries are not compared). */
  float *x = calloc((size_t)(B * L * E), sizeof(float));
  uint8_t *pad = calloc((size_t)(B * L), 1);
  double *want = ref_xmalloc((size_t)(B * L * E) * sizeof(double));
  assert_non_null(x);
  assert_non_null(pad);
  for (int64_t b = 0; b < B; b++) {
    memcpy(x + b * L * E, s->x + b * s->maxlen * E,
           (size_t)(s->len[b] * E) * sizeof(float));
    memcpy(pad + b * L, s->pad + b * s->maxlen, (size_t)s->len[b]);
  }
  attn_mask m;
  attn_mask_init(&m);
  m.causal = ATTN_CAUSAL_TOP_LEFT;
  m.key_lengths = s->len;
  m.key_padding = pad;
  m.window = s->W;
  ref_forward(&s->m.ref, B, L, L, x, x, x, &m, want, NULL);

  /* The library's own full forward over the same history. */
  float *full = ref_xmalloc((size_t)(B * L * E) * sizeof(float));
  assert_int_equal(attn_self_forward(s->m.layer, B, L, x, &m, NULL, full),
                   ATTN_OK);

  int64_t total = 0;
  for (int64_t b = 0; b < B; b++)
    total += s->len[b] * E;
  float *got = ref_xmalloc((size_t)total * sizeof(float));
  float *fwd = ref_xmalloc((size_t)total * sizeof(float));
  double *ref = ref_xmalloc((size_t)total * sizeof(double));
  int64_t k = 0;
  for (int64_t b = 0; b < B; b++) {
    memcpy(got + k, s->y + b * s->maxlen * E,
           (size_t)(s->len[b] * E) * sizeof(float));
    memcpy(fwd + k, full + b * L * E, (size_t)(s->len[b] * E) * sizeof(float));
    memcpy(ref + k, want + b * L * E, (size_t)(s->len[b] * E) * sizeof(double));
    k += s->len[b] * E;
  }
  char buf[200];
  snprintf(buf, sizeof buf, "%s (after %lld steps, %lld positions)", what,
           (long long)s->steps, (long long)(total / E));
  assert_true(ref_close(buf, got, ref, total, REF_RTOL, REF_ATOL));
  snprintf(buf, sizeof buf, "%s vs attn_self_forward", what);
  assert_true(ref_close_f(buf, got, fwd, total, REF_RTOL, REF_ATOL));
  free(full);
  free(fwd);
  free(x);
  free(pad);
  free(want);
  free(got);
  free(ref);
}
