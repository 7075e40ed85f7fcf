/* SPDX-License-Identifier: MIT */
/* API conventions: version macros against the loaded library, status
 * names, the per-thread error message, struct_size handling of every
 * versioned struct, init functions and destroy on NULL. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "ref.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static void test_version(void **state) {
  (void)state;
  assert_int_equal(attn_version_number(), ATTN_VERSION_NUMBER);
  assert_int_equal(ATTN_VERSION_NUMBER, ATTN_VERSION_MAJOR * 10000 +
                                            ATTN_VERSION_MINOR * 100 +
                                            ATTN_VERSION_PATCH);
  assert_string_equal(attn_version_string(), ATTN_VERSION_STRING);
  char buf[64];
  snprintf(buf, sizeof buf, "%d.%d.%d", ATTN_VERSION_MAJOR, ATTN_VERSION_MINOR,
           ATTN_VERSION_PATCH);
  assert_string_equal(buf, attn_version_string());
  /* Static storage: the same pointer every time. */
  assert_ptr_equal(attn_version_string(), attn_version_string());
}

/* Every status the header defines, in order. */
static const attn_status known[] = {ATTN_OK,
                                    ATTN_ERR_NULL_POINTER,
                                    ATTN_ERR_STRUCT_SIZE,
                                    ATTN_ERR_BAD_SIZE,
                                    ATTN_ERR_OVERFLOW,
                                    ATTN_ERR_WEIGHT_SIZE,
                                    ATTN_ERR_WEIGHT_LAYOUT,
                                    ATTN_ERR_WEIGHTS_NOT_SET,
                                    ATTN_ERR_BAD_MASK,
                                    ATTN_ERR_BAD_OPTION,
                                    ATTN_ERR_NOT_FINITE,
                                    ATTN_ERR_NO_MEMORY,
                                    ATTN_ERR_SCRATCH_TOO_SMALL,
                                    ATTN_ERR_IO,
                                    ATTN_ERR_FILE_FORMAT,
                                    ATTN_ERR_TENSOR_MISSING,
                                    ATTN_ERR_TENSOR_DTYPE,
                                    ATTN_ERR_TENSOR_SHAPE,
                                    ATTN_ERR_CAPACITY,
                                    ATTN_ERR_MISMATCH,
                                    ATTN_ERR_UNSUPPORTED};
#define NKNOWN (sizeof known / sizeof *known)

static void test_status_values(void **state) {
  (void)state;
  /* Append-only numbering: the values are 0, 1, 2, ... in header order. */
  for (size_t i = 0; i < NKNOWN; i++)
    assert_int_equal(known[i], (attn_status)i);
}

static void test_status_strings(void **state) {
  (void)state;
  const char *unknown = attn_status_string(-1);
  assert_non_null(unknown);
  assert_string_equal(unknown, "unknown status");
  for (size_t i = 0; i < NKNOWN; i++) {
    const char *s = attn_status_string(known[i]);
    assert_non_null(s);
    assert_true(strlen(s) > 1);
    assert_string_not_equal(s, unknown);
    assert_ptr_equal(s, attn_status_string(known[i]));
    for (size_t j = 0; j < i; j++)
      assert_string_not_equal(s, attn_status_string(known[j]));
  }
  /* Values past the last known one, and far away. */
  const attn_status others[] = {(attn_status)NKNOWN, 100, -7, INT32_MAX,
                                INT32_MIN};
  for (size_t i = 0; i < sizeof others / sizeof *others; i++)
    assert_string_equal(attn_status_string(others[i]), "unknown status");
}

/* The message of a failed call, kept across successful calls, per thread. */
static void *fail_in_thread(void *arg) {
  char *seen = arg;
  /* A fresh thread has no message. */
  strcpy(seen, attn_last_error());
  attn_config cfg;
  attn_config_init(&cfg);
  cfg.embed_dim = 9;
  cfg.num_heads = 2;
  attn_layer *l = NULL;
  if (attn_layer_create(&cfg, &l) != ATTN_ERR_BAD_SIZE)
    strcpy(seen, "create did not fail");
  else
    strcat(seen, "|");
  return NULL;
}

static void test_last_error(void **state) {
  (void)state;
  attn_config cfg;
  attn_config_init(&cfg);
  cfg.embed_dim = 510;
  cfg.num_heads = 8;
  attn_layer *l = NULL;
  assert_int_equal(attn_layer_create(&cfg, &l), ATTN_ERR_BAD_SIZE);
  char first[512];
  snprintf(first, sizeof first, "%s", attn_last_error());
  assert_string_equal(first, "embed_dim 510 is not divisible by num_heads 8");

  /* Successful calls leave it alone. */
  cfg.embed_dim = 512;
  assert_int_equal(attn_layer_create(&cfg, &l), ATTN_OK);
  assert_int_equal(attn_layer_init_weights(l, 1), ATTN_OK);
  assert_string_equal(attn_last_error(), first);

  /* Another thread's failure does not show here, and this thread's does
   * not show there. */
  char seen[600];
  pthread_t t;
  assert_int_equal(pthread_create(&t, NULL, fail_in_thread, seen), 0);
  assert_int_equal(pthread_join(t, NULL), 0);
  assert_string_equal(seen, "|");
  assert_string_equal(attn_last_error(), first);
  attn_layer_destroy(l);
}

