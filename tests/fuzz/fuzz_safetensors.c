/* SPDX-License-Identifier: MIT */
/* libFuzzer target: the safetensors loader.
 *
 * The first input byte picks one of a few layer shapes and a prefix; the
 * rest is the file. Every call must return a documented status with a
 * message, leave the layer unchanged on failure and load only finite
 * weights on success. Built with -DATTN_FUZZ=ON; scripts/fuzz.sh runs it
 * on the seeds in tests/fuzz/corpus/fuzz_safetensors (files the library
 * and torch wrote, each with a leading byte). */
#include "fuzz.h"

#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#define SHAPES 4

static attn_layer *layers[SHAPES];

static attn_layer *make(int64_t E, int64_t H, int64_t kdim, int64_t vdim,
                        int64_t hkv, int bias) {
  attn_config cfg;
  attn_config_init(&cfg);
  cfg.embed_dim = E;
  cfg.num_heads = H;
  cfg.kdim = kdim;
  cfg.vdim = vdim;
  cfg.num_kv_heads = hkv;
  cfg.bias = bias;
  attn_layer *l = NULL;
  if (attn_layer_create(&cfg, &l) != ATTN_OK ||
      attn_layer_init_weights(l, 1) != ATTN_OK)
    abort();
  return l;
}

static float *copy_weights(const attn_layer *l, int64_t *total) {
  static const attn_weight_id ids[] = {ATTN_W_Q,   ATTN_W_K,  ATTN_W_V,
                                       ATTN_W_OUT, ATTN_B_Q,  ATTN_B_K,
                                       ATTN_B_V,   ATTN_B_OUT};
  int64_t n[8] = {0}, sum = 0;
  for (int i = 0; i < 8; i++)
    if (attn_layer_weight_count(l, ids[i], &n[i]) == ATTN_OK)
      sum += n[i];
  float *w = malloc((size_t)sum * sizeof(float));
  if (!w)
    abort();
  int64_t at = 0;
  for (int i = 0; i < 8; i++)
    if (n[i] && attn_layer_get_weight(l, ids[i], w + at, n[i]) == ATTN_OK)
      at += n[i];
  *total = sum;
  return w;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  if (!layers[0]) {
    layers[0] = make(8, 2, 0, 0, 0, 1); /* the fixture's self_attn */
    layers[1] = make(8, 4, 6, 5, 0, 1); /* the fixture's cross_attn */
    layers[2] = make(8, 2, 0, 0, 0, 0);
    layers[3] = make(4, 2, 0, 0, 1, 1);
  }
  if (size < 1)
    return 0;
  static const char *const prefixes[] = {
      NULL, "decoder.layers.0.self_attn.", "decoder.layers.0.cross_attn.",
      "encoder.layers.0.self_attn.", "model.layers.0.self_attn."};
  attn_layer *l = layers[data[0] % SHAPES];
  const char *prefix = prefixes[(data[0] / SHAPES) % 5];
  int64_t n_before, n_after;
  float *before = copy_weights(l, &n_before);
  attn_status st =
      attn_layer_load_safetensors_mem(l, data + 1, size - 1, prefix);
  float *after = copy_weights(l, &n_after);
  if (st == ATTN_OK) {
    for (int64_t i = 0; i < n_after; i++)
      if (!isfinite(after[i]))
        FZ_ABORT("a load gave weight %lld = %g", (long long)i, after[i]);
    fz_count(true);
  } else {
    fz_check_failure(
        st,
        FZ_BIT(ATTN_ERR_FILE_FORMAT) | FZ_BIT(ATTN_ERR_TENSOR_MISSING) |
            FZ_BIT(ATTN_ERR_TENSOR_DTYPE) | FZ_BIT(ATTN_ERR_TENSOR_SHAPE) |
            FZ_BIT(ATTN_ERR_WEIGHT_LAYOUT) | FZ_BIT(ATTN_ERR_NOT_FINITE),
        "attn_layer_load_safetensors_mem");
    fz_same(after, before, (size_t)n_before * sizeof(float), "the layer");
  }
  free(before);
  free(after);
  return 0;
}
