/* SPDX-License-Identifier: MIT */
/* bench_forward: times libattn forward passes.
 *
 * For each case it prints the median, min and max time over repeated runs,
 * the achieved GFLOP/s, that rate as a fraction of a large cblas_sgemm
 * measured in the same run, and the peak resident memory. Every case runs
 * in its own child process, so one case's memory never inflates another's
 * peak and a case's thread settings never leak into the next. Output: a
 * readable table, then one JSON line per case (lines starting with '{').
 *
 * Run `bench_forward --help` for the options; docs/PERFORMANCE.md has the
 * commands behind the published figures. */
#include "attn/attn.h"

#include <cblas.h>
#include <dlfcn.h>
#include <errno.h>
#include <math.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "bench_util.h"

typedef struct {
  char name[64];
  int64_t batch, len_q, len_k, embed, heads, kdim, vdim;
  int causal;     /* ATTN_CAUSAL_* */
  double keylen;  /* > 0: key_lengths[b] = keylen * Lk (rounded) */
  double pad;     /* > 0: this fraction of keys padded in odd batch rows */
  int bias;       /* 1: an additive [Lq, Lk] bias */
  int weights;    /* 0 none, 1 per head, 2 averaged */
  int threads;    /* attn_options.num_threads (0 = all cores) */
  int scratch;    /* 1: pass caller-allocated scratch memory */
  int64_t window; /* sliding window (0 = none) */
  int32_t core;   /* attn_options.core: ATTN_CORE_AUTO, _BLAS, _PACKED */
} bench_case;

static const char *const core_names[] = {[ATTN_CORE_AUTO] = "auto",
                                         [ATTN_CORE_BLAS] = "blas",
                                         [ATTN_CORE_PACKED] = "packed"};

#define MAX_SAMPLES 512

typedef struct {
  int ok;
  char error[200];
  int reps;
  double median_s, min_s, max_s;
  double peak_rss_mib;
  int blas_threads; /* -1: unknown (not OpenBLAS) */
  int nsamples;     /* the first min(reps, MAX_SAMPLES) times */
  double samples[MAX_SAMPLES];
} case_result;

typedef struct {
  int reps, warmup, min_reps, rounds;
  double min_time;
  double wait_idle;   /* > 0: before each measurement, wait for idle CPUs */
  double max_foreign; /* > 0: repeat measurements other programs disturbed */
  int ref_size;
  int fork_cases;
  FILE *json;
} settings;

static double peak_rss_mib(void) {
  struct rusage ru;
  getrusage(RUSAGE_SELF, &ru);
  return (double)ru.ru_maxrss / 1024.0; /* ru_maxrss is in KiB on Linux */
}

/* OpenBLAS's thread controls, looked up at run time so the benchmark also
 * runs against a generic CBLAS. */
static int blas_threads(void) {
  int (*get)(void) = NULL;
  *(void **)&get = dlsym(RTLD_DEFAULT, "openblas_get_num_threads");
  return get ? get() : -1;
}

static void set_blas_threads(int n) {
  void (*set)(int) = NULL;
  *(void **)&set = dlsym(RTLD_DEFAULT, "openblas_set_num_threads");
  if (set)
    set(n);
}

static uint64_t rng_state = 0x9E3779B97F4A7C15u;
static float uniform(void) { /* xorshift64*, in [-1, 1) */
  rng_state ^= rng_state >> 12;
  rng_state ^= rng_state << 25;
  rng_state ^= rng_state >> 27;
  uint64_t r = rng_state * 0x2545F4914F6CDD1Du;
  return (float)((double)(r >> 40) / (double)(1u << 23)) - 1.0f;
}

static float *random_floats(int64_t n) {
  float *p = malloc((size_t)n * sizeof(float));
  if (p)
    for (int64_t i = 0; i < n; i++)
      p[i] = uniform();
  return p;
}

static double case_flops(const bench_case *c) {
  double B = (double)c->batch, Lq = (double)c->len_q, Lk = (double)c->len_k;
  double E = (double)c->embed;
  return 2 * B * Lq * E * E + 2 * B * Lk * E * (double)(c->kdim + c->vdim) +
         2 * B * Lq * E * E + 4 * B * Lq * Lk * E;
}

static bool is_self(const bench_case *c) {
  return c->len_q == c->len_k && c->kdim == c->embed && c->vdim == c->embed;
}

