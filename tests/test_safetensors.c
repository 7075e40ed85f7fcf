/* SPDX-License-Identifier: MIT */
/* Weight files (safetensors): save/load round trips over every naming
 * scheme and layout, F16/BF16 conversion to exact values, the file
 * written from torch's state_dicts (tests/data/make_torch_fixture.py)
 * loaded into the wrong layer (its parity with torch is
 * test_torch_fixture.c's), and one test per kind of bad file, each
 * checking the status, the message and that the layer kept its weights.
 *
 * Files the tests need are built here byte by byte from literal JSON
 * headers, so they do not depend on the library's own writer; files the
 * library writes are checked entry by entry against what the torch and
 * Hugging Face naming schemes prescribe. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "ref.h"

#include <dirent.h>
#include <errno.h>
#include <math.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#ifndef ATTN_TEST_DATA_DIR
#error "ATTN_TEST_DATA_DIR must name tests/data"
#endif

/* ------------------------------------------------------------------------ */
/* Helpers                                                                   */
/* ------------------------------------------------------------------------ */

static char tmp_dir[256];

static int make_tmp_dir(void **state) {
  (void)state;
  const char *base = getenv("TMPDIR");
  snprintf(tmp_dir, sizeof tmp_dir, "%s/attn-st-XXXXXX",
           base && *base ? base : "/tmp");
  return mkdtemp(tmp_dir) ? 0 : -1;
}

static int remove_tmp_dir(void **state) {
  (void)state;
  DIR *d = opendir(tmp_dir);
  if (d) {
    struct dirent *e;
    char path[512];
    while ((e = readdir(d)) != NULL) {
      if (strcmp(e->d_name, ".") == 0 || strcmp(e->d_name, "..") == 0)
        continue;
      snprintf(path, sizeof path, "%s/%s", tmp_dir, e->d_name);
      if (remove(path) != 0) {
        /* A directory made by a test. */
        rmdir(path);
      }
    }
    closedir(d);
  }
  return rmdir(tmp_dir);
}

static const char *tmp_path(char *buf, size_t size, const char *name) {
  snprintf(buf, size, "%s/%s", tmp_dir, name);
  return buf;
}

static void write_bytes(const char *path, const void *data, size_t size) {
  FILE *f = fopen(path, "wb");
  assert_non_null(f);
  assert_int_equal(fwrite(data, 1, size, f), size);
  assert_int_equal(fclose(f), 0);
}

static unsigned char *read_bytes(const char *path, size_t *size) {
  FILE *f = fopen(path, "rb");
  assert_non_null(f);
  assert_int_equal(fseek(f, 0, SEEK_END), 0);
  long n = ftell(f);
  assert_true(n >= 0);
  rewind(f);
  unsigned char *buf = ref_xmalloc((size_t)n + 1);
  assert_int_equal(fread(buf, 1, (size_t)n, f), (size_t)n);
  fclose(f);
  *size = (size_t)n;
  return buf;
}

/* Number of leftover temporary files ("*.tmp-*") in tmp_dir. */
static int count_temp_files(void) {
  DIR *d = opendir(tmp_dir);
  assert_non_null(d);
  int n = 0;
  struct dirent *e;
  while ((e = readdir(d)) != NULL)
    n += strstr(e->d_name, ".tmp-") != NULL;
  closedir(d);
  return n;
}

static void put_le32(unsigned char *p, uint32_t v) {
  for (int i = 0; i < 4; i++)
    p[i] = (unsigned char)(v >> (8 * i));
}

static void put_f32(unsigned char *p, float f) {
  uint32_t bits;
  memcpy(&bits, &f, sizeof bits);
  put_le32(p, bits);
}

static float get_f32(const unsigned char *p) {
  uint32_t bits = 0;
  for (int i = 0; i < 4; i++)
    bits |= (uint32_t)p[i] << (8 * i);
  float f;
  memcpy(&f, &bits, sizeof f);
  return f;
}

/* A safetensors file: 8-byte little-endian header length, the header
 * text, then data_len bytes of data. */
static unsigned char *build_file(const char *header, const void *data,
                                 size_t data_len, size_t *size) {
  size_t hlen = strlen(header);
  *size = 8 + hlen + data_len;
  unsigned char *buf = ref_xmalloc(*size + 1);
  for (int i = 0; i < 8; i++)
    buf[i] = (unsigned char)((uint64_t)hlen >> (8 * i));
  memcpy(buf + 8, header, hlen);
  if (data_len)
    memcpy(buf + 8 + hlen, data, data_len);
  return buf;
}

/* text with the first occurrence of `from` replaced by `to` (which must be
 * there), in a new string. */
static char *replace(const char *text, const char *from, const char *to) {
  const char *at = strstr(text, from);
  if (!at)
    fail_msg("test bug: '%s' not found in '%s'", from, text);
  size_t pre = (size_t)(at - text), nf = strlen(from), nt = strlen(to);
  char *out = ref_xmalloc(strlen(text) - nf + nt + 1);
  memcpy(out, text, pre);
  memcpy(out + pre, to, nt);
  strcpy(out + pre + nt, at + nf);
  return out;
}

static attn_layer *make_layer(int64_t E, int64_t H, int64_t kdim, int64_t vdim,
                              int64_t hkv, int bias) {
  attn_config cfg;
  attn_config_init(&cfg);
  cfg.embed_dim = E;
  cfg.num_heads = H;
  cfg.kdim = kdim;
  cfg.vdim = vdim;
  cfg.num_kv_heads = hkv;
  cfg.bias = bias;
  cfg.num_threads = 1;
  attn_layer *l = NULL;
  assert_int_equal(attn_layer_create(&cfg, &l), ATTN_OK);
  return l;
}

/* Gives every weight and bias of l distinct nonzero values from seed, so
 * that a load that changed anything shows. */
static void randomize(attn_layer *l, uint64_t seed) {
  assert_int_equal(attn_layer_init_weights(l, seed), ATTN_OK);
  attn_config cfg;
  attn_config_init(&cfg);
  assert_int_equal(attn_layer_get_config(l, &cfg), ATTN_OK);
  if (!cfg.bias)
    return;
  ref_rng rng;
  ref_rng_seed(&rng, seed ^ 0x5a5a);
  for (attn_weight_id w = ATTN_B_Q; w <= ATTN_B_V; w++) {
    int64_t n = 0;
    assert_int_equal(attn_layer_weight_count(l, w, &n), ATTN_OK);
    float *b = ref_random(&rng, n, -0.5, 0.5);
    assert_int_equal(attn_layer_set_weight(l, w, b, n), ATTN_OK);
    free(b);
  }
  int64_t n = 0;
  assert_int_equal(attn_layer_weight_count(l, ATTN_B_OUT, &n), ATTN_OK);
  float *b = ref_random(&rng, n, -0.5, 0.5);
  assert_int_equal(attn_layer_set_weight(l, ATTN_B_OUT, b, n), ATTN_OK);
  free(b);
}

/* Every weight and bias of a layer, through the public getters. */
typedef struct {
  float *w[ATTN_B_V + 1];
  int64_t n[ATTN_B_V + 1];
} snapshot;

static const attn_weight_id snapshot_ids[] = {ATTN_W_Q,   ATTN_W_K,  ATTN_W_V,
                                              ATTN_W_OUT, ATTN_B_Q,  ATTN_B_K,
                                              ATTN_B_V,   ATTN_B_OUT};

static void take_snapshot(const attn_layer *l, snapshot *s) {
  memset(s, 0, sizeof *s);
  for (size_t i = 0; i < sizeof snapshot_ids / sizeof snapshot_ids[0]; i++) {
    attn_weight_id id = snapshot_ids[i];
    if (attn_layer_weight_count(l, id, &s->n[id]) != ATTN_OK)
      continue; /* a bias of a bias-off layer */
    s->w[id] = ref_xmalloc((size_t)s->n[id] * sizeof(float) + 1);
    assert_int_equal(attn_layer_get_weight(l, id, s->w[id], s->n[id]), ATTN_OK);
  }
}

/* Bit-for-bit equality (tells -0 from 0 and keeps NaN payloads apart). */
static void assert_same_snapshot(const snapshot *a, const snapshot *b,
                                 const char *what) {
  for (size_t i = 0; i < sizeof snapshot_ids / sizeof snapshot_ids[0]; i++) {
    attn_weight_id id = snapshot_ids[i];
    assert_int_equal(a->n[id], b->n[id]);
    if (!a->w[id])
      continue;
    if (memcmp(a->w[id], b->w[id], (size_t)a->n[id] * sizeof(float)) != 0)
      fail_msg("%s: weight %d differs", what, (int)id);
  }
}

