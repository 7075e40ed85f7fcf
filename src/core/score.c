/* SPDX-License-Identifier: MIT */
/* Soft-capping and ALiBi on score tiles (score.h). */
#include "core/score.h"

#include <math.h>

static void softcap_row(float *s, int64_t cols, float cap) {
  float inv = 1.0f / cap;
  for (int64_t j = 0; j < cols; j++)
    s[j] = cap * tanhf(s[j] * inv);
}

void attn_score_rows(const attn_score_fx *fx, int64_t h, const int64_t *qpos,
                     int64_t qp0, const int64_t *kpos, int64_t j0, float *s,
                     int64_t lds, int64_t rows, int64_t cols) {
  float slope = fx->slopes ? fx->slopes[h] : 0.0f;
  for (int64_t r = 0; r < rows; r++) {
    float *row = s + r * lds;
    if (fx->softcap > 0.0f)
      softcap_row(row, cols, fx->softcap);
    if (!fx->slopes)
      continue;
    int64_t qp = qpos ? qpos[r] : qp0 + r;
    for (int64_t j = 0; j < cols; j++) {
      int64_t d = (kpos ? kpos[j] : j0 + j) - qp;
      if (fx->symmetric && d > 0)
        d = -d;
      row[j] += slope * (float)d;
    }
  }
}
