/* Internal declarations shared by the library's source files. Nothing here
 * is exported. */
#ifndef ATTN_INTERNAL_H
#define ATTN_INTERNAL_H

#include "attn/attn.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#if defined(__GNUC__)
#define ATTN_PRINTF(f, a) __attribute__((format(printf, f, a)))
#else
#define ATTN_PRINTF(f, a)
#endif

/* error.c: records the per-thread message and returns status. */
attn_status attn_fail(attn_status status, const char *fmt, ...)
    ATTN_PRINTF(2, 3);

/* Checked arithmetic on sizes: false on overflow or negative operands. */
static inline bool attn_mul64(int64_t a, int64_t b, int64_t *out) {
  return a >= 0 && b >= 0 && !__builtin_mul_overflow(a, b, out);
}
static inline bool attn_add64(int64_t a, int64_t b, int64_t *out) {
  return a >= 0 && b >= 0 && !__builtin_add_overflow(a, b, out);
}
static inline bool attn_mulsz(size_t a, size_t b, size_t *out) {
  return !__builtin_mul_overflow(a, b, out);
}
static inline bool attn_addsz(size_t a, size_t b, size_t *out) {
  return !__builtin_add_overflow(a, b, out);
}

/* Copies a caller's versioned struct into *dst (already holding defaults).
 * Accepts callers built against older (at least min_size bytes) or newer
 * headers (extra bytes must be zero). */
attn_status attn_load_struct(void *dst, size_t known_size, const void *src,
                             size_t min_size, const char *name);

/* True when every value is finite. */
bool attn_all_finite(const float *x, int64_t n);

/* Weight slots, in storage order. */
enum {
  ATTN_SLOT_WQ,
  ATTN_SLOT_WK,
  ATTN_SLOT_WV,
  ATTN_SLOT_WO,
  ATTN_SLOT_BQ,
  ATTN_SLOT_BK,
  ATTN_SLOT_BV,
  ATTN_SLOT_BO,
  ATTN_SLOT_COUNT
};

struct attn_layer {
  int64_t embed_dim; /* E */
  int64_t num_heads; /* H */
  int64_t head_dim;  /* E / H */
  int64_t kdim;
  int64_t vdim;
  int64_t num_kv_heads; /* H_kv, divides H */
  int64_t kv_dim;       /* H_kv * head_dim */
  int32_t bias;
  int32_t num_threads;
  float scale;
  double scale_d;
  /* Weights [Wq | Wk | Wv | Wo], contiguous; with kdim == vdim == E the
   * first three form torch's packed in_proj_weight. */
  float *weights;
  /* Biases [bq | bk | bv | bo] (NULL without bias). */
  float *biases;
  int64_t slot_offset[ATTN_SLOT_COUNT]; /* into weights or biases */
  int64_t slot_count[ATTN_SLOT_COUNT];
  uint32_t slots_set; /* bit per slot */
};

static inline float *attn_slot_ptr(const struct attn_layer *l, int slot) {
  return (slot >= ATTN_SLOT_BQ ? l->biases : l->weights) + l->slot_offset[slot];
}

/* ATTN_ERR_WEIGHTS_NOT_SET, naming the first weight never set, unless every
 * weight the layer needs is set; `action` starts the message. */
attn_status attn_layer_check_set(const struct attn_layer *l,
                                 const char *action);

/* Number of threads to use for a call (resolves 0 = all cores). */
int32_t attn_resolve_threads(int32_t requested, int32_t layer_default);

#endif