static void free_snapshot(snapshot *s) {
  for (int i = 0; i <= ATTN_B_V; i++)
    free(s->w[i]);
}

/* Loads size bytes at data into l, from memory and from a file, and
 * expects `want` with a message containing `fragment` (when not NULL);
 * on failure the layer must be unchanged. */
static void expect_load(attn_layer *l, const void *data, size_t size,
                        const char *prefix, attn_status want,
                        const char *fragment, const char *what) {
  snapshot before, after;
  take_snapshot(l, &before);
  for (int from_file = 0; from_file < 2; from_file++) {
    attn_status st;
    if (from_file) {
      char path[512];
      tmp_path(path, sizeof path, "case.safetensors");
      write_bytes(path, data, size);
      st = attn_layer_load_safetensors(l, path, prefix);
    } else {
      st = attn_layer_load_safetensors_mem(l, data, size, prefix);
    }
    if (st != want)
      fail_msg("%s (%s): status %d (%s: %s), expected %d", what,
               from_file ? "file" : "memory", (int)st, attn_status_string(st),
               attn_last_error(), (int)want);
    if (fragment && !strstr(attn_last_error(), fragment))
      fail_msg("%s (%s): message '%s' lacks '%s'", what,
               from_file ? "file" : "memory", attn_last_error(), fragment);
    if (want != ATTN_OK) {
      take_snapshot(l, &after);
      assert_same_snapshot(&before, &after, what);
      free_snapshot(&after);
    }
  }
  free_snapshot(&before);
}

/* ------------------------------------------------------------------------ */
/* The tiny layer of the error tests: E = 4, H = 2, bias on                  */
/* ------------------------------------------------------------------------ */

#define TINY_TORCH                                                             \
  "{\"in_proj_weight\":{\"dtype\":\"F32\",\"shape\":[12,4],"                   \
  "\"data_offsets\":[0,192]},"                                                 \
  "\"in_proj_bias\":{\"dtype\":\"F32\",\"shape\":[12],"                        \
  "\"data_offsets\":[192,240]},"                                               \
  "\"out_proj.weight\":{\"dtype\":\"F32\",\"shape\":[4,4],"                    \
  "\"data_offsets\":[240,304]},"                                               \
  "\"out_proj.bias\":{\"dtype\":\"F32\",\"shape\":[4],"                        \
  "\"data_offsets\":[304,320]}}"

#define TINY_HF                                                                \
  "{\"q_proj.weight\":{\"dtype\":\"F32\",\"shape\":[4,4],"                     \
  "\"data_offsets\":[0,64]},"                                                  \
  "\"k_proj.weight\":{\"dtype\":\"F32\",\"shape\":[4,4],"                      \
  "\"data_offsets\":[64,128]},"                                                \
  "\"v_proj.weight\":{\"dtype\":\"F32\",\"shape\":[4,4],"                      \
  "\"data_offsets\":[128,192]},"                                               \
  "\"o_proj.weight\":{\"dtype\":\"F32\",\"shape\":[4,4],"                      \
  "\"data_offsets\":[192,256]},"                                               \
  "\"q_proj.bias\":{\"dtype\":\"F32\",\"shape\":[4],"                          \
  "\"data_offsets\":[256,272]},"                                               \
  "\"k_proj.bias\":{\"dtype\":\"F32\",\"shape\":[4],"                          \
  "\"data_offsets\":[272,288]},"                                               \
  "\"v_proj.bias\":{\"dtype\":\"F32\",\"shape\":[4],"                          \
  "\"data_offsets\":[288,304]},"                                               \
  "\"o_proj.bias\":{\"dtype\":\"F32\",\"shape\":[4],"                          \
  "\"data_offsets\":[304,320]}}"

#define TINY_DATA 320

/* Data bytes: float i is (i % 17 - 8) / 8, all exact. */
static unsigned char *tiny_data(size_t bytes) {
  unsigned char *d = ref_xmalloc(bytes + 1);
  memset(d, 0, bytes + 1);
  for (size_t i = 0; i + 4 <= bytes; i += 4)
    put_f32(d + i, (float)((int)(i / 4 % 17) - 8) / 8.0f);
  return d;
}

static float tiny_value(size_t index) {
  return (float)((int)(index % 17) - 8) / 8.0f;
}

static attn_layer *tiny_layer(int bias) {
  attn_layer *l = make_layer(4, 2, 0, 0, 0, bias);
  randomize(l, 77);
  return l;
}

/* ------------------------------------------------------------------------ */
/* Round trips                                                               */
/* ------------------------------------------------------------------------ */

typedef struct {
  int64_t E, H, kdim, vdim, hkv;
  int bias;
} layer_shape;

static const layer_shape round_trip_shapes[] = {
    {8, 2, 0, 0, 0, 1}, /* packed, bias */
    {8, 2, 0, 0, 0, 0}, /* packed, no bias */
    {8, 4, 6, 5, 0, 1}, /* separate q/k/v, bias */
    {8, 4, 6, 5, 0, 0}, /* separate, no bias */
    {8, 4, 0, 0, 2, 1}, /* grouped-query, packed */
    {8, 4, 6, 3, 1, 1}, /* multi-query, separate */
    {6, 3, 8, 0, 0, 0}, /* kdim only differs */
};

/* What a file of the given naming must hold for layer l. */
typedef struct {
  char name[64];
  int64_t dim[2];
  int rank;
  attn_weight_id id;
} expected_tensor;

static int expected_tensors(const layer_shape *s, int32_t naming,
                            expected_tensor *t) {
  int64_t E = s->E, kdim = s->kdim ? s->kdim : E, vdim = s->vdim ? s->vdim : E;
  int64_t KV = (s->hkv ? s->hkv : s->H) * (E / s->H);
  int n = 0;
#define T(nm, r, c, w)                                                         \
  do {                                                                         \
    snprintf(t[n].name, sizeof t[n].name, "%s", nm);                           \
    t[n].dim[0] = r;                                                           \
    t[n].dim[1] = c;                                                           \
    t[n].rank = (c) ? 2 : 1;                                                   \
    t[n].id = w;                                                               \
    n++;                                                                       \
  } while (0)
  if (naming == ATTN_NAMES_TORCH) {
    if (kdim == E && vdim == E) {
      T("in_proj_weight", E + 2 * KV, E, ATTN_W_IN_PROJ);
    } else {
      T("q_proj_weight", E, E, ATTN_W_Q);
      T("k_proj_weight", KV, kdim, ATTN_W_K);
      T("v_proj_weight", KV, vdim, ATTN_W_V);
    }
    if (s->bias)
      T("in_proj_bias", E + 2 * KV, 0, ATTN_B_IN_PROJ);
    T("out_proj.weight", E, E, ATTN_W_OUT);
    if (s->bias)
      T("out_proj.bias", E, 0, ATTN_B_OUT);
  } else {
    const char *o = naming == ATTN_NAMES_HF ? "out_proj" : "o_proj";
    char name[32];
    T("q_proj.weight", E, E, ATTN_W_Q);
    T("k_proj.weight", KV, kdim, ATTN_W_K);
    T("v_proj.weight", KV, vdim, ATTN_W_V);
    snprintf(name, sizeof name, "%s.weight", o);
    T(name, E, E, ATTN_W_OUT);
    if (s->bias) {
      T("q_proj.bias", E, 0, ATTN_B_Q);
      T("k_proj.bias", KV, 0, ATTN_B_K);
      T("v_proj.bias", KV, 0, ATTN_B_V);
      snprintf(name, sizeof name, "%s.bias", o);
      T(name, E, 0, ATTN_B_OUT);
    }
  }
#undef T
  return n;
}

/* Checks a saved file entry by entry: header length and alignment, the
 * metadata, each tensor's dtype, shape and data against the layer, and
 * that the tensors fill the data section. */
