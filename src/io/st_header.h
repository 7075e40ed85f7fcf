/* SPDX-License-Identifier: MIT */
/* The header of a safetensors file: its JSON text parsed into an index of
 * tensor entries, each checked on its own (dtype, shape, data_offsets
 * inside the data) and all together (unique names, data tiled without
 * overlap or gap). */
#ifndef ATTN_IO_ST_HEADER_H
#define ATTN_IO_ST_HEADER_H

#include "attn/attn.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef struct {
  const char *name;  /* in the header's arena */
  const char *dtype; /* in the header's arena */
  size_t dims_at;    /* first dimension in the header's dims */
  int rank;
  uint64_t begin, end; /* data_offsets, relative to the data section */
} st_entry;

typedef struct {
  char *arena;       /* decoded strings */
  st_entry *entries; /* sorted by name */
  size_t count;
  uint64_t *dims; /* every entry's shape */
  size_t ndims, dims_cap;
  uint64_t data_start; /* 8 + header length */
  uint64_t data_size;
} st_header;

/* Parses and checks the header text (n bytes, not NUL-terminated) of a
 * file of file_size bytes. On success *h owns the index; free it with
 * attn_st_header_free(). */
attn_status attn_st_header_parse(const char *text, size_t n, uint64_t file_size,
                                 st_header *h);

void attn_st_header_free(st_header *h);

/* The entry named `name`, or NULL. */
const st_entry *attn_st_header_find(const st_header *h, const char *name);

/* Element size of a dtype of the format, 0 for sub-byte or unknown ones. */
int attn_st_dtype_size(const char *dtype);

/* "[3, 4]" (at most size bytes, shortened with "..." when long). */
const char *attn_st_shape_text(const st_header *h, const st_entry *e, char *buf,
                               size_t size);

#endif