/* Runs one case in this process; fills r. */
static void run_case(const bench_case *c, const settings *s, case_result *r) {
  memset(r, 0, sizeof *r);
  if (c->threads > 0)
    set_blas_threads(c->threads); /* one count for the BLAS and the library */
  r->blas_threads = blas_threads();

  attn_config cfg;
  attn_config_init(&cfg);
  cfg.embed_dim = c->embed;
  cfg.num_heads = c->heads;
  cfg.kdim = c->kdim;
  cfg.vdim = c->vdim;
  attn_layer *layer = NULL;
  attn_status st = attn_layer_create(&cfg, &layer);
  if (st == ATTN_OK)
    st = attn_layer_init_weights(layer, 1);
  if (st != ATTN_OK) {
    snprintf(r->error, sizeof r->error, "layer: %s", attn_last_error());
    attn_layer_destroy(layer);
    return;
  }

  bool self = is_self(c);
  int64_t B = c->batch, Lq = c->len_q, Lk = c->len_k;
  float *q = random_floats(B * Lq * c->embed);
  float *k = self ? q : random_floats(B * Lk * c->kdim);
  float *v = self || c->kdim == c->vdim ? k : random_floats(B * Lk * c->vdim);
  float *out = malloc((size_t)(B * Lq * c->embed) * sizeof(float));
  int64_t *keylen = malloc((size_t)B * sizeof(int64_t));
  uint8_t *pad = calloc((size_t)(B * Lk), 1);
  float *bias = c->bias ? random_floats(Lq * Lk) : NULL;
  int64_t wcount = B * Lq * Lk * (c->weights == 1 ? c->heads : 1);
  float *weights = c->weights ? malloc((size_t)wcount * sizeof(float)) : NULL;
  void *scratch = NULL;
  if (!q || !k || !v || !out || !keylen || !pad || (c->bias && !bias) ||
      (c->weights && !weights)) {
    snprintf(r->error, sizeof r->error, "out of memory for the inputs");
    goto done;
  }

  attn_mask mask;
  attn_mask_init(&mask);
  mask.causal = c->causal;
  mask.window = c->window;
  if (c->keylen > 0) {
    for (int64_t b = 0; b < B; b++)
      keylen[b] = (int64_t)llround(c->keylen * (double)Lk);
    mask.key_lengths = keylen;
  }
  if (c->pad > 0) {
    int64_t first = Lk - (int64_t)llround(c->pad * (double)Lk);
    for (int64_t b = 1; b < B; b += 2)
      for (int64_t j = first < 0 ? 0 : first; j < Lk; j++)
        pad[b * Lk + j] = 1;
    mask.key_padding = pad;
  }
  if (bias) {
    mask.bias = bias;
    mask.bias_stride_q = Lk;
  }
  attn_options opts;
  attn_options_init(&opts);
  opts.num_threads = c->threads;
  opts.core = c->core;
  opts.attn_weights = weights;
  opts.weights_mode =
      c->weights == 2 ? ATTN_WEIGHTS_AVERAGE : ATTN_WEIGHTS_PER_HEAD;
  if (c->scratch) {
    size_t bytes = 0;
    if (attn_forward_scratch_size(layer, B, Lq, Lk, &opts, &bytes) != ATTN_OK ||
        !(scratch = malloc(bytes))) {
      snprintf(r->error, sizeof r->error, "scratch: %s", attn_last_error());
      goto done;
    }
    opts.scratch = scratch;
    opts.scratch_size = bytes;
  }

#define FORWARD()                                                              \
  (self ? attn_self_forward(layer, B, Lq, q, &mask, &opts, out)                \
        : attn_forward(layer, B, Lq, Lk, q, k, v, &mask, &opts, out))

  double first_s = 0;
  for (int w = 0; w <= s->warmup; w++) { /* warm-up, and one timed probe */
    double t = now();
    st = FORWARD();
    first_s = now() - t;
    if (st != ATTN_OK) {
      snprintf(r->error, sizeof r->error, "forward: %s", attn_last_error());
      goto done;
    }
  }
  int reps = s->reps;
  if (reps <= 0) {
    double want = s->min_time / (first_s > 1e-9 ? first_s : 1e-9);
    reps = want > 1e6 ? 1000000 : (int)ceil(want);
    reps = reps < s->min_reps ? s->min_reps : reps;
    reps = reps > 10000 ? 10000 : reps;
  }
  double *t = malloc((size_t)reps * sizeof(double));
  if (!t) {
    snprintf(r->error, sizeof r->error, "out of memory for the timings");
    goto done;
  }
  for (int i = 0; i < reps; i++) {
    double t0 = now();
    st = FORWARD();
    t[i] = now() - t0;
    if (st != ATTN_OK) {
      snprintf(r->error, sizeof r->error, "forward: %s", attn_last_error());
      free(t);
      goto done;
    }
  }
#undef FORWARD
  r->reps = reps;
  r->min_s = r->max_s = t[0];
  for (int i = 0; i < reps; i++) {
    r->min_s = t[i] < r->min_s ? t[i] : r->min_s;
    r->max_s = t[i] > r->max_s ? t[i] : r->max_s;
  }
  r->nsamples = reps < MAX_SAMPLES ? reps : MAX_SAMPLES;
  memcpy(r->samples, t, (size_t)r->nsamples * sizeof(double));
  r->median_s = median(t, reps);
  free(t);
  r->ok = 1;
done:
  r->peak_rss_mib = peak_rss_mib();
  if (v != k && v != q)
    free(v);
  if (k != q)
    free(k);
  free(q);
  free(out);
  free(keylen);
  free(pad);
  free(bias);
  free(weights);
  free(scratch);
  attn_layer_destroy(layer);
}