static void check_saved_file(const unsigned char *file, size_t size,
                             const attn_layer *l, const layer_shape *s,
                             int32_t naming, const char *prefix) {
  assert_true(size >= 8);
  uint64_t hlen = 0;
  for (int i = 0; i < 8; i++)
    hlen |= (uint64_t)file[i] << (8 * i);
  assert_true(8 + hlen <= size);
  assert_int_equal((8 + hlen) % 8, 0);
  char *header = ref_xmalloc(hlen + 1);
  memcpy(header, file + 8, hlen);
  header[hlen] = '\0';
  const unsigned char *data = file + 8 + hlen;
  size_t data_size = size - 8 - hlen;
  assert_non_null(strstr(header, "\"__metadata__\":{\"format\":\"pt\"}"));

  expected_tensor t[8];
  int n = expected_tensors(s, naming, t);
  size_t covered = 0;
  for (int i = 0; i < n; i++) {
    char entry[1024];
    if (t[i].rank == 2)
      snprintf(entry, sizeof entry,
               "\"%s%s\":{\"dtype\":\"F32\",\"shape\":[%lld,%lld],"
               "\"data_offsets\":[",
               prefix, t[i].name, (long long)t[i].dim[0],
               (long long)t[i].dim[1]);
    else
      snprintf(entry, sizeof entry,
               "\"%s%s\":{\"dtype\":\"F32\",\"shape\":[%lld],"
               "\"data_offsets\":[",
               prefix, t[i].name, (long long)t[i].dim[0]);
    const char *at = strstr(header, entry);
    if (!at)
      fail_msg("saved header lacks %s: %s", entry, header);
    unsigned long long begin, end;
    assert_int_equal(sscanf(at + strlen(entry), "%llu,%llu]", &begin, &end), 2);
    int64_t count = t[i].dim[0] * (t[i].rank == 2 ? t[i].dim[1] : 1);
    assert_int_equal(end - begin, (unsigned long long)count * 4);
    assert_true(end <= data_size);
    float *want = ref_xmalloc((size_t)count * sizeof(float));
    assert_int_equal(attn_layer_get_weight(l, t[i].id, want, count), ATTN_OK);
    for (int64_t k = 0; k < count; k++) {
      float got = get_f32(data + begin + 4 * k);
      if (memcmp(&got, &want[k], sizeof got) != 0)
        fail_msg("%s%s element %lld: file has %a, layer %a", prefix, t[i].name,
                 (long long)k, got, want[k]);
    }
    free(want);
    covered += end - begin;
  }
  /* No other tensors, no unused bytes. */
  int entries = 0;
  for (const char *p = header; (p = strstr(p, "\"data_offsets\"")); p++)
    entries++;
  assert_int_equal(entries, n);
  assert_int_equal(covered, data_size);
  free(header);
}

static void test_round_trip(void **state) {
  (void)state;
  static const int32_t namings[] = {ATTN_NAMES_TORCH, ATTN_NAMES_HF,
                                    ATTN_NAMES_HF_O_PROJ};
  static const char *const prefixes[] = {"", "decoder.layers.0.self_attn.",
                                         "model.layers.11.self_attn."};
  char path[512];
  tmp_path(path, sizeof path, "round_trip.safetensors");
  for (size_t si = 0; si < sizeof round_trip_shapes / sizeof *round_trip_shapes;
       si++) {
    const layer_shape *s = &round_trip_shapes[si];
    for (size_t ni = 0; ni < 3; ni++) {
      for (size_t pi = 0; pi < 3; pi++) {
        char what[160];
        snprintf(what, sizeof what, "shape %zu naming %d prefix '%s'", si,
                 namings[ni], prefixes[pi]);
        attn_layer *a =
            make_layer(s->E, s->H, s->kdim, s->vdim, s->hkv, s->bias);
        randomize(a, 1000 + si * 10 + ni);
        assert_int_equal(
            attn_layer_save_safetensors(a, path, prefixes[pi], namings[ni]),
            ATTN_OK);
        size_t size = 0;
        unsigned char *file = read_bytes(path, &size);
        check_saved_file(file, size, a, s, namings[ni], prefixes[pi]);

        /* A fresh layer loads it (naming detected), from the file and
         * from memory, bit for bit. */
        for (int from_mem = 0; from_mem < 2; from_mem++) {
          attn_layer *b =
              make_layer(s->E, s->H, s->kdim, s->vdim, s->hkv, s->bias);
          attn_status st =
              from_mem
                  ? attn_layer_load_safetensors_mem(b, file, size, prefixes[pi])
                  : attn_layer_load_safetensors(b, path, prefixes[pi]);
          if (st != ATTN_OK)
            fail_msg("%s: load failed: %s", what, attn_last_error());
          snapshot sa, sb;
          take_snapshot(a, &sa);
          take_snapshot(b, &sb);
          assert_same_snapshot(&sa, &sb, what);
          free_snapshot(&sa);
          free_snapshot(&sb);
          /* Every weight counts as set: forward runs. */
          int64_t kd = s->kdim ? s->kdim : s->E, vd = s->vdim ? s->vdim : s->E;
          float *q = ref_xmalloc((size_t)(2 * s->E) * sizeof(float));
          float *k = ref_xmalloc((size_t)(3 * kd) * sizeof(float));
          float *v = ref_xmalloc((size_t)(3 * vd) * sizeof(float));
          float *out = ref_xmalloc((size_t)(2 * s->E) * sizeof(float));
          for (int64_t i = 0; i < 2 * s->E; i++)
            q[i] = 0.1f * (float)i;
          for (int64_t i = 0; i < 3 * kd; i++)
            k[i] = 0.05f * (float)i;
          for (int64_t i = 0; i < 3 * vd; i++)
            v[i] = -0.02f * (float)i;
          assert_int_equal(attn_forward(b, 1, 2, 3, q, k, v, NULL, NULL, out),
                           ATTN_OK);
          free(q);
          free(k);
          free(v);
          free(out);
          attn_layer_destroy(b);
        }
        free(file);
        attn_layer_destroy(a);
      }
    }
  }
  assert_int_equal(count_temp_files(), 0);
}

/* A torch file loads into a layer whose q/k/v are stored separately when
 * kdim == vdim == E too (torch names it q/k/v_proj_weight only when kdim
 * differs, but a file may hold them separately), and a prefix with JSON
 * special characters survives escaping. */
static void test_prefix_and_variants(void **state) {
  (void)state;
  char path[512];
  tmp_path(path, sizeof path, "prefix.safetensors");
  attn_layer *a = make_layer(8, 2, 0, 0, 0, 1);
  randomize(a, 5);
  const char *odd = "enc\"oder\\ layers/0.\xc3\xa9\n.";
  assert_int_equal(attn_layer_save_safetensors(a, path, odd, ATTN_NAMES_TORCH),
                   ATTN_OK);
  attn_layer *b = make_layer(8, 2, 0, 0, 0, 1);
  assert_int_equal(attn_layer_load_safetensors(b, path, odd), ATTN_OK);
  snapshot sa, sb;
  take_snapshot(a, &sa);
  take_snapshot(b, &sb);
  assert_same_snapshot(&sa, &sb, "escaped prefix");
  free_snapshot(&sb);

  /* Wrong or missing prefix: the tensors are not found, and the message
   * suggests the prefix the file has. */
  randomize(b, 6);
  size_t size = 0;
  unsigned char *file = read_bytes(path, &size);
  expect_load(b, file, size, NULL, ATTN_ERR_TENSOR_MISSING, "in_proj_weight",
              "no prefix");
  expect_load(b, file, size, "", ATTN_ERR_TENSOR_MISSING,
              "prefix 'enc\"oder\\ layers/0.\xc3\xa9\n.' may be meant",
              "prefix hint");
  expect_load(b, file, size, "enc", ATTN_ERR_TENSOR_MISSING, NULL,
              "partial prefix");
  free(file);

  /* NULL and "" mean the same. */
  assert_int_equal(attn_layer_save_safetensors(a, path, NULL, ATTN_NAMES_HF),
                   ATTN_OK);
  assert_int_equal(attn_layer_load_safetensors(b, path, ""), ATTN_OK);
  take_snapshot(b, &sb);
  assert_same_snapshot(&sa, &sb, "NULL prefix");
  free_snapshot(&sb);

  /* torch names with separate q/k/v_proj_weight for a packed layer. */
  unsigned char *data = ref_xmalloc(1400);
  float w[64];
  size_t off = 0;
  const attn_weight_id ids[] = {ATTN_W_Q, ATTN_W_K, ATTN_W_V, ATTN_W_OUT};
  for (int i = 0; i < 4; i++) {
    assert_int_equal(attn_layer_get_weight(a, ids[i], w, 64), ATTN_OK);
    for (int k = 0; k < 64; k++, off += 4)
      put_f32(data + off, w[k]);
  }
  float bias[24];
  assert_int_equal(attn_layer_get_weight(a, ATTN_B_IN_PROJ, bias, 24), ATTN_OK);
  for (int k = 0; k < 24; k++, off += 4)
    put_f32(data + off, bias[k]);
  assert_int_equal(attn_layer_get_weight(a, ATTN_B_OUT, bias, 8), ATTN_OK);
  for (int k = 0; k < 8; k++, off += 4)
    put_f32(data + off, bias[k]);
  const char *header =
      "{\"p.q_proj_weight\":{\"dtype\":\"F32\",\"shape\":[8,8],"
      "\"data_offsets\":[0,256]},"
      "\"p.k_proj_weight\":{\"dtype\":\"F32\",\"shape\":[8,8],"
      "\"data_offsets\":[256,512]},"
      "\"p.v_proj_weight\":{\"dtype\":\"F32\",\"shape\":[8,8],"
      "\"data_offsets\":[512,768]},"
      "\"p.out_proj.weight\":{\"dtype\":\"F32\",\"shape\":[8,8],"
      "\"data_offsets\":[768,1024]},"
      "\"p.in_proj_bias\":{\"dtype\":\"F32\",\"shape\":[24],"
      "\"data_offsets\":[1024,1120]},"
      "\"p.out_proj.bias\":{\"dtype\":\"F32\",\"shape\":[8],"
      "\"data_offsets\":[1120,1152]}}";
  assert_int_equal(off, 1152);
  file = build_file(header, data, off, &size);
  randomize(b, 7);
  expect_load(b, file, size, "p.", ATTN_OK, NULL, "separate torch names");
  take_snapshot(b, &sb);
  assert_same_snapshot(&sa, &sb, "separate torch names");
  free_snapshot(&sb);
  free(file);
  free(data);
  free_snapshot(&sa);
  attn_layer_destroy(a);
  attn_layer_destroy(b);
}