static void test_init_functions(void **state) {
  (void)state;
  /* NULL is ignored. */
  attn_config_init(NULL);
  attn_mask_init(NULL);
  attn_options_init(NULL);
  attn_layer_destroy(NULL);

  attn_mask m;
  memset(&m, 0xcd, sizeof m);
  attn_mask_init(&m);
  assert_int_equal(m.struct_size, sizeof m);
  assert_int_equal(m.causal, ATTN_CAUSAL_NONE);
  assert_int_equal(m.empty_rows, ATTN_EMPTY_ROW_ZERO);
  assert_null(m.key_lengths);
  assert_null(m.key_padding);
  assert_null(m.bias);
  assert_int_equal(m.bias_stride_b, 0);
  assert_int_equal(m.bias_stride_h, 0);
  assert_int_equal(m.bias_stride_q, 0);
  assert_int_equal(m.window, 0);

  attn_options o;
  memset(&o, 0xcd, sizeof o);
  attn_options_init(&o);
  assert_int_equal(o.struct_size, sizeof o);
  assert_null(o.attn_weights);
  assert_int_equal(o.weights_mode, ATTN_WEIGHTS_PER_HEAD);
  assert_int_equal(o.num_threads, 0);
  assert_null(o.scratch);
  assert_int_equal(o.scratch_size, 0);

  attn_config c;
  memset(&c, 0xcd, sizeof c);
  attn_config_init(&c);
  assert_int_equal(c.struct_size, sizeof c);
  assert_int_equal(c.embed_dim, 0);
  assert_int_equal(c.num_heads, 1);
  assert_int_equal(c.kdim, 0);
  assert_int_equal(c.vdim, 0);
  assert_int_equal(c.bias, 1);
  assert_int_equal(c.num_threads, 0);
  assert_true(c.scale == 0.0);
  assert_int_equal(c.num_kv_heads, 0);
}

/* A struct as a newer caller would pass it: the known part followed by
 * fields this library does not know. */
typedef struct {
  attn_config c;
  unsigned char tail[24];
} big_config;
typedef struct {
  attn_mask m;
  unsigned char tail[24];
} big_mask;
typedef struct {
  attn_options o;
  unsigned char tail[24];
} big_options;

static void test_struct_size_config(void **state) {
  (void)state;
  big_config big;
  memset(&big, 0, sizeof big);
  attn_config_init(&big.c);
  big.c.embed_dim = 8;
  big.c.num_heads = 2;
  attn_layer *l = NULL;

  /* Too small: every size below the first release is refused. */
  const size_t small[] = {0, 1, sizeof(size_t), ATTN_CONFIG_SIZE_0_1 - 1};
  for (size_t i = 0; i < 4; i++) {
    big.c.struct_size = small[i];
    assert_int_equal(attn_layer_create(&big.c, &l), ATTN_ERR_STRUCT_SIZE);
    assert_non_null(strstr(attn_last_error(), "smaller"));
    assert_null(l);
  }
  /* Larger with a zero tail: accepted, the known fields are used. */
  big.c.struct_size = sizeof big;
  assert_int_equal(attn_layer_create(&big.c, &l), ATTN_OK);
  attn_config got;
  attn_config_init(&got);
  assert_int_equal(attn_layer_get_config(l, &got), ATTN_OK);
  assert_int_equal(got.embed_dim, 8);
  assert_int_equal(got.num_heads, 2);
  attn_layer_destroy(l);
  l = NULL;
  /* Larger with anything set in the tail: refused, since this library
   * cannot honour the unknown fields. */
  for (size_t i = 0; i < sizeof big.tail; i += 23) {
    big.tail[i] = 1;
    assert_int_equal(attn_layer_create(&big.c, &l), ATTN_ERR_STRUCT_SIZE);
    assert_non_null(strstr(attn_last_error(), "larger"));
    assert_null(l);
    big.tail[i] = 0;
  }

  /* attn_layer_get_config: a newer caller's struct gets the known fields
   * and keeps its tail; an older (smaller) one is refused. */
  assert_int_equal(attn_layer_create(&big.c, &l), ATTN_OK);
  memset(&big, 0xee, sizeof big);
  big.c.struct_size = sizeof big;
  assert_int_equal(attn_layer_get_config(l, &big.c), ATTN_OK);
  assert_int_equal(big.c.embed_dim, 8);
  assert_int_equal(big.c.struct_size, sizeof big);
  for (size_t i = 0; i < sizeof big.tail; i++)
    assert_int_equal(big.tail[i], 0xee);
  attn_layer_destroy(l);
}

