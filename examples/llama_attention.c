/* SPDX-License-Identifier: MIT */
/* llama_attention: the self-attention of one Llama-style decoder layer,
 * loaded from a safetensors file under Hugging Face's names and run token
 * by token with a KV cache.
 *
 * A Llama layer's attention: q/k/v/o projections without biases, grouped
 * query heads (num_key_value_heads), rotary position embeddings on q and k
 * (rope_theta, rotate_half pairing). The same program serves Qwen2 (set
 * bias_parts to ATTN_BIAS_Q | ATTN_BIAS_K | ATTN_BIAS_V), Qwen3 (qk_norm),
 * Mistral (a cache window) and so on: each is a field of attn_config.
 *
 *   llama_attention FILE PREFIX E HEADS KV_HEADS THETA
 *       e.g. model.safetensors "model.layers.0.self_attn." 4096 32 8 500000
 *   llama_attention
 *       writes a small random layer to a temporary file first and uses it.
 *
 * The hidden states fed in are random (the layer is one piece of a model:
 * the embeddings and the rest of the block are the caller's); the program
 * checks that the last step's output equals a full causal forward over the
 * whole sequence, which is what decoding with a cache must give.
 *
 * Build: part of the project (cmake --build build), then run
 *   ./build/examples/llama_attention
 */
#include "attn/attn.h"

#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

enum { PROMPT = 12, STEPS = 8, TOTAL = PROMPT + STEPS };

static void check(attn_status st, const char *what) {
  if (st != ATTN_OK) {
    fprintf(stderr, "%s failed: %s (%s)\n", what, attn_status_string(st),
            attn_last_error());
    exit(1);
  }
}

static void *xmalloc(size_t n) {
  void *p = malloc(n);
  if (!p) {
    fprintf(stderr, "out of memory\n");
    exit(1);
  }
  return p;
}

/* A layer of a Llama checkpoint's shape, weights not set. */
static attn_layer *llama_layer(int64_t E, int64_t H, int64_t Hkv,
                               double theta) {
  attn_rope_config rope;
  check(attn_rope_config_init(&rope), "attn_rope_config_init");
  rope.theta = theta; /* config.json: rope_theta */
  attn_config cfg;
  check(attn_config_init(&cfg), "attn_config_init");
  cfg.embed_dim = E;      /* hidden_size (= heads * head_dim here) */
  cfg.num_heads = H;      /* num_attention_heads */
  cfg.num_kv_heads = Hkv; /* num_key_value_heads */
  cfg.bias = 0;           /* attention_bias: false */
  cfg.rope = &rope;
  attn_layer *l = NULL;
  check(attn_layer_create(&cfg, &l), "attn_layer_create");
  return l;
}

int main(int argc, char **argv) {
  const char *path = argc > 1 ? argv[1] : NULL;
  const char *prefix = argc > 2 ? argv[2] : "model.layers.0.self_attn.";
  int64_t E = argc > 3 ? atoll(argv[3]) : 256;
  int64_t H = argc > 4 ? atoll(argv[4]) : 8;
  int64_t Hkv = argc > 5 ? atoll(argv[5]) : 2;
  double theta = argc > 6 ? atof(argv[6]) : 500000.0;
  char tmp[64] = "";
  if (!path) {
    /* No checkpoint given: save a random layer under Llama's names. */
    snprintf(tmp, sizeof tmp, "/tmp/llama_attention-%d.safetensors",
             (int)getpid());
    attn_layer *src = llama_layer(E, H, Hkv, theta);
    check(attn_layer_init_weights(src, 42), "attn_layer_init_weights");
    check(attn_layer_save_safetensors(src, tmp, prefix, ATTN_NAMES_HF_O_PROJ),
          "attn_layer_save_safetensors");
    attn_layer_destroy(src);
    path = tmp;
  }

  attn_layer *layer = llama_layer(E, H, Hkv, theta);
  check(attn_layer_load_safetensors(layer, path, prefix),
        "attn_layer_load_safetensors");
  printf("loaded %sq_proj/k_proj/v_proj/o_proj from %s: E %lld, %lld heads, "
         "%lld key/value heads, rope_theta %g\n",
         prefix, path, (long long)E, (long long)H, (long long)Hkv, theta);

  attn_cache_config cc;
  check(attn_cache_config_init(&cc), "attn_cache_config_init");
  cc.capacity = TOTAL;
  attn_kv_cache *cache = NULL;
  check(attn_kv_cache_create(layer, &cc, &cache), "attn_kv_cache_create");

  /* Hidden states of the sequence (the model's, in a real program). */
  float *x = xmalloc((size_t)(TOTAL * E) * sizeof(float));
  float *out = xmalloc((size_t)(TOTAL * E) * sizeof(float));
  uint64_t state = 7;
  for (int64_t i = 0; i < TOTAL * E; i++) {
    state = state * 6364136223846793005ull + 1442695040888963407ull;
    x[i] = (float)((double)(state >> 40) / (double)(1ull << 24)) * 2 - 1;
  }

  /* The prompt in one step, then a token at a time: each token's key goes
   * into the cache rotated to its position. */
  check(attn_decode_step(layer, cache, 1, PROMPT, x, NULL, NULL, out),
        "attn_decode_step (prompt)");
  for (int t = PROMPT; t < TOTAL; t++) {
    check(attn_decode_step(layer, cache, 1, 1, x + t * E, NULL, NULL,
                           out + t * E),
          "attn_decode_step");
    int64_t len = 0;
    check(attn_kv_cache_lengths(cache, 1, &len, NULL), "lengths");
    printf("step %2d: position %2lld, out[0..2] = %+.5f %+.5f %+.5f\n",
           t - PROMPT + 1, (long long)(len - 1), out[t * E], out[t * E + 1],
           out[t * E + 2]);
  }

  /* The same sequence in one causal forward pass. */
  float *full = xmalloc((size_t)(TOTAL * E) * sizeof(float));
  attn_mask mask;
  check(attn_mask_init(&mask), "attn_mask_init");
  mask.causal = ATTN_CAUSAL_TOP_LEFT;
  check(attn_self_forward(layer, 1, TOTAL, x, &mask, NULL, full),
        "attn_self_forward");
  double worst = 0;
  for (int64_t i = 0; i < TOTAL * E; i++)
    worst = fmax(worst, fabs((double)out[i] - (double)full[i]));
  printf("decoding vs one forward pass: largest difference %.2e\n", worst);

  free(full);
  free(x);
  free(out);
  attn_kv_cache_destroy(cache);
  attn_layer_destroy(layer);
  if (tmp[0])
    remove(tmp);
  return worst < 1e-4 ? 0 : 1;
}
