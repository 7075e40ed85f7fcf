/* SPDX-License-Identifier: MIT */
/* bench_decode: incremental decoding speed of libattn.
 *
 * For each batch size and context length L it fills a KV cache with L
 * tokens (one prefill step), then times single-token decoding steps and
 * prints, per context:
 *   - tokens/s of the cached step (batch tokens per step, median step);
 *   - the same for the alternative without a cache: one full causal
 *     self-attention forward over the L + 1 tokens for every new token;
 *   - the memory-bandwidth limit of a step: the bytes one step must move
 *     (every weight and bias of the layer, every key and value the batch's
 *     rows hold, new ones included, and the new tokens' inputs and
 *     outputs) divided by a read bandwidth measured in the same process
 *     (summing a float array much larger than the last-level cache on as
 *     many threads as the step may use), and the fraction of that limit the
 *     step reaches: per round, (limit time at the round's bandwidth) / (the
 *     round's median step), printed as the median and the range over the
 *     rounds.
 *
 * By default every timed step is preceded by one pass of the bandwidth
 * probe over its whole array: that pass is the bandwidth sample paired with
 * the step, and it also evicts the layer's weights and cache from the
 * caches, as the other layers of a model do between two steps of one
 * layer. Without it (--warm) a small cache stays in the last-level cache
 * from one step to the next and the "limit" is no limit.
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

static void *sum_part(void *p) {
  sum_job *j = p;
  j->sum = bench_sum(j->x, j->n);
  return NULL;
}

/* GB/s of one pass summing n floats on `threads` threads. */
static double read_pass(const float *x, size_t n, int threads, float *sink) {
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
  double t = now() - t0;
  for (int k = 0; k < threads; k++)
    *sink += jobs[k].sum;
  return (double)n * sizeof(float) / t / 1e9;
}

/* Median GB/s of `runs` passes. */
static double read_bandwidth(const float *x, size_t n, int threads, int runs,
                             float *sink) {
  double bw[32];
  if (runs > 32)
    runs = 32;
  for (int r = 0; r < runs; r++)
    bw[r] = read_pass(x, n, threads, sink);
  return median(bw, runs);
}

/* Cases ------------------------------------------------------------------ */

typedef struct {
  int64_t embed, heads, kv_heads;
  int steps;          /* timed single-token steps per case */
  int rounds;         /* the steps are timed in this many rounds */
  double full_budget; /* seconds of full-forward reruns per case */
  int threads;        /* 0 = all cores */
  int no_full;
  int warm; /* 1 = no probe pass before each step (see the top) */
} settings;

#define MAX_ROUNDS 32

typedef struct {
  double step_s, full_s;
  int full_reps;
  double bytes;                      /* of the median step */
  double bw_gbs, bw_lo, bw_hi;       /* probe bandwidth: median, range */
  double fraction, frac_lo, frac_hi; /* of the limit, over the rounds */
} result;

/* The array summed for the read bandwidth, and the threads summing it. */
typedef struct {
  const float *x;
  size_t n;
  int threads;
} bw_probe;

static void fill(float *x, size_t n, uint64_t *state) {
  for (size_t i = 0; i < n; i++) {
    *state = *state * 6364136223846793005ull + 1442695040888963407ull;
    x[i] = (float)((double)(*state >> 40) / (double)(1ull << 24) - 0.5);
  }
}

/* A layer, and its cache holding the first L tokens of every row of x
 * ([B, L + 1, E]) with room for `steps` more. Row 0 takes its prompt in one
 * step, the other rows are copies of it (attn_kv_cache_reorder): the same
 * bytes to read per row as B prompts, for 1/B of the prompt time. */
static attn_kv_cache *make_cache(const settings *s, attn_layer *layer,
                                 int64_t B, int64_t L, int steps,
                                 const float *x, float *out) {
  int64_t E = s->embed;
  attn_cache_config cc;
  attn_cache_config_init(&cc);
  cc.batch = B;
  cc.capacity = L + steps + 1; /* + the warm-up step */
  attn_kv_cache *cache;
  check(attn_kv_cache_create(layer, &cc, &cache), "attn_kv_cache_create");
  int64_t *lens = xmalloc((size_t)B * sizeof(int64_t));
  for (int64_t b = 0; b < B; b++)
    lens[b] = b == 0 ? L : 0;
  attn_decode_mask m;
  attn_decode_mask_init(&m);
  m.new_lengths = lens;
  /* Only row 0's x rows are read: the first L tokens of x's row 0. */
  float *prefix = xmalloc((size_t)(B * L * E) * sizeof(float));
  memcpy(prefix, x, (size_t)(L * E) * sizeof(float));
  memset(prefix + L * E, 0, (size_t)((B - 1) * L * E) * sizeof(float));
  check(attn_decode_step(layer, cache, B, L, prefix, &m, NULL, out), "prefill");
  free(prefix);
  for (int64_t b = 0; b < B; b++)
    lens[b] = 0;
  check(attn_kv_cache_reorder(cache, B, lens), "attn_kv_cache_reorder");
  free(lens);
  return cache;
}

