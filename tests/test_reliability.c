/* SPDX-License-Identifier: MIT */
/* Reliability: the defects a hostile round of testing found, each pinned
 * by a test that failed before its fix.
 *
 * - A huge legal header (1.5 million tiny entries) parses in bounded
 *   memory (run first: it reads the process's peak memory).
 * - window = INT64_MAX with bottom-right causality and short rows, and a
 *   cache window of INT64_MAX, give the reference's results.
 * - Sizes whose element counts cannot be addressed give ATTN_ERR_OVERFLOW
 *   from every size query and entry point, without reading the inputs
 *   (the buffers passed are tiny: a read shows under ASan).
 * - A huge num_threads is clamped, not an error and not a huge scratch.
 * - Loading from a FIFO fails at once instead of blocking.
 * - Saving to a valid 250-byte file name works.
 * - Tensor names that are not UTF-8 are refused; escaped ones decode.
 * - Under ATTN_BLAS_HOLD, the BLAS thread count a program set between
 *   calls changes no bit of the results. */
#include "ref.h"

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>

#include <cmocka.h>

#include <dlfcn.h>
#include <errno.h>
#include <limits.h>
#include <math.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

static attn_layer *layer_of(int64_t E, int64_t H, int64_t kdim, int64_t vdim) {
  attn_config cfg;
  attn_config_init(&cfg);
  cfg.embed_dim = E;
  cfg.num_heads = H;
  cfg.kdim = kdim;
  cfg.vdim = vdim;
  attn_layer *l = NULL;
  assert_int_equal(attn_layer_create(&cfg, &l), ATTN_OK);
  assert_int_equal(attn_layer_init_weights(l, 7), ATTN_OK);
  return l;
}

static void put_le64(unsigned char *p, uint64_t v) {
  for (int i = 0; i < 8; i++)
    p[i] = (unsigned char)(v >> (8 * i));
}

/* A safetensors file of a header text and `data` zero bytes. */
static unsigned char *st_file(const char *header, size_t data, size_t *size) {
  size_t h = strlen(header);
  *size = 8 + h + data;
  unsigned char *f = ref_xmalloc(*size);
  put_le64(f, h);
  memcpy(f + 8, header, h);
  memset(f + 8 + h, 0, data);
  return f;
}

static long peak_kib(void) {
  struct rusage ru;
  getrusage(RUSAGE_SELF, &ru);
  return ru.ru_maxrss;
}

/* ------------------------------------------------------------------------ */

static void test_huge_header_bounded_memory(void **state) {
  (void)state;
  /* 1.5 million entries of 0 bytes each, as {"t0000000":{...},...}: a
   * legal ~88 MB header. */
  const size_t n = 1500000;
  const char *entry = "\"t%07zu\":{\"dtype\":\"F32\",\"shape\":[0],"
                      "\"data_offsets\":[0,0]},";
  size_t cap = n * 60 + 16, len = 0;
  char *text = ref_xmalloc(cap);
  text[len++] = '{';
  for (size_t i = 0; i < n; i++)
    len += (size_t)snprintf(text + len, cap - len, entry, i);
  text[len - 1] = '}';
  text[len] = '\0';
  assert_true(len < ATTN_SAFETENSORS_MAX_HEADER);
  size_t size;
  unsigned char *file = st_file(text, 0, &size);
  free(text);
  attn_layer *l = layer_of(8, 2, 0, 0);
  long before = peak_kib();
  struct timespec t0, t1;
  clock_gettime(CLOCK_MONOTONIC, &t0);
  /* Legal, but no attention tensor in it. */
  assert_int_equal(attn_layer_load_safetensors_mem(l, file, size, NULL),
                   ATTN_ERR_TENSOR_MISSING);
  clock_gettime(CLOCK_MONOTONIC, &t1);
  long grown = peak_kib() - before;
  /* The index costs well under 4 bytes per header byte (the text is the
   * caller's); a JSON tree of the same header took 1.2 GB. */
  print_message("header of %zu bytes: peak memory grew by %ld MiB, %.2f s\n",
                len, grown / 1024,
                (double)(t1.tv_sec - t0.tv_sec) +
                    1e-9 * (double)(t1.tv_nsec - t0.tv_nsec));
  assert_true(grown < 400 * 1024);
  attn_layer_destroy(l);
  free(file);
}