/* Hugging Face files load with either o_proj or out_proj. */
static void test_hf_out_names(void **state) {
  (void)state;
  unsigned char *data = tiny_data(TINY_DATA);
  size_t size;
  for (int variant = 0; variant < 2; variant++) {
    char *h1 = variant ? replace(TINY_HF, "o_proj.weight", "out_proj.weight")
                       : replace(TINY_HF, "", "");
    char *header = variant ? replace(h1, "o_proj.bias", "out_proj.bias")
                           : replace(h1, "", "");
    unsigned char *file = build_file(header, data, TINY_DATA, &size);
    attn_layer *l = tiny_layer(1);
    expect_load(l, file, size, NULL, ATTN_OK, NULL, "hf names");
    float w[16];
    assert_int_equal(attn_layer_get_weight(l, ATTN_W_OUT, w, 16), ATTN_OK);
    for (int i = 0; i < 16; i++)
      assert_true(w[i] == tiny_value(48 + (size_t)i));
    float b[4];
    assert_int_equal(attn_layer_get_weight(l, ATTN_B_K, b, 4), ATTN_OK);
    for (int i = 0; i < 4; i++)
      assert_true(b[i] == tiny_value(68 + (size_t)i));
    assert_int_equal(attn_layer_get_weight(l, ATTN_B_OUT, b, 4), ATTN_OK);
    for (int i = 0; i < 4; i++)
      assert_true(b[i] == tiny_value(76 + (size_t)i));
    attn_layer_destroy(l);
    free(file);
    free(h1);
    free(header);
  }
  free(data);
}

/* ------------------------------------------------------------------------ */
/* F16 and BF16                                                              */
/* ------------------------------------------------------------------------ */

/* E = 2, H = 1: in_proj_weight [6, 2] in F16, in_proj_bias [6] in BF16,
 * out_proj.weight [2, 2] in F32, out_proj.bias [2] in F16. */
#define HALF_HEADER                                                            \
  "{\"__metadata__\":{\"format\":\"pt\",\"note\":\"mixed dtypes\"},"           \
  "\"in_proj_weight\":{\"dtype\":\"F16\",\"shape\":[6,2],"                     \
  "\"data_offsets\":[0,24]},"                                                  \
  "\"in_proj_bias\":{\"dtype\":\"BF16\",\"shape\":[6],"                        \
  "\"data_offsets\":[24,36]},"                                                 \
  "\"out_proj.weight\":{\"dtype\":\"F32\",\"shape\":[2,2],"                    \
  "\"data_offsets\":[36,52]},"                                                 \
  "\"out_proj.bias\":{\"dtype\":\"F16\",\"shape\":[2],"                        \
  "\"data_offsets\":[52,56]}}"

static const uint16_t half_bits[12] = {0x3C00, 0xC000, 0x0001, 0x8001,
                                       0x03FF, 0x0400, 0x7BFF, 0x8000,
                                       0x3555, 0x0000, 0xFBFF, 0x3800};
static const float half_values[12] = {
    1.0f,     -2.0f, 0x1p-24f,    -0x1p-24f, 0x1.ff8p-15f, 0x1p-14f,
    65504.0f, -0.0f, 0x1.554p-2f, 0.0f,      -65504.0f,    0.5f};
static const uint16_t bf16_bits[6] = {0x3F80, 0x0001, 0x807F,
                                      0x0080, 0x7F7F, 0x4049};
static const float bf16_values[6] = {1.0f,      0x1p-133f,   -0x1.fcp-127f,
                                     0x1p-126f, 0x1.fep127f, 3.140625f};
static const float f32_values[4] = {0x1p-149f, -0.0f, 1e38f, 0.25f};
static const uint16_t half_bias_bits[2] = {0x3C00, 0xBC00};

static void half_data(unsigned char *d) {
  for (int i = 0; i < 12; i++) {
    d[2 * i] = (unsigned char)half_bits[i];
    d[2 * i + 1] = (unsigned char)(half_bits[i] >> 8);
  }
  for (int i = 0; i < 6; i++) {
    d[24 + 2 * i] = (unsigned char)bf16_bits[i];
    d[24 + 2 * i + 1] = (unsigned char)(bf16_bits[i] >> 8);
  }
  for (int i = 0; i < 4; i++)
    put_f32(d + 36 + 4 * i, f32_values[i]);
  for (int i = 0; i < 2; i++) {
    d[52 + 2 * i] = (unsigned char)half_bias_bits[i];
    d[52 + 2 * i + 1] = (unsigned char)(half_bias_bits[i] >> 8);
  }
}

static void test_half_conversion(void **state) {
  (void)state;
  unsigned char data[56];
  half_data(data);
  size_t size;
  unsigned char *file = build_file(HALF_HEADER, data, sizeof data, &size);
  attn_layer *l = make_layer(2, 1, 0, 0, 0, 1);
  randomize(l, 3);
  expect_load(l, file, size, NULL, ATTN_OK, NULL, "mixed dtypes");
  float w[12];
  assert_int_equal(attn_layer_get_weight(l, ATTN_W_IN_PROJ, w, 12), ATTN_OK);
  for (int i = 0; i < 12; i++)
    if (memcmp(&w[i], &half_values[i], sizeof(float)) != 0)
      fail_msg("F16 0x%04x gave %a, expected %a", half_bits[i], w[i],
               half_values[i]);
  float b[6];
  assert_int_equal(attn_layer_get_weight(l, ATTN_B_IN_PROJ, b, 6), ATTN_OK);
  for (int i = 0; i < 6; i++)
    if (memcmp(&b[i], &bf16_values[i], sizeof(float)) != 0)
      fail_msg("BF16 0x%04x gave %a, expected %a", bf16_bits[i], b[i],
               bf16_values[i]);
  float o[4];
  assert_int_equal(attn_layer_get_weight(l, ATTN_W_OUT, o, 4), ATTN_OK);
  assert_memory_equal(o, f32_values, sizeof o);
  assert_int_equal(attn_layer_get_weight(l, ATTN_B_OUT, o, 2), ATTN_OK);
  assert_true(o[0] == 1.0f && o[1] == -1.0f);
  free(file);
  attn_layer_destroy(l);
}

/* Infinities and NaNs, in any dtype, are refused like the setters refuse
 * them, naming the tensor, and the layer keeps its weights. */
