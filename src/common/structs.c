/* SPDX-License-Identifier: MIT */
/* Versioned structs, both directions (structs.h). */
#include "common/structs.h"

#include "common/error.h"

#include <string.h>

static size_t min_size(size_t a, size_t b) { return a < b ? a : b; }

static attn_status too_small(const attn_struct_kind *k, size_t given) {
  return attn_fail(ATTN_ERR_STRUCT_SIZE,
                   "%s.struct_size %zu is smaller than its first released "
                   "size %zu (fill it with %s_init)",
                   k->name, given, k->min, k->name);
}

attn_status attn_struct_init(const attn_struct_kind *k, void *dst,
                             size_t size) {
  if (!dst)
    return attn_fail(ATTN_ERR_NULL_POINTER, "%s_init: the struct is NULL",
                     k->name);
  if (size < k->min)
    return too_small(k, size);
  memset(dst, 0, size);
  memcpy(dst, k->defaults, min_size(size, k->known));
  memcpy(dst, &size, sizeof size);
  return ATTN_OK;
}

attn_status attn_struct_load(const attn_struct_kind *k, void *dst,
                             const void *src) {
  size_t given;
  memcpy(&given, src, sizeof given);
  if (given < k->min)
    return too_small(k, given);
  if (given > k->known) {
    const unsigned char *extra = (const unsigned char *)src + k->known;
    for (size_t i = 0; i < given - k->known; i++)
      if (extra[i] != 0)
        return attn_fail(ATTN_ERR_STRUCT_SIZE,
                         "%s.struct_size %zu is larger than this library's "
                         "%zu and the unknown fields are set (library %s is "
                         "older than the header)",
                         k->name, given, k->known, ATTN_VERSION_STRING);
  }
  memcpy(dst, k->defaults, k->known);
  memcpy(dst, src, min_size(given, k->known));
  memcpy(dst, &k->known, sizeof k->known);
  return ATTN_OK;
}

attn_status attn_struct_store(const attn_struct_kind *k, void *dst,
                              const void *src) {
  size_t given;
  memcpy(&given, dst, sizeof given);
  if (given < k->min)
    return too_small(k, given);
  memcpy((unsigned char *)dst + sizeof given,
         (const unsigned char *)src + sizeof given,
         min_size(given, k->known) - sizeof given);
  return ATTN_OK;
}
