/* SPDX-License-Identifier: MIT */
/* Parity with torch.nn.MultiheadAttention on the fixture that every
 * language's tests share: weights in tests/data/torch_mha.safetensors,
 * inputs, masks and torch's float64 outputs and attention weights in
 * tests/data/torch_mha_expected.txt (both written by
 * tests/data/make_torch_fixture.py, whose docstring gives the text format).
 *
 * Each case is loaded from the file by its prefix and run through every
 * entry point that computes the same attention: attn_forward (with and
 * without attention weights, per head and averaged, on one thread and on
 * two), attn_self_forward for self-attention, and attn_cross_step over an
 * attn_memory. Key padding goes through attn_mask.key_padding (or the
 * memory's padding), torch's triu attn_mask through ATTN_CAUSAL_TOP_LEFT.
 * Everything is compared at 1e-5 absolute + 1e-4 relative: the library
 * computes in float32 what torch computed in float64; over these widths
 * (sums of at most 12 products of values below ~2) float32 rounding stays
 * near 1e-6, while a wrong mask, weight or layout is off by 1e-2 or more. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "ref.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#ifndef ATTN_TEST_DATA_DIR
#error "ATTN_TEST_DATA_DIR must name tests/data"
#endif

#define WEIGHTS_FILE ATTN_TEST_DATA_DIR "/torch_mha.safetensors"
#define EXPECTED_FILE ATTN_TEST_DATA_DIR "/torch_mha_expected.txt"

static const double ATOL = 1e-5;
static const double RTOL = 1e-4;

/* ------------------------------------------------------------------------ */
/* The fixture                                                               */
/* ------------------------------------------------------------------------ */

/* A numeric array of one line: floats for inputs, doubles for torch's
 * results, bytes for the padding. */
typedef struct {
  int64_t n; /* -1: absent */
  float *f;
  double *d;
  uint8_t *u8;
} array;

typedef struct {
  char name[64], prefix[128];
  int64_t embed_dim, num_heads, kdim, vdim, bias, batch, len_q, len_k;
  int64_t causal;
  array query, key, value, key_padding, out, per_head, average;
} fixture_case;

#define MAX_CASES 64
static fixture_case cases[MAX_CASES];
static int n_cases;

static const char *int_keys[] = {"embed_dim", "num_heads", "kdim",
                                 "vdim",      "bias",      "batch",
                                 "len_q",     "len_k",     "causal"};

static int64_t *int_field(fixture_case *c, size_t i) {
  int64_t *fields[] = {&c->embed_dim, &c->num_heads, &c->kdim,
                       &c->vdim,      &c->bias,      &c->batch,
                       &c->len_q,     &c->len_k,     &c->causal};
  return fields[i];
}

/* kind: 'f' float, 'd' double, 'b' byte. */
static void parse_array(array *a, const char *text, char kind,
                        const char *what) {
  int64_t n = 0;
  for (const char *p = text; *p;) {
    while (*p == ' ')
      p++;
    if (!*p)
      break;
    n++;
    while (*p && *p != ' ')
      p++;
  }
  a->n = n;
  void *mem = ref_xmalloc((size_t)(n ? n : 1) * sizeof(double));
  a->f = kind == 'f' ? mem : NULL;
  a->d = kind == 'd' ? mem : NULL;
  a->u8 = kind == 'b' ? mem : NULL;
  const char *p = text;
  for (int64_t i = 0; i < n; i++) {
    char *end;
    errno = 0;
    double v = strtod(p, &end);
    if (end == p || errno != 0 || (*end != ' ' && *end != '\0'))
      fail_msg("%s: value %lld is not a number", what, (long long)i);
    if (kind == 'f')
      a->f[i] = strtof(p, NULL);
    else if (kind == 'd')
      a->d[i] = v;
    else if (v == 0.0 || v == 1.0)
      a->u8[i] = (uint8_t)v;
    else
      fail_msg("%s: padding value %g is not 0 or 1", what, v);
    p = end;
  }
}

