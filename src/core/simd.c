/* SPDX-License-Identifier: MIT */
/* The choice of vector kernels (simd.h): made once, from attn_cpu(). Both
 * tables compute the same quantities; where they round differently the
 * tests bound the difference (tests/test_softmax.c), and each table is
 * deterministic, so results do not depend on the thread count. */
#include "core/simd.h"

#include "common/cpu.h"

#include <pthread.h>
#include <stdlib.h>
#include <string.h>

static const attn_simd *best;
static pthread_once_t best_once = PTHREAD_ONCE_INIT;

static bool allowed(const char *cap, const char *table) {
  if (!cap)
    return true;
  if (strcmp(cap, "portable") == 0)
    return false;
  return strcmp(cap, "avx2") != 0 || strcmp(table, "avx512") != 0;
}

static void choose(void) {
  const attn_cpu_info *cpu = attn_cpu();
  const char *cap = getenv("ATTN_SIMD");
  const attn_simd *avx2 = attn_simd_avx2(), *avx512 = attn_simd_avx512();
  best = attn_simd_portable();
  if (avx2 && cpu->avx2_fma && allowed(cap, "avx2"))
    best = avx2;
  if (avx512 && cpu->avx512f && allowed(cap, "avx512"))
    best = avx512;
}

const attn_simd *attn_simd_get(void) {
  pthread_once(&best_once, choose);
  return best;
}

const attn_simd *attn_simd_for_head(int64_t head_dim) {
  return head_dim % 8 == 0 ? attn_simd_get() : attn_simd_portable();
}

const attn_simd *attn_simd_for_rows(int64_t M, int64_t K) {
  return M <= 8 && K % 8 == 0 ? attn_simd_get() : attn_simd_portable();
}
