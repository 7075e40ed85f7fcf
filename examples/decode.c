/* SPDX-License-Identifier: MIT */
/* decode: a greedy decoding loop with libattn's incremental decoding.
 *
 * A toy translation decoder, one token per step: its self-attention keeps
 * the tokens generated so far in an attn_kv_cache, its cross-attention
 * reads the source sentence from an attn_memory projected once before the
 * loop. The weights are random (attn_layer_init_weights), so the
 * "translation" means nothing; the point is the loop, and at each step the
 * program prints which source position each cross-attention head weighs
 * most, read from the step's attention weights.
 *
 * Build: part of the project (cmake --build build), then run
 *   ./build/examples/decode
 */
#include "attn/attn.h"

#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

enum {
  E = 64,        /* model width */
  H = 4,         /* heads */
  VOCAB = 16,    /* toy vocabulary; token 0 starts, token 1 ends */
  SRC_LEN = 7,   /* source sentence length */
  MAX_STEPS = 12 /* longest output */
};

static void check(attn_status st, const char *what) {
  if (st != ATTN_OK) {
    fprintf(stderr, "%s failed: %s (%s)\n", what, attn_status_string(st),
            attn_last_error());
    exit(1);
  }
}

/* A small reproducible generator for the toy embedding. */
static float next_uniform(uint64_t *state) {
  *state = *state * 6364136223846793005ull + 1442695040888963407ull;
  return (float)((double)(*state >> 40) / (double)(1ull << 24)) * 2.0f - 1.0f;
}

/* Token embedding plus a sinusoidal position code. */
static void embed(const float *table, int token, int pos, float *x) {
  for (int i = 0; i < E; i++) {
    double rate = pow(10000.0, -(double)(i / 2 * 2) / E);
    double angle = pos * rate;
    x[i] = table[token * E + i] + (float)(i % 2 ? cos(angle) : sin(angle));
  }
}

static attn_layer *make_layer(uint64_t seed) {
  attn_config cfg;
  attn_config_init(&cfg);
  cfg.embed_dim = E;
  cfg.num_heads = H;
  cfg.num_threads = 1;
  /* Sharper than the default 1/sqrt(head_dim), so that untrained heads
   * still show clear preferences. */
  cfg.scale = 1.0;
  attn_layer *layer;
  check(attn_layer_create(&cfg, &layer), "attn_layer_create");
  check(attn_layer_init_weights(layer, seed), "attn_layer_init_weights");
  return layer;
}

int main(void) {
  /* Toy vocabulary embedding, also used (tied) as the output projection. */
  static float table[VOCAB * E];
  uint64_t rng = 2024;
  for (int i = 0; i < VOCAB * E; i++)
    table[i] = next_uniform(&rng);

  attn_layer *self_attn = make_layer(1);
  attn_layer *cross_attn = make_layer(2);

  /* The "encoded" source sentence: embeddings of its tokens. */
  const int source[SRC_LEN] = {5, 9, 12, 3, 14, 7, 1};
  float encoded[SRC_LEN * E];
  for (int p = 0; p < SRC_LEN; p++)
    embed(table, source[p], p, encoded + p * E);

  /* Cross-attention memory: the source's keys and values, projected once
   * (key == value: one matrix product for both). */
  attn_memory_config mc;
  attn_memory_config_init(&mc);
  mc.capacity = SRC_LEN;
  attn_memory *memory;
  check(attn_memory_create(cross_attn, &mc, &memory), "attn_memory_create");
  check(attn_memory_set(cross_attn, memory, 1, SRC_LEN, encoded, encoded, NULL,
                        NULL, NULL),
        "attn_memory_set");

  /* Self-attention cache for the tokens the decoder produces. */
  attn_cache_config cc;
  attn_cache_config_init(&cc);
  cc.capacity = MAX_STEPS;
  attn_kv_cache *cache;
  check(attn_kv_cache_create(self_attn, &cc, &cache), "attn_kv_cache_create");

  printf("source tokens:");
  for (int p = 0; p < SRC_LEN; p++)
    printf(" %d", source[p]);
  printf("\n\nstep  in -> out   cross-attention peak per head "
         "(source position, weight)\n");

  float x[E], h1[E], h2[E], sa[E], ca[E];
  float weights[H * SRC_LEN]; /* [batch 1, H, 1 query, SRC_LEN] */
  attn_options opts;
  attn_options_init(&opts);
  opts.attn_weights = weights;
  opts.weights_mode = ATTN_WEIGHTS_PER_HEAD;

  int token = 0; /* start token */
  for (int step = 0; step < MAX_STEPS; step++) {
    /* Self-attention over the tokens so far (the new one included):
     * appends its key and value to the cache. */
    embed(table, token, step, x);
    check(attn_decode_step(self_attn, cache, 1, 1, x, NULL, NULL, sa),
          "attn_decode_step");
    for (int i = 0; i < E; i++)
      h1[i] = x[i] + sa[i];
    /* Cross-attention to the source, with its weights. */
    check(attn_cross_step(cross_attn, memory, 1, 1, h1, NULL, &opts, ca),
          "attn_cross_step");
    for (int i = 0; i < E; i++)
      h2[i] = h1[i] + ca[i];
    /* Greedy choice: the vocabulary entry closest to what the two
     * attention layers added (the start token is never an output). */
    int best = 1;
    float best_score = -INFINITY;
    for (int v = 1; v < VOCAB; v++) {
      float score = 0;
      for (int i = 0; i < E; i++)
        score += (h2[i] - x[i]) * table[v * E + i];
      if (score > best_score) {
        best_score = score;
        best = v;
      }
    }
    printf("%4d  %2d -> %2d  ", step, token, best);
    for (int h = 0; h < H; h++) {
      const float *w = weights + h * SRC_LEN;
      int top = 0;
      for (int p = 1; p < SRC_LEN; p++)
        if (w[p] > w[top])
          top = p;
      printf("  h%d: %d (%.2f)", h, top, w[top]);
    }
    printf("\n");
    token = best;
    if (token == 1)
      break; /* end token */
  }

  int64_t length;
  check(attn_kv_cache_lengths(cache, 1, &length, NULL),
        "attn_kv_cache_lengths");
  printf("\n%lld tokens in the self-attention cache\n", (long long)length);

  attn_kv_cache_destroy(cache);
  attn_memory_destroy(memory);
  attn_layer_destroy(self_attn);
  attn_layer_destroy(cross_attn);
  return 0;
}
