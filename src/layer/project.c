/* SPDX-License-Identifier: MIT */
/* Projections on the call's threads (project.h). */
#include "layer/project.h"

#include "common/policy.h"
#include "core/linear.h"
#include "layer/qk_post.h"

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

/* Rows per block: single-threaded OpenBLAS runs 256-row slices of a
 * [4096, 1536] x [1536, 512]^T product as fast as the whole product
 * (98 vs 97 GFLOP/s on one core). */
#define BLOCK_ROWS 256
/* Blocks wanted per product, so that a few threads share them evenly. */
#define MIN_BLOCKS 8

static void project_blocks(const attn_exec *x, int64_t M, int64_t N, int64_t K,
                           const float *in, int64_t ldx, const float *w,
                           const float *b, float *y, int64_t ldy,
                           const attn_qk_post *post) {
  blocks_job j = {M, N, K, ldx, ldy, BLOCK_ROWS, N, 1, in, w, b, y, post};
  int64_t align = attn_qk_post_align(post);
  /* Few rows: cut the columns too, in multiples of 64, at least 128. */
  int64_t row_blocks = (M + j.mr - 1) / j.mr;
  if (row_blocks < MIN_BLOCKS) {
    int64_t want = (MIN_BLOCKS + row_blocks - 1) / row_blocks;
    int64_t nc = (N + want - 1) / want;
    nc = (nc + 63) / 64 * 64;
    nc = nc < 128 ? 128 : nc;
    /* Post-processing needs whole heads (or whole rows) per block. */
    j.nc = align == 0 || nc > N ? N : (nc + align - 1) / align * align;
  }
  j.col_blocks = (N + j.nc - 1) / j.nc;
  int64_t items = row_blocks * j.col_blocks;
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