static void test_half_not_finite(void **state) {
  (void)state;
  static const struct {
    size_t byte; /* where the bad value goes */
    int width;   /* 2 or 4 bytes */
    uint32_t bits;
    const char *fragment;
  } cases[] = {
      {10, 2, 0x7C00, "'in_proj_weight' holds infinity at element 5"},
      {10, 2, 0xFC00, "'in_proj_weight' holds infinity"},
      {10, 2, 0x7E00, "'in_proj_weight' holds NaN at element 5"},
      {10, 2, 0x7C01, "'in_proj_weight' holds NaN"},
      {30, 2, 0x7F80, "'in_proj_bias' holds infinity at element 3"},
      {30, 2, 0xFF80, "'in_proj_bias' holds infinity"},
      {30, 2, 0x7FC0, "'in_proj_bias' holds NaN"},
      {30, 2, 0x7F81, "'in_proj_bias' holds NaN"},
      {40, 4, 0x7F800000u, "'out_proj.weight' holds infinity at element 1"},
      {40, 4, 0xFFC00000u, "'out_proj.weight' holds NaN"},
      {54, 2, 0x7C00, "'out_proj.bias' holds infinity at element 1"},
  };
  attn_layer *l = make_layer(2, 1, 0, 0, 0, 1);
  randomize(l, 4);
  for (size_t c = 0; c < sizeof cases / sizeof cases[0]; c++) {
    unsigned char data[56];
    half_data(data);
    for (int i = 0; i < cases[c].width; i++)
      data[cases[c].byte + (size_t)i] =
          (unsigned char)(cases[c].bits >> (8 * i));
    size_t size;
    unsigned char *file = build_file(HALF_HEADER, data, sizeof data, &size);
    expect_load(l, file, size, NULL, ATTN_ERR_NOT_FINITE, cases[c].fragment,
                cases[c].fragment);
    free(file);
  }
  attn_layer_destroy(l);
}

/* ------------------------------------------------------------------------ */
/* The torch fixture file                                                    */
/* ------------------------------------------------------------------------ */

/* The torch fixture against the wrong layer (its parity with torch is
 * test_torch_fixture.c's): shape errors name the tensor and both shapes;
 * with no prefix the message points at a prefix the file has. */
static void test_torch_file_errors(void **state) {
  (void)state;
  const char *path = ATTN_TEST_DATA_DIR "/torch_mha.safetensors";
  size_t size = 0;
  unsigned char *file = read_bytes(path, &size);
  attn_layer *l = make_layer(8, 2, 0, 6, 0, 1);
  randomize(l, 10);
  expect_load(l, file, size, "decoder.layers.0.cross_attn.",
              ATTN_ERR_TENSOR_SHAPE,
              "'decoder.layers.0.cross_attn.k_proj_weight' has shape [8, 6], "
              "the layer needs [8, 8]",
              "cross_attn into kdim 8");
  expect_load(l, file, size, NULL, ATTN_ERR_TENSOR_MISSING,
              "prefix 'decoder.layers.0.cross_attn.' may be meant",
              "fixture without prefix");
  attn_layer_destroy(l);
  l = make_layer(8, 2, 0, 0, 0, 0);
  randomize(l, 11);
  expect_load(l, file, size, "decoder.layers.0.self_attn.",
              ATTN_ERR_WEIGHT_LAYOUT, "bias off", "bias into bias-off layer");
  attn_layer_destroy(l);
  l = make_layer(8, 2, 0, 0, 0, 1);
  randomize(l, 12);
  expect_load(
      l, file, size, "encoder.layers.0.self_attn.", ATTN_ERR_TENSOR_MISSING,
      "'encoder.layers.0.self_attn.in_proj_bias' not found", "bias missing");
  attn_layer_destroy(l);
  free(file);
}

/* ------------------------------------------------------------------------ */
/* Bad files                                                                 */
/* ------------------------------------------------------------------------ */

/* One change to a valid tiny file and what the loader must say. */
typedef struct {
  const char *base; /* TINY_TORCH or TINY_HF */
  const char *from, *to;
  size_t data; /* data bytes */
  int bias;    /* layer with bias on? */
  int64_t kdim;
  attn_status want;
  const char *fragment;
} mutation;

#define OPW "\"out_proj.bias\":{\"dtype\":\"F32\",\"shape\":[4],"

