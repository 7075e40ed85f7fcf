/* SPDX-License-Identifier: MIT */
/* ab_forward: two builds of libattn, forward pass against forward pass, in
 * one process.
 *
 * Loads two libattn shared libraries (dlopen, each with its own symbols),
 * gives each the same layer (seeded weights), then alternates attn_forward
 * calls on the same inputs between them, the order swapping every pair.
 * On a shared machine whose speed drifts by tens of percent within
 * seconds, consecutive calls see nearly the same machine: the per-pair
 * time ratio old / new is the figure (above 1: the second library is
 * faster), printed as the median with its interquartile range and each
 * library's median call time. bench/compare_builds.py alternates whole
 * rounds of cases instead, which this drift blurs when the difference is
 * a few percent.
 *
 * usage: ab_forward OLD.so NEW.so PAIRS B LQ LK [E [H [KDIM [CAUSAL]]]]
 * (defaults E 512, H 8, KDIM = VDIM = E, CAUSAL 0; key and value are the
 * query when LQ == LK and KDIM == E: the fused self-attention path) */
#include "attn/attn.h"

#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

#include "ab_util.h"
#include "bench_util.h"

typedef struct {
  void *dl;
  ab_layer_api api;
  attn_status (*mask_init)(attn_mask *, size_t);
  attn_status (*forward)(const attn_layer *, int64_t, int64_t, int64_t,
                         const float *, const float *, const float *,
                         const attn_mask *, const attn_options *, float *);
  attn_layer *layer;
  attn_mask mask;
} build;

static void open_build(build *b, const char *path) {
  b->dl = open_library(path);
  ab_bind_layer(b->dl, &b->api);
  BIND(b, mask_init, "attn_mask_init_sized");
  BIND(b, forward, "attn_forward");
}

static float *inputs(int64_t n, uint64_t salt) {
  float *x = xmalloc((size_t)n * sizeof(float));
  for (int64_t i = 0; i < n; i++)
    x[i] = (float)(((uint64_t)i + salt) * 2654435761u % 1000) / 1000.0f - 0.5f;
  return x;
}

int main(int argc, char **argv) {
  ab_prog = "ab_forward";
  if (argc < 7) {
    fprintf(stderr, "usage: ab_forward OLD.so NEW.so PAIRS B LQ LK [E [H "
                    "[KDIM [CAUSAL]]]]\n");
    return 2;
  }
  int pairs = atoi(argv[3]);
  int64_t B = atoll(argv[4]), Lq = atoll(argv[5]), Lk = atoll(argv[6]);
  int64_t E = argc > 7 ? atoll(argv[7]) : 512;
  int64_t H = argc > 8 ? atoll(argv[8]) : 8;
  int64_t kdim = argc > 9 ? atoll(argv[9]) : E;
  int causal = argc > 10 ? atoi(argv[10]) : 0;
  if (pairs <= 0 || B <= 0 || Lq <= 0 || Lk <= 0 || E <= 0 || H <= 0 ||
      kdim <= 0 || causal < 0 || causal > 2)
    die("bad arguments", NULL);
  bool self = Lq == Lk && kdim == E;
  float *q = inputs(B * Lq * E, 0);
  float *kv = self ? q : inputs(B * Lk * kdim, 7);
  float *out = xmalloc((size_t)(B * Lq * E) * sizeof(float));
  build b[2];
  for (int k = 0; k < 2; k++) {
    open_build(&b[k], argv[1 + k]);
    attn_config c;
    b[k].api.config_init(&c, sizeof c);
    c.embed_dim = E;
    c.num_heads = H;
    c.kdim = c.vdim = kdim;
    check(b[k].api.layer_create(&c, &b[k].layer), "attn_layer_create");
    check(b[k].api.init_weights(b[k].layer, 1), "attn_layer_init_weights");
    b[k].mask_init(&b[k].mask, sizeof b[k].mask);
    b[k].mask.causal = causal;
    for (int w = 0; w < 2; w++) /* warm-up: threads, scratch, caches */
      check(
          b[k].forward(b[k].layer, B, Lq, Lk, q, kv, kv, &b[k].mask, NULL, out),
          "attn_forward");
  }
  double *t[2], *r = xmalloc((size_t)pairs * sizeof(double));
  for (int k = 0; k < 2; k++)
    t[k] = xmalloc((size_t)pairs * sizeof(double));
  for (int i = 0; i < pairs; i++)
    for (int s = 0; s < 2; s++) {
      int k = i % 2 ? 1 - s : s;
      double t0 = now();
      check(
          b[k].forward(b[k].layer, B, Lq, Lk, q, kv, kv, &b[k].mask, NULL, out),
          "attn_forward");
      t[k][i] = now() - t0;
    }
  for (int i = 0; i < pairs; i++)
    r[i] = t[0][i] / t[1][i];
  double rm = median(r, pairs);
  printf("B=%lld Lq=%lld Lk=%lld E=%lld H=%lld kdim=%lld causal=%d: old/new "
         "time, median of %d pairs %.3f (IQR %.3f-%.3f); old %.3f ms, new "
         "%.3f ms\n",
         (long long)B, (long long)Lq, (long long)Lk, (long long)E, (long long)H,
         (long long)kdim, causal, pairs, rm, r[pairs / 4], r[3 * pairs / 4],
         median(t[0], pairs) * 1e3, median(t[1], pairs) * 1e3);
  for (int k = 0; k < 2; k++) {
    b[k].api.layer_destroy(b[k].layer);
    free(t[k]);
  }
  free(r);
  if (kv != q)
    free(kv);
  free(q);
  free(out);
  return 0;
}
