/* SPDX-License-Identifier: MIT */
/* A C program that uses an installed libattn the way its users do: built
 * with `pkg-config --cflags --libs attn`, it runs one self-attention forward
 * pass whose result is known in closed form and checks it.
 *
 * Layer: embed_dim 2, one head, identity Q/K/V and output projections,
 * output bias (0.5, -0.25). Input x = [[1, 0], [0, 1]]. Each query sees
 * scores (1/sqrt(2), 0) in some order, so the larger attention weight is
 * p = 1 / (1 + exp(-1/sqrt(2))) and out = [[p, 1-p], [1-p, p]] + bias. */
#include <attn/attn.h>

#include <stdio.h>

#define EXPECTED_P 0.6697615493266569
#define TOLERANCE 1e-5

static int fail(const char *what, attn_status st) {
  fprintf(stderr, "consumer_c: %s: %s (%s)\n", what, attn_status_string(st),
          attn_last_error());
  return 1;
}

static double distance(double a, double b) { return a > b ? a - b : b - a; }

int main(void) {
  if (attn_version_number() != ATTN_VERSION_NUMBER) {
    fprintf(stderr, "consumer_c: header %s but library %s\n",
            ATTN_VERSION_STRING, attn_version_string());
    return 1;
  }

  attn_config cfg;
  attn_config_init(&cfg);
  cfg.embed_dim = 2;
  cfg.num_heads = 1;
  attn_layer *layer = NULL;
  attn_status st = attn_layer_create(&cfg, &layer);
  if (st != ATTN_OK)
    return fail("attn_layer_create", st);

  static const float in_proj[6 * 2] = {1, 0, 0, 1, 1, 0, 0, 1, 1, 0, 0, 1};
  static const float in_bias[6] = {0, 0, 0, 0, 0, 0};
  static const float out_proj[2 * 2] = {1, 0, 0, 1};
  static const float out_bias[2] = {0.5f, -0.25f};
  if ((st = attn_layer_set_weight(layer, ATTN_W_IN_PROJ, in_proj, 12)) ||
      (st = attn_layer_set_weight(layer, ATTN_B_IN_PROJ, in_bias, 6)) ||
      (st = attn_layer_set_weight(layer, ATTN_W_OUT, out_proj, 4)) ||
      (st = attn_layer_set_weight(layer, ATTN_B_OUT, out_bias, 2))) {
    attn_layer_destroy(layer);
    return fail("attn_layer_set_weight", st);
  }

  const float x[2 * 2] = {1, 0, 0, 1};
  float out[2 * 2] = {0, 0, 0, 0};
  st = attn_self_forward(layer, 1, 2, x, NULL, NULL, out);
  attn_layer_destroy(layer);
  if (st != ATTN_OK)
    return fail("attn_self_forward", st);

  const double p = EXPECTED_P;
  const double expected[4] = {p + 0.5, (1 - p) - 0.25, (1 - p) + 0.5, p - 0.25};
  int bad = 0;
  for (int i = 0; i < 4; i++) {
    if (!(distance(out[i], expected[i]) <= TOLERANCE)) {
      fprintf(stderr, "consumer_c: out[%d] = %.7f, expected %.7f\n", i,
              (double)out[i], expected[i]);
      bad = 1;
    }
  }
  if (bad)
    return 1;
  printf("consumer_c: libattn %s, out[0] = %.6f as expected\n",
         attn_version_string(), (double)out[0]);
  return 0;
}
