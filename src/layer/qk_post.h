/* SPDX-License-Identifier: MIT */
/* The work on projected query and key rows before attention: QK-norm, then
 * the rotary embedding at each row's position (qk_post.c). It runs on a
 * block of rows right after the projection wrote them (layer/project.c),
 * while they are in cache. */
#ifndef ATTN_LAYER_QK_POST_H
#define ATTN_LAYER_QK_POST_H

#include "layer/layer.h"

typedef struct {
  const struct attn_layer *l;
  /* Columns of the projection's output holding query heads [q0, q0 + qn)
   * and key heads [k0, k0 + kn); qn or kn may be 0. */
  int64_t q0, qn, k0, kn;
  /* Position of output row r for queries and for keys (rotation only;
   * NULL without rotation). */
  const int64_t *qpos, *kpos;
  /* Without qpos (kpos): row r is at row_base[r / per_base] + r % per_base
   * (a decoding step's rows), or at 0 when row_base is NULL too. */
  const int64_t *row_base;
  int64_t per_base;
} attn_qk_post;

/* Rows [r0, r0 + rows) and the head-aligned columns [c0, c1) of y (row
 * stride ldy; row r at y + r * ldy). With ATTN_QK_NORM_ALL, [c0, c1) must
 * cover a region (all query or all key columns) whole. */
void attn_qk_post_rows(const attn_qk_post *p, float *y, int64_t ldy, int64_t r0,
                       int64_t rows, int64_t c0, int64_t c1);

/* Columns a block of the projection must be a multiple of for p (1 when
 * p is NULL); 0 = the block must span every column. */
int64_t attn_qk_post_align(const attn_qk_post *p);

#endif