static array *array_field(fixture_case *c, const char *key, char *kind) {
  static const struct {
    const char *key;
    size_t offset;
    char kind;
  } arrays[] = {
      {"query", offsetof(fixture_case, query), 'f'},
      {"key", offsetof(fixture_case, key), 'f'},
      {"value", offsetof(fixture_case, value), 'f'},
      {"key_padding", offsetof(fixture_case, key_padding), 'b'},
      {"out", offsetof(fixture_case, out), 'd'},
      {"weights_per_head", offsetof(fixture_case, per_head), 'd'},
      {"weights_average", offsetof(fixture_case, average), 'd'},
  };
  for (size_t i = 0; i < sizeof arrays / sizeof arrays[0]; i++)
    if (strcmp(key, arrays[i].key) == 0) {
      *kind = arrays[i].kind;
      return (array *)((char *)c + arrays[i].offset);
    }
  return NULL;
}

static void start_case(const char *name) {
  if (n_cases == MAX_CASES)
    fail_msg("more than %d cases", MAX_CASES);
  fixture_case *c = &cases[n_cases++];
  memset(c, 0, sizeof *c);
  snprintf(c->name, sizeof c->name, "%s", name);
  for (size_t i = 0; i < sizeof int_keys / sizeof int_keys[0]; i++)
    *int_field(c, i) = -1;
  array *all[] = {&c->query, &c->key,      &c->value,  &c->key_padding,
                  &c->out,   &c->per_head, &c->average};
  for (size_t i = 0; i < sizeof all / sizeof all[0]; i++)
    all[i]->n = -1;
}

/* One "key values" line of the current case. */
static void parse_field(char *line) {
  char *rest = strchr(line, ' ');
  if (!rest)
    fail_msg("line '%s' has no value", line);
  *rest++ = '\0';
  if (strcmp(line, "case") == 0) {
    start_case(rest);
    return;
  }
  if (n_cases == 0)
    fail_msg("'%s' before the first case", line);
  fixture_case *c = &cases[n_cases - 1];
  if (strcmp(line, "prefix") == 0) {
    snprintf(c->prefix, sizeof c->prefix, "%s", rest);
    return;
  }
  for (size_t i = 0; i < sizeof int_keys / sizeof int_keys[0]; i++)
    if (strcmp(line, int_keys[i]) == 0) {
      *int_field(c, i) = strtoll(rest, NULL, 10);
      return;
    }
  char kind = 0;
  array *a = array_field(c, line, &kind);
  if (!a)
    fail_msg("%s: unknown field '%s'", c->name, line);
  parse_array(a, rest, kind, line);
}

static void expect_count(const fixture_case *c, const array *a,
                         const char *what, int64_t n) {
  if (a->n != n)
    fail_msg("%s: %s has %lld values, its shape %lld", c->name, what,
             (long long)a->n, (long long)n);
}

/* Absent key/value stand for the query/key; every array has its shape. */
static void complete_case(fixture_case *c) {
  for (size_t i = 0; i < sizeof int_keys / sizeof int_keys[0]; i++)
    if (*int_field(c, i) < 0)
      fail_msg("%s: no %s", c->name, int_keys[i]);
  if (c->key.n < 0)
    c->key = c->query;
  if (c->value.n < 0)
    c->value = c->key;
  int64_t B = c->batch, Lq = c->len_q, Lk = c->len_k, E = c->embed_dim;
  expect_count(c, &c->query, "query", B * Lq * E);
  expect_count(c, &c->key, "key", B * Lk * c->kdim);
  expect_count(c, &c->value, "value", B * Lk * c->vdim);
  if (c->key_padding.n >= 0)
    expect_count(c, &c->key_padding, "key_padding", B * Lk);
  expect_count(c, &c->out, "out", B * Lq * E);
  expect_count(c, &c->per_head, "weights_per_head", B * c->num_heads * Lq * Lk);
  expect_count(c, &c->average, "weights_average", B * Lq * Lk);
}

