/* Scale is applied by the score product; this file masks score tiles and
 * runs the numerically stable online softmax over them. */
#include "kernels.h"

#include <math.h>
#include <pthread.h>
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
  const attn_vec_ops *v = attn_vec();
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

/* Portable primitives --------------------------------------------------- */

static float max_portable(const float *x, int64_t n) {
  float m = -INFINITY;
  for (int64_t i = 0; i < n; i++)
    m = x[i] > m ? x[i] : m;
  return m;
}

static float exp_sum_portable(float *x, int64_t n, float shift) {
  /* Eight partial sums, as the vector versions keep: long rows lose less
   * to rounding than with one running sum. */
  float part[8] = {0};
  for (int64_t i = 0; i < n; i++) {
    float e = expf(x[i] - shift);
    x[i] = e;
    part[i % 8] += e;
  }
  return ((part[0] + part[4]) + (part[1] + part[5])) +
         ((part[2] + part[6]) + (part[3] + part[7]));
}

static void scale_portable(float *x, int64_t n, float f) {
  for (int64_t i = 0; i < n; i++)
    x[i] *= f;
}

static void transpose_portable(const float *src, int64_t lds, int64_t rows,
                               int64_t cols, float *dst, int64_t ldd) {
  /* In 8 x 8 blocks, so both sides are read and written in cache lines. */
  for (int64_t r0 = 0; r0 < rows; r0 += 8)
    for (int64_t c0 = 0; c0 < cols; c0 += 8) {
      int64_t r1 = r0 + 8 < rows ? r0 + 8 : rows;
      int64_t c1 = c0 + 8 < cols ? c0 + 8 : cols;
      for (int64_t c = c0; c < c1; c++)
        for (int64_t r = r0; r < r1; r++)
          dst[c * ldd + r] = src[r * lds + c];
    }
}

static const attn_vec_ops portable_ops = {max_portable, exp_sum_portable,
                                          "portable", scale_portable,
                                          transpose_portable};

const attn_vec_ops *attn_vec_portable(void) { return &portable_ops; }

/* Chosen once; pthread_once makes the first calls from several threads
 * safe. */
static const attn_vec_ops *chosen;
static pthread_once_t chosen_once = PTHREAD_ONCE_INIT;

static void choose(void) {
  const attn_vec_ops *avx2 = attn_vec_avx2();
  chosen = avx2 && attn_cpu_has_avx2_fma() ? avx2 : &portable_ops;
}

const attn_vec_ops *attn_vec(void) {
  pthread_once(&chosen_once, choose);
  return chosen;
}
