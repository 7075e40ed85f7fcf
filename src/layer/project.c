/* SPDX-License-Identifier: MIT */
/* Projections on the call's threads (project.h). */
#include "layer/project.h"

#include "common/policy.h"
#include "core/linear.h"
#include "layer/qk_post.h"

#include <stdbool.h>
#include <stdint.h>

typedef struct {
  int64_t M, N, K, ldx, ldy, mr, nc, col_blocks;
  const float *x, *w, *b;
  float *y;
  const attn_qk_post *post; /* NULL = none */
} blocks_job;

static void block_item(void *ctx, int64_t item, int32_t slot) {
  (void)slot;
  const blocks_job *j = ctx;
  int64_t m0 = item / j->col_blocks * j->mr, n0 = item % j->col_blocks * j->nc;
  int64_t m = j->M - m0 < j->mr ? j->M - m0 : j->mr;
  int64_t n = j->N - n0 < j->nc ? j->N - n0 : j->nc;
  attn_linear(m, n, j->K, j->x + m0 * j->ldx, j->ldx, j->w + n0 * j->K,
              j->b ? j->b + n0 : NULL, j->y + m0 * j->ldy + n0, j->ldy);
  if (j->post)
    attn_qk_post_rows(j->post, j->y, j->ldy, m0, m, n0, n0 + n);
}

/* Rows of a block of the separate post-processing pass. */
#define BLOCK_ROWS 256
/* Work per projection block, at least (unless that leaves fewer than two
 * blocks), and the most blocks of one product. */
#define MIN_BLOCK_FLOPS 256e6
#define MAX_BLOCKS 16

/* The blocks of a projection: a grid of row and column blocks, each one
 * single-threaded sgemm, chosen from the shape alone so that results do
 * not depend on the thread count. Each block copies its rows of x and of w
 * into the BLAS's packed layouts, so an r x c grid copies x c times and w
 * r times (bench/bench_linear times grids against each other). The count
 * is a power of two, which 2, 4 or 8 threads share evenly, with about
 * MIN_BLOCK_FLOPS each (at least 2 blocks); of the grids of that count,
 * the one that copies the least. Row blocks have at least 16 rows; column
 * blocks are whole multiples of `align` (whole heads for post-processing)
 * of at least 64 columns, and align 0 (whole rows only) allows none. When
 * no grid fits, one block. */
static void project_grid(int64_t M, int64_t N, int64_t K, int64_t align,
                         int64_t *mr, int64_t *nc) {
  double flops = 2.0 * (double)M * (double)N * (double)K;
  int64_t blocks = 2;
  while (blocks < MAX_BLOCKS && flops >= 2.0 * blocks * MIN_BLOCK_FLOPS)
    blocks *= 2;
  int64_t unit = align == 0 ? N : (64 + align - 1) / align * align;
  int64_t r = 0, best = INT64_MAX;
  for (int64_t rr = blocks; rr >= 1; rr /= 2) {
    int64_t cc = blocks / rr, cost = cc * M + rr * N;
    bool fits = (rr == 1 || M >= rr * 16) && (cc == 1 || N >= cc * unit);
    if (fits && cost < best) {
      best = cost;
      r = rr;
    }
  }
  int64_t c = r ? blocks / r : 1;
  r = r ? r : 1;
  *mr = (M + r - 1) / r;
  *nc = c == 1 ? N : ((N + c - 1) / c + unit - 1) / unit * unit;
  if (*nc > N)
    *nc = N;
}

static void project_blocks(const attn_exec *x, int64_t M, int64_t N, int64_t K,
                           const float *in, int64_t ldx, const float *w,
                           const float *b, float *y, int64_t ldy,
                           const attn_qk_post *post) {
  blocks_job j = {M, N, K, ldx, ldy, M, N, 1, in, w, b, y, post};
  project_grid(M, N, K, attn_qk_post_align(post), &j.mr, &j.nc);
  j.col_blocks = (N + j.nc - 1) / j.nc;
  int64_t items = (M + j.mr - 1) / j.mr * j.col_blocks;
  double flops = 2.0 * (double)M * (double)N * (double)K;
  attn_exec_for(x, attn_threads_for(x->threads, items, attn_cost_flops(flops)),
                items, block_item, &j);
}

