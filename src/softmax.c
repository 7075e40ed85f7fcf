/* Scale is applied by the score product; this file masks score tiles and
 * runs the numerically stable online softmax over them. */
#include "kernels.h"

#include <math.h>

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

void attn_softmax_step(float *s, int64_t lds, int64_t rows, int64_t cols,
                       float *m, float *l, float *acc, int64_t ldacc,
                       int64_t acc_cols) {
  const attn_vec_ops *v = attn_vec();
  for (int64_t r = 0; r < rows; r++) {
    float *row = s + r * lds;
    float tile_max = v->max(row, cols);
    float m_new = tile_max > m[r] ? tile_max : m[r];
    if (m_new == -INFINITY) {
      /* Nothing visible yet: contributes nothing to the accumulator. */
      for (int64_t j = 0; j < cols; j++)
        row[j] = 0.0f;
      continue;
    }
    if (m_new > m[r] && l[r] > 0.0f) {
      float c = expf(m[r] - m_new);
      l[r] *= c;
      float *a = acc + r * ldacc;
      for (int64_t j = 0; j < acc_cols; j++)
        a[j] *= c;
    }
    m[r] = m_new;
    l[r] += v->exp_sum(row, cols, m_new);
  }
}

/* Portable primitives --------------------------------------------------- */

static float max_portable(const float *x, int64_t n) {
  float m = -INFINITY;
  for (int64_t i = 0; i < n; i++)
    m = x[i] > m ? x[i] : m;
  return m;
}

static float exp_sum_portable(float *x, int64_t n, float shift) {
  float sum = 0.0f;
  for (int64_t i = 0; i < n; i++) {
    float e = expf(x[i] - shift);
    x[i] = e;
    sum += e;
  }
  return sum;
}

static const attn_vec_ops portable_ops = {max_portable, exp_sum_portable,
                                          "portable"};

const attn_vec_ops *attn_vec(void) { return &portable_ops; }