static int read_fixture(void **state) {
  (void)state;
  FILE *f = fopen(EXPECTED_FILE, "rb");
  if (!f) {
    fprintf(stderr, "%s: %s\n", EXPECTED_FILE, strerror(errno));
    return -1;
  }
  char *text = NULL;
  size_t size = 0, got;
  char chunk[4096];
  while ((got = fread(chunk, 1, sizeof chunk, f)) > 0) {
    char *grown = realloc(text, size + got + 1);
    if (!grown)
      break;
    text = grown;
    memcpy(text + size, chunk, got);
    size += got;
  }
  fclose(f);
  if (!text || got > 0) {
    free(text);
    return -1;
  }
  text[size] = '\0';
  for (char *line = text; line && *line;) {
    char *next = strchr(line, '\n');
    if (next)
      *next++ = '\0';
    size_t len = strlen(line);
    if (len && line[len - 1] == '\r') /* a checkout with CRLF line ends */
      line[len - 1] = '\0';
    if (*line && *line != '#')
      parse_field(line);
    line = next;
  }
  free(text);
  for (int i = 0; i < n_cases; i++)
    complete_case(&cases[i]);
  return 0;
}

static int free_fixture(void **state) {
  (void)state;
  for (int i = 0; i < n_cases; i++) {
    fixture_case *c = &cases[i];
    array *own[] = {&c->query,    &c->key_padding, &c->out,
                    &c->per_head, &c->average,     NULL,
                    NULL};
    if (c->key.f != c->query.f)
      own[5] = &c->key;
    if (c->value.f != c->key.f)
      own[6] = &c->value;
    for (size_t k = 0; k < sizeof own / sizeof own[0]; k++)
      if (own[k] && own[k]->n >= 0)
        free(own[k]->f   ? (void *)own[k]->f
             : own[k]->d ? (void *)own[k]->d
                         : (void *)own[k]->u8);
  }
  n_cases = 0;
  return 0;
}

/* ------------------------------------------------------------------------ */
/* Running a case                                                            */
/* ------------------------------------------------------------------------ */

static attn_layer *load_case(const fixture_case *c) {
  attn_config cfg;
  attn_config_init(&cfg);
  cfg.embed_dim = c->embed_dim;
  cfg.num_heads = c->num_heads;
  cfg.kdim = c->kdim;
  cfg.vdim = c->vdim;
  cfg.bias = (int32_t)c->bias;
  cfg.num_threads = 1;
  attn_layer *l = NULL;
  assert_int_equal(attn_layer_create(&cfg, &l), ATTN_OK);
  if (attn_layer_load_safetensors(l, WEIGHTS_FILE, c->prefix) != ATTN_OK)
    fail_msg("%s: %s", c->name, attn_last_error());
  return l;
}

/* The case's mask as the library takes it; NULL when it has none. */
static const attn_mask *case_mask(const fixture_case *c, attn_mask *m) {
  attn_mask_init(m);
  m->causal = c->causal ? ATTN_CAUSAL_TOP_LEFT : ATTN_CAUSAL_NONE;
  m->key_padding = c->key_padding.n >= 0 ? c->key_padding.u8 : NULL;
  return c->causal || m->key_padding ? m : NULL;
}

static int64_t out_count(const fixture_case *c) {
  return c->batch * c->len_q * c->embed_dim;
}

static void check_out(const fixture_case *c, const char *how,
                      const float *out) {
  char what[160];
  snprintf(what, sizeof what, "%.63s %.80s", c->name, how);
  assert_true(ref_close(what, out, c->out.d, out_count(c), RTOL, ATOL));
}

/* attn_forward with the case's inputs, mask and the given options. */
static void run_forward(const attn_layer *l, const fixture_case *c,
                        const attn_options *opts, float *out) {
  attn_mask m;
  attn_status st =
      attn_forward(l, c->batch, c->len_q, c->len_k, c->query.f, c->key.f,
                   c->value.f, case_mask(c, &m), opts, out);
  if (st != ATTN_OK)
    fail_msg("%s: %s", c->name, attn_last_error());
}

/* ------------------------------------------------------------------------ */
/* Tests                                                                     */
/* ------------------------------------------------------------------------ */

/* The fixture holds what it is meant to cover, so that a regenerated file
 * that lost a kind of case fails here rather than passing silently. */
static void test_fixture_covers_the_cases(void **state) {
  (void)state;
  int self = 0, cross = 0, other_dims = 0, padding = 0, causal = 0;
  int causal_cross = 0;
  for (int i = 0; i < n_cases; i++) {
    const fixture_case *c = &cases[i];
    int is_self = c->key.f == c->query.f;
    self += is_self;
    cross += !is_self;
    other_dims += c->kdim != c->embed_dim || c->vdim != c->embed_dim;
    padding += c->key_padding.n >= 0;
    causal += c->causal != 0;
    causal_cross += c->causal != 0 && c->len_q != c->len_k;
  }
  assert_true(n_cases >= 10);
  assert_true(self >= 2 && cross >= 2 && other_dims >= 2);
  assert_true(padding >= 2 && causal >= 2 && causal_cross >= 1);
}