/* GFLOP/s of an n x n x n sgemm with the BLAS's default threads: the
 * median of `reps` runs after one warm-up, all samples appended to out. */
static void run_reference(int n, int reps, double *out) {
  size_t nn = (size_t)n * (size_t)n;
  float *a = malloc(nn * sizeof(float)), *b = malloc(nn * sizeof(float));
  float *c = malloc(nn * sizeof(float));
  if (!a || !b || !c) {
    for (int i = 0; i < reps; i++)
      out[i] = NAN;
    free(a), free(b), free(c);
    return;
  }
  for (size_t i = 0; i < nn; i++) {
    a[i] = uniform();
    b[i] = uniform();
  }
  for (int i = -1; i < reps; i++) {
    double t = now();
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, n, n, n, 1.0f, a, n,
                b, n, 0.0f, c, n);
    t = now() - t;
    if (i >= 0)
      out[i] = 2.0 * (double)n * (double)n * (double)n / t * 1e-9;
  }
  free(a), free(b), free(c);
}

/* Idle and total jiffies of all CPUs so far (/proc/stat), false when
 * unreadable. */
static bool cpu_jiffies(double *idle, double *total) {
  FILE *f = fopen("/proc/stat", "r");
  if (!f)
    return false;
  unsigned long long v[8] = {0};
  int n = fscanf(f, "cpu %llu %llu %llu %llu %llu %llu %llu %llu", &v[0], &v[1],
                 &v[2], &v[3], &v[4], &v[5], &v[6], &v[7]);
  fclose(f);
  if (n < 5)
    return false;
  *idle = (double)(v[3] + v[4]);
  *total = 0;
  for (int i = 0; i < n; i++)
    *total += (double)v[i];
  return true;
}

/* On a shared machine: waits (up to 10 minutes) until the CPUs were idle
 * for at least `fraction` of one second, so that a measurement does not
 * start while other programs are busy. */
static void wait_idle(double fraction) {
  if (fraction <= 0)
    return;
  for (int tries = 0; tries < 600; tries++) {
    double i0, t0, i1, t1;
    if (!cpu_jiffies(&i0, &t0))
      return;
    struct timespec ts = {1, 0};
    nanosleep(&ts, NULL);
    if (!cpu_jiffies(&i1, &t1))
      return;
    if (t1 > t0 && (i1 - i0) / (t1 - t0) >= fraction)
      return;
  }
  fprintf(stderr, "bench_forward: CPUs still busy after 10 minutes; "
                  "measuring anyway\n");
}

/* Runs fn in a child process (or here, without --no-fork) and copies the
 * child's result of `size` bytes back. */
static double idle_wanted; /* settings.wait_idle, for in_child */
static double max_foreign; /* settings.max_foreign, for in_child */
static int disturbed;      /* measurements kept although disturbed */

static double cpu_seconds(const struct rusage *ru) {
  return (double)ru->ru_utime.tv_sec + 1e-6 * (double)ru->ru_utime.tv_usec +
         (double)ru->ru_stime.tv_sec + 1e-6 * (double)ru->ru_stime.tv_usec;
}

/* One run of fn, in a child process unless fork_it is false. *foreign is
 * the CPU time other programs used meanwhile, in CPUs (0.5 = half a core
 * on average), or -1 when /proc/stat cannot be read. */
