/* SPDX-License-Identifier: MIT */
/* ab_decode: two builds of libattn, step against step, in one process.
 *
 * Loads two libattn shared libraries (dlopen, each with its own symbols),
 * gives each a layer (8 heads over num_kv_heads, E = 512, the same seeded
 * weights) and a cache holding L tokens per row, then alternates
 * single-token decoding steps between them, the order swapping every
 * pair. Each step follows its own pass of a 256 MiB read-bandwidth probe
 * on the call's threads, which evicts both libraries' data from the
 * caches, as bench_decode does. Machine load that drifts during a run
 * then hits both builds alike: the per-pair time ratio old / new is the
 * figure (above 1: the second library is faster), printed as the median
 * and interquartile range, with each library's median step and fraction
 * of the memory-bandwidth limit (bench_decode's definition).
 *
 * usage: ab_decode OLD.so NEW.so B L PAIRS [KV_HEADS [THREADS]]
 * (THREADS: 1 or 2 = the default) */
#include "attn/attn.h"

#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#if defined(__linux__)
#include <sys/mman.h>
#endif

#include "ab_util.h"
#include "bench_util.h"

typedef struct {
  void *dl;
  ab_layer_api api;
  attn_status (*cache_config_init)(attn_cache_config *, size_t);
  attn_status (*cache_create)(const attn_layer *, const attn_cache_config *,
                              attn_kv_cache **);
  void (*cache_destroy)(attn_kv_cache *);
  attn_status (*reorder)(attn_kv_cache *, int64_t, const int64_t *);
  attn_status (*mask_init)(attn_decode_mask *, size_t);
  attn_status (*step)(const attn_layer *, attn_kv_cache *, int64_t, int64_t,
                      const float *, const attn_decode_mask *,
                      const attn_options *, float *);
  attn_layer *layer;
  attn_kv_cache *cache;
} build;

static void open_build(build *b, const char *path) {
  b->dl = open_library(path);
  ab_bind_layer(b->dl, &b->api);
  BIND(b, cache_config_init, "attn_cache_config_init_sized");
  BIND(b, cache_create, "attn_kv_cache_create");
  BIND(b, cache_destroy, "attn_kv_cache_destroy");
  BIND(b, reorder, "attn_kv_cache_reorder");
  BIND(b, mask_init, "attn_decode_mask_init_sized");
  BIND(b, step, "attn_decode_step");
}

/* Layer and cache: row 0 takes an L-token prompt, the other rows are
 * copies of it; then one warm-up step. */
static void make_case(build *b, int64_t B, int64_t L, int64_t G, int threads,
                      int64_t capacity, const float *x, float *out) {
  attn_config c;
  b->api.config_init(&c, sizeof c);
  c.embed_dim = 512;
  c.num_heads = 8;
  c.num_kv_heads = G;
  c.num_threads = threads;
  check(b->api.layer_create(&c, &b->layer), "attn_layer_create");
  check(b->api.init_weights(b->layer, 1), "attn_layer_init_weights");
  attn_cache_config cc;
  b->cache_config_init(&cc, sizeof cc);
  cc.batch = B;
  cc.capacity = capacity;
  check(b->cache_create(b->layer, &cc, &b->cache), "attn_kv_cache_create");
  int64_t *rows = calloc((size_t)B, sizeof *rows);
  if (!rows)
    die("out of memory", NULL);
  rows[0] = L;
  attn_decode_mask m;
  b->mask_init(&m, sizeof m);
  m.new_lengths = rows;
  check(b->step(b->layer, b->cache, B, L, x, &m, NULL, out), "prompt");
  rows[0] = 0;
  check(b->reorder(b->cache, B, rows), "attn_kv_cache_reorder");
  free(rows);
  check(b->step(b->layer, b->cache, B, 1, x, NULL, NULL, out), "warm-up");
}

/* The probe: a sum over its part of the array (bench_sum). */
typedef struct {
  const float *x;
  size_t n;
  float sum;
} part;

static void *sum_part(void *arg) {
  part *p = arg;
  p->sum = bench_sum(p->x, p->n);
  return NULL;
}

static volatile float sink;

/* GB/s of one pass over x[n] on 1 or 2 threads. */
static double probe(const float *x, size_t n, int threads) {
  part p[2] = {{x, n / 2, 0}, {x + n / 2, n - n / 2, 0}};
  pthread_t t;
  double t0 = now();
  if (threads == 1) {
    p[0].n = n;
    sum_part(&p[0]);
  } else {
    pthread_create(&t, NULL, sum_part, &p[1]);
    sum_part(&p[0]);
    pthread_join(t, NULL);
  }
  double dt = now() - t0;
  sink = p[0].sum + p[1].sum;
  return (double)n * sizeof(float) / dt / 1e9;
}

