/* SPDX-License-Identifier: MIT */
/* The packed attention core: the same work items as the tiled core
 * (tiled.h), with both products on the register-blocked kernels of the
 * vector table (simd.h, attn_panel_kernels) instead of cblas_sgemm.
 *
 * Keys and values are packed into groups of the kernels' rows: when the
 * caller gives the core a shared buffer (attn_core.shared, as forward
 * calls do when a kv head has several readers), once per (batch row, kv
 * head) for all work items, in a
 * parallel step before them; otherwise each work item packs every block of
 * keys it uses, for all of its panels (with 1024 query rows per item, 32
 * panels of 32). Each work item packs its block of queries once, scaled,
 * into panels of `panel` queries laid out for the kernels ([head_dim,
 * panel] each), and reuses them against every key. The
 * scores kernel broadcasts key elements against the query panel, giving
 * the scores transposed ([keys, panel]), so the online softmax runs down
 * columns with whole vectors and no horizontal sums; the values kernel
 * broadcasts value elements against those probabilities into an
 * accumulator kept transposed ([head_dim, panel]), rescaling it as it
 * loads it. Nothing is zeroed per product. */
#ifndef ATTN_CORE_PACKED_H
#define ATTN_CORE_PACKED_H

#include "core/simd.h"
#include "core/tiled.h"

#include <stdbool.h>

/* The widest panel of any table: tiles are sized for it, so a tile fits
 * whichever table runs. */
#define ATTN_PANEL_MAX 32

/* True when the packed core runs c with table v: v has panel kernels and c
 * has enough query rows to fill a good part of a panel (fewer go to the
 * cblas core). */
bool attn_packed_applies(const attn_simd *v, int64_t len_q);

/* Per-thread scratch of the packed core, in floats, for these blocks. */
int64_t attn_packed_tile_floats(int64_t qblock, int64_t kblock,
                                int64_t head_dim);

/* Head h of the query rows i0 .. i0+rows-1 (rows <= c->qblock) of batch
 * row b, on the panel kernels of table v, with the thread's tile: the same
 * results as the tiled core's item, within rounding (same masks, weights
 * and empty rows). */
void attn_packed_head(const attn_core *c, const attn_simd *v, int64_t b,
                      int64_t h, int64_t i0, int64_t rows, float *tile);

/* Floats per (batch row, kv head) of the buffer where c's keys and values
 * are packed once for all of the call's work items (c->shared). */
int64_t attn_packed_shared_head_floats(const attn_core *c);

/* Packing into c->shared, in attn_packed_share_items(c) independent items
 * (any thread, any order; each writes its own part). */
int64_t attn_packed_share_items(const attn_core *c);
void attn_packed_share(const attn_core *c, int64_t item);

/* True when key_padding (a batch row's flags, or NULL) hides every key of
 * [j0, j0 + n). */
static inline bool attn_keys_all_padded(const uint8_t *pad, int64_t j0,
                                        int64_t n) {
  if (!pad)
    return false;
  for (int64_t j = 0; j < n; j++)
    if (!pad[j0 + j])
      return false;
  return true;
}

#endif