/* ------------------------------------------------------------------------ */

/* Forward with window INT64_MAX, bottom-right causality and key lengths
 * shorter than len_q, against the reference. */
static void test_window_int64_max_forward(void **state) {
  (void)state;
  attn_config cfg;
  attn_config_init(&cfg);
  cfg.embed_dim = 16;
  cfg.num_heads = 2;
  ref_model m;
  assert_int_equal(ref_model_create(&m, &cfg, 11), ATTN_OK);
  const int64_t B = 3, Lq = 9, Lk = 7;
  int64_t lengths[3] = {2, 7, 0};
  ref_rng r;
  ref_rng_seed(&r, 12);
  float *q = ref_random(&r, B * Lq * 16, -1, 1);
  float *kv = ref_random(&r, B * Lk * 16, -1, 1);
  float out[3 * 9 * 16];
  double want[3 * 9 * 16];
  for (int causal = ATTN_CAUSAL_NONE; causal <= ATTN_CAUSAL_BOTTOM_RIGHT;
       causal++) {
    attn_mask mask;
    attn_mask_init(&mask);
    mask.causal = causal;
    mask.window = INT64_MAX;
    mask.key_lengths = lengths;
    assert_int_equal(
        attn_forward(m.layer, B, Lq, Lk, q, kv, kv, &mask, NULL, out), ATTN_OK);
    ref_forward(&m.ref, B, Lq, Lk, q, kv, kv, &mask, want, NULL);
    assert_true(ref_close("window INT64_MAX", out, want, B * Lq * 16, REF_RTOL,
                          REF_ATOL));
  }
  free(q);
  free(kv);
  ref_model_destroy(&m);
}

/* A cache with window INT64_MAX keeps every token, as one without. */
static void test_window_int64_max_cache(void **state) {
  (void)state;
  attn_config cfg;
  attn_config_init(&cfg);
  cfg.embed_dim = 16;
  cfg.num_heads = 4;
  ref_model m;
  assert_int_equal(ref_model_create(&m, &cfg, 21), ATTN_OK);
  attn_cache_config cc;
  attn_cache_config_init(&cc);
  cc.capacity = 12;
  cc.window = INT64_MAX;
  attn_kv_cache *c = NULL;
  assert_int_equal(attn_kv_cache_create(m.layer, &cc, &c), ATTN_OK);
  ref_rng r;
  ref_rng_seed(&r, 22);
  float *x = ref_random(&r, 12 * 16, -1, 1);
  float out[12 * 16];
  double want[12 * 16];
  for (int64_t t = 0; t < 12; t += 3)
    assert_int_equal(attn_decode_step(m.layer, c, 1, 3, x + t * 16, NULL, NULL,
                                      out + t * 16),
                     ATTN_OK);
  attn_mask mask;
  attn_mask_init(&mask);
  mask.causal = ATTN_CAUSAL_TOP_LEFT;
  ref_forward(&m.ref, 1, 12, 12, x, x, x, &mask, want, NULL);
  assert_true(ref_close("cache window INT64_MAX", out, want, 12 * 16, REF_RTOL,
                        REF_ATOL));
  attn_kv_cache_destroy(c);
  free(x);
  ref_model_destroy(&m);
}

/* ------------------------------------------------------------------------ */

static float tiny[64]; /* big enough for every call that may read it */

static void expect_overflow(attn_status st, const char *what) {
  if (st != ATTN_ERR_OVERFLOW)
    fail_msg("%s: status %d (%s), expected ATTN_ERR_OVERFLOW", what, (int)st,
             attn_last_error());
}

