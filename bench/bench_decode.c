/* SPDX-License-Identifier: MIT */
/* bench_decode: incremental decoding speed of libattn.
 *
 * For each batch size and context length L it fills a KV cache with L
 * tokens (one prefill step), then times single-token decoding steps and
 * prints, per context:
 *   - tokens/s of the cached step (batch tokens per step, median step);
 *   - the same for the alternative without a cache: one full causal
 *     self-attention forward over the L + 1 tokens for every new token;
 *   - the memory-bandwidth limit of a step: the bytes one step must read
 *     (the layer's weights plus every cached key and value of the batch)
 *     divided by a read bandwidth measured in the same process (summing a
 *     large float array on as many threads as the step uses), and the
 *     fraction of that limit the step reaches.
 * Output: per case a table row and a JSON line (the lines starting with
 * '{').
 * Run `bench_decode --help` for the options; docs/DECODING.md has the
 * commands behind the published figures. */
/* madvise(MADV_HUGEPAGE) is a Linux extension. */
#if defined(__linux__) && !defined(_DEFAULT_SOURCE)
#define _DEFAULT_SOURCE
#endif

#include "attn/attn.h"

#include <math.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#if defined(__linux__)
#include <sys/mman.h>
#endif

#include "bench_util.h"

static void *xmalloc(size_t n) {
  void *p = malloc(n);
  if (!p) {
    fprintf(stderr, "bench_decode: out of memory (%zu bytes)\n", n);
    exit(1);
  }
  return p;
}

static void check(attn_status st, const char *what) {
  if (st != ATTN_OK) {
    fprintf(stderr, "bench_decode: %s: %s (%s)\n", what, attn_status_string(st),
            attn_last_error());
    exit(1);
  }
}

/* Read bandwidth ------------------------------------------------------- */

/* Where the sums go, so the compiler cannot drop the reads. */
static volatile float bench_sink;

typedef struct {
  const float *x;
  size_t n;
  float sum;
} sum_job;

/* Sixteen independent sums so the loop vectorises without reassociating
 * a single sum (no -ffast-math needed). */
static void *sum_part(void *p) {
  sum_job *j = p;
  float acc[16] = {0};
  size_t i = 0;
  for (; i + 16 <= j->n; i += 16)
    for (int k = 0; k < 16; k++)
      acc[k] += j->x[i + k];
  for (; i < j->n; i++)
    acc[0] += j->x[i];
  float s = 0;
  for (int k = 0; k < 16; k++)
    s += acc[k];
  j->sum = s;
  return NULL;
}

/* Median GB/s of summing n floats on `threads` threads, over `runs`. */
static double read_bandwidth(const float *x, size_t n, int threads, int runs,
                             float *sink) {
  double t[32];
  if (runs > 32)
    runs = 32;
  for (int r = 0; r < runs; r++) {
    sum_job jobs[64];
    pthread_t tid[64];
    size_t per = n / (size_t)threads;
    double t0 = now();
    for (int k = 0; k < threads; k++) {
      jobs[k].x = x + (size_t)k * per;
      jobs[k].n = k == threads - 1 ? n - (size_t)k * per : per;
      if (k > 0)
        pthread_create(&tid[k], NULL, sum_part, &jobs[k]);
    }
    sum_part(&jobs[0]);
    for (int k = 1; k < threads; k++)
      pthread_join(tid[k], NULL);
    t[r] = now() - t0;
    for (int k = 0; k < threads; k++)
      *sink += jobs[k].sum;
  }
  return (double)n * sizeof(float) / median(t, runs) / 1e9;
}

/* Cases ------------------------------------------------------------------ */

typedef struct {
  int64_t embed, heads, kv_heads;
  int steps;          /* timed single-token steps per case */
  double full_budget; /* seconds of full-forward reruns per case */
  int threads;        /* 0 = all cores */
  int no_full;
} settings;

typedef struct {
  double step_s, full_s;
  int full_reps;
  double bytes;
  double bw_gbs;   /* median of the bandwidth measured between the steps */
  double fraction; /* median over rounds of (limit time / step time) */
} result;