static float *probe_array(size_t n) {
  float *x = NULL;
  if (posix_memalign((void **)&x, (size_t)2 << 20, n * sizeof(float)))
    die("out of memory", NULL);
#if defined(__linux__) && defined(MADV_HUGEPAGE)
  (void)madvise(x, n * sizeof(float), MADV_HUGEPAGE);
#endif
  for (size_t i = 0; i < n; i++)
    x[i] = (float)(i & 1023) * 1e-3f;
  return x;
}

int main(int argc, char **argv) {
  if (argc < 6) {
    fprintf(stderr, "usage: ab_decode OLD.so NEW.so B L PAIRS [KV_HEADS "
                    "[THREADS]]\n");
    return 2;
  }
  ab_prog = "ab_decode";
  int64_t B = atoll(argv[3]), L = atoll(argv[4]);
  int pairs = atoi(argv[5]);
  int64_t G = argc > 6 ? atoll(argv[6]) : 2;
  int threads = argc > 7 ? atoi(argv[7]) : 2;
  if (B <= 0 || L <= 0 || pairs <= 0 || G <= 0 || 8 % G != 0 ||
      (threads != 1 && threads != 2))
    die("bad arguments", NULL);
  int64_t E = 512, KV = G * (E / 8);
  size_t nprobe = (size_t)256 << 18; /* 256 MiB of floats */
  float *big = probe_array(nprobe);
  float *x = xmalloc((size_t)(B * L * E) * sizeof(float));
  float *out = xmalloc((size_t)(B * L * E) * sizeof(float));
  for (int64_t i = 0; i < B * L * E; i++)
    x[i] = (float)((uint64_t)i * 2654435761u % 1000) / 1000.0f - 0.5f;
  build b[2];
  for (int k = 0; k < 2; k++) {
    open_build(&b[k], argv[1 + k]);
    make_case(&b[k], B, L, G, threads, L + pairs + 2, x, out);
  }
  double *t[2], *bw[2], *r = xmalloc((size_t)pairs * sizeof(double));
  for (int k = 0; k < 2; k++) {
    t[k] = xmalloc((size_t)pairs * sizeof(double));
    bw[k] = xmalloc((size_t)pairs * sizeof(double));
  }
  for (int i = 0; i < pairs; i++)
    for (int q = 0; q < 2; q++) {
      int k = i % 2 ? 1 - q : q;
      bw[k][i] = probe(big, nprobe, threads);
      double t0 = now();
      check(b[k].step(b[k].layer, b[k].cache, B, 1, x, NULL, NULL, out),
            "step");
      t[k][i] = now() - t0;
    }
  /* Bytes of the middle step: weights, biases, the keys and values held,
   * the new tokens' inputs and outputs. */
  double held = (double)L + 2.0 + pairs / 2.0;
  double bytes = 4.0 * ((double)(2 * E * E + 2 * KV * E + 2 * E + 2 * KV) +
                        (double)B * (held * 2.0 * (double)KV + 2.0 * E));
  for (int i = 0; i < pairs; i++)
    r[i] = t[0][i] / t[1][i];
  double rm = median(r, pairs);
  printf("B=%lld L=%lld kv_heads=%lld threads=%d: old/new step time, median "
         "of %d pairs %.3f (IQR %.3f-%.3f)\n",
         (long long)B, (long long)L, (long long)G, threads, pairs, rm,
         r[pairs / 4], r[3 * pairs / 4]);
  for (int k = 0; k < 2; k++) {
    for (int i = 0; i < pairs; i++)
      r[i] = bytes / (bw[k][i] * 1e9) / t[k][i];
    double fm = median(r, pairs), lo = r[pairs / 4], hi = r[3 * pairs / 4];
    printf("  %s: step %.3f ms, fraction of the limit %.2f (IQR %.2f-%.2f)\n",
           k ? "new" : "old", median(t[k], pairs) * 1e3, fm, lo, hi);
    b[k].cache_destroy(b[k].cache);
    b[k].api.layer_destroy(b[k].layer);
    free(t[k]);
    free(bw[k]);
  }
  free(r);
  free(x);
  free(out);
  free(big);
  return 0;
}
