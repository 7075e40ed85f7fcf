/* SPDX-License-Identifier: MIT */
/* bench_linear: how a projection y = x W^T (x [M, K], W [N, K]) is best cut
 * into single-threaded sgemm blocks for the call's threads.
 *
 * With the BLAS held at one thread (ATTN_BLAS_HOLD), the library runs a
 * projection as a grid of blocks on its workers, each block one cblas_sgemm
 * that copies its rows of x and of W into the BLAS's packed layouts. This
 * program times, for each shape given, the library's own choice
 * (attn_project) and fixed grids of r x c blocks on the same workers, each
 * as a fraction of a large multi-threaded cblas_sgemm measured between the
 * rounds. Within a round the variants take turns run by run; every
 * figure is the median over the rounds of (GFLOP/s of the variant's
 * median run) / (GFLOP/s of the reference of that round), with its
 * min-max.
 *
 * usage: bench_linear [--rounds N] [--min-time S] [--threads T] MxNxK ...
 * e.g.   bench_linear --rounds 7 512x1536x512 4096x1024x768 */
#include "attn/attn.h"
#include "bench_util.h"
#include "common/runtime.h"
#include "core/linear.h"
#include "layer/project.h"

#include <cblas.h>
#include <dlfcn.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MAX_ROUNDS 64
#define MAX_REPS 1000

typedef struct {
  int64_t M, N, K, mr, nc, col_blocks;
  const float *x, *w;
  float *y;
} grid_job;

static void grid_item(void *ctx, int64_t item, int32_t slot) {
  (void)slot;
  const grid_job *j = ctx;
  int64_t m0 = item / j->col_blocks * j->mr, n0 = item % j->col_blocks * j->nc;
  int64_t m = j->M - m0 < j->mr ? j->M - m0 : j->mr;
  int64_t n = j->N - n0 < j->nc ? j->N - n0 : j->nc;
  attn_linear(m, n, j->K, j->x + m0 * j->K, j->K, j->w + n0 * j->K, NULL,
              j->y + m0 * j->N + n0, j->N);
}

/* A variant: rows x cols blocks; rows 0: the library's attn_project();
 * rows -1: the grid of 0.1.0 (256-row blocks, cut into column blocks of
 * at least 128, multiples of 64, while there were fewer than 8). */
typedef struct {
  const char *name;
  int64_t rows, cols;
} variant;

static const variant variants[] = {
    {"library", 0, 0}, {"0.1.0 grid", -1, 0}, {"1 block", 1, 1},
    {"2 x 1", 2, 1},   {"1 x 2", 1, 2},       {"4 x 1", 4, 1},
    {"2 x 2", 2, 2},   {"8 x 1", 8, 1},       {"4 x 2", 4, 2},
    {"16 x 1", 16, 1}, {"8 x 2", 8, 2},       {"4 x 4", 4, 4},
};
#define N_VARIANTS (sizeof variants / sizeof *variants)

static void old_grid(grid_job *j) {
  j->mr = 256;
  j->nc = j->N;
  int64_t row_blocks = (j->M + 255) / 256;
  if (row_blocks < 8) {
    int64_t want = (8 + row_blocks - 1) / row_blocks;
    int64_t nc = ((j->N + want - 1) / want + 63) / 64 * 64;
    j->nc = nc < 128 ? 128 : nc > j->N ? j->N : nc;
  }
}

static void run_variant(const attn_exec *x, const variant *v, grid_job *j) {
  if (v->rows == 0) {
    attn_project(x, j->M, j->N, j->K, j->x, j->K, j->w, NULL, j->y, j->N);
    return;
  }
  if (v->rows < 0) {
    old_grid(j);
  } else {
    j->mr = (j->M + v->rows - 1) / v->rows;
    j->nc = (j->N + v->cols - 1) / v->cols;
  }
  j->col_blocks = (j->N + j->nc - 1) / j->nc;
  int64_t items = (j->M + j->mr - 1) / j->mr * j->col_blocks;
  attn_exec_for(x, x->threads, items, grid_item, j);
}

static void set_blas_threads(int n) {
  void (*set)(int);
  *(void **)&set = dlsym(RTLD_DEFAULT, "openblas_set_num_threads");
  if (set)
    set(n);
}

/* GFLOP/s of a 2048^3 sgemm on `threads` BLAS threads (median of 5). */
static double reference(int threads, float *a, float *b, float *c) {
  const int n = 2048;
  set_blas_threads(threads);
  double g[5];
  for (int r = 0; r < 5; r++) {
    double t = now();
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, n, n, n, 1.0f, a, n,
                b, n, 0.0f, c, n);
    g[r] = 2.0 * n * n * (double)n / (now() - t) / 1e9;
  }
  return median(g, 5);
}