static const mutation mutations[] = {
    /* data_offsets */
    {TINY_TORCH, "[0,192]", "[192,0]", TINY_DATA, 1, 0, ATTN_ERR_FILE_FORMAT,
     "'in_proj_weight' has reversed data_offsets [192, 0]"},
    {TINY_TORCH, "[304,320]", "[304,324]", TINY_DATA, 1, 0,
     ATTN_ERR_FILE_FORMAT,
     "'out_proj.bias' has data_offsets [304, 324] but the data section has "
     "only 320 bytes"},
    {TINY_TORCH, "[304,320]", "[304,99999999999]", TINY_DATA, 1, 0,
     ATTN_ERR_FILE_FORMAT, "data section has only 320 bytes"},
    {TINY_TORCH, "[12,4]", "[12,5]", TINY_DATA, 1, 0, ATTN_ERR_FILE_FORMAT,
     "'in_proj_weight' of dtype F32 and shape [12, 5] needs a different "
     "number of bytes but its data_offsets [0, 192] span 192"},
    {TINY_TORCH, "[12,4]", "[4294967296,4294967296,4294967296]", TINY_DATA, 1,
     0, ATTN_ERR_FILE_FORMAT, "more than 2^64"},
    {TINY_TORCH, "[192,240]", "[180,228]", TINY_DATA, 1, 0,
     ATTN_ERR_FILE_FORMAT,
     "'in_proj_bias' [180, 228] overlaps tensor 'in_proj_weight' [0, 192]"},
    {TINY_TORCH, "[304,320]", "[312,328]", TINY_DATA + 8, 1, 0,
     ATTN_ERR_FILE_FORMAT,
     "8 bytes of data before tensor 'out_proj.bias' (offset 312) belong to "
     "no tensor"},
    {TINY_TORCH, "", "", TINY_DATA + 8, 1, 0, ATTN_ERR_FILE_FORMAT,
     "8 bytes after the last tensor's data belong to no tensor"},
    {TINY_TORCH, "[304,320]", "[-16,320]", TINY_DATA, 1, 0,
     ATTN_ERR_FILE_FORMAT, "data_offsets that are not non-negative integers"},
    {TINY_TORCH, "[304,320]", "[304.5,320]", TINY_DATA, 1, 0,
     ATTN_ERR_FILE_FORMAT, "data_offsets that are not non-negative integers"},
    {TINY_TORCH, "[304,320]", "[304,1e300]", TINY_DATA, 1, 0,
     ATTN_ERR_FILE_FORMAT, "data_offsets that are not non-negative integers"},
    {TINY_TORCH, "[304,320]", "[304,\"320\"]", TINY_DATA, 1, 0,
     ATTN_ERR_FILE_FORMAT, "data_offsets that are not non-negative integers"},
    {TINY_TORCH, "[0,192]", "[0,192,5]", TINY_DATA, 1, 0, ATTN_ERR_FILE_FORMAT,
     "no \"data_offsets\" array of two numbers"},
    {TINY_TORCH, "\"data_offsets\":[0,192]", "\"offsets\":[0,192]", TINY_DATA,
     1, 0, ATTN_ERR_FILE_FORMAT, "no \"data_offsets\" array"},
    /* entries */
    {TINY_TORCH, "[12,4]", "[12,-4]", TINY_DATA, 1, 0, ATTN_ERR_FILE_FORMAT,
     "'in_proj_weight' has a shape entry that is not a non-negative integer"},
    {TINY_TORCH, "\"shape\":[12,4]", "\"shape\":48", TINY_DATA, 1, 0,
     ATTN_ERR_FILE_FORMAT, "'in_proj_weight' has no \"shape\" array"},
    {TINY_TORCH, "\"dtype\":\"F32\",\"shape\":[12,4]",
     "\"dtype\":32,\"shape\":[12,4]", TINY_DATA, 1, 0, ATTN_ERR_FILE_FORMAT,
     "'in_proj_weight' has no \"dtype\" string"},
    {TINY_TORCH, OPW "\"data_offsets\":[304,320]}", "\"out_proj.bias\":[4]",
     TINY_DATA - 16, 1, 0, ATTN_ERR_FILE_FORMAT,
     "'out_proj.bias' is not a JSON object"},
    {TINY_TORCH, OPW "\"data_offsets\":[304,320]}",
     OPW "\"data_offsets\":[304,320]}," OPW "\"data_offsets\":[320,336]}",
     TINY_DATA + 16, 1, 0, ATTN_ERR_FILE_FORMAT,
     "tensor 'out_proj.bias' is listed twice"},
    /* dtypes */
    {TINY_TORCH, "\"dtype\":\"F32\",\"shape\":[12,4]",
     "\"dtype\":\"F64\",\"shape\":[6,4]", TINY_DATA, 1, 0,
     ATTN_ERR_TENSOR_DTYPE,
     "tensor 'in_proj_weight' has dtype F64; libattn loads F32, F16 and "
     "BF16"},
    {TINY_TORCH, "\"dtype\":\"F32\",\"shape\":[12,4]",
     "\"dtype\":\"I8\",\"shape\":[12,16]", TINY_DATA, 1, 0,
     ATTN_ERR_TENSOR_DTYPE, "has dtype I8"},
    {TINY_TORCH, "\"dtype\":\"F32\",\"shape\":[4]",
     "\"dtype\":\"Q4_K\",\"shape\":[4]", TINY_DATA, 1, 0, ATTN_ERR_TENSOR_DTYPE,
     "'out_proj.bias' has dtype Q4_K"},
    /* shapes */
    {TINY_TORCH, "[12,4]", "[4,12]", TINY_DATA, 1, 0, ATTN_ERR_TENSOR_SHAPE,
     "tensor 'in_proj_weight' has shape [4, 12], the layer needs [12, 4]"},
    {TINY_TORCH, "[12,4]", "[48]", TINY_DATA, 1, 0, ATTN_ERR_TENSOR_SHAPE,
     "'in_proj_weight' has shape [48], the layer needs [12, 4]"},
    {TINY_TORCH, "\"shape\":[12]", "\"shape\":[1,12]", TINY_DATA, 1, 0,
     ATTN_ERR_TENSOR_SHAPE,
     "'in_proj_bias' has shape [1, 12], the layer needs [12]"},
    {TINY_TORCH, "[4,4]", "[2,8]", TINY_DATA, 1, 0, ATTN_ERR_TENSOR_SHAPE,
     "'out_proj.weight' has shape [2, 8], the layer needs [4, 4]"},
    {TINY_HF, "\"k_proj.weight\":{\"dtype\":\"F32\",\"shape\":[4,4]",
     "\"k_proj.weight\":{\"dtype\":\"F32\",\"shape\":[4,2,2]", TINY_DATA, 1, 0,
     ATTN_ERR_TENSOR_SHAPE,
     "'k_proj.weight' has shape [4, 2, 2], the layer needs [4, 4]"},
    /* missing tensors */
    {TINY_TORCH, "\"out_proj.bias\"", "\"out_proj.b\"", TINY_DATA, 1, 0,
     ATTN_ERR_TENSOR_MISSING, "tensor 'out_proj.bias' not found"},
    {TINY_TORCH, "\"out_proj.weight\"", "\"out_proj.w\"", TINY_DATA, 1, 0,
     ATTN_ERR_TENSOR_MISSING, "tensor 'out_proj.weight' not found"},
    {TINY_HF, "\"k_proj.bias\"", "\"k_proj.b\"", TINY_DATA, 1, 0,
     ATTN_ERR_TENSOR_MISSING, "tensor 'k_proj.bias' not found"},
    {TINY_HF, "\"v_proj.weight\"", "\"v.weight\"", TINY_DATA, 1, 0,
     ATTN_ERR_TENSOR_MISSING, "tensor 'v_proj.weight' not found"},
    {TINY_HF, "\"o_proj.weight\"", "\"x_proj.weight\"", TINY_DATA, 1, 0,
     ATTN_ERR_TENSOR_MISSING, "tensor 'o_proj.weight' not found"},
    /* layouts */
    {TINY_TORCH, "", "", TINY_DATA, 0, 0, ATTN_ERR_WEIGHT_LAYOUT,
     "the file has 'in_proj_bias' but the layer was created with bias off"},
    {TINY_HF, "", "", TINY_DATA, 0, 0, ATTN_ERR_WEIGHT_LAYOUT,
     "the file has 'q_proj.bias' but the layer was created with bias off"},
    {TINY_TORCH, "", "", TINY_DATA, 1, 6, ATTN_ERR_WEIGHT_LAYOUT,
     "packed 'in_proj_weight' but the layer has kdim 6"},
    {TINY_TORCH, OPW "\"data_offsets\":[304,320]}",
     OPW "\"data_offsets\":[304,320]},\"bias_k\":{\"dtype\":\"F32\","
         "\"shape\":[1,1,4],\"data_offsets\":[320,336]}",
     TINY_DATA + 16, 1, 0, ATTN_ERR_WEIGHT_LAYOUT, "add_bias_kv"},
    /* ambiguous names */
    {TINY_TORCH, OPW "\"data_offsets\":[304,320]}",
     OPW "\"data_offsets\":[304,320]},\"q_proj_weight\":{\"dtype\":\"F32\","
         "\"shape\":[4,4],\"data_offsets\":[320,384]}",
     TINY_DATA + 64, 1, 0, ATTN_ERR_FILE_FORMAT,
     "both the packed 'in_proj_weight' and the separate 'q_proj_weight'"},
    {TINY_TORCH, OPW "\"data_offsets\":[304,320]}",
     OPW "\"data_offsets\":[304,320]},\"q_proj.weight\":{\"dtype\":\"F32\","
         "\"shape\":[4,4],\"data_offsets\":[320,384]}",
     TINY_DATA + 64, 1, 0, ATTN_ERR_FILE_FORMAT,
     "both torch names ('in_proj_weight') and Hugging Face names "
     "('q_proj.weight')"},
    {TINY_HF, "\"o_proj.bias\"", "\"out_proj.bias\"", TINY_DATA, 1, 0,
     ATTN_ERR_FILE_FORMAT, "both 'o_proj.*' and 'out_proj.*'"},
    /* header text */
    {TINY_TORCH, "{\"in_proj_weight\"", "{in_proj_weight\"", TINY_DATA, 1, 0,
     ATTN_ERR_FILE_FORMAT, "safetensors header is not valid JSON"},
    {TINY_TORCH, "[304,320]}}", "[304,320]}} x", TINY_DATA, 1, 0,
     ATTN_ERR_FILE_FORMAT, "header has bytes after its JSON value"},
    {TINY_TORCH, "[304,320]}}", "[304,320]}}}", TINY_DATA, 1, 0,
     ATTN_ERR_FILE_FORMAT, "header has bytes after its JSON value"},
    /* accepted variations */
    {TINY_TORCH, "[304,320]}}", "[304,320]}}      ", TINY_DATA, 1, 0, ATTN_OK,
     NULL},
    {TINY_TORCH, "{\"in_proj_weight\"",
     "{\"__metadata__\":{\"format\":\"pt\"},\"in_proj_weight\"", TINY_DATA, 1,
     0, ATTN_OK, NULL},
    {TINY_TORCH, "{\"in_proj_weight\"",
     "{\"__metadata__\":[1,{}],\"in_proj_weight\"", TINY_DATA, 1, 0, ATTN_OK,
     NULL},
    {TINY_TORCH, OPW "\"data_offsets\":[304,320]}",
     OPW "\"data_offsets\":[304,320]},\"other\":{\"dtype\":\"Q4_K\","
         "\"shape\":[1],\"data_offsets\":[320,330]},\"empty\":{\"dtype\":"
         "\"F32\",\"shape\":[0,4],\"data_offsets\":[330,330]}",
     TINY_DATA + 10, 1, 0, ATTN_OK, NULL},
    {TINY_TORCH, "", "", TINY_DATA, 1, 0, ATTN_OK, NULL},
    {TINY_HF, "", "", TINY_DATA, 1, 0, ATTN_OK, NULL},
};