static int child_once(bool fork_it, void (*fn)(void *arg, void *res), void *arg,
                      void *res, size_t size, double *foreign) {
  wait_idle(idle_wanted);
  double idle0 = 0, total0 = 0, idle1 = 0, total1 = 0, mine = 0;
  bool have = cpu_jiffies(&idle0, &total0);
  double t0 = now();
  int rc = 0;
  if (!fork_it) {
    struct rusage r0, r1;
    getrusage(RUSAGE_SELF, &r0);
    fn(arg, res);
    getrusage(RUSAGE_SELF, &r1);
    mine = cpu_seconds(&r1) - cpu_seconds(&r0);
  } else {
    int fd[2];
    if (pipe(fd) != 0)
      return -1;
    fflush(NULL);
    pid_t pid = fork();
    if (pid < 0)
      return -1;
    if (pid == 0) {
      close(fd[0]);
      fn(arg, res);
      const char *p = res;
      size_t left = size;
      while (left > 0) {
        ssize_t w = write(fd[1], p, left);
        if (w <= 0)
          _exit(1);
        p += w;
        left -= (size_t)w;
      }
      _exit(0);
    }
    close(fd[1]);
    char *p = res;
    size_t got = 0;
    while (got < size) {
      ssize_t n = read(fd[0], p + got, size - got);
      if (n < 0 && errno == EINTR)
        continue;
      if (n <= 0)
        break;
      got += (size_t)n;
    }
    close(fd[0]);
    int status = 0;
    struct rusage ru;
    memset(&ru, 0, sizeof ru);
    while (wait4(pid, &status, 0, &ru) < 0 && errno == EINTR)
      ;
    mine = cpu_seconds(&ru);
    rc = got == size && WIFEXITED(status) && WEXITSTATUS(status) == 0 ? 0 : -1;
  }
  double wall = now() - t0;
  have = have && cpu_jiffies(&idle1, &total1);
  long tick = sysconf(_SC_CLK_TCK);
  *foreign = -1;
  if (have && tick > 0 && wall > 0) {
    double busy = ((total1 - idle1) - (total0 - idle0)) / (double)tick;
    *foreign = (busy - mine) / wall;
  }
  return rc;
}

/* Runs fn in a child process (or here, without --no-fork) and copies the
 * child's result of `size` bytes back. With --max-foreign, a run during
 * which other programs used more CPU than allowed is repeated (up to 4
 * times; then the last is kept and counted as disturbed). */
static int in_child(bool fork_it, void (*fn)(void *arg, void *res), void *arg,
                    void *res, size_t size) {
  for (int attempt = 0;; attempt++) {
    double foreign = 0;
    int rc = child_once(fork_it, fn, arg, res, size, &foreign);
    if (rc != 0 || max_foreign <= 0 || foreign <= max_foreign)
      return rc;
    if (attempt == 4) {
      disturbed++;
      fprintf(stderr,
              "bench_forward: other programs used %.2f CPUs during the "
              "last try too; kept\n",
              foreign);
      return rc;
    }
    fprintf(stderr,
            "bench_forward: other programs used %.2f CPUs during a "
            "measurement; repeating it\n",
            foreign);
  }
}

typedef struct {
  const bench_case *c;
  const settings *s;
} case_arg;

static void case_thunk(void *arg, void *res) {
  case_arg *a = arg;
  run_case(a->c, a->s, res);
}

#define MAX_REF_REPS 64
typedef struct {
  double gflops[MAX_REF_REPS];
} ref_result;
typedef struct {
  int n, reps;
} ref_arg;

static void ref_thunk(void *arg, void *res) {
  ref_arg *a = arg;
  run_reference(a->n, a->reps, ((ref_result *)res)->gflops);
}

/* Case strings: comma-separated key=value pairs, e.g.
 * "B=2,L=1024,causal=1,threads=1". */
