/* SPDX-License-Identifier: MIT */
/* Where the bytes of a weight file come from (the caller's memory or a
 * file read with pread()), and the small helpers reading and writing
 * share. */
#ifndef ATTN_IO_ST_FILE_H
#define ATTN_IO_ST_FILE_H

#include "attn/attn.h"

#include <stddef.h>
#include <stdint.h>

typedef struct {
  const unsigned char *mem; /* whole file in memory, or NULL for fd */
  int fd;
  uint64_t size;
} st_source;

/* Opens the regular file at path for reading into *src (close src->fd
 * afterwards). Opening never blocks: a FIFO or a device is refused, not
 * waited on. */
attn_status attn_st_open(const char *path, st_source *src);

/* Reads len bytes at offset of the source into dst. */
attn_status attn_st_read_at(const st_source *src, uint64_t offset, size_t len,
                            void *dst);

/* The message of errno value err, thread-safely, in buf. */
const char *attn_st_errno_text(int err, char *buf, size_t size);

/* a followed by b in new memory (free() it), or NULL when out of memory. */
char *attn_st_concat(const char *a, const char *b);

#endif
