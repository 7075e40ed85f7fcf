/* SPDX-License-Identifier: MIT */
/* How many threads a piece of work gets: one cost model for every parallel
 * loop of the library (docs/PERFORMANCE.md has the measurements). */
#ifndef ATTN_COMMON_POLICY_H
#define ATTN_COMMON_POLICY_H

#include <stdint.h>

/* Estimated time on one core, in nanoseconds, of `flops` floating-point
 * operations in BLAS-like loops, and of streaming `bytes` from memory. */
double attn_cost_flops(double flops);
double attn_cost_bytes(double bytes);

/* Threads worth using for `items` independent items that take `ns` on one
 * core in all: at most max and items, and each thread beyond the first
 * must get enough work to pay for waking it. At least 1. */
int32_t attn_threads_for(int32_t max, int64_t items, double ns);

#endif
