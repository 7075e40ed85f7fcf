/* SPDX-License-Identifier: MIT */
/* A decoding simulator for the tests: drives a KV cache through steps,
 * truncations and reorders while keeping, for every row, the whole token
 * history (inputs, padding flags and the outputs the steps produced), then
 * checks every recorded output against ref_forward() run once over the
 * whole history with ATTN_CAUSAL_TOP_LEFT, key padding and the window, and
 * against the library's own attn_self_forward() over the same. */
#ifndef ATTN_TESTS_DECODE_SIM_H
#define ATTN_TESTS_DECODE_SIM_H

#include "ref.h"

#include <stdbool.h>

typedef struct {
  ref_model m;
  attn_kv_cache *cache;
  int64_t B, E, H, C, W, maxlen;
  float *x;     /* [B, maxlen, E] inputs of each row's positions */
  uint8_t *pad; /* [B, maxlen] padding flags */
  float *y;     /* [B, maxlen, E] outputs produced by the steps */
  int64_t *len; /* [B] */
  ref_rng rng;
  int32_t threads; /* opts.num_threads of the steps */
  int64_t steps;
} dsim;

/* A layer from cfg with random weights, a cache of batch B, capacity C and
 * window W, room for maxlen positions of history per row. */
void dsim_init(dsim *s, const attn_config *cfg, int64_t B, int64_t C, int64_t W,
               int64_t maxlen, uint64_t seed);
void dsim_free(dsim *s);

/* One attn_decode_step of n tokens per row (new_lengths may be NULL), each
 * new token padding with probability pad_rate. Asserts success, that rows
 * beyond new_lengths came out zero and that the cache's lengths agree. */
void dsim_step(dsim *s, int64_t n, const int64_t *new_lengths, double pad_rate);

/* Random new_lengths in [0, n] (mostly n) into lens[B]. */
void dsim_random_lengths(dsim *s, int64_t n, int64_t *lens);

void dsim_truncate(dsim *s, const int64_t *lens);
void dsim_reorder(dsim *s, const int64_t *src);

/* Compares every recorded output with the reference and with one
 * attn_self_forward() over each row's whole history. */
void dsim_check(dsim *s, const char *what);

#endif
