/* SPDX-License-Identifier: MIT */
/* Conversions between the 16-bit float formats of weight files and float,
 * and little-endian byte access that works on hosts of either byte order
 * and at any alignment. Header-only: the loops that call these are the only
 * hot paths, and inlining lets the compiler turn the byte assembly into
 * plain loads. */
#ifndef ATTN_HALF_H
#define ATTN_HALF_H

#include <stdint.h>
#include <string.h>

static inline uint16_t attn_le16(const unsigned char *p) {
  return (uint16_t)(p[0] | (unsigned)p[1] << 8);
}

static inline uint32_t attn_le32(const unsigned char *p) {
  return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 |
         (uint32_t)p[3] << 24;
}

static inline uint64_t attn_le64(const unsigned char *p) {
  return (uint64_t)attn_le32(p) | (uint64_t)attn_le32(p + 4) << 32;
}

static inline void attn_put_le32(unsigned char *p, uint32_t v) {
  p[0] = (unsigned char)v;
  p[1] = (unsigned char)(v >> 8);
  p[2] = (unsigned char)(v >> 16);
  p[3] = (unsigned char)(v >> 24);
}

static inline void attn_put_le64(unsigned char *p, uint64_t v) {
  attn_put_le32(p, (uint32_t)v);
  attn_put_le32(p + 4, (uint32_t)(v >> 32));
}

static inline float attn_bits_to_float(uint32_t bits) {
  float f;
  memcpy(&f, &bits, sizeof f);
  return f;
}

static inline uint32_t attn_float_to_bits(float f) {
  uint32_t bits;
  memcpy(&bits, &f, sizeof bits);
  return bits;
}

/* IEEE 754 binary16 to float. Every half value is exactly representable:
 * normal numbers only need their exponent rebiased (15 -> 127), subnormals
 * (mantissa * 2^-24) are scaled as integers, and infinities and NaNs keep
 * their kind (NaN payloads are kept in the top mantissa bits). */
static inline float attn_half_to_float(uint16_t h) {
  uint32_t sign = (uint32_t)(h & 0x8000u) << 16;
  uint32_t exponent = (h >> 10) & 0x1fu;
  uint32_t mantissa = h & 0x3ffu;
  if (exponent == 0x1f)
    return attn_bits_to_float(sign | 0x7f800000u | mantissa << 13);
  if (exponent != 0)
    return attn_bits_to_float(sign | (exponent + 112u) << 23 | mantissa << 13);
  /* Zero or subnormal: mantissa < 2^10, so the product is exact. */
  float magnitude = (float)mantissa * 0x1p-24f;
  return sign ? -magnitude : magnitude;
}

/* bfloat16 is the top half of a float's bits. */
static inline float attn_bf16_to_float(uint16_t b) {
  return attn_bits_to_float((uint32_t)b << 16);
}

#endif