static void test_forward_matches_torch(void **state) {
  (void)state;
  for (int i = 0; i < n_cases; i++) {
    const fixture_case *c = &cases[i];
    attn_layer *l = load_case(c);
    float *out = ref_xmalloc((size_t)out_count(c) * sizeof(float));
    run_forward(l, c, NULL, out);
    check_out(c, "forward", out);

    attn_options o;
    attn_options_init(&o);
    o.num_threads = 2;
    run_forward(l, c, &o, out);
    check_out(c, "forward on 2 threads", out);
    free(out);
    attn_layer_destroy(l);
  }
}

static void test_attention_weights_match_torch(void **state) {
  (void)state;
  for (int i = 0; i < n_cases; i++) {
    const fixture_case *c = &cases[i];
    attn_layer *l = load_case(c);
    float *out = ref_xmalloc((size_t)out_count(c) * sizeof(float));
    float *w = ref_xmalloc((size_t)c->per_head.n * sizeof(float));
    attn_options o;
    attn_options_init(&o);
    o.attn_weights = w;
    o.weights_mode = ATTN_WEIGHTS_PER_HEAD;
    run_forward(l, c, &o, out);
    check_out(c, "forward with weights per head", out);
    char what[160];
    snprintf(what, sizeof what, "%.63s weights per head", c->name);
    assert_true(ref_close(what, w, c->per_head.d, c->per_head.n, RTOL, ATOL));

    o.weights_mode = ATTN_WEIGHTS_AVERAGE;
    run_forward(l, c, &o, out);
    check_out(c, "forward with averaged weights", out);
    snprintf(what, sizeof what, "%.63s averaged weights", c->name);
    assert_true(ref_close(what, w, c->average.d, c->average.n, RTOL, ATOL));
    free(w);
    free(out);
    attn_layer_destroy(l);
  }
}

static void test_self_forward_matches_torch(void **state) {
  (void)state;
  int ran = 0;
  for (int i = 0; i < n_cases; i++) {
    const fixture_case *c = &cases[i];
    if (c->key.f != c->query.f)
      continue;
    attn_layer *l = load_case(c);
    float *out = ref_xmalloc((size_t)out_count(c) * sizeof(float));
    attn_mask m;
    attn_status st = attn_self_forward(l, c->batch, c->len_q, c->query.f,
                                       case_mask(c, &m), NULL, out);
    if (st != ATTN_OK)
      fail_msg("%s: %s", c->name, attn_last_error());
    check_out(c, "self_forward", out);
    free(out);
    attn_layer_destroy(l);
    ran++;
  }
  assert_true(ran >= 2);
}

/* A memory holds the key padding; the causal mode goes with the step. */
static void test_cross_step_matches_torch(void **state) {
  (void)state;
  for (int i = 0; i < n_cases; i++) {
    const fixture_case *c = &cases[i];
    attn_layer *l = load_case(c);
    attn_memory_config mc;
    attn_memory_config_init(&mc);
    mc.batch = c->batch;
    mc.capacity = c->len_k + 2;
    attn_memory *mem = NULL;
    assert_int_equal(attn_memory_create(l, &mc, &mem), ATTN_OK);
    const uint8_t *pad = c->key_padding.n >= 0 ? c->key_padding.u8 : NULL;
    assert_int_equal(attn_memory_set(l, mem, c->batch, c->len_k, c->key.f,
                                     c->value.f, NULL, pad, NULL),
                     ATTN_OK);
    attn_mask m;
    attn_mask_init(&m);
    m.causal = c->causal ? ATTN_CAUSAL_TOP_LEFT : ATTN_CAUSAL_NONE;
    float *out = ref_xmalloc((size_t)out_count(c) * sizeof(float));
    float *w = ref_xmalloc((size_t)c->per_head.n * sizeof(float));
    attn_options o;
    attn_options_init(&o);
    o.attn_weights = w;
    attn_status st =
        attn_cross_step(l, mem, c->batch, c->len_q, c->query.f, &m, &o, out);
    if (st != ATTN_OK)
      fail_msg("%s: %s", c->name, attn_last_error());
    check_out(c, "cross_step", out);
    char what[160];
    snprintf(what, sizeof what, "%.63s cross_step weights", c->name);
    assert_true(ref_close(what, w, c->per_head.d, c->per_head.n, RTOL, ATOL));
    free(w);
    free(out);
    attn_memory_destroy(mem);
    attn_layer_destroy(l);
  }
}

