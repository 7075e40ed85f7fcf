/* CPU feature detection for the run-time choice of vector kernels. */
#include "kernels.h"

#include <pthread.h>
#include <unistd.h>

bool attn_cpu_has_avx2_fma(void) {
#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
  /* The compiler's checks include the OS enabling the AVX register state
   * (XGETBV), not just the CPUID bits. */
  __builtin_cpu_init();
  return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
#else
  return false;
#endif
}

static int64_t l2_bytes;
static pthread_once_t l2_once = PTHREAD_ONCE_INIT;

static void read_l2(void) {
  long n = -1;
#ifdef _SC_LEVEL2_CACHE_SIZE
  n = sysconf(_SC_LEVEL2_CACHE_SIZE);
#endif
  /* Unknown, or implausible: assume 1 MiB. */
  l2_bytes = n >= (64 << 10) && n <= (64 << 20) ? n : (1 << 20);
}

int64_t attn_cpu_l2_bytes(void) {
  pthread_once(&l2_once, read_l2);
  return l2_bytes;
}
