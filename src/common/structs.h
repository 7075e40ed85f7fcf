/* SPDX-License-Identifier: MIT */
/* The library's side of versioned structs (docs/ABI.md): a caller's struct
 * starts with its own size, and the library reads and writes only that many
 * bytes of it. */
#ifndef ATTN_COMMON_STRUCTS_H
#define ATTN_COMMON_STRUCTS_H

#include "attn/attn.h"

/* One versioned struct: its name for messages, the library's size of it,
 * its smallest accepted size (first released layout), and its defaults
 * (a full struct of `known` bytes). */
typedef struct {
  const char *name;
  size_t known, min;
  const void *defaults;
} attn_struct_kind;

/* Defines `kind`, the attn_struct_kind of public struct type T (smallest
 * size min, defaults at &defaults), and the public attn_*_init_sized()
 * function `init` over it. */
#define ATTN_VERSIONED_STRUCT(T, kind, min, defaults, init)                    \
  static const attn_struct_kind kind = {#T, sizeof(T), min, &defaults};        \
  attn_status init(T *s, size_t size) {                                        \
    return attn_struct_init(&kind, s, size);                                   \
  }

/* attn_*_init_sized(): writes the defaults into the first `size` bytes at
 * dst (zeros past the library's layout) and sets its struct_size. */
attn_status attn_struct_init(const attn_struct_kind *k, void *dst, size_t size);

/* Copies a caller's struct into *dst (the library's full struct): the
 * defaults, overwritten by the first struct_size bytes of src. Refuses a
 * struct_size below k->min and, above k->known, a tail that is not zero.
 * dst->struct_size is k->known afterwards. */
attn_status attn_struct_load(const attn_struct_kind *k, void *dst,
                             const void *src);

/* Writes the library's full struct src into the first struct_size bytes
 * of the caller's dst (a read-back such as attn_layer_get_config), keeping
 * dst->struct_size. */
attn_status attn_struct_store(const attn_struct_kind *k, void *dst,
                              const void *src);

#endif
