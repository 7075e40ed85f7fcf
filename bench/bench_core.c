/* SPDX-License-Identifier: MIT */
/* bench_core: times the attention core alone (scores, mask, softmax, P*V;
 * no projections) with block sizes forced from the command line. It links
 * the library's objects (attn_internal), so it can reach the internal core
 * interface; the block-size and dispatch measurements in
 * docs/PERFORMANCE.md come from it.
 *
 * usage: bench_core B L E H qblock kblock gemm_rows threads causal [reps]
 *        [project] [core]
 *   qblock, kblock, gemm_rows: 0 = the library's choice; kblock -1 = whole
 *   rows (kblock = L); kblock -2 = the plain path the library does not use
 *   (per head one L x L score product and one P*V product, each a single
 *   BLAS call the BLAS threads itself, softmax over whole rows in between;
 *   no mask) for comparison. Prints one line: the median time and the
 *   core's GFLOP/s (4 * B * L * L * E, causal counted in full), and the
 *   least CPU time of the calling thread (the core's with threads=1;
 *   steadier than wall time on a shared machine). project 1:
 *   before each timed run, a Q/K/V-sized product with the BLAS's own
 *   threads, as the forward pass does (its threads may still be spinning
 *   while the core runs); only the core is timed. core: "packed" (the
 *   default: the library's choice, the packed core where the vector table
 *   has its kernels) or "cblas" (the cblas_sgemm core with the same vector
 *   table, for comparison). */
#include "common/runtime.h"
#include "core/choice.h"
#include "core/packed.h"
#include "core/simd.h"
#include "core/tiled.h"

#include <cblas.h>
#include <math.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "bench_util.h"

/* The plain path: whole score matrices with BLAS-threaded products. */
static void plain(const attn_core *c, float *scores) {
  const attn_heads *L = c->heads;
  int64_t n = c->len_q, hd = L->head_dim;
  const attn_simd *vec = attn_simd_get();
  for (int64_t b = 0; b < c->batch; b++)
    for (int64_t h = 0; h < L->num_heads; h++) {
      const float *q = c->q + b * n * c->ldq + h * hd;
      const float *k = c->k + b * n * c->ldk + h * hd;
      const float *v = c->v + b * n * c->ldv + h * hd;
      cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, (int)n, (int)n,
                  (int)hd, L->scale, q, (int)c->ldq, k, (int)c->ldk, 0.0f,
                  scores, (int)n);
      for (int64_t i = 0; i < n; i++) {
        float *row = scores + i * n;
        float sum = vec->exp_sum(row, n, vec->max(row, n));
        vec->scale(row, n, 1.0f / sum);
      }
      cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, (int)n, (int)hd,
                  (int)n, 1.0f, scores, (int)n, v, (int)c->ldv, 0.0f,
                  c->ctx + b * n * c->ldctx + h * hd, (int)c->ldctx);
    }
}

/* CPU time of the calling thread: with threads=1 the core runs in it, and
 * this time leaves out what other programs took of the CPU meanwhile. */
