/* SPDX-License-Identifier: MIT */
/* What the CPU offers, detected once per process, and how many CPUs the
 * process may use. Every run-time choice of kernels starts here. */
#ifndef ATTN_COMMON_CPU_H
#define ATTN_COMMON_CPU_H

#include "attn/attn.h"

#include <stdbool.h>
#include <stdint.h>

typedef struct {
  /* The CPU and the OS support AVX2 and FMA (XGETBV included). */
  bool avx2_fma;
  /* The CPU and the OS support AVX-512F (XGETBV included), besides the
   * above. */
  bool avx512f;
  /* One core's L2 cache in bytes (1 MiB when it cannot be read). */
  int64_t l2_bytes;
} attn_cpu_info;

/* Detected on first use (thread-safe), the same for the whole process. */
const attn_cpu_info *attn_cpu(void);

/* One turn of a busy-wait loop: tells the CPU the thread is spinning
 * (x86 pause, Arm yield), which frees resources for its sibling
 * hyperthread and saves power; nothing elsewhere. */
static inline void attn_cpu_relax(void) {
#if defined(__GNUC__) && (defined(__x86_64__) || defined(__i386__))
  __builtin_ia32_pause();
#elif defined(__GNUC__) && defined(__aarch64__)
  __asm__ __volatile__("yield");
#endif
}

#endif
