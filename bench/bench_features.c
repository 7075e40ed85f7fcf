/* SPDX-License-Identifier: MIT */
/* bench_features: what the decoder attention features cost. Times a
 * forward pass and a one-token decoding step of a layer with each feature
 * (rotary embeddings, QK-norm, ALiBi, soft-capping, sinks) against the same
 * layer without it, interleaving the variants run by run and reporting
 * medians and the ratio to the plain layer measured in the same run.
 *
 *   bench_features [--batch B] [--len L] [--embed E] [--heads H]
 *                  [--kv-heads HKV] [--cache N] [--reps R] [--threads T]
 *                  [--only VARIANT]
 *
 * Many short rows (--batch 64 --len 32) leave the projections, where the
 * rotation and the norm run, as most of a forward pass. --only runs one
 * variant (plain, rope, rope+qk_norm, alibi, softcap, sinks or all), for
 * a profiler: `perf record bench_features --only rope` then `perf report`
 * gives the share of the time spent rotating.
 *
 * docs/PERFORMANCE.md ("Decoder attention features") has the figures. */
#include "attn/attn.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

enum { VARIANTS = 7 };
static const char *const names[VARIANTS] = {
    "plain", "rope", "rope+qk_norm", "alibi", "softcap", "sinks", "all"};

static double now(void) {
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return (double)t.tv_sec + 1e-9 * (double)t.tv_nsec;
}

static void check(attn_status st, const char *what) {
  if (st != ATTN_OK) {
    fprintf(stderr, "%s: %s (%s)\n", what, attn_status_string(st),
            attn_last_error());
    exit(1);
  }
}

static attn_layer *make(int v, int64_t E, int64_t H, int64_t Hkv) {
  attn_rope_config rope;
  check(attn_rope_config_init(&rope), "rope init");
  attn_config c;
  check(attn_config_init(&c), "config init");
  c.embed_dim = E;
  c.num_heads = H;
  c.num_kv_heads = Hkv;
  c.bias = 0;
  if (v == 1 || v == 2 || v == 6)
    c.rope = &rope;
  if (v == 2 || v == 6)
    c.qk_norm = ATTN_QK_NORM_HEAD;
  if (v == 3 || v == 6)
    c.alibi = ATTN_ALIBI_CAUSAL;
  if (v == 4 || v == 6)
    c.softcap = 50.0;
  if (v == 5 || v == 6)
    c.sinks = 1;
  attn_layer *l = NULL;
  check(attn_layer_create(&c, &l), "create");
  check(attn_layer_init_weights(l, 1), "init weights");
  return l;
}

static int cmp(const void *a, const void *b) {
  double x = *(const double *)a, y = *(const double *)b;
  return (x > y) - (x < y);
}

static double median(double *t, int n) {
  qsort(t, (size_t)n, sizeof *t, cmp);
  return n % 2 ? t[n / 2] : 0.5 * (t[n / 2 - 1] + t[n / 2]);
}

/* The one variant to run (--only), or -1 for all. */
static int only = -1;

static void report(const char *what, double t[VARIANTS][64], int reps) {
  double base = 0;
  printf("%s\n", what);
  for (int v = 0; v < VARIANTS; v++) {
    if (only >= 0 && v != only)
      continue;
    double m = median(t[v], reps);
    if (v == 0)
      base = m;
    if (base > 0)
      printf("  %-14s median %9.3f ms   ratio to plain %.3f\n", names[v],
             1e3 * m, m / base);
    else
      printf("  %-14s median %9.3f ms\n", names[v], 1e3 * m);
  }
}