static void test_unaddressable_sizes(void **state) {
  (void)state;
  attn_layer *one = layer_of(1, 1, 0, 0);
  attn_layer *l = layer_of(8, 2, 0, 0);
  size_t bytes = 0;
  /* E = 1, Lq = INT64_MAX: the layout's rounding must not overflow. */
  expect_overflow(attn_forward_scratch_size(one, 1, INT64_MAX, 1, NULL, &bytes),
                  "E 1, Lq INT64_MAX scratch");
  expect_overflow(
      attn_forward(one, 1, INT64_MAX, 1, tiny, tiny, tiny, NULL, NULL, tiny),
      "E 1, Lq INT64_MAX forward");
  /* Element counts just above PTRDIFF_MAX / 4: sizes that fit int64 but
   * no pointer can span. */
  int64_t rows = (int64_t)(PTRDIFF_MAX / 4 / 8) + 1;
  const int64_t cases[][3] = {{1, rows, 1},
                              {rows, 1, 1},
                              {1, 1, rows},
                              {2, rows / 2 + 1, 4},
                              {rows / 4 + 1, 4, 4}};
  for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
    const int64_t *c = cases[i];
    char what[96];
    snprintf(what, sizeof what, "B %lld Lq %lld Lk %lld", (long long)c[0],
             (long long)c[1], (long long)c[2]);
    expect_overflow(
        attn_forward_scratch_size(l, c[0], c[1], c[2], NULL, &bytes), what);
    expect_overflow(
        attn_forward(l, c[0], c[1], c[2], tiny, tiny, tiny, NULL, NULL, tiny),
        what);
  }
  /* Steps: the same for the new tokens and the queries. */
  attn_cache_config cc;
  attn_cache_config_init(&cc);
  cc.capacity = 4;
  attn_kv_cache *cache = NULL;
  assert_int_equal(attn_kv_cache_create(l, &cc, &cache), ATTN_OK);
  attn_status st = attn_decode_scratch_size(l, cache, rows, NULL, &bytes);
  assert_true(st == ATTN_ERR_OVERFLOW || st == ATTN_ERR_CAPACITY);
  st = attn_decode_step(l, cache, 1, rows, tiny, NULL, NULL, tiny);
  assert_true(st == ATTN_ERR_OVERFLOW || st == ATTN_ERR_CAPACITY);
  attn_memory_config mc;
  attn_memory_config_init(&mc);
  mc.capacity = 4;
  attn_memory *mem = NULL;
  assert_int_equal(attn_memory_create(l, &mc, &mem), ATTN_OK);
  assert_int_equal(attn_memory_set(l, mem, 1, 4, tiny, tiny, NULL, NULL, NULL),
                   ATTN_OK);
  expect_overflow(attn_cross_scratch_size(l, mem, rows, NULL, &bytes),
                  "cross scratch");
  expect_overflow(attn_cross_step(l, mem, 1, rows, tiny, NULL, NULL, tiny),
                  "cross step");
  /* Caches and memories whose size cannot be addressed. */
  cc.capacity = INT64_MAX / 2;
  expect_overflow(attn_kv_cache_size(l, &cc, &bytes), "cache size");
  mc.capacity = INT64_MAX / 2;
  expect_overflow(attn_memory_size(l, &mc, &bytes), "memory size");
  attn_memory_destroy(mem);
  attn_kv_cache_destroy(cache);
  attn_layer_destroy(one);
  attn_layer_destroy(l);
}

/* ------------------------------------------------------------------------ */

static void test_huge_thread_count(void **state) {
  (void)state;
  attn_layer *l = layer_of(8, 2, 0, 0);
  int32_t threads = 0;
  assert_int_equal(attn_runtime_threads(NULL, &threads), ATTN_OK);
  attn_options o;
  attn_options_init(&o);
  size_t want = 0, got = 0;
  o.num_threads = threads;
  assert_int_equal(attn_forward_scratch_size(l, 4, 8, 8, &o, &want), ATTN_OK);
  for (int32_t n = threads + 1; n > 0 && n <= INT32_MAX / 7; n *= 7) {
    o.num_threads = n;
    assert_int_equal(attn_forward_scratch_size(l, 4, 8, 8, &o, &got), ATTN_OK);
    assert_int_equal(got, want);
  }
  o.num_threads = INT32_MAX;
  assert_int_equal(attn_forward_scratch_size(l, 4, 8, 8, &o, &got), ATTN_OK);
  assert_int_equal(got, want);
  ref_rng r;
  ref_rng_seed(&r, 31);
  float *x = ref_random(&r, 4 * 8 * 8, -1, 1);
  float a[4 * 8 * 8], b[4 * 8 * 8];
  assert_int_equal(attn_self_forward(l, 4, 8, x, NULL, &o, a), ATTN_OK);
  o.num_threads = 1;
  assert_int_equal(attn_self_forward(l, 4, 8, x, NULL, &o, b), ATTN_OK);
  assert_memory_equal(a, b, sizeof a); /* any thread count: the same bits */
  free(x);
  attn_layer_destroy(l);
}

