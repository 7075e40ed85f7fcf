/* Linear projections y = x W^T + b in torch's weight layout, as one
 * cblas_sgemm (the BLAS threads it). */
#include "kernels.h"

#include <cblas.h>
#include <limits.h>
#include <string.h>

void attn_linear(int64_t M, int64_t N, int64_t K, const float *x, int64_t ldx,
                 const float *w, const float *b, float *y, int64_t ldy) {
  /* CBLAS sizes are int: split very tall products into row chunks. */
  const int64_t chunk = INT_MAX / 2;
  for (int64_t r0 = 0; r0 < M; r0 += chunk) {
    int64_t m = M - r0 < chunk ? M - r0 : chunk;
    float *yc = y + r0 * ldy;
    if (b)
      for (int64_t r = 0; r < m; r++)
        memcpy(yc + r * ldy, b, (size_t)N * sizeof(float));
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, (int)m, (int)N, (int)K,
                1.0f, x + r0 * ldx, (int)ldx, w, (int)K, b ? 1.0f : 0.0f, yc,
                (int)ldy);
  }
}
