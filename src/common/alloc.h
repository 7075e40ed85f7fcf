/* SPDX-License-Identifier: MIT */
/* Allocation of large buffers that are streamed through (weights, KV
 * caches). */
#ifndef ATTN_COMMON_ALLOC_H
#define ATTN_COMMON_ALLOC_H

#include <stddef.h>

/* malloc(bytes), but a buffer of at least one huge page (2 MiB) starts on
 * a huge-page boundary and, where the kernel offers transparent huge
 * pages on request, asks for them (a hint; nothing else changes). Free
 * with free(). NULL when out of memory. */
void *attn_alloc_large(size_t bytes);

/* attn_alloc_large() with the bytes cleared, like calloc(n, size); NULL
 * also when n * size overflows. */
void *attn_calloc_large(size_t n, size_t size);

#endif
