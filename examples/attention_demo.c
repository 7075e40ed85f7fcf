/* SPDX-License-Identifier: MIT */
/* libattn demo: the attention of a trained toy translator.
 *
 * examples/translation/train.py trained, in PyTorch, a model that translates
 * a toy "English" into a toy "French" whose adjectives follow their noun
 * ("the big dog" -> "le chien grand"). Apart from table lookups, the model
 * is two libattn layers, loaded here from attention.safetensors:
 *
 *   w = source word embeddings, x = w + source position embeddings
 *   h = x + self_attn(x, x, x)            encoder self-attention
 *   c = cross_attn(slots, h, w)           queries: one learned vector per
 *                                         target position
 *   target word i = argmax(generator(c[i]))
 *
 * The values are the bare source words, so target word i can only come
 * from attending to the source word that lands at position i: the
 * cross-attention table is the alignment, and the reordering shows as its
 * large entries leaving the diagonal.
 *
 *   attention_demo [--model DIR] [--weights FILE] [--encoder] [words ...]
 *
 * DIR holds embeddings.txt and attention.safetensors (default: the
 * examples/translation directory of the source tree); --weights names
 * another weight file. --encoder also prints the encoder's self-attention,
 * one table per head. Without words, two example sentences are
 * translated. */
#include <attn/attn.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#ifndef ATTN_DEMO_MODEL_DIR
#define ATTN_DEMO_MODEL_DIR "examples/translation"
#endif

enum { MAX_DIM = 64, MAX_WORDS = 64, MAX_LEN = 16, MAX_HEADS = 8, WORD = 32 };

/* Everything of the model that is not an attention layer. */
typedef struct {
  int dim, encoder_heads, cross_heads, n_src, n_pos, n_tgt;
  char src_words[MAX_WORDS][WORD], tgt_words[MAX_WORDS][WORD];
  float src_embed[MAX_WORDS][MAX_DIM], gen_weight[MAX_WORDS][MAX_DIM];
  float gen_bias[MAX_WORDS];
  float src_pos[MAX_LEN][MAX_DIM], tgt_pos[MAX_LEN][MAX_DIM];
} model;

static void skip_comments(FILE *f) {
  int c;
  while ((c = fgetc(f)) != EOF) {
    if (c == '#') {
      while ((c = fgetc(f)) != EOF && c != '\n')
        ;
    } else if (c != ' ' && c != '\n' && c != '\r' && c != '\t') {
      ungetc(c, f);
      return;
    }
  }
}

/* Reads "name value" and checks name and 1 <= value <= max. */
static int read_count(FILE *f, const char *name, int max, int *value) {
  char got[WORD];
  skip_comments(f);
  if (fscanf(f, "%31s %d", got, value) != 2 || strcmp(got, name) != 0 ||
      *value < 1 || *value > max) {
    fprintf(stderr, "expected '%s N' with 1 <= N <= %d\n", name, max);
    return -1;
  }
  return 0;
}

static int read_row(FILE *f, char *word, float *bias, float *row, int dim) {
  if (word && fscanf(f, "%31s", word) != 1)
    return -1;
  if (bias && fscanf(f, "%f", bias) != 1)
    return -1;
  for (int i = 0; i < dim; i++)
    if (fscanf(f, "%f", &row[i]) != 1)
      return -1;
  return 0;
}

static int read_model(const char *path, model *m) {
  FILE *f = fopen(path, "r");
  if (!f) {
    perror(path);
    return -1;
  }
  int ok = !read_count(f, "dim", MAX_DIM, &m->dim) &&
           !read_count(f, "encoder_heads", MAX_HEADS, &m->encoder_heads) &&
           !read_count(f, "cross_heads", MAX_HEADS, &m->cross_heads) &&
           !read_count(f, "source_words", MAX_WORDS, &m->n_src);
  for (int i = 0; ok && i < m->n_src; i++)
    ok = !read_row(f, m->src_words[i], NULL, m->src_embed[i], m->dim);
  ok = ok && !read_count(f, "source_positions", MAX_LEN, &m->n_pos);
  for (int i = 0; ok && i < m->n_pos; i++)
    ok = !read_row(f, NULL, NULL, m->src_pos[i], m->dim);
  ok = ok && !read_count(f, "target_positions", m->n_pos, &m->n_pos);
  for (int i = 0; ok && i < m->n_pos; i++)
    ok = !read_row(f, NULL, NULL, m->tgt_pos[i], m->dim);
  ok = ok && !read_count(f, "target_words", MAX_WORDS, &m->n_tgt);
  for (int i = 0; ok && i < m->n_tgt; i++)
    ok = !read_row(f, m->tgt_words[i], &m->gen_bias[i], m->gen_weight[i],
                   m->dim);
  fclose(f);
  if (!ok)
    fprintf(stderr, "%s: not a model file from train.py\n", path);
  return ok ? 0 : -1;
}