static int parse_case(const char *text, bench_case *c) {
  memset(c, 0, sizeof *c);
  c->batch = 1;
  c->embed = 512;
  c->heads = 8;
  int64_t L = 0;
  char buf[512];
  snprintf(buf, sizeof buf, "%s", text);
  char *save = NULL;
  for (char *kv = strtok_r(buf, ",", &save); kv;
       kv = strtok_r(NULL, ",", &save)) {
    char *eq = strchr(kv, '=');
    if (!eq) {
      fprintf(stderr, "bench_forward: '%s' in case '%s' is not key=value\n", kv,
              text);
      return -1;
    }
    *eq = 0;
    const char *key = kv, *val = eq + 1;
    char *end = NULL;
    double x = strtod(val, &end);
    bool num = end != val && *end == 0;
    if (strcmp(key, "name") == 0) {
      snprintf(c->name, sizeof c->name, "%s", val);
      continue;
    }
    if (strcmp(key, "core") == 0) {
      int32_t k = 0;
      while (k < 3 && strcmp(val, core_names[k]) != 0)
        k++;
      if (k == 3) {
        fprintf(stderr, "bench_forward: core=%s is not auto, blas or packed\n",
                val);
        return -1;
      }
      c->core = k; /* ATTN_CORE_AUTO, ATTN_CORE_BLAS, ATTN_CORE_PACKED */
      continue;
    }
    if (!num) {
      fprintf(stderr, "bench_forward: %s=%s is not a number\n", key, val);
      return -1;
    }
    int64_t i = (int64_t)x;
    if (strcmp(key, "B") == 0)
      c->batch = i;
    else if (strcmp(key, "L") == 0)
      L = i;
    else if (strcmp(key, "Lq") == 0)
      c->len_q = i;
    else if (strcmp(key, "Lk") == 0)
      c->len_k = i;
    else if (strcmp(key, "E") == 0)
      c->embed = i;
    else if (strcmp(key, "H") == 0)
      c->heads = i;
    else if (strcmp(key, "kdim") == 0)
      c->kdim = i;
    else if (strcmp(key, "vdim") == 0)
      c->vdim = i;
    else if (strcmp(key, "causal") == 0)
      c->causal = (int)i;
    else if (strcmp(key, "keylen") == 0)
      c->keylen = x;
    else if (strcmp(key, "pad") == 0)
      c->pad = x;
    else if (strcmp(key, "bias") == 0)
      c->bias = (int)i;
    else if (strcmp(key, "weights") == 0)
      c->weights = (int)i;
    else if (strcmp(key, "threads") == 0)
      c->threads = (int)i;
    else if (strcmp(key, "window") == 0)
      c->window = i;
    else if (strcmp(key, "scratch") == 0)
      c->scratch = (int)i;
    else {
      fprintf(stderr, "bench_forward: unknown case key '%s'\n", key);
      return -1;
    }
  }
  if (L > 0) {
    c->len_q = c->len_q ? c->len_q : L;
    c->len_k = c->len_k ? c->len_k : L;
  }
  c->kdim = c->kdim ? c->kdim : c->embed;
  c->vdim = c->vdim ? c->vdim : c->embed;
  if (c->batch <= 0 || c->len_q <= 0 || c->len_k <= 0 || c->embed <= 0 ||
      c->heads <= 0 || c->threads < 0 || c->weights < 0 || c->weights > 2) {
    fprintf(stderr,
            "bench_forward: case '%s' needs positive B, L (or Lq and "
            "Lk), E, H\n",
            text);
    return -1;
  }
  if (!c->name[0])
    snprintf(c->name, sizeof c->name, "%s", text);
  return 0;
}

/* Named case lists. */
static const char *const preset_targets[] = {
    "name=self-B8-L64,B=8,L=64",
    "name=self-B4-L256,B=4,L=256",
    "name=self-B2-L1024,B=2,L=1024",
    "name=self-B1-L4096,B=1,L=4096",
    "name=causal-B1-L4096,B=1,L=4096,causal=1",
    "name=cross-B4-Lq256-Lk1024,B=4,Lq=256,Lk=1024,kdim=768,vdim=768",
    "name=self-B1-L4096-t1,B=1,L=4096,threads=1",
    "name=self-B1-L4096-t2,B=1,L=4096,threads=2",
    "name=self-B1-L16384,B=1,L=16384",
    NULL};
static const char *const preset_smoke[] = {
    "name=smoke-self,B=2,L=16,E=32,H=4",
    "name=smoke-causal,B=2,L=33,E=32,H=4,causal=1,threads=2",
    "name=smoke-cross,B=2,Lq=7,Lk=19,E=32,H=4,kdim=24,vdim=40",
    "name=smoke-masks,B=3,L=20,E=16,H=2,keylen=0.75,pad=0.25,bias=1",
    "name=smoke-weights,B=2,L=12,E=16,H=2,weights=2,threads=1",
    NULL};
static const char *const preset_scaling[] = {"name=L256,B=1,L=256",
                                             "name=L512,B=1,L=512",
                                             "name=L1024,B=1,L=1024",
                                             "name=L2048,B=1,L=2048",
                                             "name=L4096,B=1,L=4096",
                                             "name=L8192,B=1,L=8192",
                                             NULL};

