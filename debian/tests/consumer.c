/* SPDX-License-Identifier: MIT */
/* Consumer of the installed libattn: header and library agree, a layer is
 * created and runs causal self-attention, the attention weights it returns
 * are probabilities (each row sums to one, nothing after the diagonal), and
 * a bad configuration is refused with the library's message. */
#include <attn/attn.h>

#include <math.h>
#include <stdio.h>
#include <string.h>

enum { B = 2, L = 6, E = 8, H = 2 };

int main(void) {
  if (attn_version_number() != ATTN_VERSION_NUMBER) {
    fprintf(stderr, "header %s, library %s\n", ATTN_VERSION_STRING,
            attn_version_string());
    return 1;
  }
  attn_config cfg;
  attn_config_init(&cfg);
  cfg.embed_dim = E;
  cfg.num_heads = H;
  attn_layer *layer = NULL;
  if (attn_layer_create(&cfg, &layer) != ATTN_OK ||
      attn_layer_init_weights(layer, 7) != ATTN_OK) {
    fprintf(stderr, "layer: %s\n", attn_last_error());
    return 1;
  }
  static float x[B * L * E], y[B * L * E], w[B * L * L];
  for (int i = 0; i < B * L * E; i++)
    x[i] = (float)((i * 37) % 11) / 11.0f - 0.5f;
  attn_mask mask;
  attn_mask_init(&mask);
  mask.causal = ATTN_CAUSAL_TOP_LEFT;
  attn_options opts;
  attn_options_init(&opts);
  opts.attn_weights = w;
  opts.weights_mode = ATTN_WEIGHTS_AVERAGE;
  if (attn_forward(layer, B, L, L, x, x, x, &mask, &opts, y) != ATTN_OK) {
    fprintf(stderr, "forward: %s\n", attn_last_error());
    return 1;
  }
  for (int r = 0; r < B * L; r++) {
    double sum = 0;
    for (int j = 0; j < L; j++) {
      sum += w[r * L + j];
      if (j > r % L && w[r * L + j] != 0.0f) {
        fprintf(stderr, "row %d attends past the diagonal\n", r);
        return 1;
      }
    }
    if (fabs(sum - 1.0) > 1e-5) {
      fprintf(stderr, "row %d of the weights sums to %g\n", r, sum);
      return 1;
    }
  }
  attn_layer_destroy(layer);

  cfg.embed_dim = 10;
  cfg.num_heads = 4;
  layer = NULL;
  if (attn_layer_create(&cfg, &layer) == ATTN_OK ||
      strstr(attn_last_error(), "not divisible") == NULL) {
    fprintf(stderr, "a bad configuration was not refused properly\n");
    return 1;
  }
  printf("libattn %s: forward ok, y[0] = %.6f\n", attn_version_string(),
         (double)y[0]);
  return 0;
}
