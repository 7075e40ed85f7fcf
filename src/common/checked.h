/* SPDX-License-Identifier: MIT */
/* Checked arithmetic on sizes, and the few data checks every entry point
 * shares. Header-only: these are a handful of instructions each. */
#ifndef ATTN_COMMON_CHECKED_H
#define ATTN_COMMON_CHECKED_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

/* False on overflow or a negative operand. */
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

/* Scratch layouts place buffers on 64-byte boundaries: 16 floats. */
#define ATTN_ALIGN_FLOATS 16

/* n rounded up to a multiple of 16 floats; false on overflow or n < 0. */
static inline bool attn_round_floats(int64_t n, int64_t *out) {
  if (n < 0 || n > INT64_MAX - (ATTN_ALIGN_FLOATS - 1))
    return false;
  *out = (n + ATTN_ALIGN_FLOATS - 1) / ATTN_ALIGN_FLOATS * ATTN_ALIGN_FLOATS;
  return true;
}

/* n bytes rounded up to a multiple of 64; false on overflow. */
static inline bool attn_round64(size_t n, size_t *out) {
  if (n > SIZE_MAX - 63)
    return false;
  *out = (n + 63) / 64 * 64;
  return true;
}

/* The first 64-byte aligned address at or after p. */
static inline void *attn_align64(void *p) {
  unsigned char *b = p;
  return b + ((64 - (uintptr_t)b % 64) % 64);
}

/* True when n floats (n * 4 bytes) can be addressed from one pointer. */
static inline bool attn_float_count_ok(int64_t n) {
  return n >= 0 && (uint64_t)n <= PTRDIFF_MAX / sizeof(float);
}

/* True when every value is finite. An integer test of the exponent bits:
 * vectorises without fast-math. */
static inline bool attn_all_finite(const float *x, int64_t n) {
  uint32_t bad = 0;
  for (int64_t i = 0; i < n; i++) {
    uint32_t bits;
    memcpy(&bits, &x[i], sizeof bits);
    bad |= (uint32_t)((bits & 0x7f800000u) == 0x7f800000u);
  }
  return bad == 0;
}

#endif