static double thread_cpu(void) {
  struct timespec ts;
  clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
  return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

int main(int argc, char **argv) {
  if (argc < 10) {
    fprintf(stderr, "usage: bench_core B L E H qblock kblock gemm_keys "
                    "threads causal [reps]\n");
    return 2;
  }
  int64_t B = atoll(argv[1]), L = atoll(argv[2]), E = atoll(argv[3]);
  int64_t H = atoll(argv[4]), qb = atoll(argv[5]), kb = atoll(argv[6]);
  int64_t kg = atoll(argv[7]);
  int32_t threads = atoi(argv[8]);
  int causal = atoi(argv[9]);
  int reps = argc > 10 ? atoi(argv[10]) : 5;
  int project = argc > 11 ? atoi(argv[11]) : 0;
  bool cblas_core = argc > 12 && strcmp(argv[12], "cblas") == 0;
  /* The library's table without its packed kernels: the cblas core. */
  attn_simd no_panels = *attn_simd_get();
  no_panels.panels = NULL;
  const attn_simd *vec = cblas_core ? &no_panels : attn_simd_get();
  if (B <= 0 || L <= 0 || E <= 0 || H <= 0 || E % H || threads <= 0 ||
      reps <= 0)
    return 2;

  attn_heads layer = {.num_heads = H,
                      .num_kv_heads = H,
                      .head_dim = E / H,
                      .kv_dim = E,
                      .scale = (float)(1.0 / sqrt((double)(E / H)))};
  /* A runtime of exactly `threads` threads, holding the BLAS as forward
   * calls do by default. */
  attn_runtime_config rc;
  attn_runtime_config_init(&rc);
  rc.num_threads = threads;
  attn_runtime *rt = NULL;
  attn_exec ex;
  if (attn_runtime_create(&rc, &rt) != ATTN_OK ||
      attn_exec_resolve(rt, threads, 0, &ex) != ATTN_OK)
    return 1;

  int64_t dq, dk;
  /* The blocks of the core that runs, as a forward call sizes them. */
  attn_core_blocks_for(&layer, B, L, L, false,
                       attn_core_choose_packed(ATTN_CORE_AUTO, vec, L, true),
                       &dq, &dk);
  bool plain_path = kb == -2;
  qb = qb > 0 ? qb : dq;
  kb = kb > 0 ? kb : (kb < 0 ? L : dk);
  attn_mask mask;
  attn_mask_init(&mask);
  mask.causal = causal;

  int64_t ld = 3 * E;
  float *qkv = malloc((size_t)(B * L * ld) * sizeof(float));
  int64_t tile = (attn_core_tile_floats(qb, kb, layer.head_dim) + 15) / 16 * 16;
  if (plain_path && tile < L * L)
    tile = L * L;
  float *tiles = aligned_alloc(64, (size_t)(tile * threads) * sizeof(float));
  if (!qkv || !tiles)
    return 1;
  uint32_t x = 12345;
  for (int64_t i = 0; i < B * L * ld; i++) {
    x = x * 1664525u + 1013904223u;
    qkv[i] = (float)(x >> 8) / (float)(1u << 24) - 0.5f;
  }
  attn_core c = {.heads = &layer,
                 .mask = &mask,
                 .batch = B,
                 .len_q = L,
                 .len_k = L,
                 .q = qkv,
                 .k = qkv + E,
                 .v = qkv + 2 * E,
                 .ldq = ld,
                 .ldk = ld,
                 .ldv = ld,
                 .ctx = qkv, /* overwrites Q, as the forward pass does */
                 .ldctx = ld,
                 .qblock = qb,
                 .kblock = kb,
                 .gemm_rows = kg,
                 .simd = vec};
  double *t = malloc((size_t)reps * sizeof(double));
  double *cpu = malloc((size_t)reps * sizeof(double));
  if (!t || !cpu)
    return 1;
  int32_t used = plain_path ? 1 : attn_core_threads(&c, threads);
  /* Keys and values packed once per head, as forward calls do when a kv
   * head has several readers. */
  int64_t shared =
      attn_core_shared_head_floats(&c) * attn_core_shared_pairs(&c);
  c.shared = shared && !plain_path
                 ? aligned_alloc(64, (size_t)shared * sizeof(float))
                 : NULL;
  float *xin = project ? calloc((size_t)(B * L * E), sizeof(float)) : NULL;
  float *wqkv = project ? calloc((size_t)(3 * E * E), sizeof(float)) : NULL;
  float *y = project ? malloc((size_t)(B * L * 3 * E) * sizeof(float)) : NULL;
  if (project && (!xin || !wqkv || !y))
    return 1;
  for (int r = -1; r < reps; r++) {
    if (project)
      cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, (int)(B * L),
                  (int)(3 * E), (int)E, 1.0f, xin, (int)E, wqkv, (int)E, 0.0f,
                  y, (int)(3 * E));
    double t0 = now(), c0 = thread_cpu();
    if (plain_path) {
      plain(&c, tiles);
    } else {
      attn_exec_enter(&ex);
      attn_core_run_all(&c, &ex, used, tiles, tile);
      attn_exec_leave(&ex);
    }
    if (r >= 0) {
      t[r] = now() - t0;
      cpu[r] = thread_cpu() - c0;
    }
  }
  qsort(t, (size_t)reps, sizeof *t, cmp_double);
  qsort(cpu, (size_t)reps, sizeof *cpu, cmp_double);
  double med = reps % 2 ? t[reps / 2] : 0.5 * (t[reps / 2 - 1] + t[reps / 2]);
  double flops = 4.0 * (double)B * (double)L * (double)L * (double)E;
  printf("B=%lld L=%lld E=%lld H=%lld qb=%lld kb=%lld rows_per_product=%lld "
         "threads=%d "
         "causal=%d plain=%d vec=%s core=%s median_ms=%.3f min_ms=%.3f "
         "gflops=%.1f min_cpu_ms=%.3f\n",
         (long long)B, (long long)L, (long long)E, (long long)H, (long long)qb,
         (long long)kb, (long long)kg, used, causal, plain_path, vec->name,
         plain_path                          ? "plain"
         : attn_packed_applies(vec, c.len_q) ? "packed"
                                             : "cblas",
         1e3 * med, 1e3 * t[0], flops / med * 1e-9, 1e3 * cpu[0]);
  free(t);
  free(cpu);
  free(xin);
  free(y);
  free(wqkv);
  free(qkv);
  free(tiles);
  free(c.shared);
  attn_runtime_destroy(rt);
  return 0;
}
