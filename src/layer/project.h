/* SPDX-License-Identifier: MIT */
/* The projections of a call, y = x W^T + b, on the call's threads. */
#ifndef ATTN_LAYER_PROJECT_H
#define ATTN_LAYER_PROJECT_H

#include "common/runtime.h"
#include "layer/qk_post.h"

/* y[M, N] = x[M, K] W[N, K]^T + b (b may be NULL). While the BLAS is held
 * at one thread (x->blas_held), the product is cut into blocks of rows
 * (and columns, for few rows) run on the call's threads; the blocks
 * depend on the shapes only, so the result does not depend on the thread
 * count. Otherwise it is one BLAS call, which the BLAS may thread. */
void attn_project(const attn_exec *x, int64_t M, int64_t N, int64_t K,
                  const float *in, int64_t ldx, const float *w, const float *b,
                  float *y, int64_t ldy);

/* As attn_project() for a decoding step: up to 8 rows go to a kernel that
 * reads each weight once (core/linear.h) on the call's threads. */
void attn_project_step(const attn_exec *x, int64_t M, int64_t N, int64_t K,
                       const float *in, int64_t ldx, const float *w,
                       const float *b, float *y, int64_t ldy);

/* As attn_project() and attn_project_step(), then post (NULL = nothing)
 * on every output row: the norm and rotation of the query and key heads
 * (layer/qk_post.h), run on each block of rows right after its product
 * while the BLAS is held, else as a pass of its own. */
void attn_project_post(const attn_exec *x, int64_t M, int64_t N, int64_t K,
                       const float *in, int64_t ldx, const float *w,
                       const float *b, float *y, int64_t ldy,
                       const attn_qk_post *post);
void attn_project_step_post(const attn_exec *x, int64_t M, int64_t N, int64_t K,
                            const float *in, int64_t ldx, const float *w,
                            const float *b, float *y, int64_t ldy,
                            const attn_qk_post *post);

#endif
