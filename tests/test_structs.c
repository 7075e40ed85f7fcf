/* SPDX-License-Identifier: MIT */
/* Versioned structs in both directions, for every public struct
 * (docs/ABI.md):
 *
 * - an "old" caller, whose struct is the first released layout
 *   (ATTN_*_SIZE_0_1 bytes) followed by guard bytes: init writes exactly
 *   that many bytes, the library accepts the struct and never reads or
 *   writes the guards (they hold garbage that would be used, or clobbered,
 *   otherwise);
 * - a "new" caller, whose struct has one more trailing field than this
 *   library knows: init zeroes it and the library accepts the struct; set
 *   to garbage, it is refused with ATTN_ERR_STRUCT_SIZE and a message that
 *   names the struct and both sizes, and nothing is changed;
 * - a size below the first released layout, and NULL, are refused by init
 *   (writing nothing) and by the functions that read the struct. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "attn/attn.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define GUARD 0xA5
#define GUARD_BYTES 64

/* One public struct: its name, sizes, its init and a call that reads it
 * (returning that call's status). */
typedef struct {
  const char *name;
  size_t min, known;
  attn_status (*init)(void *s, size_t size);
  attn_status (*use)(void *s);
} kind;

/* A small layer and the inputs every use() needs. */
static attn_layer *layer;
static float x[2 * 3 * 8], out[2 * 3 * 8];

static attn_layer *make_layer(void) {
  attn_config cfg;
  assert_int_equal(attn_config_init(&cfg), ATTN_OK);
  cfg.embed_dim = 8;
  cfg.num_heads = 2;
  attn_layer *l = NULL;
  assert_int_equal(attn_layer_create(&cfg, &l), ATTN_OK);
  assert_int_equal(attn_layer_init_weights(l, 5), ATTN_OK);
  return l;
}

static attn_status init_config(void *s, size_t n) {
  return attn_config_init_sized(s, n);
}
static attn_status use_config(void *s) {
  attn_config *c = s;
  c->embed_dim = 8;
  c->num_heads = 2;
  attn_layer *l = NULL;
  attn_status st = attn_layer_create(c, &l);
  attn_layer_destroy(l);
  if (st == ATTN_OK) /* the read-back writes only struct_size bytes */
    st = attn_layer_get_config(layer, c);
  return st;
}

static attn_status init_mask(void *s, size_t n) {
  return attn_mask_init_sized(s, n);
}
static attn_status use_mask(void *s) {
  ((attn_mask *)s)->causal = ATTN_CAUSAL_TOP_LEFT;
  return attn_self_forward(layer, 2, 3, x, s, NULL, out);
}

static attn_status init_options(void *s, size_t n) {
  return attn_options_init_sized(s, n);
}
static attn_status use_options(void *s) {
  ((attn_options *)s)->num_threads = 2;
  return attn_self_forward(layer, 2, 3, x, NULL, s, out);
}

static attn_status init_cache_config(void *s, size_t n) {
  return attn_cache_config_init_sized(s, n);
}
static attn_status use_cache_config(void *s) {
  ((attn_cache_config *)s)->capacity = 16;
  attn_kv_cache *c = NULL;
  attn_status st = attn_kv_cache_create(layer, s, &c);
  attn_kv_cache_destroy(c);
  return st;
}

static attn_status init_decode_mask(void *s, size_t n) {
  return attn_decode_mask_init_sized(s, n);
}
static attn_status use_decode_mask(void *s) {
  attn_cache_config cc;
  assert_int_equal(attn_cache_config_init(&cc), ATTN_OK);
  cc.batch = 2;
  cc.capacity = 8;
  attn_kv_cache *c = NULL;
  assert_int_equal(attn_kv_cache_create(layer, &cc, &c), ATTN_OK);
  attn_status st = attn_decode_step(layer, c, 2, 1, x, s, NULL, out);
  attn_kv_cache_destroy(c);
  return st;
}

static attn_status init_memory_config(void *s, size_t n) {
  return attn_memory_config_init_sized(s, n);
}
static attn_status use_memory_config(void *s) {
  ((attn_memory_config *)s)->capacity = 4;
  size_t bytes = 0;
  return attn_memory_size(layer, s, &bytes);
}

static attn_status init_runtime_config(void *s, size_t n) {
  return attn_runtime_config_init_sized(s, n);
}
static attn_status use_runtime_config(void *s) {
  ((attn_runtime_config *)s)->num_threads = 2;
  attn_runtime *rt = NULL;
  attn_status st = attn_runtime_create(s, &rt);
  attn_runtime_destroy(rt);
  return st;
}

