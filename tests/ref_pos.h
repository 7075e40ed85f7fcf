/* SPDX-License-Identifier: MIT */
/* A double-precision model of the attention of today's decoder layers for
 * the tests: torch-layout projections with any subset of biases, QK-norm,
 * rotary embeddings, ALiBi, logit soft-capping and sinks, written from the
 * published formulas only (RoFormer, Press et al., Gemma 2, gpt-oss,
 * Qwen3/OLMo 2) and sharing no code with src/. Self-attention over one
 * sequence per batch row, every sum in double, one element at a time. */
#ifndef ATTN_TESTS_REF_POS_H
#define ATTN_TESTS_REF_POS_H

#include "attn/attn.h"

#include <stdint.h>

typedef struct {
  int64_t E, H, Hkv; /* Hkv 0 = H */
  double scale;      /* 0 = 1/sqrt(head_dim) */
  const float *wq, *wk, *wv, *wo;
  const float *bq, *bk, *bv, *bo; /* each may be NULL */
  int qk_norm;                    /* ATTN_QK_NORM_* */
  const float *q_norm, *k_norm;
  double eps;
  int unit_offset;
  int rope; /* 0 = none */
  int pairing;
  int64_t rot;                 /* 0 = head_dim */
  double theta, linear_factor; /* frequencies when inv_freq is NULL */
  const float *inv_freq;       /* [rot / 2] or NULL */
  double attention_factor;     /* 0 = 1 */
  int alibi;                   /* ATTN_ALIBI_* */
  const float *slopes;         /* [H], NULL = standard */
  double softcap;              /* 0 = none */
  const float *sinks;          /* [H] or NULL */
} ref_dec;

/* out [B, L, E] for x [B, L, E]: query i of row b at position
 * pos[b * L + i] sees keys j at pos[b * L + j] with j <= i (causal) or all
 * j (not causal), within the window (i - j < window when window > 0), not
 * hidden by pad [B, L] (NULL = none). A query that sees nothing gives zeros
 * before the output projection. weights (may be NULL): [B, H, L, L]. */
void ref_dec_forward(const ref_dec *l, int64_t B, int64_t L, const float *x,
                     const int64_t *pos, int causal, int64_t window,
                     const uint8_t *pad, double *out, double *weights);

/* The standard ALiBi slopes of H heads (from Press et al.'s recipe, as
 * written in the BLOOM code: geometric for the largest power of two, then
 * every other slope of the next power of two). */
void ref_alibi_slopes(int64_t H, double *slopes);

#endif
