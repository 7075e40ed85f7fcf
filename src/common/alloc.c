/* SPDX-License-Identifier: MIT */
/* Large buffers on huge pages (alloc.h).
 *
 * A decoding step reads the layer's weights and a few KiB in each cache
 * slot (one slot per 4 KiB page for E = 512): with small pages much of a
 * step goes to TLB misses. On huge pages a 4 MiB cache streamed 27% faster,
 * and weights (over a third of a B = 1 step's bytes at 4096 tokens) at
 * about 8.5 against 10 GB/s before they moved there (docs/DECODING.md). */
/* madvise(MADV_HUGEPAGE) is a Linux extension. */
#if defined(__linux__) && !defined(_DEFAULT_SOURCE)
#define _DEFAULT_SOURCE
#endif

#include "common/alloc.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#if defined(__linux__)
#include <sys/mman.h>
#endif

#define HUGE_PAGE ((size_t)2 << 20)

void *attn_alloc_large(size_t bytes) {
#if defined(__linux__) && defined(MADV_HUGEPAGE)
  if (bytes >= HUGE_PAGE) {
    void *mem = NULL;
    if (posix_memalign(&mem, HUGE_PAGE, bytes) != 0)
      return NULL;
    (void)madvise(mem, bytes / HUGE_PAGE * HUGE_PAGE, MADV_HUGEPAGE);
    return mem;
  }
#endif
  return malloc(bytes ? bytes : 1);
}

void *attn_calloc_large(size_t n, size_t size) {
  if (size && n > SIZE_MAX / size)
    return NULL;
  void *mem = attn_alloc_large(n * size);
  if (mem)
    memset(mem, 0, n * size);
  return mem;
}