static attn_status init_rope_config(void *s, size_t n) {
  return attn_rope_config_init_sized(s, n);
}
static attn_status use_rope_config(void *s) {
  ((attn_rope_config *)s)->theta = 500.0;
  attn_config cfg;
  assert_int_equal(attn_config_init(&cfg), ATTN_OK);
  cfg.embed_dim = 8;
  cfg.num_heads = 2;
  cfg.rope = s;
  attn_layer *l = NULL;
  attn_status st = attn_layer_create(&cfg, &l);
  attn_layer_destroy(l);
  return st;
}

static attn_status init_positions(void *s, size_t n) {
  return attn_positions_init_sized(s, n);
}
static attn_status use_positions(void *s) {
  static const int64_t start[2] = {4, 9};
  ((attn_positions *)s)->start = start;
  attn_rope_config rc;
  assert_int_equal(attn_rope_config_init(&rc), ATTN_OK);
  attn_config cfg;
  assert_int_equal(attn_config_init(&cfg), ATTN_OK);
  cfg.embed_dim = 8;
  cfg.num_heads = 2;
  cfg.rope = &rc;
  attn_layer *l = NULL;
  assert_int_equal(attn_layer_create(&cfg, &l), ATTN_OK);
  assert_int_equal(attn_layer_init_weights(l, 5), ATTN_OK);
  attn_options o;
  assert_int_equal(attn_options_init(&o), ATTN_OK);
  o.positions = s;
  attn_status st = attn_self_forward(l, 2, 3, x, NULL, &o, out);
  attn_layer_destroy(l);
  return st;
}

static const kind kinds[] = {
    {"attn_config", ATTN_CONFIG_SIZE_0_1, sizeof(attn_config), init_config,
     use_config},
    {"attn_mask", ATTN_MASK_SIZE_0_1, sizeof(attn_mask), init_mask, use_mask},
    {"attn_options", ATTN_OPTIONS_SIZE_0_1, sizeof(attn_options), init_options,
     use_options},
    {"attn_cache_config", ATTN_CACHE_CONFIG_SIZE_0_1, sizeof(attn_cache_config),
     init_cache_config, use_cache_config},
    {"attn_decode_mask", ATTN_DECODE_MASK_SIZE_0_1, sizeof(attn_decode_mask),
     init_decode_mask, use_decode_mask},
    {"attn_memory_config", ATTN_MEMORY_CONFIG_SIZE_0_1,
     sizeof(attn_memory_config), init_memory_config, use_memory_config},
    {"attn_runtime_config", ATTN_RUNTIME_CONFIG_SIZE_0_1,
     sizeof(attn_runtime_config), init_runtime_config, use_runtime_config},
    /* Introduced after 0.1.0: their first layout is their minimum. */
    {"attn_rope_config", ATTN_ROPE_CONFIG_SIZE_0_2, sizeof(attn_rope_config),
     init_rope_config, use_rope_config},
    {"attn_positions", ATTN_POSITIONS_SIZE_0_2, sizeof(attn_positions),
     init_positions, use_positions},
};
#define KINDS (sizeof kinds / sizeof kinds[0])

/* A caller's struct of `size` bytes followed by guard bytes, aligned as
 * any struct. */
typedef struct {
  _Alignas(16) unsigned char bytes[512 + GUARD_BYTES];
} buffer;

static void assert_guards(const buffer *b, size_t from) {
  for (size_t i = from; i < from + GUARD_BYTES; i++)
    if (b->bytes[i] != GUARD)
      fail_msg("guard byte %zu after a %zu-byte struct was changed", i - from,
               from);
}

static size_t struct_size_of(const buffer *b) {
  size_t n;
  memcpy(&n, b->bytes, sizeof n);
  return n;
}

static void setup_inputs(void) {
  for (size_t i = 0; i < sizeof x / sizeof x[0]; i++)
    x[i] = (float)((int)(i * 7 % 13) - 6) / 8.0f;
}

/* The first release's layout, and guards right after it. */
static void test_old_callers(void **state) {
  (void)state;
  for (size_t k = 0; k < KINDS; k++) {
    const kind *t = &kinds[k];
    assert_true(t->min <= t->known && t->known <= 512);
    buffer b;
    memset(&b, GUARD, sizeof b);
    assert_int_equal(t->init(b.bytes, t->min), ATTN_OK);
    assert_int_equal(struct_size_of(&b), t->min);
    assert_guards(&b, t->min);
    attn_status st = t->use(b.bytes);
    if (st != ATTN_OK)
      fail_msg("%s of %zu bytes: %s", t->name, t->min, attn_last_error());
    assert_int_equal(struct_size_of(&b), t->min);
    assert_guards(&b, t->min);
  }
}