static void usage(void) {
  printf(
      "usage: bench_forward [options] [CASE ...]\n"
      "  CASE: comma-separated key=value: B, L (Lq = Lk = L), Lq, Lk, E "
      "(512),\n"
      "        H (8), kdim, vdim (E), causal (0|1 top-left|2 bottom-right),\n"
      "        keylen (fraction of Lk valid), pad (fraction of keys padded in\n"
      "        odd batch rows), bias (1: [Lq,Lk] float bias), window,\n"
      "        weights (1 per head, 2 averaged), scratch (1: caller-provided\n"
      "        scratch memory), threads (0 = all cores; N > "
      "0\n"
      "        also sets OpenBLAS to N threads for the case), core (auto |\n"
      "        blas | packed: attn_options.core), name.\n"
      "  --preset targets|smoke|scaling  add a named list of cases\n"
      "  --reps N        timed runs per case (default: enough for --min-time,\n"
      "                  at least --min-reps)\n"
      "  --min-time S    seconds of timed runs per case (default 1.0)\n"
      "  --min-reps N    (default 5)\n"
      "  --warmup N      untimed runs first (default 1)\n"
      "  --rounds N      run the whole list N times, the reference sgemm\n"
      "                  between rounds; times of all rounds are pooled,\n"
      "                  and each round's median against the reference\n"
      "                  measured just before it gives frac/round\n"
      "                  (default 1)\n"
      "  --ref-size N    n of the n*n*n reference sgemm (default 2048; 0 = "
      "skip)\n"
      "  --json FILE     write the JSON lines there instead of stdout\n"
      "  --ref-only      only measure the reference sgemm\n"
      "  --wait-idle F   before each measurement wait until the CPUs were\n"
      "                  idle for a fraction F of a second (shared machines;\n"
      "                  Linux /proc/stat; default 0 = do not wait)\n"
      "  --max-foreign F repeat a measurement (up to 4 times) when other\n"
      "                  programs used more than F CPUs meanwhile (e.g.\n"
      "                  0.05; Linux /proc/stat; default 0 = never)\n"
      "  --no-fork       run cases in this process (peak RSS then "
      "accumulates)\n");
}

#define MAX_CASES 256
#define MAX_ROUNDS 32

/* Fractions of the round's reference sgemm of each round's median time of
 * case c, sorted; rounds without a reference are left out. Returns how
 * many there are. */
static int round_fractions(const bench_case *c, const double *ms,
                           const double *ref, int rounds, double *out) {
  int n = 0;
  for (int k = 0; k < rounds; k++) {
    double f = case_flops(c) / ms[k] * 1e-6 / ref[k];
    if (isfinite(f))
      out[n++] = f;
  }
  qsort(out, (size_t)n, sizeof *out, cmp_double);
  return n;
}