/* ------------------------------------------------------------------------ */

static char tmp_dir[256];

static void on_alarm(int sig) {
  (void)sig;
  static const char msg[] = "loading from a FIFO blocked\n";
  (void)!write(2, msg, sizeof msg - 1);
  _exit(1);
}

static void test_fifo_does_not_block(void **state) {
  (void)state;
  char path[300];
  snprintf(path, sizeof path, "%s/fifo", tmp_dir);
  assert_int_equal(mkfifo(path, 0600), 0);
  attn_layer *l = layer_of(8, 2, 0, 0);
  signal(SIGALRM, on_alarm);
  alarm(10);
  assert_int_equal(attn_layer_load_safetensors(l, path, NULL), ATTN_ERR_IO);
  alarm(0);
  assert_non_null(strstr(attn_last_error(), "not a regular file"));
  unlink(path);
  attn_layer_destroy(l);
}

static void test_save_long_file_name(void **state) {
  (void)state;
  char name[251], path[600];
  memset(name, 'w', 250);
  name[250] = '\0';
  memcpy(name + 238, ".safetensors", 12);
  snprintf(path, sizeof path, "%s/%s", tmp_dir, name);
  attn_layer *a = layer_of(8, 2, 0, 0), *b = layer_of(8, 2, 0, 0);
  assert_int_equal(attn_layer_init_weights(b, 99), ATTN_OK);
  for (int round = 0; round < 2; round++) /* a new file, then a replacement */
    if (attn_layer_save_safetensors(a, path, NULL, ATTN_NAMES_TORCH) != ATTN_OK)
      fail_msg("saving to a 250-byte name: %s", attn_last_error());
  assert_int_equal(attn_layer_load_safetensors(b, path, NULL), ATTN_OK);
  float wa[24 * 8], wb[24 * 8];
  assert_int_equal(attn_layer_get_weight(a, ATTN_W_IN_PROJ, wa, 24 * 8),
                   ATTN_OK);
  assert_int_equal(attn_layer_get_weight(b, ATTN_W_IN_PROJ, wb, 24 * 8),
                   ATTN_OK);
  assert_memory_equal(wa, wb, sizeof wa);
  unlink(path);
  attn_layer_destroy(a);
  attn_layer_destroy(b);
}

/* ------------------------------------------------------------------------ */

#define UTF8_TENSORS(first)                                                    \
  "{\"" first "\":{\"dtype\":\"F32\",\"shape\":[12,4],"                        \
  "\"data_offsets\":[0,192]},"                                                 \
  "\"in_proj_bias\":{\"dtype\":\"F32\",\"shape\":[12],"                        \
  "\"data_offsets\":[192,240]},"                                               \
  "\"out_proj.weight\":{\"dtype\":\"F32\",\"shape\":[4,4],"                    \
  "\"data_offsets\":[240,304]},"                                               \
  "\"out_proj.bias\":{\"dtype\":\"F32\",\"shape\":[4],"                        \
  "\"data_offsets\":[304,320]}}"

