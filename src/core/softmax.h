/* SPDX-License-Identifier: MIT */
/* Masking score tiles and the online softmax over them (softmax.c). */
#ifndef ATTN_CORE_SOFTMAX_H
#define ATTN_CORE_SOFTMAX_H

#include <stdint.h>

/* Hides keys outside each row's [lo, hi) and keys marked in pad (row of
 * key_padding for this batch row, or NULL), adds the additive bias (pointer
 * to the bias of the tile's first query and key 0, row stride bias_ld, or
 * NULL). The tile s[rows, cols] (row stride lds) holds keys j0 .. j0+cols-1.
 */
void attn_mask_tile(float *s, int64_t lds, int64_t rows, int64_t cols,
                    int64_t j0, const int64_t *lo, const int64_t *hi,
                    const uint8_t *pad, const float *bias, int64_t bias_ld);

/* One online-softmax step over a masked tile: per row, raises the running
 * max m, rescales the running sum l and the accumulator row acc (acc_cols
 * wide, stride ldacc) to the new max, replaces the tile by exp(s - m) and
 * adds its sum to l. Rows with no visible key so far are left at m = -inf,
 * l = 0 and their tile row set to zero. Returns the number of rows with a
 * visible key in this tile (0: the tile is all zeros). */
int64_t attn_softmax_step(float *s, int64_t lds, int64_t rows, int64_t cols,
                          float *m, float *l, float *acc, int64_t ldacc,
                          int64_t acc_cols);

#endif