/* A layer of the model, loaded through the C API. */
static attn_layer *load_layer(const model *m, int heads, const char *path,
                              const char *prefix) {
  attn_config cfg;
  attn_config_init(&cfg);
  cfg.embed_dim = m->dim;
  cfg.num_heads = heads;
  attn_layer *layer = NULL;
  attn_status st = attn_layer_create(&cfg, &layer);
  if (st == ATTN_OK)
    st = attn_layer_load_safetensors(layer, path, prefix);
  if (st != ATTN_OK) {
    fprintf(stderr, "cannot load layer %s from %s: %s (%s)\n", prefix, path,
            attn_last_error(), attn_status_string(st));
    attn_layer_destroy(layer);
    return NULL;
  }
  return layer;
}

/* One table: a row per query word, a column per key word. Weights below
 * 0.005 print as "." so that the large entries stand out. */
static void print_table(const char *title, const float *w,
                        const char *const *rows, int nrows,
                        const char *const *cols, int ncols) {
  printf("\n%s\n%9s", title, "");
  for (int j = 0; j < ncols; j++)
    printf(" %7s", cols[j]);
  printf("\n");
  for (int i = 0; i < nrows; i++) {
    printf("%9s", rows[i]);
    for (int j = 0; j < ncols; j++) {
      float v = w[(size_t)i * ncols + j];
      if (v < 0.005f)
        printf(" %7s", ".");
      else
        printf(" %7.2f", v);
    }
    printf("\n");
  }
}

static int translate(const model *m, attn_layer *encoder, attn_layer *cross,
                     const char *const *words, int n, int show_encoder) {
  static float x[MAX_LEN * MAX_DIM], w[MAX_LEN * MAX_DIM], h[MAX_LEN * MAX_DIM];
  static float slots[MAX_LEN * MAX_DIM], c[MAX_LEN * MAX_DIM];
  static float enc_w[MAX_HEADS * MAX_LEN * MAX_LEN];
  static float cross_w[MAX_HEADS * MAX_LEN * MAX_LEN];
  const int d = m->dim;
  if (n > m->n_pos) {
    fprintf(stderr, "a sentence has at most %d words\n", m->n_pos);
    return -1;
  }
  for (int i = 0; i < n; i++) {
    int id = 0;
    while (id < m->n_src && strcmp(m->src_words[id], words[i]) != 0)
      id++;
    if (id == m->n_src) {
      fprintf(stderr, "unknown word '%s'; the source words are:", words[i]);
      for (int k = 0; k < m->n_src; k++)
        fprintf(stderr, " %s", m->src_words[k]);
      fprintf(stderr, "\n");
      return -1;
    }
    for (int k = 0; k < d; k++) {
      w[i * d + k] = m->src_embed[id][k];
      x[i * d + k] = m->src_embed[id][k] + m->src_pos[i][k];
      slots[i * d + k] = m->tgt_pos[i][k];
    }
  }

  attn_options opts;
  attn_options_init(&opts);
  opts.weights_mode = ATTN_WEIGHTS_PER_HEAD;
  opts.attn_weights = enc_w;
  attn_status st = attn_forward(encoder, 1, n, n, x, x, x, NULL, &opts, h);
  for (int i = 0; st == ATTN_OK && i < n * d; i++)
    h[i] += x[i]; /* the encoder's residual connection */
  opts.attn_weights = cross_w;
  if (st == ATTN_OK)
    st = attn_forward(cross, 1, n, n, slots, h, w, NULL, &opts, c);
  if (st != ATTN_OK) {
    fprintf(stderr, "forward failed: %s (%s)\n", attn_last_error(),
            attn_status_string(st));
    return -1;
  }

  /* The generator: each target position's most likely word. */
  const char *out[MAX_LEN];
  for (int i = 0; i < n; i++) {
    int best = 0;
    float best_score = 0;
    for (int t = 0; t < m->n_tgt; t++) {
      float s = m->gen_bias[t];
      for (int k = 0; k < d; k++)
        s += m->gen_weight[t][k] * c[i * d + k];
      if (t == 0 || s > best_score) {
        best = t;
        best_score = s;
      }
    }
    out[i] = m->tgt_words[best];
  }

  printf("\nsource:      ");
  for (int i = 0; i < n; i++)
    printf(" %s", words[i]);
  printf("\ntranslation: ");
  for (int i = 0; i < n; i++)
    printf(" %s", out[i]);
  printf("\n");
  char title[96];
  for (int hd = 0; show_encoder && hd < m->encoder_heads; hd++) {
    snprintf(title, sizeof title, "encoder self-attention, head %d", hd);
    print_table(title, enc_w + (size_t)hd * n * n, words, n, words, n);
  }
  for (int hd = 0; hd < m->cross_heads; hd++) {
    snprintf(title, sizeof title,
             "cross-attention, head %d (row: target word, column: what it "
             "attends to)",
             hd);
    print_table(title, cross_w + (size_t)hd * n * n, out, n, words, n);
  }
  /* Alignment: for each target word, the source word with the largest
   * weight (averaged over the heads). */
  printf("alignment:   ");
  for (int i = 0; i < n; i++) {
    int best = 0;
    float best_w = -1;
    for (int j = 0; j < n; j++) {
      float s = 0;
      for (int hd = 0; hd < m->cross_heads; hd++)
        s += cross_w[((size_t)hd * n + i) * n + j];
      if (s > best_w) {
        best = j;
        best_w = s;
      }
    }
    printf(" %s<-%s", out[i], words[best]);
  }
  printf("\n");
  return 0;
}

