/* SPDX-License-Identifier: MIT */
/* libattn demo: what each word attends to.
 *
 * Self-attention over a 6-word sentence and cross-attention from a 4-word
 * translation to it, with toy word embeddings (a fixed pseudo-random vector
 * per word plus sinusoidal positions) and seeded random weights. Prints each
 * head's attention matrix as a table: row = the word that looks, column =
 * the word it looks at, entries = attention probability. */
#include <attn/attn.h>

#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

enum { EMBED = 32, HEADS = 4 };

/* A deterministic vector per word: FNV-1a of the text seeds a small
 * generator, so equal words get equal vectors. */
static void embed_word(const char *word, int position, float *v) {
  uint64_t h = 1469598103934665603ull;
  for (const char *c = word; *c; c++)
    h = (h ^ (unsigned char)*c) * 1099511628211ull;
  for (int i = 0; i < EMBED; i++) {
    h = h * 6364136223846793005ull + 1442695040888963407ull;
    float r = (float)((h >> 40) & 0xffffff) / 16777216.0f; /* [0,1) */
    /* Sinusoidal position code, as in the Transformer paper. */
    double freq = pow(10000.0, -(double)(i / 2 * 2) / EMBED);
    float pos = (float)(i % 2 ? cos(position * freq) : sin(position * freq));
    v[i] = 2.0f * r - 1.0f + 0.5f * pos;
  }
}

static void embed_sentence(const char *const *words, int n, float *x) {
  for (int i = 0; i < n; i++)
    embed_word(words[i], i, x + (size_t)i * EMBED);
}

static void print_heads(const char *title, const float *w, int heads,
                        const char *const *rows, int nrows,
                        const char *const *cols, int ncols) {
  for (int h = 0; h < heads; h++) {
    printf("\n%s, head %d\n%10s", title, h, "");
    for (int j = 0; j < ncols; j++)
      printf(" %7s", cols[j]);
    printf("\n");
    for (int i = 0; i < nrows; i++) {
      printf("%10s", rows[i]);
      for (int j = 0; j < ncols; j++)
        printf(" %7.3f", w[((size_t)h * nrows + i) * ncols + j]);
      printf("\n");
    }
  }
}

static int check(attn_status st, const char *what) {
  if (st == ATTN_OK)
    return 0;
  fprintf(stderr, "%s failed: %s (%s)\n", what, attn_status_string(st),
          attn_last_error());
  return 1;
}

int main(void) {
  static const char *const source[] = {"the", "cat", "sat",
                                       "on",  "the", "mat"};
  static const char *const target[] = {"le", "chat", "s'est", "assis"};
  enum { LS = 6, LT = 4 };

  if (attn_version_number() != ATTN_VERSION_NUMBER) {
    fprintf(stderr, "header %s but library %s\n", ATTN_VERSION_STRING,
            attn_version_string());
    return 1;
  }

  attn_config cfg;
  attn_config_init(&cfg);
  cfg.embed_dim = EMBED;
  cfg.num_heads = HEADS;
  attn_layer *self = NULL, *cross = NULL;
  if (check(attn_layer_create(&cfg, &self), "create self layer") ||
      check(attn_layer_create(&cfg, &cross), "create cross layer") ||
      check(attn_layer_init_weights(self, 1), "init self weights") ||
      check(attn_layer_init_weights(cross, 2), "init cross weights"))
    return 1;

  float src[LS * EMBED], tgt[LT * EMBED];
  embed_sentence(source, LS, src);
  embed_sentence(target, LT, tgt);

  float enc[LS * EMBED], dec[LT * EMBED];
  float w_self[HEADS * LS * LS], w_cross[HEADS * LT * LS];
  attn_options opts;
  attn_options_init(&opts);
  opts.weights_mode = ATTN_WEIGHTS_PER_HEAD;

  /* Encoder self-attention: every source word looks at every other. */
  opts.attn_weights = w_self;
  if (check(attn_self_forward(self, 1, LS, src, NULL, &opts, enc),
            "self-attention"))
    return 1;
  /* Cross-attention: target words (queries) look at the encoded source. */
  opts.attn_weights = w_cross;
  if (check(attn_forward(cross, 1, LT, LS, tgt, enc, enc, NULL, &opts, dec),
            "cross-attention"))
    return 1;

  printf("libattn %s: E = %d, %d heads, random weights (seeded)\n",
         attn_version_string(), EMBED, HEADS);
  print_heads("self-attention over the source", w_self, HEADS, source, LS,
              source, LS);
  print_heads("cross-attention target -> source", w_cross, HEADS, target, LT,
              source, LS);

  /* Each row of probabilities sums to one: a quick sanity check users can
   * see. */
  double worst = 0;
  for (int r = 0; r < HEADS * LT; r++) {
    double s = 0;
    for (int j = 0; j < LS; j++)
      s += w_cross[r * LS + j];
    worst = fabs(s - 1.0) > worst ? fabs(s - 1.0) : worst;
  }
  printf("\nlargest |row sum - 1| of the cross-attention weights: %.2e\n",
         worst);

  attn_layer_destroy(self);
  attn_layer_destroy(cross);
  return worst < 1e-5 ? 0 : 1;
}
