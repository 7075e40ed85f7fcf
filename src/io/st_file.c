/* SPDX-License-Identifier: MIT */
/* Sources of weight-file bytes (st_file.h). */
#define _FILE_OFFSET_BITS 64

#include "io/st_file.h"

#include "common/checked.h"
#include "common/error.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

const char *attn_st_errno_text(int err, char *buf, size_t size) {
  if (strerror_r(err, buf, size) != 0)
    snprintf(buf, size, "error %d", err);
  return buf;
}

char *attn_st_concat(const char *a, const char *b) {
  size_t na = strlen(a), nb = strlen(b), total;
  if (!attn_addsz(na, nb, &total) || !attn_addsz(total, 1, &total))
    return NULL;
  char *s = malloc(total);
  if (s) {
    memcpy(s, a, na);
    memcpy(s + na, b, nb + 1);
  }
  return s;
}

attn_status attn_st_open(const char *path, st_source *src) {
  char msg[128];
  int fd;
  /* O_NONBLOCK: opening a FIFO for reading would otherwise wait for a
   * writer. It is cleared again once the file is known to be regular. */
  do
    fd = open(path, O_RDONLY | O_CLOEXEC | O_NONBLOCK);
  while (fd < 0 && errno == EINTR);
  if (fd < 0)
    return attn_fail(ATTN_ERR_IO, "cannot open weight file '%.300s': %s", path,
                     attn_st_errno_text(errno, msg, sizeof msg));
  struct stat sb;
  attn_status st = ATTN_OK;
  if (fstat(fd, &sb) != 0)
    st = attn_fail(ATTN_ERR_IO, "cannot stat weight file '%.300s': %s", path,
                   attn_st_errno_text(errno, msg, sizeof msg));
  else if (!S_ISREG(sb.st_mode))
    st = attn_fail(ATTN_ERR_IO, "weight file '%.300s' is not a regular file",
                   path);
  int flags = st == ATTN_OK ? fcntl(fd, F_GETFL) : 0;
  if (st == ATTN_OK &&
      (flags < 0 || fcntl(fd, F_SETFL, flags & ~O_NONBLOCK) != 0))
    st = attn_fail(ATTN_ERR_IO, "cannot read weight file '%.300s': %s", path,
                   attn_st_errno_text(errno, msg, sizeof msg));
  if (st != ATTN_OK) {
    close(fd);
    return st;
  }
  *src = (st_source){.mem = NULL, .fd = fd, .size = (uint64_t)sb.st_size};
  return ATTN_OK;
}

attn_status attn_st_read_at(const st_source *src, uint64_t offset, size_t len,
                            void *dst) {
  if (src->mem) {
    memcpy(dst, src->mem + offset, len);
    return ATTN_OK;
  }
  unsigned char *out = dst;
  while (len > 0) {
    size_t want = len > ((size_t)1 << 30) ? (size_t)1 << 30 : len;
    ssize_t got = pread(src->fd, out, want, (off_t)offset);
    if (got < 0 && errno == EINTR)
      continue;
    if (got < 0) {
      char msg[128];
      return attn_fail(ATTN_ERR_IO, "cannot read the weight file: %s",
                       attn_st_errno_text(errno, msg, sizeof msg));
    }
    if (got == 0)
      return attn_fail(ATTN_ERR_IO,
                       "weight file ended at byte %" PRIu64 " while being "
                       "read (was it changed meanwhile?)",
                       offset);
    out += got;
    offset += (uint64_t)got;
    len -= (size_t)got;
  }
  return ATTN_OK;
}