/* attn_mask and attn_options through attn_forward and the scratch query. */
static void test_struct_size_mask_options(void **state) {
  (void)state;
  attn_config cfg;
  attn_config_init(&cfg);
  cfg.embed_dim = 8;
  cfg.num_heads = 2;
  ref_model mdl;
  assert_int_equal(ref_model_create(&mdl, &cfg, 3), ATTN_OK);
  ref_rng r;
  ref_rng_seed(&r, 4);
  float *x = ref_random(&r, 2 * 5 * 8, -1, 1);
  float want[80], out[80];

  big_mask bm;
  memset(&bm, 0, sizeof bm);
  attn_mask_init(&bm.m);
  bm.m.causal = ATTN_CAUSAL_TOP_LEFT;
  assert_int_equal(attn_self_forward(mdl.layer, 2, 5, x, &bm.m, NULL, want),
                   ATTN_OK);
  /* Zero tail: same result. */
  bm.m.struct_size = sizeof bm;
  assert_int_equal(attn_self_forward(mdl.layer, 2, 5, x, &bm.m, NULL, out),
                   ATTN_OK);
  assert_memory_equal(out, want, sizeof out);
  /* Nonzero tail, too small: refused, out untouched. */
  memset(out, 0x5a, sizeof out);
  bm.tail[5] = 9;
  assert_int_equal(attn_self_forward(mdl.layer, 2, 5, x, &bm.m, NULL, out),
                   ATTN_ERR_STRUCT_SIZE);
  bm.tail[5] = 0;
  bm.m.struct_size = sizeof(attn_mask) - 1;
  assert_int_equal(attn_self_forward(mdl.layer, 2, 5, x, &bm.m, NULL, out),
                   ATTN_ERR_STRUCT_SIZE);
  for (size_t i = 0; i < sizeof out; i++)
    assert_int_equal(((unsigned char *)out)[i], 0x5a);

  big_options bo;
  memset(&bo, 0, sizeof bo);
  attn_options_init(&bo.o);
  bo.o.num_threads = 1;
  bo.o.struct_size = sizeof bo;
  size_t s1 = 0, s2 = 0;
  assert_int_equal(attn_self_forward(mdl.layer, 2, 5, x, NULL, &bo.o, out),
                   ATTN_OK);
  assert_int_equal(attn_forward_scratch_size(mdl.layer, 2, 5, 5, &bo.o, &s1),
                   ATTN_OK);
  bo.o.struct_size = sizeof bo.o;
  assert_int_equal(attn_forward_scratch_size(mdl.layer, 2, 5, 5, &bo.o, &s2),
                   ATTN_OK);
  assert_true(s1 == s2 && s1 > 0);
  bo.o.struct_size = sizeof bo;
  bo.tail[0] = 1;
  memset(out, 0x5a, sizeof out);
  assert_int_equal(attn_self_forward(mdl.layer, 2, 5, x, NULL, &bo.o, out),
                   ATTN_ERR_STRUCT_SIZE);
  assert_int_equal(attn_forward_scratch_size(mdl.layer, 2, 5, 5, &bo.o, &s1),
                   ATTN_ERR_STRUCT_SIZE);
  bo.tail[0] = 0;
  bo.o.struct_size = 4;
  assert_int_equal(attn_self_forward(mdl.layer, 2, 5, x, NULL, &bo.o, out),
                   ATTN_ERR_STRUCT_SIZE);
  for (size_t i = 0; i < sizeof out; i++)
    assert_int_equal(((unsigned char *)out)[i], 0x5a);
  free(x);
  ref_model_destroy(&mdl);
}

/* mask and opts may be NULL; both mean the defaults. */
static void test_null_mask_and_options(void **state) {
  (void)state;
  attn_config cfg;
  attn_config_init(&cfg);
  cfg.embed_dim = 12;
  cfg.num_heads = 3;
  ref_model mdl;
  assert_int_equal(ref_model_create(&mdl, &cfg, 5), ATTN_OK);
  ref_rng r;
  ref_rng_seed(&r, 6);
  float *x = ref_random(&r, 3 * 4 * 12, -1, 1);
  float a[144], b[144];
  attn_mask m;
  attn_options o;
  attn_mask_init(&m);
  attn_options_init(&o);
  assert_int_equal(attn_self_forward(mdl.layer, 3, 4, x, NULL, NULL, a),
                   ATTN_OK);
  assert_int_equal(attn_self_forward(mdl.layer, 3, 4, x, &m, &o, b), ATTN_OK);
  assert_memory_equal(a, b, sizeof a);
  free(x);
  ref_model_destroy(&mdl);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_version),
      cmocka_unit_test(test_status_values),
      cmocka_unit_test(test_status_strings),
      cmocka_unit_test(test_last_error),
      cmocka_unit_test(test_init_functions),
      cmocka_unit_test(test_struct_size_config),
      cmocka_unit_test(test_struct_size_mask_options),
      cmocka_unit_test(test_null_mask_and_options),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
