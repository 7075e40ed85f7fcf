/* SPDX-License-Identifier: MIT */
/* Masks: validation of a caller's attn_mask, and the one formula for the
 * keys a query may see under causality and a sliding window, used by the
 * tiled core and the decoding kernel alike. */
#ifndef ATTN_CORE_MASK_H
#define ATTN_CORE_MASK_H

#include "attn/attn.h"

#include <stdbool.h>

/* Validates a caller's mask (NULL = none) for these sizes and copies it
 * into *out, resolved: out is always a full, current-size descriptor. */
attn_status attn_mask_load(const attn_mask *in, int64_t batch, int64_t heads,
                           int64_t len_q, int64_t len_k, attn_mask *out);

/* ATTN_ERR_BAD_MASK unless mode is an ATTN_EMPTY_ROW_* value. */
attn_status attn_check_empty_rows(int32_t mode);

/* Keys [*lo, *hi) visible to the query at position p among n keys
 * (0 <= n; p may be negative or beyond n): all n without causality,
 * keys j <= p with it, and within a window (> 0) keys j > p - window.
 * *lo >= *hi when none is. Free of overflow for any int64 arguments. */
static inline void attn_key_range(int64_t p, int64_t n, bool causal,
                                  int64_t window, int64_t *lo, int64_t *hi) {
  int64_t a = 0, z = n;
  if (causal && p < z)
    z = p < 0 ? 0 : p + 1;
  /* p - window + 1 > 0 exactly when p >= window; no subtraction can
   * overflow then, since 0 < window <= p. */
  if (window > 0 && p >= window)
    a = p - window + 1;
  *lo = a;
  *hi = z;
}

/* For query rows i0 .. i0+rows-1 of batch row b: the key range [lo, hi)
 * left by key lengths, causality and the window. */
void attn_mask_ranges(const attn_mask *m, int64_t b, int64_t len_q,
                      int64_t len_k, int64_t i0, int64_t rows, int64_t *lo,
                      int64_t *hi);

#endif