/* The same file from memory gives the same layer, so the same output. */
static void test_load_from_memory_matches_torch(void **state) {
  (void)state;
  FILE *f = fopen(WEIGHTS_FILE, "rb");
  assert_non_null(f);
  assert_int_equal(fseek(f, 0, SEEK_END), 0);
  long size = ftell(f);
  assert_true(size > 0);
  rewind(f);
  unsigned char *file = ref_xmalloc((size_t)size);
  assert_int_equal(fread(file, 1, (size_t)size, f), (size_t)size);
  fclose(f);
  for (int i = 0; i < n_cases; i++) {
    const fixture_case *c = &cases[i];
    attn_layer *l = load_case(c);
    attn_config cfg;
    attn_config_init(&cfg);
    assert_int_equal(attn_layer_get_config(l, &cfg), ATTN_OK);
    attn_layer *m = NULL;
    assert_int_equal(attn_layer_create(&cfg, &m), ATTN_OK);
    attn_status st =
        attn_layer_load_safetensors_mem(m, file, (size_t)size, c->prefix);
    if (st != ATTN_OK)
      fail_msg("%s: %s", c->name, attn_last_error());
    float *out = ref_xmalloc((size_t)out_count(c) * sizeof(float));
    run_forward(m, c, NULL, out);
    check_out(c, "loaded from memory", out);
    free(out);
    attn_layer_destroy(m);
    attn_layer_destroy(l);
  }
  free(file);
}

/* Saved under every naming and loaded again: still torch's output. */
static void test_saved_and_reloaded_matches_torch(void **state) {
  (void)state;
  const char *base = getenv("TMPDIR");
  char dir[256], path[320];
  snprintf(dir, sizeof dir, "%s/attn-fixture-XXXXXX",
           base && *base ? base : "/tmp");
  assert_non_null(mkdtemp(dir));
  snprintf(path, sizeof path, "%s/resaved.safetensors", dir);
  static const int32_t namings[] = {ATTN_NAMES_TORCH, ATTN_NAMES_HF,
                                    ATTN_NAMES_HF_O_PROJ};
  for (int i = 0; i < n_cases; i++) {
    const fixture_case *c = &cases[i];
    attn_layer *l = load_case(c);
    float *out = ref_xmalloc((size_t)out_count(c) * sizeof(float));
    for (size_t k = 0; k < sizeof namings / sizeof namings[0]; k++) {
      assert_int_equal(attn_layer_save_safetensors(l, path, "m.", namings[k]),
                       ATTN_OK);
      attn_config cfg;
      attn_config_init(&cfg);
      assert_int_equal(attn_layer_get_config(l, &cfg), ATTN_OK);
      attn_layer *back = NULL;
      assert_int_equal(attn_layer_create(&cfg, &back), ATTN_OK);
      assert_int_equal(attn_layer_load_safetensors(back, path, "m."), ATTN_OK);
      run_forward(back, c, NULL, out);
      check_out(c, "saved and reloaded", out);
      attn_layer_destroy(back);
    }
    free(out);
    attn_layer_destroy(l);
  }
  assert_int_equal(remove(path), 0);
  assert_int_equal(rmdir(dir), 0);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_fixture_covers_the_cases),
      cmocka_unit_test(test_forward_matches_torch),
      cmocka_unit_test(test_attention_weights_match_torch),
      cmocka_unit_test(test_self_forward_matches_torch),
      cmocka_unit_test(test_cross_step_matches_torch),
      cmocka_unit_test(test_load_from_memory_matches_torch),
      cmocka_unit_test(test_saved_and_reloaded_matches_torch),
  };
  return cmocka_run_group_tests(tests, read_fixture, free_fixture);
}
