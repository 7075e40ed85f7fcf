/* SPDX-License-Identifier: MIT */
/* What the libFuzzer targets share: reading choices from the input bytes,
 * the library's layers with their reference twins, and the checks every
 * call must pass: a documented status with a message, outputs untouched
 * on error, finite outputs close to the reference on success. A failed
 * check aborts, which the fuzzer reports with the input that caused it. */
#ifndef ATTN_FUZZ_H
#define ATTN_FUZZ_H

#include "ref.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* The input, consumed from the front; zeros once it runs out. */
typedef struct {
  const uint8_t *p;
  size_t n;
} fz_input;

static inline uint8_t fz_u8(fz_input *in) {
  if (in->n == 0)
    return 0;
  in->n--;
  return *in->p++;
}

/* An integer in [0, n). */
static inline int64_t fz_below(fz_input *in, int64_t n) {
  uint32_t v = (uint32_t)fz_u8(in) | (uint32_t)fz_u8(in) << 8;
  return n > 0 ? (int64_t)(v % (uint64_t)n) : 0;
}

/* Values that break size arithmetic. */
static const int64_t fz_extremes[] = {0,
                                      -1,
                                      INT64_MIN,
                                      INT64_MAX,
                                      INT32_MAX,
                                      (int64_t)INT32_MAX + 1,
                                      1LL << 31,
                                      1LL << 40,
                                      1LL << 61,
                                      1LL << 62,
                                      (INT64_MAX - 15),
                                      3};

/* A size: mostly in [lo, hi], sometimes one of fz_extremes. */
static inline int64_t fz_size(fz_input *in, int64_t lo, int64_t hi) {
  uint8_t c = fz_u8(in);
  if (c >= 240)
    return fz_extremes[c % (sizeof fz_extremes / sizeof *fz_extremes)];
  return lo + (int64_t)c % (hi - lo + 1);
}

/* A struct_size for a struct of `size` bytes whose first release had
 * `min`: mostly the right one, sometimes too small, odd or larger. */
static inline size_t fz_struct_size(fz_input *in, size_t size, size_t min) {
  switch (fz_u8(in) % 16) {
  case 0:
    return min - 1 - (size_t)fz_below(in, (int64_t)min);
  case 1:
    return min;
  case 2:
    return size + 8;
  case 3:
    return size + 1 + (size_t)fz_below(in, 64);
  default:
    return size;
  }
}

/* a * b for non-negative a, b, saturating at 2^100 (far beyond memory). */
static inline __int128 fz_mul(__int128 a, __int128 b) {
  const __int128 cap = (__int128)1 << 100;
  if (a == 0 || b == 0)
    return 0;
  return a > cap / b ? cap : a * b;
}

/* True when n elements of 4 bytes cannot be addressed: the library must
 * refuse such sizes before reading anything. */
static inline bool fz_too_big(__int128 n) { return n > PTRDIFF_MAX / 4; }

/* Calls that succeeded and matched the reference, and calls refused,
 * printed at exit when FUZZ_VERBOSE is set. */
static long long fz_passed, fz_refused;

static inline void fz_report(void) {
  fprintf(stderr,
          "calls checked: %lld succeeded (matching the reference where there "
          "is one), %lld refused as documented\n",
          fz_passed, fz_refused);
}

static inline void fz_count(bool ok) {
  static bool registered;
  if (!registered && getenv("FUZZ_VERBOSE"))
    atexit(fz_report);
  registered = true;
  ++*(ok ? &fz_passed : &fz_refused);
}

#define FZ_ABORT(...)                                                          \
  do {                                                                         \
    fprintf(stderr, "fuzz check failed: " __VA_ARGS__);                        \
    fprintf(stderr, " (last error: %s)\n", attn_last_error());                 \
    abort();                                                                   \
  } while (0)

/* A failure must be one of `allowed` (a bit per status) and say why. */
static inline void fz_check_failure(attn_status st, uint32_t allowed,
                                    const char *what) {
  fz_count(false);
  if (st < 0 || st > 31 || !(allowed & (1u << st)))
    FZ_ABORT("%s: undocumented status %d (%s)", what, (int)st,
             attn_status_string(st));
  if (attn_last_error()[0] == '\0')
    FZ_ABORT("%s: status %d without a message", what, (int)st);
}

#define FZ_BIT(s) (1u << (s))

/* The bytes of an output buffer before a call, to show it untouched. */
static inline void *fz_snapshot(const void *p, size_t bytes) {
  void *s = ref_xmalloc(bytes ? bytes : 1);
  if (bytes)
    memcpy(s, p, bytes);
  return s;
}

static inline void fz_same(const void *a, const void *snap, size_t bytes,
                           const char *what) {
  if (memcmp(a, snap, bytes) != 0)
    FZ_ABORT("%s changed although the call failed", what);
}

/* Every value finite and within tolerance of the reference (rows with no
 * visible key follow empty_rows there). */
static inline void fz_check_close(const char *what, const float *got,
                                  const double *want, int64_t n) {
  ref_cmp c = ref_compare(got, want, n, 1e-3, 1e-4);
  if (!c.ok)
    FZ_ABORT("%s: element %lld is %g, the reference says %g", what,
             (long long)c.worst, c.got, c.want);
  fz_count(true);
}

/* The layers the targets use: shapes covering packed and separate
 * projections, grouped queries and layers without bias; created once,
 * with random weights and their reference twins. */
#define FZ_LAYERS 6

static inline ref_model *fz_models(void) {
  static ref_model models[FZ_LAYERS];
  static bool made;
  static const int64_t shapes[FZ_LAYERS][6] = {
      /* E, H, kdim, vdim, kv heads, bias */
      {8, 2, 0, 0, 0, 1}, {8, 4, 6, 5, 0, 1},  {6, 3, 0, 0, 0, 0},
      {8, 4, 0, 0, 2, 1}, {16, 2, 0, 0, 1, 1}, {4, 1, 3, 3, 0, 0}};
  if (!made) {
    for (int i = 0; i < FZ_LAYERS; i++) {
      attn_config cfg;
      attn_config_init(&cfg);
      cfg.embed_dim = shapes[i][0];
      cfg.num_heads = shapes[i][1];
      cfg.kdim = shapes[i][2];
      cfg.vdim = shapes[i][3];
      cfg.num_kv_heads = shapes[i][4];
      cfg.bias = (int32_t)shapes[i][5];
      cfg.num_threads = 1 + i % 2;
      if (ref_model_create(&models[i], &cfg, 100 + (uint64_t)i) != ATTN_OK)
        FZ_ABORT("cannot create fuzz layer %d", i);
    }
    made = true;
  }
  return models;
}

#endif