/* The array summed for the read bandwidth, and the threads summing it. */
typedef struct {
  const float *x;
  size_t n;
  int threads;
} bw_probe;

#define ROUNDS 8

static void fill(float *x, size_t n, uint64_t *state) {
  for (size_t i = 0; i < n; i++) {
    *state = *state * 6364136223846793005ull + 1442695040888963407ull;
    x[i] = (float)((double)(*state >> 40) / (double)(1ull << 24) - 0.5);
  }
}

static result run_case(const settings *s, const bw_probe *bw, int64_t B,
                       int64_t L) {
  result res = {0};
  attn_config cfg;
  attn_config_init(&cfg);
  cfg.embed_dim = s->embed;
  cfg.num_heads = s->heads;
  cfg.num_kv_heads = s->kv_heads;
  cfg.num_threads = s->threads;
  attn_layer *layer;
  check(attn_layer_create(&cfg, &layer), "attn_layer_create");
  check(attn_layer_init_weights(layer, 1), "attn_layer_init_weights");
  int64_t E = s->embed,
          KV = (s->kv_heads ? s->kv_heads : s->heads) * (s->embed / s->heads);

  attn_cache_config cc;
  attn_cache_config_init(&cc);
  cc.batch = B;
  /* The warm-up step plus the timed steps, rounded up to whole rounds. */
  cc.capacity = L + (s->steps + ROUNDS - 1) / ROUNDS * ROUNDS + 1;
  attn_kv_cache *cache;
  check(attn_kv_cache_create(layer, &cc, &cache), "attn_kv_cache_create");

  uint64_t seed = 42;
  size_t nx = (size_t)(B * (L + 1) * E);
  float *x = xmalloc(nx * sizeof(float));
  fill(x, nx, &seed);
  float *out = xmalloc(nx * sizeof(float));
  /* Prefill: the first L tokens of every row in one step. x holds L + 1
   * tokens per row, so the L-token prefix of row b is not contiguous with
   * row b + 1's: lay it out as [B, L, E]. */
  float *prefix = xmalloc((size_t)(B * L * E) * sizeof(float));
  for (int64_t b = 0; b < B; b++)
    memcpy(prefix + b * L * E, x + b * (L + 1) * E,
           (size_t)(L * E) * sizeof(float));
  check(attn_decode_step(layer, cache, B, L, prefix, NULL, NULL, out),
        "prefill");
  free(prefix);

  /* Single-token steps: each row's token L (its content does not matter
   * for the timing). */
  float *tok = xmalloc((size_t)(B * E) * sizeof(float));
  fill(tok, (size_t)(B * E), &seed);
  int steps = (s->steps + ROUNDS - 1) / ROUNDS * ROUNDS;
  double *t = xmalloc((size_t)steps * sizeof(double));
  /* One step reads every weight once and every key and value held (the
   * median step holds about L + 1 + steps / 2 tokens per row). */
  double held = (double)L + 1.0 + steps / 2.0;
  double weights = (double)(2 * E * E + 2 * KV * E + 2 * E + 2 * KV);
  res.bytes = 4.0 * (weights + (double)B * held * 2.0 * (double)KV);
  check(attn_decode_step(layer, cache, B, 1, tok, NULL, NULL, out), "warm-up");
  /* The machine may be shared: measure the bandwidth between rounds of
   * steps and compare each round with the bandwidth next to it. */
  double bws[ROUNDS], fractions[ROUNDS];
  float sink = 0;
  for (int round = 0; round < ROUNDS; round++) {
    bws[round] = read_bandwidth(bw->x, bw->n, bw->threads, 1, &sink);
    int per = steps / ROUNDS;
    double *tr = t + round * per, rt[64];
    for (int i = 0; i < per; i++) {
      double t0 = now();
      check(attn_decode_step(layer, cache, B, 1, tok, NULL, NULL, out), "step");
      tr[i] = now() - t0;
      if (i < 64)
        rt[i] = tr[i];
    }
    double round_step = median(rt, per < 64 ? per : 64);
    fractions[round] = res.bytes / (bws[round] * 1e9) / round_step;
  }
  bench_sink = sink;
  res.step_s = median(t, steps);
  res.bw_gbs = median(bws, ROUNDS);
  res.fraction = median(fractions, ROUNDS);

  /* Without a cache: a causal forward over all L + 1 tokens per new one. */
  if (!s->no_full) {
    attn_mask m;
    attn_mask_init(&m);
    m.causal = ATTN_CAUSAL_TOP_LEFT;
    double ft[16];
    int reps = 0;
    double spent = 0;
    while (reps < 16 && (reps == 0 || spent < s->full_budget)) {
      double t0 = now();
      check(attn_self_forward(layer, B, L + 1, x, &m, NULL, out),
            "full forward");
      ft[reps] = now() - t0;
      spent += ft[reps++];
    }
    res.full_s = median(ft, reps);
    res.full_reps = reps;
  }
  free(t);
  free(tok);
  free(x);
  free(out);
  attn_kv_cache_destroy(cache);
  attn_layer_destroy(layer);
  return res;
}