static void test_bad_entries(void **state) {
  (void)state;
  for (size_t i = 0; i < sizeof mutations / sizeof mutations[0]; i++) {
    const mutation *m = &mutations[i];
    char *header = replace(m->base, m->from, m->to);
    unsigned char *data = tiny_data(m->data);
    size_t size;
    unsigned char *file = build_file(header, data, m->data, &size);
    attn_layer *l = make_layer(4, 2, m->kdim, 0, 0, m->bias);
    randomize(l, 100 + i);
    char what[96];
    snprintf(what, sizeof what, "mutation %zu ('%.30s' -> '%.30s')", i, m->from,
             m->to);
    expect_load(l, file, size, NULL, m->want, m->fragment, what);
    if (m->want == ATTN_OK && m->kdim == 0) {
      /* The values landed where the names say. */
      float w[48];
      bool hf = strstr(m->base, "q_proj.weight") != NULL;
      int64_t n = hf ? 16 : 48;
      assert_int_equal(
          attn_layer_get_weight(l, hf ? ATTN_W_Q : ATTN_W_IN_PROJ, w, n),
          ATTN_OK);
      for (int64_t k = 0; k < n; k++)
        assert_true(w[k] == tiny_value((size_t)k));
    }
    attn_layer_destroy(l);
    free(file);
    free(data);
    free(header);
  }
}

static void test_bad_header_text(void **state) {
  (void)state;
  static const struct {
    const char *header;
    attn_status want;
    const char *fragment;
  } cases[] = {
      {"[1,2]", ATTN_ERR_FILE_FORMAT, "JSON but not an object"},
      {"\"in_proj_weight\"", ATTN_ERR_FILE_FORMAT, "JSON but not an object"},
      {"42", ATTN_ERR_FILE_FORMAT, "JSON but not an object"},
      {"null", ATTN_ERR_FILE_FORMAT, "JSON but not an object"},
      {"not json at all", ATTN_ERR_FILE_FORMAT, "not valid JSON"},
      {"{\"a\":", ATTN_ERR_FILE_FORMAT, "not valid JSON"},
      {" ", ATTN_ERR_FILE_FORMAT, "not valid JSON"},
      {"{}", ATTN_ERR_TENSOR_MISSING, "'in_proj_weight' not found"},
      {"{\"__metadata__\":{\"format\":\"pt\"}}", ATTN_ERR_TENSOR_MISSING,
       "not found"},
  };
  attn_layer *l = tiny_layer(1);
  for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
    size_t size;
    unsigned char *file = build_file(cases[i].header, NULL, 0, &size);
    expect_load(l, file, size, NULL, cases[i].want, cases[i].fragment,
                cases[i].header);
    free(file);
  }
  /* A NUL byte inside the header. */
  size_t size;
  unsigned char *data = tiny_data(TINY_DATA);
  unsigned char *file = build_file(TINY_TORCH, data, TINY_DATA, &size);
  file[8 + 3] = '\0';
  expect_load(l, file, size, NULL, ATTN_ERR_FILE_FORMAT, "NUL byte",
              "NUL in header");
  /* Tensors without data but with bytes after the header. */
  free(file);
  file = build_file("{}", data, 16, &size);
  expect_load(l, file, size, NULL, ATTN_ERR_FILE_FORMAT,
              "no tensors but 16 bytes of data", "data without tensors");
  free(file);
  free(data);
  attn_layer_destroy(l);
}

static void set_header_length(unsigned char *file, uint64_t n) {
  for (int i = 0; i < 8; i++)
    file[i] = (unsigned char)(n >> (8 * i));
}

static void test_header_length(void **state) {
  (void)state;
  size_t size;
  unsigned char *data = tiny_data(TINY_DATA);
  unsigned char *file = build_file(TINY_TORCH, data, TINY_DATA, &size);
  attn_layer *l = tiny_layer(1);
  static const struct {
    uint64_t length;
    const char *fragment;
  } cases[] = {
      {UINT64_MAX, "header length 18446744073709551615 is absurd"},
      {(uint64_t)1 << 63, "is absurd"},
      {(uint64_t)ATTN_SAFETENSORS_MAX_HEADER + 1, "is absurd"},
      {0, "header length is 0"},
  };
  for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
    set_header_length(file, cases[i].length);
    expect_load(l, file, size, NULL, ATTN_ERR_FILE_FORMAT, cases[i].fragment,
                cases[i].fragment);
  }
  /* One byte more than the file has after the length field. */
  set_header_length(file, size - 8 + 1);
  char want[96];
  snprintf(want, sizeof want, "is more than the %zu bytes that follow it",
           size - 8);
  expect_load(l, file, size, NULL, ATTN_ERR_FILE_FORMAT, want,
              "header longer than file");
  /* Shorter than the JSON text: not valid JSON. */
  set_header_length(file, strlen(TINY_TORCH) - 1);
  expect_load(l, file, size, NULL, ATTN_ERR_FILE_FORMAT, "not valid JSON",
              "header cut short");
  /* Longer than the JSON text: the data's first bytes count as header
   * (the first float, -1, has zero bytes). */
  set_header_length(file, strlen(TINY_TORCH) + 4);
  expect_load(l, file, size, NULL, ATTN_ERR_FILE_FORMAT, "NUL byte",
              "header too long");
  /* ... and bytes that are not JSON white space. */
  memcpy(file + 8 + strlen(TINY_TORCH), "xyz ", 4);
  expect_load(l, file, size, NULL, ATTN_ERR_FILE_FORMAT,
              "bytes after its JSON value", "header too long");
  free(file);
  free(data);
  attn_layer_destroy(l);
}

/* Every truncation of a valid file is refused as a format error. */
static void test_truncated(void **state) {
  (void)state;
  size_t size;
  unsigned char *data = tiny_data(TINY_DATA);
  unsigned char *file = build_file(TINY_TORCH, data, TINY_DATA, &size);
  attn_layer *l = tiny_layer(1);
  snapshot before, after;
  take_snapshot(l, &before);
  for (size_t len = 0; len < size; len++) {
    attn_status st = attn_layer_load_safetensors_mem(l, file, len, NULL);
    if (st != ATTN_ERR_FILE_FORMAT)
      fail_msg("truncated to %zu of %zu bytes: status %d (%s)", len, size,
               (int)st, attn_last_error());
  }
  take_snapshot(l, &after);
  assert_same_snapshot(&before, &after, "truncations");
  free_snapshot(&after);
  /* Messages of the three kinds of truncation, from files. */
  expect_load(l, file, 5, NULL, ATTN_ERR_FILE_FORMAT,
              "weight file has 5 bytes, fewer than the 8-byte header length",
              "5 bytes");
  expect_load(l, file, 8 + 10, NULL, ATTN_ERR_FILE_FORMAT,
              "is more than the 10 bytes", "header cut");
  expect_load(l, file, size - 1, NULL, ATTN_ERR_FILE_FORMAT,
              "'out_proj.bias' has data_offsets [304, 320] but the data "
              "section has only 319 bytes (truncated file?)",
              "data cut");
  free_snapshot(&before);
  free(file);
  free(data);
  attn_layer_destroy(l);
}

/* Random corruption of a valid file never crashes and never half-loads:
 * the result is either a clean error with the layer unchanged or a full
 * load of finite weights. */
static void test_random_corruption(void **state) {
  (void)state;
  size_t size;
  unsigned char *data = tiny_data(TINY_DATA);
  unsigned char *file = build_file(TINY_TORCH, data, TINY_DATA, &size);
  unsigned char *copy = ref_xmalloc(size);
  attn_layer *l = tiny_layer(1);
  ref_rng rng;
  ref_rng_seed(&rng, 2024);
  int loaded = 0;
  for (int iter = 0; iter < 3000; iter++) {
    memcpy(copy, file, size);
    int flips = (int)ref_rng_int(&rng, 1, 4);
    for (int f = 0; f < flips; f++) {
      /* Mostly the header and the length, where the parser is. */
      size_t at = (size_t)ref_rng_int(&rng, 0, (int64_t)size - 1);
      if (iter % 4 != 0)
        at = (size_t)ref_rng_int(&rng, 0, (int64_t)strlen(TINY_TORCH) + 7);
      copy[at] = (unsigned char)ref_rng_int(&rng, 0, 255);
    }
    snapshot before, after;
    take_snapshot(l, &before);
    attn_status st = attn_layer_load_safetensors_mem(l, copy, size, NULL);
    take_snapshot(l, &after);
    if (st == ATTN_OK) {
      loaded++;
      for (int w = 0; w <= ATTN_B_V; w++)
        for (int64_t k = 0; after.w[w] && k < after.n[w]; k++)
          assert_true(isfinite(after.w[w][k]));
    } else {
      assert_true(st == ATTN_ERR_FILE_FORMAT || st == ATTN_ERR_TENSOR_MISSING ||
                  st == ATTN_ERR_TENSOR_DTYPE || st == ATTN_ERR_TENSOR_SHAPE ||
                  st == ATTN_ERR_WEIGHT_LAYOUT || st == ATTN_ERR_NOT_FINITE);
      assert_true(strlen(attn_last_error()) > 0);
      assert_same_snapshot(&before, &after, "corrupted file");
    }
    free_snapshot(&before);
    free_snapshot(&after);
  }
  /* Data-only changes load; the mix must have both outcomes. */
  assert_true(loaded > 0 && loaded < 3000);
  free(copy);
  free(file);
  free(data);
  attn_layer_destroy(l);
}