/* Bytes the step that makes each row hold `held` tokens must move: every
 * weight and bias once, each held key and value, the inputs and outputs. */
static double step_bytes(const settings *s, int64_t B, double held) {
  double E = (double)s->embed,
         KV = (double)(s->kv_heads ? s->kv_heads : s->heads) *
              (double)(s->embed / s->heads);
  double weights = 2 * E * E + 2 * KV * E + 2 * E + 2 * KV;
  return 4.0 * (weights + (double)B * (held * 2.0 * KV + 2.0 * E));
}

/* Times the steps in rounds, each round's fraction against the bandwidth
 * measured within it. */
static void time_steps(const settings *s, const bw_probe *bw, attn_layer *layer,
                       attn_kv_cache *cache, int64_t B, int64_t L, int steps,
                       const float *tok, float *out, result *res) {
  int per = steps / s->rounds;
  double *t = xmalloc((size_t)steps * sizeof(double));
  double *rt = xmalloc((size_t)per * sizeof(double));
  double *rb = xmalloc((size_t)per * sizeof(double));
  double bws[MAX_ROUNDS], fractions[MAX_ROUNDS];
  float sink = 0;
  for (int round = 0; round < s->rounds; round++) {
    int nb = 0;
    for (int i = 0; i < per; i++) {
      if (!s->warm || i == 0)
        rb[nb++] = read_pass(bw->x, bw->n, bw->threads, &sink);
      double t0 = now();
      check(attn_decode_step(layer, cache, B, 1, tok, NULL, NULL, out), "step");
      t[round * per + i] = rt[i] = now() - t0;
    }
    bws[round] = median(rb, nb);
    /* The round's middle step: each row holds L, the warm-up token and
     * the steps so far, its own included. */
    double held = (double)L + 2.0 + round * per + (per - 1) / 2.0;
    fractions[round] =
        step_bytes(s, B, held) / (bws[round] * 1e9) / median(rt, per);
  }
  bench_sink = sink;
  res->step_s = median(t, steps);
  res->bytes = step_bytes(s, B, (double)L + 1.0 + (steps + 1) / 2.0);
  res->bw_gbs = median(bws, s->rounds);
  res->bw_lo = bws[0];
  res->bw_hi = bws[s->rounds - 1]; /* median() sorted them */
  res->fraction = median(fractions, s->rounds);
  res->frac_lo = fractions[0];
  res->frac_hi = fractions[s->rounds - 1];
  free(t);
  free(rt);
  free(rb);
}

/* Without a cache: a causal forward over all L + 1 tokens per new one. */
static void time_full(const settings *s, attn_layer *layer, int64_t B,
                      int64_t L, const float *x, float *out, result *res) {
  attn_mask m;
  attn_mask_init(&m);
  m.causal = ATTN_CAUSAL_TOP_LEFT;
  double ft[16];
  int reps = 0;
  double spent = 0;
  while (reps < 16 && (reps == 0 || spent < s->full_budget)) {
    double t0 = now();
    check(attn_self_forward(layer, B, L + 1, x, &m, NULL, out), "full forward");
    ft[reps] = now() - t0;
    spent += ft[reps++];
  }
  res->full_s = median(ft, reps);
  res->full_reps = reps;
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
  int64_t E = s->embed;
  uint64_t seed = 42;
  size_t nx = (size_t)(B * (L + 1) * E);
  float *x = xmalloc(nx * sizeof(float));
  fill(x, nx, &seed);
  float *out = xmalloc(nx * sizeof(float));
  int steps = (s->steps + s->rounds - 1) / s->rounds * s->rounds;
  attn_kv_cache *cache = make_cache(s, layer, B, L, steps, x, out);
  /* Single-token steps: each row's token L (its content does not matter
   * for the timing). */
  float *tok = xmalloc((size_t)(B * E) * sizeof(float));
  fill(tok, (size_t)(B * E), &seed);
  check(attn_decode_step(layer, cache, B, 1, tok, NULL, NULL, out), "warm-up");
  time_steps(s, bw, layer, cache, B, L, steps, tok, out, &res);
  if (!s->no_full)
    time_full(s, layer, B, L, x, out, &res);
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
         "  --steps N            timed decoding steps per case (default 48)\n"
         "  --rounds R           rounds the steps are timed in (default 8, "
         "at most 32)\n"
         "  --full-budget S      seconds of full-forward reruns per case "
         "(default 2; at least one run)\n"
         "  --no-full            skip the full-forward comparison\n"
         "  --threads T          threads per call (default 0 = all cores)\n"
         "  --bw-mib M           MiB summed for the read bandwidth (default "
         "256; keep it several times the last-level cache)\n"
         "  --warm               no probe pass before each step: the layer "
         "and a small cache stay in the caches between steps\n");
}

/* The probe's array, on huge pages where the kernel offers them, as
 * libattn asks for its caches: the bandwidth is then not held back by TLB
 * misses. */
