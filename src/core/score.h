/* SPDX-License-Identifier: MIT */
/* What a layer may do to its scores besides scaling and masking: logit
 * soft-capping, ALiBi and attention sinks. The tiled core and the decoding
 * kernel apply one description the same way (score.c); a call without any
 * of them passes NULL and runs exactly as before. */
#ifndef ATTN_CORE_SCORE_H
#define ATTN_CORE_SCORE_H

#include <math.h>
#include <stdbool.h>
#include <stdint.h>

typedef struct {
  float softcap;       /* > 0: s = softcap * tanh(s / softcap); 0 = none */
  const float *slopes; /* [H] ALiBi slopes, NULL = none */
  bool symmetric;      /* ALiBi -slope * |pq - pk| instead of slope*(pk-pq) */
  /* Positions for ALiBi: queries [batch, len_q] and keys [batch, rows per
   * batch row] of the core; NULL = query i at i + (n - len_q) (n the
   * row's key count, as ATTN_CAUSAL_BOTTOM_RIGHT places it), or at i when
   * top_left, and key j at j. */
  const int64_t *qpos, *kpos;
  bool top_left;
  /* [H] sink logits joining each softmax's denominator, NULL = none. */
  const float *sinks;
} attn_score_fx;

/* Soft-capping, then ALiBi, on scores s[rows, cols] (row stride lds) of
 * head h: row r is the query at qpos[r] (or qp0 + r when qpos is NULL),
 * column j the key at kpos[j] (or j0 + j). */
void attn_score_rows(const attn_score_fx *fx, int64_t h, const int64_t *qpos,
                     int64_t qp0, const int64_t *kpos, int64_t j0, float *s,
                     int64_t lds, int64_t rows, int64_t cols);

/* With ALiBi, the keys far from a query get weights exp(s - max) below
 * float's normal range, and products over such subnormal numbers run many
 * times slower (measured: an ALiBi forward pass 1.3 times the plain one,
 * 1.05 with them flushed). attn_score_fp_enter() makes the calling thread
 * flush subnormal results and inputs to zero (x86 MXCSR FTZ and DAZ) for
 * a work item of such a layer, attn_score_fp_leave() restores its mode:
 * weights below 2^-126 of the row's largest become zero. Other layers and
 * other CPUs: nothing changes. */
typedef struct {
  unsigned saved;
  bool set;
} attn_fp_mode;
attn_fp_mode attn_score_fp_enter(const attn_score_fx *fx);
void attn_score_fp_leave(attn_fp_mode m);

/* The softmax state a row starts from: max m and sum l, (-inf, 0) without
 * sinks, (sink, 1) with them (exp(sink - sink) already in the sum). */
static inline void attn_score_start(const attn_score_fx *fx, int64_t h,
                                    float *m, float *l) {
  if (fx && fx->sinks) {
    *m = fx->sinks[h];
    *l = 1.0f;
  } else {
    *m = -INFINITY;
    *l = 0.0f;
  }
}

#endif