/* ------------------------------------------------------------------------ */
/* Arguments, files and saving                                               */
/* ------------------------------------------------------------------------ */

static void test_load_arguments(void **state) {
  (void)state;
  attn_layer *l = tiny_layer(1);
  unsigned char byte = 0;
  assert_int_equal(attn_layer_load_safetensors(NULL, "x", NULL),
                   ATTN_ERR_NULL_POINTER);
  assert_int_equal(attn_layer_load_safetensors(l, NULL, NULL),
                   ATTN_ERR_NULL_POINTER);
  assert_non_null(strstr(attn_last_error(), "path is NULL"));
  assert_int_equal(attn_layer_load_safetensors_mem(NULL, &byte, 1, NULL),
                   ATTN_ERR_NULL_POINTER);
  assert_int_equal(attn_layer_load_safetensors_mem(l, NULL, 0, NULL),
                   ATTN_ERR_NULL_POINTER);

  snapshot before, after;
  take_snapshot(l, &before);
  char path[512];
  tmp_path(path, sizeof path, "does-not-exist.safetensors");
  assert_int_equal(attn_layer_load_safetensors(l, path, NULL), ATTN_ERR_IO);
  assert_non_null(strstr(attn_last_error(), path));
  assert_non_null(strstr(attn_last_error(), strerror(ENOENT)));
  assert_int_equal(attn_layer_load_safetensors(l, tmp_dir, NULL), ATTN_ERR_IO);
  assert_non_null(strstr(attn_last_error(), "not a regular file"));
  tmp_path(path, sizeof path, "empty.safetensors");
  write_bytes(path, "", 0);
  assert_int_equal(attn_layer_load_safetensors(l, path, NULL),
                   ATTN_ERR_FILE_FORMAT);
  take_snapshot(l, &after);
  assert_same_snapshot(&before, &after, "argument errors");
  free_snapshot(&before);
  free_snapshot(&after);
  attn_layer_destroy(l);
}

static void test_save_errors(void **state) {
  (void)state;
  char path[512];
  tmp_path(path, sizeof path, "save.safetensors");
  attn_layer *l = tiny_layer(1);
  assert_int_equal(attn_layer_save_safetensors(NULL, path, NULL, 0),
                   ATTN_ERR_NULL_POINTER);
  assert_int_equal(attn_layer_save_safetensors(l, NULL, NULL, 0),
                   ATTN_ERR_NULL_POINTER);
  assert_int_equal(attn_layer_save_safetensors(l, path, NULL, 3),
                   ATTN_ERR_BAD_OPTION);
  assert_non_null(strstr(attn_last_error(), "unknown naming 3"));
  assert_int_equal(attn_layer_save_safetensors(l, path, NULL, -1),
                   ATTN_ERR_BAD_OPTION);
  static const char *const bad_utf8[] = {"\xff", "a\xc3", "\xc0\x80",
                                         "\xed\xa0\x80", "\xf4\x90\x80\x80"};
  for (size_t i = 0; i < sizeof bad_utf8 / sizeof bad_utf8[0]; i++) {
    assert_int_equal(attn_layer_save_safetensors(l, path, bad_utf8[i], 0),
                     ATTN_ERR_BAD_OPTION);
    assert_non_null(strstr(attn_last_error(), "UTF-8"));
  }
  struct stat sb;
  assert_int_equal(stat(path, &sb), -1);

  /* Weights never set. */
  attn_layer *fresh = make_layer(4, 2, 0, 0, 0, 1);
  assert_int_equal(attn_layer_save_safetensors(fresh, path, NULL, 0),
                   ATTN_ERR_WEIGHTS_NOT_SET);
  assert_non_null(
      strstr(attn_last_error(), "q_proj_weight has never been set"));
  float w[48] = {0};
  assert_int_equal(attn_layer_set_weight(fresh, ATTN_W_IN_PROJ, w, 48),
                   ATTN_OK);
  assert_int_equal(attn_layer_set_weight(fresh, ATTN_W_OUT, w, 16), ATTN_OK);
  assert_int_equal(attn_layer_save_safetensors(fresh, path, NULL, 1),
                   ATTN_ERR_WEIGHTS_NOT_SET);
  assert_non_null(strstr(attn_last_error(), "q bias has never been set"));
  assert_int_equal(stat(path, &sb), -1);
  attn_layer_destroy(fresh);

  /* A directory that does not exist, a path that is a directory. */
  char bad[600];
  snprintf(bad, sizeof bad, "%s/no/such/dir/w.safetensors", tmp_dir);
  assert_int_equal(attn_layer_save_safetensors(l, bad, NULL, 0), ATTN_ERR_IO);
  assert_non_null(strstr(attn_last_error(), strerror(ENOENT)));
  char sub[512];
  tmp_path(sub, sizeof sub, "a-directory");
  assert_int_equal(mkdir(sub, 0700), 0);
  assert_int_equal(attn_layer_save_safetensors(l, sub, NULL, 0), ATTN_ERR_IO);
  assert_non_null(strstr(attn_last_error(), "cannot rename"));
  assert_int_equal(count_temp_files(), 0);
  assert_int_equal(rmdir(sub), 0);
  attn_layer_destroy(l);
}

/* Saving over an existing file replaces it whole and leaves no temporary
 * file behind. */
static void test_save_replaces(void **state) {
  (void)state;
  char path[512];
  tmp_path(path, sizeof path, "replace.safetensors");
  write_bytes(path, "old content", 11);
  attn_layer *a = make_layer(8, 2, 0, 0, 0, 1);
  randomize(a, 21);
  assert_int_equal(attn_layer_save_safetensors(a, path, "x.", ATTN_NAMES_TORCH),
                   ATTN_OK);
  attn_layer *b = make_layer(8, 2, 0, 0, 0, 1);
  assert_int_equal(attn_layer_load_safetensors(b, path, "x."), ATTN_OK);
  snapshot sa, sb;
  take_snapshot(a, &sa);
  take_snapshot(b, &sb);
  assert_same_snapshot(&sa, &sb, "replaced file");
  free_snapshot(&sa);
  free_snapshot(&sb);
  /* Saved again, smaller (no bias): the old bytes are gone. */
  attn_layer *c = make_layer(8, 2, 0, 0, 0, 0);
  randomize(c, 22);
  assert_int_equal(attn_layer_save_safetensors(c, path, "x.", ATTN_NAMES_TORCH),
                   ATTN_OK);
  size_t size;
  unsigned char *file = read_bytes(path, &size);
  layer_shape s = {8, 2, 0, 0, 0, 0};
  check_saved_file(file, size, c, &s, ATTN_NAMES_TORCH, "x.");
  free(file);
  assert_int_equal(count_temp_files(), 0);
  attn_layer_destroy(a);
  attn_layer_destroy(b);
  attn_layer_destroy(c);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_round_trip),
      cmocka_unit_test(test_prefix_and_variants),
      cmocka_unit_test(test_hf_out_names),
      cmocka_unit_test(test_half_conversion),
      cmocka_unit_test(test_half_not_finite),
      cmocka_unit_test(test_torch_file_errors),
      cmocka_unit_test(test_bad_entries),
      cmocka_unit_test(test_bad_header_text),
      cmocka_unit_test(test_header_length),
      cmocka_unit_test(test_truncated),
      cmocka_unit_test(test_random_corruption),
      cmocka_unit_test(test_load_arguments),
      cmocka_unit_test(test_save_errors),
      cmocka_unit_test(test_save_replaces),
  };
  return cmocka_run_group_tests(tests, make_tmp_dir, remove_tmp_dir);
}