static int parse_list(const char *s, int64_t *v, int max) {
  int n = 0;
  while (*s && n < max) {
    char *end;
    long long x = strtoll(s, &end, 10);
    if (end == s || x <= 0)
      return -1;
    v[n++] = x;
    s = *end == ',' ? end + 1 : end;
    if (*end && *end != ',')
      return -1;
  }
  return n;
}

static void usage(void) {
  printf("usage: bench_decode [options]\n"
         "  --contexts L1,L2,..  context lengths (default "
         "128,256,512,1024,2048,4096,8192)\n"
         "  --batches B1,B2,..   batch sizes (default 1,8)\n"
         "  --embed E            model width (default 512)\n"
         "  --heads H            heads (default 8)\n"
         "  --kv-heads G         key/value heads (default = heads)\n"
         "  --steps N            timed decoding steps per case, in 8 rounds "
         "(default 48)\n"
         "  --full-budget S      seconds of full-forward reruns per case "
         "(default 2; at least one run)\n"
         "  --no-full            skip the full-forward comparison\n"
         "  --threads T          threads per call (default 0 = all cores)\n"
         "  --bw-mib M           MiB summed for the read bandwidth (default "
         "256)\n");
}

int main(int argc, char **argv) {
  settings s = {512, 8, 0, 48, 2.0, 0, 0};
  int64_t contexts[32] = {128, 256, 512, 1024, 2048, 4096, 8192};
  int64_t batches[8] = {1, 8};
  int nctx = 7, nb = 2;
  int64_t bw_mib = 256;
  for (int i = 1; i < argc; i++) {
    const char *a = argv[i];
    const char *v = i + 1 < argc ? argv[i + 1] : NULL;
    if (!strcmp(a, "--help")) {
      usage();
      return 0;
    } else if (!strcmp(a, "--no-full")) {
      s.no_full = 1;
      continue;
    }
    if (!v) {
      usage();
      return 2;
    }
    i++;
    if (!strcmp(a, "--contexts"))
      nctx = parse_list(v, contexts, 32);
    else if (!strcmp(a, "--batches"))
      nb = parse_list(v, batches, 8);
    else if (!strcmp(a, "--embed"))
      s.embed = atoll(v);
    else if (!strcmp(a, "--heads"))
      s.heads = atoll(v);
    else if (!strcmp(a, "--kv-heads"))
      s.kv_heads = atoll(v);
    else if (!strcmp(a, "--steps"))
      s.steps = atoi(v);
    else if (!strcmp(a, "--full-budget"))
      s.full_budget = atof(v);
    else if (!strcmp(a, "--threads"))
      s.threads = atoi(v);
    else if (!strcmp(a, "--bw-mib"))
      bw_mib = atoll(v);
    else {
      usage();
      return 2;
    }
  }
  if (nctx <= 0 || nb <= 0 || s.steps <= 0 || s.embed <= 0 || s.heads <= 0 ||
      bw_mib <= 0 || s.threads < 0) {
    usage();
    return 2;
  }
  long cores = sysconf(_SC_NPROCESSORS_ONLN);
  int threads = s.threads ? s.threads : (int)(cores > 0 ? cores : 1);
  if (threads > 64)
    threads = 64;

  /* Read bandwidth: the larger of one thread and the step's threads. */
  size_t nbw = (size_t)bw_mib * 1024 * 1024 / sizeof(float);
  /* Huge pages where the kernel offers them, as libattn asks for its
   * caches: the bandwidth is then not held back by TLB misses. */
  float *big = NULL;
  if (posix_memalign((void **)&big, (size_t)2 << 20, nbw * sizeof(float)))
    big = xmalloc(nbw * sizeof(float));
#if defined(__linux__) && defined(MADV_HUGEPAGE)
  (void)madvise(big,
                nbw * sizeof(float) / ((size_t)2 << 20) * ((size_t)2 << 20),
                MADV_HUGEPAGE);
#endif
  for (size_t i = 0; i < nbw; i++)
    big[i] = (float)(i & 1023) * 1e-3f;
  float sink = 0;
  double bw1 = read_bandwidth(big, nbw, 1, 7, &sink);
  double bwn = read_bandwidth(big, nbw, threads, 7, &sink);
  bench_sink = sink;
  /* The limit uses the faster way of reading (one thread or all). */
  bw_probe probe = {big, nbw, bwn > bw1 ? threads : 1};
  printf("libattn %s: decoding E=%lld H=%lld kv_heads=%lld, %d steps per "
         "case, %d threads\n",
         attn_version_string(), (long long)s.embed, (long long)s.heads,
         (long long)(s.kv_heads ? s.kv_heads : s.heads), s.steps, threads);
  printf("read bandwidth (sum of %lld MiB, median of 7): %.2f GB/s on 1 "
         "thread, %.2f GB/s on %d; measured again on %d between rounds of "
         "steps\n",
         (long long)bw_mib, bw1, bwn, threads, probe.threads);
  printf("\n%5s %6s %9s %10s %7s %10s %8s %10s %8s %9s\n", "B", "ctx",
         "step ms", "tok/s", "GB/s", "limit t/s", "of limit", "full ms",
         "full t/s", "speedup");
  for (int bi = 0; bi < nb; bi++)
    for (int ci = 0; ci < nctx; ci++) {
      int64_t B = batches[bi], L = contexts[ci];
      result r = run_case(&s, &probe, B, L);
      double tps = (double)B / r.step_s;
      double limit_s = r.bytes / (r.bw_gbs * 1e9);
      double limit_tps = (double)B / limit_s;
      double full_tps = r.full_s > 0 ? (double)B / r.full_s : 0;
      printf("%5lld %6lld %9.3f %10.1f %7.2f %10.1f %8.2f %10.1f %8.2f "
             "%9.1f\n",
             (long long)B, (long long)L, r.step_s * 1e3, tps, r.bw_gbs,
             limit_tps, r.fraction, r.full_s * 1e3, full_tps,
             r.full_s > 0 ? r.full_s / r.step_s : 0.0);
      fflush(stdout);
      printf("{\"batch\":%lld,\"context\":%lld,\"embed\":%lld,\"heads\":%lld,"
             "\"kv_heads\":%lld,\"threads\":%d,\"step_s\":%.6e,"
             "\"tokens_per_s\":%.2f,\"bytes_per_step\":%.0f,"
             "\"read_gb_s\":%.3f,\"limit_tokens_per_s\":%.2f,"
             "\"fraction_of_limit\":%.3f,\"full_forward_s\":%.6e,"
             "\"full_reps\":%d,\"speedup_vs_full\":%.2f}\n",
             (long long)B, (long long)L, (long long)s.embed, (long long)s.heads,
             (long long)(s.kv_heads ? s.kv_heads : s.heads), threads, r.step_s,
             tps, r.bytes, r.bw_gbs, limit_tps, r.fraction, r.full_s,
             r.full_reps, r.full_s > 0 ? r.full_s / r.step_s : 0.0);
    }
  free(big);
  return 0;
}