int main(int argc, char **argv) {
  settings s = {0, 1, 5, 1, 1.0, 0.0, 0.0, 2048, 1, stdout};
  static bench_case cases[MAX_CASES];
  int ncases = 0;
  bool ref_only = false;
  for (int i = 1; i < argc; i++) {
    const char *a = argv[i];
    bool more = i + 1 < argc;
    const char *const *preset = NULL;
    if (strcmp(a, "--help") == 0 || strcmp(a, "-h") == 0) {
      usage();
      return 0;
    } else if (strcmp(a, "--preset") == 0 && more) {
      const char *p = argv[++i];
      preset = strcmp(p, "targets") == 0   ? preset_targets
               : strcmp(p, "smoke") == 0   ? preset_smoke
               : strcmp(p, "scaling") == 0 ? preset_scaling
                                           : NULL;
      if (!preset) {
        fprintf(stderr, "bench_forward: unknown preset '%s'\n", p);
        return 2;
      }
    } else if (strcmp(a, "--reps") == 0 && more) {
      s.reps = atoi(argv[++i]);
    } else if (strcmp(a, "--min-time") == 0 && more) {
      s.min_time = atof(argv[++i]);
    } else if (strcmp(a, "--min-reps") == 0 && more) {
      s.min_reps = atoi(argv[++i]);
    } else if (strcmp(a, "--rounds") == 0 && more) {
      s.rounds = atoi(argv[++i]);
    } else if (strcmp(a, "--warmup") == 0 && more) {
      s.warmup = atoi(argv[++i]);
    } else if (strcmp(a, "--ref-size") == 0 && more) {
      s.ref_size = atoi(argv[++i]);
    } else if (strcmp(a, "--json") == 0 && more) {
      s.json = fopen(argv[++i], "w");
      if (!s.json) {
        perror(argv[i]);
        return 2;
      }
    } else if (strcmp(a, "--max-foreign") == 0 && more) {
      s.max_foreign = atof(argv[++i]);
    } else if (strcmp(a, "--wait-idle") == 0 && more) {
      s.wait_idle = atof(argv[++i]);
    } else if (strcmp(a, "--ref-only") == 0) {
      ref_only = true;
    } else if (strcmp(a, "--no-fork") == 0) {
      s.fork_cases = 0;
    } else if (a[0] == '-') {
      fprintf(stderr, "bench_forward: unknown option '%s' (--help)\n", a);
      return 2;
    } else {
      if (ncases == MAX_CASES || parse_case(a, &cases[ncases]) != 0)
        return 2;
      ncases++;
    }
    for (; preset && *preset; preset++) {
      if (ncases == MAX_CASES || parse_case(*preset, &cases[ncases]) != 0)
        return 2;
      ncases++;
    }
  }
  if (ncases == 0 && !ref_only) {
    usage();
    return 2;
  }
  if (s.min_reps < 1)
    s.min_reps = 1;
  if (s.warmup < 0)
    s.warmup = 0;

  if (s.rounds < 1)
    s.rounds = 1;
  if (s.rounds > MAX_ROUNDS) {
    fprintf(stderr, "bench_forward: --rounds %d is more than %d\n", s.rounds,
            MAX_ROUNDS);
    return 2;
  }
  idle_wanted = s.wait_idle;
  max_foreign = s.max_foreign;

  /* Reference sgemm before, between and after the rounds; the median of
   * all its samples is the yardstick. */
  enum { ref_reps = 5 };
  double *ref_samples = malloc(sizeof(double) * ref_reps * (s.rounds + 1));
  /* Every timed run of every round, per case. */
  double *pooled = malloc(sizeof(double) * MAX_SAMPLES * s.rounds *
                          (size_t)(ncases ? ncases : 1));
  static case_result results[MAX_CASES];
  static int npooled[MAX_CASES];
  /* Per round: each case's median time, and the reference measured just
   * before the round (NAN when none), for per-round ratios. */
  static double round_ms[MAX_CASES][MAX_ROUNDS], round_ref[MAX_ROUNDS];
  if (!ref_samples || !pooled) {
    fprintf(stderr, "bench_forward: out of memory\n");
    return 1;
  }
  int nref = 0;
  ref_arg ra = {s.ref_size, ref_reps};
  ref_result rr;

  printf("libattn %s, BLAS threads %d, reference sgemm n=%d\n",
         attn_version_string(), blas_threads(), s.ref_size);
  printf("%-34s %5s %4s %5s %10s %10s %10s %8s %9s\n", "case", "round", "thr",
         "reps", "median_ms", "min_ms", "max_ms", "GFLOP/s", "peak_MiB");
  for (int round = 0; round <= s.rounds; round++) {
    if (s.ref_size > 0 &&
        in_child(s.fork_cases, ref_thunk, &ra, &rr, sizeof rr) == 0) {
      memcpy(ref_samples + nref, rr.gflops, sizeof(double) * ref_reps);
      nref += ref_reps;
      if (round < s.rounds) {
        double mine[ref_reps];
        memcpy(mine, rr.gflops, sizeof mine);
        round_ref[round] = median(mine, ref_reps);
      }
    } else if (round < s.rounds) {
      round_ref[round] = NAN;
    }
    if (round == s.rounds)
      break;
    for (int i = 0; i < ncases; i++) {
      case_arg ca = {&cases[i], &s};
      case_result r;
      if (round > 0 && !results[i].ok)
        continue; /* failed before */
      if (in_child(s.fork_cases, case_thunk, &ca, &r, sizeof r) != 0 &&
          !r.error[0]) {
        memset(&r, 0, sizeof r);
        snprintf(r.error, sizeof r.error, "child process failed");
      }
      case_result *agg = &results[i];
      if (!r.ok) {
        *agg = r;
        printf("%-34s FAILED: %s\n", cases[i].name, r.error);
        continue;
      }
      double gf = case_flops(&cases[i]) / r.median_s * 1e-9;
      printf("%-34s %5d %4d %5d %10.3f %10.3f %10.3f %8.1f %9.1f\n",
             cases[i].name, round + 1, cases[i].threads, r.reps,
             1e3 * r.median_s, 1e3 * r.min_s, 1e3 * r.max_s, gf,
             r.peak_rss_mib);
      fflush(stdout);
      round_ms[i][round] = 1e3 * r.median_s;
      double *mine = pooled + (size_t)i * MAX_SAMPLES * s.rounds;
      memcpy(mine + npooled[i], r.samples, sizeof(double) * r.nsamples);
      npooled[i] += r.nsamples;
      if (round == 0) {
        *agg = r;
      } else {
        agg->reps += r.reps;
        agg->min_s = r.min_s < agg->min_s ? r.min_s : agg->min_s;
        agg->max_s = r.max_s > agg->max_s ? r.max_s : agg->max_s;
        agg->peak_rss_mib = r.peak_rss_mib > agg->peak_rss_mib
                                ? r.peak_rss_mib
                                : agg->peak_rss_mib;
      }
      agg->median_s =
          median(pooled + (size_t)i * MAX_SAMPLES * s.rounds, npooled[i]);
    }
  }
  double ref = nref ? median(ref_samples, nref) : NAN;
  double ref_lo = nref ? ref_samples[0] : NAN;
  double ref_hi = nref ? ref_samples[nref - 1] : NAN;
  printf("reference sgemm %dx%dx%d: median %.1f GFLOP/s (min %.1f, max %.1f, "
         "%d runs around the rounds)\n",
         s.ref_size, s.ref_size, s.ref_size, ref, ref_lo, ref_hi, nref);
  if (max_foreign > 0)
    printf("measurements kept although other programs used more than %.2f "
           "CPUs: %d\n",
           max_foreign, disturbed);
  if (nref)
    fprintf(s.json,
            "{\"reference_sgemm\":true,\"n\":%d,\"runs\":%d,"
            "\"median_gflops\":%.2f,\"min_gflops\":%.2f,"
            "\"max_gflops\":%.2f}\n",
            s.ref_size, nref, ref, ref_lo, ref_hi);
  if (ncases == 0) {
    free(pooled);
    free(ref_samples);
    return nref ? 0 : 1;
  }
  printf("\n%-34s %10s %8s %7s %20s %9s\n", "case", "median_ms", "GFLOP/s",
         "frac", "frac/round (min-max)", "peak_MiB");
  int failed = 0;
  for (int i = 0; i < ncases; i++) {
    const bench_case *c = &cases[i];
    const case_result *r = &results[i];
    if (!r->ok) {
      failed++;
      fprintf(s.json, "{\"case\":\"%s\",\"ok\":false,\"error\":\"%s\"}\n",
              c->name, r->error);
      continue;
    }
    double gf = case_flops(c) / r->median_s * 1e-9;
    double fr[MAX_ROUNDS];
    int nf = round_fractions(c, round_ms[i], round_ref, s.rounds, fr);
    if (nf > 0)
      printf("%-34s %10.3f %8.1f %7.3f %5.3f (%5.3f-%5.3f) %9.1f\n", c->name,
             1e3 * r->median_s, gf, gf / ref, median(fr, nf), fr[0], fr[nf - 1],
             r->peak_rss_mib);
    else
      printf("%-34s %10.3f %8.1f %7.3f %20s %9.1f\n", c->name,
             1e3 * r->median_s, gf, gf / ref, "-", r->peak_rss_mib);
  }
  printf("\n");
  for (int i = 0; i < ncases; i++) {
    const bench_case *c = &cases[i];
    const case_result *r = &results[i];
    if (!r->ok)
      continue;
    double gf = case_flops(c) / r->median_s * 1e-9;
    char rounds_ms[MAX_ROUNDS * 16] = "", rounds_frac[MAX_ROUNDS * 16] = "";
    for (int k = 0, n1 = 0, n2 = 0; k < s.rounds; k++) {
      n1 += snprintf(rounds_ms + n1, sizeof rounds_ms - (size_t)n1, "%s%.4f",
                     k ? "," : "", round_ms[i][k]);
      /* Unsorted: the fraction of round k. */
      double f = case_flops(c) / round_ms[i][k] * 1e-6 / round_ref[k];
      n2 += snprintf(rounds_frac + n2, sizeof rounds_frac - (size_t)n2,
                     isfinite(f) ? "%s%.4f" : "%snull", k ? "," : "", f);
    }
    /* JSON has no NaN: null when there is no reference. */
    char refs[32] = "null", frac[32] = "null";
    if (nref) {
      snprintf(refs, sizeof refs, "%.2f", ref);
      snprintf(frac, sizeof frac, "%.4f", gf / ref);
    }
    fprintf(s.json,
            "{\"case\":\"%s\",\"ok\":true,\"B\":%lld,\"Lq\":%lld,\"Lk\":%lld,"
            "\"E\":%lld,\"H\":%lld,\"kdim\":%lld,\"vdim\":%lld,\"causal\":%d,"
            "\"keylen\":%g,\"pad\":%g,\"bias\":%d,\"window\":%lld,"
            "\"scratch\":%d,\"core\":\"%s\","
            "\"weights\":%d,\"threads\":%d,\"blas_threads\":%d,"
            "\"rounds\":%d,\"reps\":%d,"
            "\"median_ms\":%.4f,\"min_ms\":%.4f,\"max_ms\":%.4f,"
            "\"gflop\":%.6f,\"gflops\":%.2f,\"sgemm_gflops\":%s,"
            "\"fraction\":%s,\"peak_rss_mib\":%.1f,"
            "\"round_ms\":[%s],\"round_fraction\":[%s]}\n",
            c->name, (long long)c->batch, (long long)c->len_q,
            (long long)c->len_k, (long long)c->embed, (long long)c->heads,
            (long long)c->kdim, (long long)c->vdim, c->causal, c->keylen,
            c->pad, c->bias, (long long)c->window, c->scratch,
            core_names[c->core], c->weights, c->threads, r->blas_threads,
            s.rounds, r->reps, 1e3 * r->median_s, 1e3 * r->min_s,
            1e3 * r->max_s, case_flops(c) * 1e-9, gf, refs, frac,
            r->peak_rss_mib, rounds_ms, rounds_frac);
  }
  if (s.json != stdout)
    fclose(s.json);
  free(pooled);
  free(ref_samples);
  return failed ? 1 : 0;
}