int main(int argc, char **argv) {
  int64_t Bt = 1, L = 2048, E = 1024, H = 16, Hkv = 4, N = 4096;
  int reps = 9, threads = 0;
  for (int i = 1; i + 1 < argc; i += 2) {
    long long val = atoll(argv[i + 1]);
    if (!strcmp(argv[i], "--only")) {
      for (int v = 0; v < VARIANTS; v++)
        if (!strcmp(argv[i + 1], names[v]))
          only = v;
      if (only < 0) {
        fprintf(stderr, "unknown variant %s\n", argv[i + 1]);
        return 2;
      }
    } else if (!strcmp(argv[i], "--batch"))
      Bt = val;
    else if (!strcmp(argv[i], "--len"))
      L = val;
    else if (!strcmp(argv[i], "--embed"))
      E = val;
    else if (!strcmp(argv[i], "--heads"))
      H = val;
    else if (!strcmp(argv[i], "--kv-heads"))
      Hkv = val;
    else if (!strcmp(argv[i], "--cache"))
      N = val;
    else if (!strcmp(argv[i], "--reps"))
      reps = (int)val;
    else if (!strcmp(argv[i], "--threads"))
      threads = (int)val;
  }
  if (reps < 1 || reps > 64) {
    fprintf(stderr, "--reps must be in [1, 64]\n");
    return 2;
  }
  attn_layer *layers[VARIANTS];
  for (int v = 0; v < VARIANTS; v++)
    layers[v] = make(v, E, H, Hkv);
  int64_t big = (Bt * L > N ? Bt * L : N) * E;
  float *x = malloc((size_t)big * sizeof(float));
  float *out = malloc((size_t)big * sizeof(float));
  if (!x || !out)
    return 1;
  uint64_t s = 1;
  for (int64_t i = 0; i < big; i++) {
    s = s * 6364136223846793005ull + 1442695040888963407ull;
    x[i] = (float)((double)(s >> 40) / (double)(1ull << 24)) - 0.5f;
  }
  attn_options o;
  check(attn_options_init(&o), "options");
  o.num_threads = threads;
  attn_mask m;
  check(attn_mask_init(&m), "mask");
  m.causal = ATTN_CAUSAL_TOP_LEFT;
  printf("E %lld, heads %lld, kv heads %lld, head_dim %lld; %d runs each, "
         "variants interleaved\n",
         (long long)E, (long long)H, (long long)Hkv, (long long)(E / H), reps);

  static double t[VARIANTS][64];
  for (int r = 0; r < reps; r++)
    for (int v = 0; v < VARIANTS; v++) {
      if (only >= 0 && v != only)
        continue;
      double t0 = now();
      check(attn_self_forward(layers[v], Bt, L, x, &m, &o, out), "forward");
      t[v][r] = now() - t0;
    }
  char what[128];
  snprintf(what, sizeof what,
           "forward, %lld x %lld tokens, causal:", (long long)Bt, (long long)L);
  report(what, t, reps);

  attn_kv_cache *caches[VARIANTS];
  attn_cache_config cc;
  check(attn_cache_config_init(&cc), "cache config");
  cc.capacity = N;
  int64_t held = N - 1;
  for (int v = 0; v < VARIANTS; v++) {
    check(attn_kv_cache_create(layers[v], &cc, &caches[v]), "cache");
    if (only < 0 || v == only)
      check(attn_decode_step(layers[v], caches[v], 1, held, x, NULL, &o, out),
            "prompt");
  }
  for (int r = 0; r < reps; r++)
    for (int v = 0; v < VARIANTS; v++) {
      if (only >= 0 && v != only)
        continue;
      double t0 = 0, best = 1e9;
      for (int k = 0; k < 20; k++) { /* 20 steps, the fastest counts */
        t0 = now();
        check(attn_decode_step(layers[v], caches[v], 1, 1, x + k * E, NULL, &o,
                               out),
              "step");
        double dt = now() - t0;
        best = dt < best ? dt : best;
        check(attn_kv_cache_truncate(caches[v], 1, &held), "truncate");
      }
      t[v][r] = best;
    }
  snprintf(what, sizeof what,
           "decoding step, 1 token over %lld cached (fastest of 20):",
           (long long)held);
  report(what, t, reps);
  for (int v = 0; v < VARIANTS; v++) {
    attn_kv_cache_destroy(caches[v]);
    attn_layer_destroy(layers[v]);
  }
  free(x);
  free(out);
  return 0;
}