static float *random_floats(int64_t n) {
  float *p = malloc((size_t)n * sizeof *p);
  if (!p) {
    fprintf(stderr, "bench_linear: out of memory\n");
    exit(1);
  }
  for (int64_t i = 0; i < n; i++)
    p[i] = (float)rand() / (float)RAND_MAX - 0.5f;
  return p;
}

int main(int argc, char **argv) {
  int rounds = 5, threads = 0;
  double min_time = 0.3;
  int first = 1;
  for (; first < argc && argv[first][0] == '-'; first += 2) {
    if (first + 1 >= argc)
      break;
    if (!strcmp(argv[first], "--rounds"))
      rounds = atoi(argv[first + 1]);
    else if (!strcmp(argv[first], "--min-time"))
      min_time = atof(argv[first + 1]);
    else if (!strcmp(argv[first], "--threads"))
      threads = atoi(argv[first + 1]);
    else
      break;
  }
  if (first >= argc || rounds < 1 || rounds > MAX_ROUNDS) {
    fprintf(stderr,
            "usage: bench_linear [--rounds N (1-%d)] [--min-time S] "
            "[--threads T] MxNxK ...\n",
            MAX_ROUNDS);
    return 2;
  }
  attn_runtime_config rc;
  attn_runtime_config_init(&rc);
  rc.num_threads = threads;
  attn_runtime *rt = NULL;
  if (attn_runtime_create(&rc, &rt) != ATTN_OK) {
    fprintf(stderr, "bench_linear: %s\n", attn_last_error());
    return 1;
  }
  int32_t nt = 1;
  attn_runtime_threads(rt, &nt);
  float *a = random_floats(2048 * 2048), *b = random_floats(2048 * 2048),
        *c = random_floats(2048 * 2048);
  printf("libattn %s: projection blocks on %d threads, BLAS held at 1; "
         "fraction of a 2048^3 sgemm on %d BLAS threads, median (min-max) "
         "over %d rounds\n",
         attn_version_string(), nt, nt, rounds);

  for (int s = first; s < argc; s++) {
    long long M, N, K;
    if (sscanf(argv[s], "%lldx%lldx%lld", &M, &N, &K) != 3 || M < 1 || N < 1 ||
        K < 1) {
      fprintf(stderr, "bench_linear: '%s' is not MxNxK\n", argv[s]);
      return 2;
    }
    grid_job j = {M,
                  N,
                  K,
                  0,
                  0,
                  0,
                  random_floats(M * K),
                  random_floats(N * K),
                  random_floats(M * N)};
    double flops = 2.0 * (double)M * (double)N * (double)K;
    static double frac[N_VARIANTS][MAX_ROUNDS], ref[MAX_ROUNDS];
    for (int r = 0; r < rounds; r++) {
      ref[r] = reference(nt, a, b, c);
      attn_exec x;
      attn_exec_resolve(rt, 0, 0, &x);
      attn_exec_enter(&x); /* holds the BLAS at one thread */
      if (!x.blas_held) {
        fprintf(stderr, "bench_linear: the BLAS is not OpenBLAS (pthreads) "
                        "and cannot be held at one thread\n");
        return 1;
      }
      /* The variants take turns run by run, so that the machine's drift
       * within the round reaches them alike; each one's median run. */
      static double t[N_VARIANTS][MAX_REPS];
      int reps = 0;
      double t0 = now();
      for (size_t v = 0; v < N_VARIANTS; v++)
        run_variant(&x, &variants[v], &j); /* warm-up */
      do {
        for (size_t v = 0; v < N_VARIANTS; v++) {
          double t1 = now();
          run_variant(&x, &variants[v], &j);
          t[v][reps] = now() - t1;
        }
        reps++;
      } while (reps < MAX_REPS &&
               (now() - t0 < min_time * (double)N_VARIANTS || reps < 5));
      for (size_t v = 0; v < N_VARIANTS; v++)
        frac[v][r] = flops / median(t[v], reps) / 1e9 / ref[r];
      attn_exec_leave(&x);
    }
    double refs[MAX_ROUNDS];
    memcpy(refs, ref, sizeof refs);
    printf("\n%lldx%lldx%lld (%.0f MFLOP); reference %.0f GFLOP/s median\n", M,
           N, K, flops / 1e6, median(refs, rounds));
    for (size_t v = 0; v < N_VARIANTS; v++) {
      double med = median(frac[v], rounds); /* sorts */
      printf("  %-15s %.3f (%.3f-%.3f)\n", variants[v].name, med, frac[v][0],
             frac[v][rounds - 1]);
    }
    free((void *)j.x);
    free((void *)j.w);
    free(j.y);
  }
  free(a);
  free(b);
  free(c);
  attn_runtime_destroy(rt);
  return 0;
}