static float *probe_array(size_t n) {
  float *big = NULL;
  if (posix_memalign((void **)&big, (size_t)2 << 20, n * sizeof(float)))
    big = xmalloc(n * sizeof(float));
#if defined(__linux__) && defined(MADV_HUGEPAGE)
  (void)madvise(big, n * sizeof(float) / ((size_t)2 << 20) * ((size_t)2 << 20),
                MADV_HUGEPAGE);
#endif
  for (size_t i = 0; i < n; i++)
    big[i] = (float)(i & 1023) * 1e-3f;
  return big;
}

static void print_case(const settings *s, int threads, int64_t B, int64_t L,
                       const result *r) {
  double tps = (double)B / r->step_s;
  double limit_tps = (double)B / (r->bytes / (r->bw_gbs * 1e9));
  double full_tps = r->full_s > 0 ? (double)B / r->full_s : 0;
  double speedup = r->full_s > 0 ? r->full_s / r->step_s : 0.0;
  printf("%5lld %6lld %9.3f %10.1f %6.2f (%5.2f-%5.2f) %10.1f %5.2f "
         "(%4.2f-%4.2f) %10.1f %8.2f %9.1f\n",
         (long long)B, (long long)L, r->step_s * 1e3, tps, r->bw_gbs, r->bw_lo,
         r->bw_hi, limit_tps, r->fraction, r->frac_lo, r->frac_hi,
         r->full_s * 1e3, full_tps, speedup);
  fflush(stdout);
  printf("{\"batch\":%lld,\"context\":%lld,\"embed\":%lld,\"heads\":%lld,"
         "\"kv_heads\":%lld,\"threads\":%d,\"warm\":%s,\"step_s\":%.6e,"
         "\"tokens_per_s\":%.2f,\"bytes_per_step\":%.0f,"
         "\"read_gb_s\":%.3f,\"read_gb_s_min\":%.3f,\"read_gb_s_max\":%.3f,"
         "\"limit_tokens_per_s\":%.2f,\"fraction_of_limit\":%.3f,"
         "\"fraction_min\":%.3f,\"fraction_max\":%.3f,"
         "\"full_forward_s\":%.6e,\"full_reps\":%d,\"speedup_vs_full\":%.2f}"
         "\n",
         (long long)B, (long long)L, (long long)s->embed, (long long)s->heads,
         (long long)(s->kv_heads ? s->kv_heads : s->heads), threads,
         s->warm ? "true" : "false", r->step_s, tps, r->bytes, r->bw_gbs,
         r->bw_lo, r->bw_hi, limit_tps, r->fraction, r->frac_lo, r->frac_hi,
         r->full_s, r->full_reps, speedup);
}

int main(int argc, char **argv) {
  settings s = {
      .embed = 512, .heads = 8, .steps = 48, .rounds = 8, .full_budget = 2.0};
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
    } else if (!strcmp(a, "--warm")) {
      s.warm = 1;
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
    else if (!strcmp(a, "--rounds"))
      s.rounds = atoi(v);
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
      bw_mib <= 0 || s.threads < 0 || s.rounds <= 0 || s.rounds > MAX_ROUNDS) {
    usage();
    return 2;
  }
  long cores = sysconf(_SC_NPROCESSORS_ONLN);
  int threads = s.threads ? s.threads : (int)(cores > 0 ? cores : 1);
  if (threads > 64)
    threads = 64;

  size_t nbw = (size_t)bw_mib * 1024 * 1024 / sizeof(float);
  float *big = probe_array(nbw);
  float sink = 0;
  double bw1 = read_bandwidth(big, nbw, 1, 7, &sink);
  double bwn = read_bandwidth(big, nbw, threads, 7, &sink);
  bench_sink = sink;
  /* The probe reads on the threads a step may use (the call's). */
  bw_probe probe = {big, nbw, threads};
  printf("libattn %s: decoding E=%lld H=%lld kv_heads=%lld, %d steps per "
         "case in %d rounds, %d threads, %s\n",
         attn_version_string(), (long long)s.embed, (long long)s.heads,
         (long long)(s.kv_heads ? s.kv_heads : s.heads), s.steps, s.rounds,
         threads,
         s.warm ? "warm (data may stay cached between steps)"
                : "a probe pass before every step");
  printf("read bandwidth (sum of %lld MiB, median of 7): %.2f GB/s on 1 "
         "thread, %.2f GB/s on %d; measured again on %d %s\n",
         (long long)bw_mib, bw1, bwn, threads, threads,
         s.warm ? "before each round of steps" : "before every step");
  printf("\n%5s %6s %9s %10s %21s %10s %17s %10s %8s %9s\n", "B", "ctx",
         "step ms", "tok/s", "GB/s (min-max)", "limit t/s",
         "of limit (min-max)", "full ms", "full t/s", "speedup");
  for (int bi = 0; bi < nb; bi++)
    for (int ci = 0; ci < nctx; ci++) {
      result r = run_case(&s, &probe, batches[bi], contexts[ci]);
      print_case(&s, threads, batches[bi], contexts[ci], &r);
    }
  free(big);
  return 0;
}
