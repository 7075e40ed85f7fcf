/* SPDX-License-Identifier: MIT */
/* Mask descriptors: validation and the key range each query may see. */
#include "core/mask.h"

#include "common/checked.h"
#include "common/error.h"
#include "common/structs.h"

#include <math.h>
#include <string.h>

static const attn_mask mask_defaults = {.struct_size = sizeof(attn_mask)};

ATTN_VERSIONED_STRUCT(attn_mask, mask_kind, ATTN_MASK_SIZE_0_1, mask_defaults,
                      attn_mask_init_sized)

attn_status attn_check_empty_rows(int32_t mode) {
  if (mode != ATTN_EMPTY_ROW_ZERO && mode != ATTN_EMPTY_ROW_NAN)
    return attn_fail(ATTN_ERR_BAD_MASK, "unknown empty_rows mode %d", mode);
  return ATTN_OK;
}

static attn_status check_bias(const attn_mask *m, int64_t batch, int64_t heads,
                              int64_t len_q, int64_t len_k) {
  if (m->bias_stride_b < 0 || m->bias_stride_h < 0 || m->bias_stride_q < 0)
    return attn_fail(ATTN_ERR_BAD_MASK,
                     "bias strides (%lld, %lld, %lld) must not be negative",
                     (long long)m->bias_stride_b, (long long)m->bias_stride_h,
                     (long long)m->bias_stride_q);
  /* The last element read must be addressable: overflow-check it. */
  int64_t nb = m->bias_stride_b ? batch : 1;
  int64_t nh = m->bias_stride_h ? heads : 1;
  int64_t nq = m->bias_stride_q ? len_q : 1;
  int64_t t1, t2, t3, last;
  if (!attn_mul64(nb - 1, m->bias_stride_b, &t1) ||
      !attn_mul64(nh - 1, m->bias_stride_h, &t2) ||
      !attn_mul64(nq - 1, m->bias_stride_q, &t3) || !attn_add64(t1, t2, &t1) ||
      !attn_add64(t1, t3, &t1) || !attn_add64(t1, len_k, &last) ||
      (uint64_t)last > PTRDIFF_MAX / sizeof(float))
    return attn_fail(ATTN_ERR_OVERFLOW,
                     "bias strides (%lld, %lld, %lld) address beyond memory",
                     (long long)m->bias_stride_b, (long long)m->bias_stride_h,
                     (long long)m->bias_stride_q);
  if (m->bias_stride_q != 0 && m->bias_stride_q < len_k)
    return attn_fail(ATTN_ERR_BAD_MASK,
                     "bias_stride_q %lld is smaller than len_k %lld: rows "
                     "would overlap",
                     (long long)m->bias_stride_q, (long long)len_k);
  /* Values: -inf hides a key; NaN and +inf have no meaning. */
  for (int64_t b = 0; b < nb; b++)
    for (int64_t h = 0; h < nh; h++)
      for (int64_t i = 0; i < nq; i++) {
        const float *row = m->bias + b * m->bias_stride_b +
                           h * m->bias_stride_h + i * m->bias_stride_q;
        for (int64_t j = 0; j < len_k; j++)
          if (isnan(row[j]) || row[j] == INFINITY)
            return attn_fail(ATTN_ERR_NOT_FINITE,
                             "mask bias [%lld, %lld, %lld, %lld] is %s "
                             "(only finite values and -inf are allowed)",
                             (long long)b, (long long)h, (long long)i,
                             (long long)j, isnan(row[j]) ? "NaN" : "+inf");
      }
  return ATTN_OK;
}

attn_status attn_mask_load(const attn_mask *in, int64_t batch, int64_t heads,
                           int64_t len_q, int64_t len_k, attn_mask *m) {
  *m = mask_defaults;
  if (!in)
    return ATTN_OK;
  attn_status st = attn_struct_load(&mask_kind, m, in);
  if (st != ATTN_OK)
    return st;
  if (m->causal < ATTN_CAUSAL_NONE || m->causal > ATTN_CAUSAL_BOTTOM_RIGHT)
    return attn_fail(ATTN_ERR_BAD_MASK, "unknown causal mode %d", m->causal);
  if ((st = attn_check_empty_rows(m->empty_rows)) != ATTN_OK)
    return st;
  if (m->window < 0)
    return attn_fail(ATTN_ERR_BAD_MASK,
                     "window %lld must not be negative (0 means none)",
                     (long long)m->window);
  if (m->key_lengths)
    for (int64_t b = 0; b < batch; b++)
      if (m->key_lengths[b] < 0 || m->key_lengths[b] > len_k)
        return attn_fail(ATTN_ERR_BAD_MASK,
                         "key_lengths[%lld] = %lld is outside [0, len_k = "
                         "%lld]",
                         (long long)b, (long long)m->key_lengths[b],
                         (long long)len_k);
  if (m->bias)
    return check_bias(m, batch, heads, len_q, len_k);
  if (m->bias_stride_b || m->bias_stride_h || m->bias_stride_q)
    return attn_fail(ATTN_ERR_BAD_MASK, "bias strides are set but bias is "
                                        "NULL");
  return ATTN_OK;
}

void attn_mask_ranges(const attn_mask *m, int64_t b, int64_t len_q,
                      int64_t len_k, int64_t i0, int64_t rows, int64_t *lo,
                      int64_t *hi) {
  int64_t n = m->key_lengths ? m->key_lengths[b] : len_k;
  /* Position of query i among the keys: i, or i + n - len_q when the
   * queries continue the key sequence (n and len_q are sizes the caller
   * checked, so neither this nor i0 + r overflows). */
  int64_t shift = m->causal == ATTN_CAUSAL_BOTTOM_RIGHT ? n - len_q : 0;
  for (int64_t r = 0; r < rows; r++)
    attn_key_range(i0 + r + shift, n, m->causal != ATTN_CAUSAL_NONE, m->window,
                   &lo[r], &hi[r]);
}