typedef struct {
  const attn_qk_post *post;
  float *y;
  int64_t ldy, rows, N;
} post_job;

static void post_item(void *ctx, int64_t item, int32_t slot) {
  (void)slot;
  const post_job *j = ctx;
  int64_t r0 = item * BLOCK_ROWS;
  int64_t n = j->rows - r0 < BLOCK_ROWS ? j->rows - r0 : BLOCK_ROWS;
  attn_qk_post_rows(j->post, j->y, j->ldy, r0, n, 0, j->N);
}

/* The post-processing of rows the BLAS wrote in one product: a pass of
 * its own, in blocks on the call's threads. */
static void post_all(const attn_exec *x, const attn_qk_post *post, int64_t M,
                     int64_t N, float *y, int64_t ldy) {
  post_job j = {post, y, ldy, M, N};
  int64_t items = (M + BLOCK_ROWS - 1) / BLOCK_ROWS;
  double bytes = 2.0 * (double)M * (double)N * sizeof(float);
  attn_exec_for(x, attn_threads_for(x->threads, items, attn_cost_bytes(bytes)),
                items, post_item, &j);
}

void attn_project_post(const attn_exec *x, int64_t M, int64_t N, int64_t K,
                       const float *in, int64_t ldx, const float *w,
                       const float *b, float *y, int64_t ldy,
                       const attn_qk_post *post) {
  if (x->blas_held) {
    project_blocks(x, M, N, K, in, ldx, w, b, y, ldy, post);
  } else {
    attn_linear(M, N, K, in, ldx, w, b, y, ldy);
    if (post)
      post_all(x, post, M, N, y, ldy);
  }
}

void attn_project(const attn_exec *x, int64_t M, int64_t N, int64_t K,
                  const float *in, int64_t ldx, const float *w, const float *b,
                  float *y, int64_t ldy) {
  attn_project_post(x, M, N, K, in, ldx, w, b, y, ldy, NULL);
}

static void rows_item(void *ctx, int64_t item, int32_t slot) {
  (void)slot;
  attn_rows_linear_block(ctx, item);
}

/* Rows of a projection up to which the rows kernel runs it. A step's few
 * rows make it a matrix-vector product bound by reading W: a general
 * matrix product would first copy all of W into its packed layout
 * (reading it twice, writing it once). */
#define ROWS_KERNEL_MAX 8

void attn_project_step(const attn_exec *x, int64_t M, int64_t N, int64_t K,
                       const float *in, int64_t ldx, const float *w,
                       const float *b, float *y, int64_t ldy) {
  attn_project_step_post(x, M, N, K, in, ldx, w, b, y, ldy, NULL);
}

void attn_project_step_post(const attn_exec *x, int64_t M, int64_t N, int64_t K,
                            const float *in, int64_t ldx, const float *w,
                            const float *b, float *y, int64_t ldy,
                            const attn_qk_post *post) {
  if (M > ROWS_KERNEL_MAX) {
    attn_project_post(x, M, N, K, in, ldx, w, b, y, ldy, post);
    return;
  }
  attn_rows_linear p = {M, N, K, in, ldx, w, b, y, ldy};
  int64_t blocks = (N + ATTN_ROWS_LINEAR_BLOCK - 1) / ATTN_ROWS_LINEAR_BLOCK;
  double bytes = (double)N * (double)K * sizeof(float);
  attn_exec_for(x, attn_threads_for(x->threads, blocks, attn_cost_bytes(bytes)),
                blocks, rows_item, &p);
  /* A step's few rows are still in cache. */
  if (post)
    attn_qk_post_rows(post, y, ldy, 0, M, 0, N);
}