int main(int argc, char **argv) {
  const char *dir = ATTN_DEMO_MODEL_DIR, *weights = NULL;
  int show_encoder = 0, first = 1;
  for (; first < argc && argv[first][0] == '-'; first++) {
    if (strcmp(argv[first], "--model") == 0 && first + 1 < argc)
      dir = argv[++first];
    else if (strcmp(argv[first], "--weights") == 0 && first + 1 < argc)
      weights = argv[++first];
    else if (strcmp(argv[first], "--encoder") == 0)
      show_encoder = 1;
    else {
      fprintf(stderr,
              "usage: %s [--model DIR] [--weights FILE] [--encoder] "
              "[words ...]\n",
              argv[0]);
      return 2;
    }
  }
  if (attn_version_number() != ATTN_VERSION_NUMBER) {
    fprintf(stderr, "header %s but library %s\n", ATTN_VERSION_STRING,
            attn_version_string());
    return 1;
  }

  static model m;
  char path[4096];
  snprintf(path, sizeof path, "%s/embeddings.txt", dir);
  if (read_model(path, &m) != 0)
    return 1;
  if (!weights) {
    snprintf(path, sizeof path, "%s/attention.safetensors", dir);
    weights = path;
  }
  attn_layer *encoder =
      load_layer(&m, m.encoder_heads, weights, "encoder.self_attn.");
  attn_layer *cross =
      encoder ? load_layer(&m, m.cross_heads, weights, "decoder.cross_attn.")
              : NULL;
  if (!cross) {
    attn_layer_destroy(encoder);
    return 1;
  }

  printf("libattn %s: toy translation model, E = %d, encoder %d heads, "
         "cross-attention %d head%s\n",
         attn_version_string(), m.dim, m.encoder_heads, m.cross_heads,
         m.cross_heads == 1 ? "" : "s");
  static const char *const examples[][MAX_LEN] = {
      {"the", "big", "black", "dog", "sees", "a", "small", "cat", NULL},
      {"a", "happy", "old", "horse", "chases", "the", "red", "bird", NULL}};
  int status = 0;
  if (first < argc) {
    /* Words may come as separate arguments or in one quoted sentence. */
    const char *words[MAX_LEN + 1];
    int n = 0;
    for (int a = first; a < argc; a++)
      for (char *tok = strtok(argv[a], " \t"); tok; tok = strtok(NULL, " \t"))
        if (n <= MAX_LEN)
          words[n++] = tok;
    status = translate(&m, encoder, cross, words, n, show_encoder);
  } else {
    for (size_t e = 0; e < sizeof examples / sizeof examples[0]; e++) {
      int n = 0;
      while (examples[e][n])
        n++;
      status |= translate(&m, encoder, cross, examples[e], n, show_encoder);
    }
  }
  attn_layer_destroy(encoder);
  attn_layer_destroy(cross);
  return status ? 1 : 0;
}