/* A newer header's struct: one more 8-byte field at the end. */
static void test_new_callers(void **state) {
  (void)state;
  for (size_t k = 0; k < KINDS; k++) {
    const kind *t = &kinds[k];
    size_t size = (t->known + 7) / 8 * 8 + 8;
    buffer b;
    memset(&b, GUARD, sizeof b);
    assert_int_equal(t->init(b.bytes, size), ATTN_OK);
    assert_int_equal(struct_size_of(&b), size);
    for (size_t i = t->known; i < size; i++)
      assert_int_equal(b.bytes[i], 0); /* unknown fields: zero = default */
    assert_guards(&b, size);
    assert_int_equal(t->use(b.bytes), ATTN_OK);
    /* The unknown field set: refused, and named. */
    memset(b.bytes + size - 8, 0x5A, 8);
    memset(out, 0x7F, sizeof out);
    assert_int_equal(t->use(b.bytes), ATTN_ERR_STRUCT_SIZE);
    const char *msg = attn_last_error();
    char want[64];
    snprintf(want, sizeof want, "%s.struct_size %zu", t->name, size);
    if (!strstr(msg, want))
      fail_msg("message \"%s\" does not say \"%s\"", msg, want);
    snprintf(want, sizeof want, "%zu", t->known);
    assert_non_null(strstr(msg, want));
    const unsigned char *ob = (const unsigned char *)out;
    for (size_t i = 0; i < sizeof out; i++)
      assert_int_equal(ob[i], 0x7F);
    assert_guards(&b, size);
  }
}

static void test_too_small(void **state) {
  (void)state;
  for (size_t k = 0; k < KINDS; k++) {
    const kind *t = &kinds[k];
    buffer b;
    memset(&b, GUARD, sizeof b);
    assert_int_equal(t->init(b.bytes, t->min - 1), ATTN_ERR_STRUCT_SIZE);
    assert_guards(&b, 0); /* nothing written */
    assert_int_equal(t->init(NULL, t->known), ATTN_ERR_NULL_POINTER);
    /* A struct filled right, then its size lowered: refused, named. */
    assert_int_equal(t->init(b.bytes, t->known), ATTN_OK);
    size_t small = t->min - 8;
    memcpy(b.bytes, &small, sizeof small);
    assert_int_equal(t->use(b.bytes), ATTN_ERR_STRUCT_SIZE);
    char want[96];
    snprintf(want, sizeof want, "%s.struct_size %zu is smaller than", t->name,
             small);
    if (!strstr(attn_last_error(), want))
      fail_msg("message \"%s\" does not say \"%s\"", attn_last_error(), want);
  }
}

/* The header's inline init passes the caller's sizeof. */
static void test_inline_init(void **state) {
  (void)state;
  attn_options o;
  memset(&o, GUARD, sizeof o);
  assert_int_equal(attn_options_init(&o), ATTN_OK);
  assert_int_equal(o.struct_size, sizeof o);
  assert_null(o.runtime);
  assert_null(o.scratch);
  attn_config c;
  assert_int_equal(attn_config_init(&c), ATTN_OK);
  assert_int_equal(c.struct_size, sizeof c);
  assert_int_equal(c.num_heads, 1);
  assert_int_equal(c.bias, 1);
  assert_int_equal(attn_config_init(NULL), ATTN_ERR_NULL_POINTER);
}

/* attn_options grew after 0.1.0 (runtime, positions, then core and its
 * reserved partner): a caller built between those steps passes a size
 * that ends before core. The library must not read core's bytes (guards
 * here, which as a core value would be refused) and must not write them. */
static void test_options_before_core(void **state) {
  (void)state;
  const size_t sizes[] = {offsetof(attn_options, positions),
                          offsetof(attn_options, core)};
  for (size_t i = 0; i < sizeof sizes / sizeof sizes[0]; i++) {
    buffer b;
    memset(&b, GUARD, sizeof b);
    assert_int_equal(
        attn_options_init_sized((attn_options *)(void *)b.bytes, sizes[i]),
        ATTN_OK);
    assert_guards(&b, sizes[i]);
    assert_int_equal(use_options(b.bytes), ATTN_OK);
    assert_guards(&b, sizes[i]);
  }
  /* The full struct: core and reserved are zero after init, and read. */
  attn_options o;
  memset(&o, GUARD, sizeof o);
  assert_int_equal(attn_options_init(&o), ATTN_OK);
  assert_int_equal(o.core, ATTN_CORE_AUTO);
  assert_int_equal(o.reserved, 0);
  assert_int_equal(offsetof(attn_options, reserved) + sizeof(int32_t),
                   sizeof(attn_options)); /* no padding at the end */
  o.core = 77;
  assert_int_equal(use_options(&o), ATTN_ERR_BAD_OPTION);
}

static int setup(void **state) {
  (void)state;
  setup_inputs();
  layer = make_layer();
  return 0;
}

static int teardown(void **state) {
  (void)state;
  attn_layer_destroy(layer);
  return 0;
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_old_callers),
      cmocka_unit_test(test_new_callers),
      cmocka_unit_test(test_too_small),
      cmocka_unit_test(test_inline_init),
      cmocka_unit_test(test_options_before_core),
  };
  return cmocka_run_group_tests(tests, setup, teardown);
}
