/* SPDX-License-Identifier: MIT */
/* Scale is applied by the score product; this file masks score tiles and
 * runs the numerically stable online softmax over them. */
#include "core/softmax.h"

#include "core/simd.h"

#include <math.h>
#include <string.h>

void attn_mask_tile(float *s, int64_t lds, int64_t rows, int64_t cols,
                    int64_t j0, const int64_t *lo, const int64_t *hi,
                    const uint8_t *pad, const float *bias, int64_t bias_ld) {
  for (int64_t r = 0; r < rows; r++) {
    float *row = s + r * lds;
    /* Visible columns of this tile: [a, z). */
    int64_t a = lo[r] - j0, z = hi[r] - j0;
    a = a < 0 ? 0 : (a > cols ? cols : a);
    z = z > cols ? cols : (z < a ? a : z);
    for (int64_t j = 0; j < a; j++)
      row[j] = -INFINITY;
    for (int64_t j = z; j < cols; j++)
      row[j] = -INFINITY;
    if (bias) {
      const float *br = bias + r * bias_ld + j0;
      for (int64_t j = a; j < z; j++)
        row[j] += br[j];
    }
    if (pad) {
      const uint8_t *pr = pad + j0;
      for (int64_t j = a; j < z; j++)
        if (pr[j])
          row[j] = -INFINITY;
    }
  }
}

int64_t attn_softmax_step(float *s, int64_t lds, int64_t rows, int64_t cols,
                          float *m, float *l, float *acc, int64_t ldacc,
                          int64_t acc_cols) {
  const attn_simd *v = attn_simd_get();
  int64_t live = 0;
  for (int64_t r = 0; r < rows; r++) {
    float *row = s + r * lds;
    float tile_max = v->max(row, cols);
    if (tile_max == -INFINITY) {
      /* No visible key in this tile: it adds nothing to the row. */
      memset(row, 0, (size_t)cols * sizeof(float));
      continue;
    }
    live++;
    float m_new = tile_max > m[r] ? tile_max : m[r];
    if (m_new > m[r] && l[r] > 0.0f) {
      float c = expf(m[r] - m_new);
      l[r] *= c;
      v->scale(acc + r * ldacc, acc_cols, c);
    }
    m[r] = m_new;
    l[r] += v->exp_sum(row, cols, m_new);
  }
  return live;
}