static void test_names_must_be_utf8(void **state) {
  (void)state;
  static const struct {
    const char *header;
    attn_status want;
    const char *fragment;
  } cases[] = {
      /* Escapes decode: this is in_proj_weight. */
      {UTF8_TENSORS("in_proj\\u005fweight"), ATTN_OK, NULL},
      {UTF8_TENSORS("in_proj_weight") "  ", ATTN_OK, NULL},
      /* A name with a stray byte, an overlong '/', a lone surrogate. */
      {UTF8_TENSORS("in_proj_weight\xff"), ATTN_ERR_FILE_FORMAT, "UTF-8"},
      {UTF8_TENSORS("a\xc0\xaf"), ATTN_ERR_FILE_FORMAT, "UTF-8"},
      {UTF8_TENSORS("a\xed\xa0\x80"), ATTN_ERR_FILE_FORMAT, "UTF-8"},
      {UTF8_TENSORS("a\\ud800"), ATTN_ERR_FILE_FORMAT, "UTF-8"},
      {UTF8_TENSORS("a\\udc00\\ud800"), ATTN_ERR_FILE_FORMAT, "UTF-8"},
      /* U+0000 cannot be part of a name. */
      {UTF8_TENSORS("in_proj_weight\\u0000x"), ATTN_ERR_FILE_FORMAT, "U+0000"},
      /* Raw control characters are not JSON. */
      {UTF8_TENSORS("in_proj\tweight"), ATTN_ERR_FILE_FORMAT, "not valid JSON"},
  };
  attn_layer *l = layer_of(4, 2, 0, 0);
  for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
    size_t size;
    unsigned char *f = st_file(cases[i].header, 320, &size);
    attn_status st = attn_layer_load_safetensors_mem(l, f, size, NULL);
    if (st != cases[i].want ||
        (cases[i].fragment && !strstr(attn_last_error(), cases[i].fragment)))
      fail_msg("case %zu: status %d (%s), expected %d with '%s'", i, (int)st,
               attn_last_error(), (int)cases[i].want,
               cases[i].fragment ? cases[i].fragment : "");
    free(f);
  }
  attn_layer_destroy(l);
}

/* ------------------------------------------------------------------------ */

/* Under ATTN_BLAS_HOLD the calls hold OpenBLAS at one thread, so the count
 * a program set between calls changes no bit (and is put back after). */
static void test_blas_count_between_calls(void **state) {
  (void)state;
  /* OpenBLAS's controls, wherever it was loaded from (libattn links it
   * directly or through libblas.so.3). */
  void (*set)(int) = NULL;
  int (*get)(void) = NULL;
  void *h = dlopen("libopenblas.so.0", RTLD_LAZY | RTLD_NOLOAD);
  if (h) {
    *(void **)&set = dlsym(h, "openblas_set_num_threads");
    *(void **)&get = dlsym(h, "openblas_get_num_threads");
  }
  if (!set || !get) {
    print_message("no OpenBLAS thread controls: nothing to pin\n");
    if (h)
      dlclose(h);
    return;
  }
  attn_layer *l = layer_of(64, 4, 0, 0);
  ref_rng r;
  ref_rng_seed(&r, 41);
  const int64_t B = 2, L = 96, n = B * L * 64;
  float *x = ref_random(&r, n, -1, 1);
  float *a = ref_xmalloc((size_t)n * sizeof(float));
  float *b = ref_xmalloc((size_t)n * sizeof(float));
  int before = get();
  set(1);
  assert_int_equal(attn_self_forward(l, B, L, x, NULL, NULL, a), ATTN_OK);
  set(2);
  assert_int_equal(attn_self_forward(l, B, L, x, NULL, NULL, b), ATTN_OK);
  assert_int_equal(get(), 2);
  assert_memory_equal(a, b, (size_t)n * sizeof(float));
  set(before);
  dlclose(h);
  free(x);
  free(a);
  free(b);
  attn_layer_destroy(l);
}

/* ------------------------------------------------------------------------ */

static int setup(void **state) {
  (void)state;
  snprintf(tmp_dir, sizeof tmp_dir, "%s/attn_rel_XXXXXX",
           getenv("TMPDIR") ? getenv("TMPDIR") : "/tmp");
  return mkdtemp(tmp_dir) ? 0 : -1;
}

static int teardown(void **state) {
  (void)state;
  return rmdir(tmp_dir); /* fails if a test left a file behind */
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_huge_header_bounded_memory),
      cmocka_unit_test(test_window_int64_max_forward),
      cmocka_unit_test(test_window_int64_max_cache),
      cmocka_unit_test(test_unaddressable_sizes),
      cmocka_unit_test(test_huge_thread_count),
      cmocka_unit_test(test_fifo_does_not_block),
      cmocka_unit_test(test_save_long_file_name),
      cmocka_unit_test(test_names_must_be_utf8),
      cmocka_unit_test(test_blas_count_between_calls),
  };
  return cmocka_run_group_tests(tests, setup, teardown);
}
