/* SPDX-License-Identifier: MIT */
/* CPU features and the CPUs a process may use. */
#define _GNU_SOURCE /* sched_getaffinity, CPU_COUNT */
#include "common/cpu.h"

#include <pthread.h>
#include <sched.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

static attn_cpu_info info;
static pthread_once_t info_once = PTHREAD_ONCE_INIT;

static bool detect_avx2_fma(void) {
#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
  /* The compiler's checks include the OS enabling the AVX register state
   * (XGETBV), not just the CPUID bits. */
  __builtin_cpu_init();
  return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
#else
  return false;
#endif
}

static bool detect_avx512f(void) {
#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
  /* As above: the check includes the OS enabling the ZMM state. */
  __builtin_cpu_init();
  return __builtin_cpu_supports("avx512f");
#else
  return false;
#endif
}

static int64_t detect_l2(void) {
  long n = -1;
#ifdef _SC_LEVEL2_CACHE_SIZE
  n = sysconf(_SC_LEVEL2_CACHE_SIZE);
#endif
  /* Unknown, or implausible: assume 1 MiB. */
  return n >= (64 << 10) && n <= (64 << 20) ? n : (1 << 20);
}

static void detect(void) {
  info.avx2_fma = detect_avx2_fma();
  info.avx512f = info.avx2_fma && detect_avx512f();
  info.l2_bytes = detect_l2();
}

const attn_cpu_info *attn_cpu(void) {
  pthread_once(&info_once, detect);
  return &info;
}

/* CPU count ------------------------------------------------------------- */

/* ceil(quota / period) of one cgroup v2 directory's cpu.max, or 0 when it
 * sets no limit ("max") or cannot be read. */
static int64_t quota_cpus(const char *dir) {
  char path[4200];
  snprintf(path, sizeof path, "/sys/fs/cgroup%s/cpu.max", dir);
  FILE *f = fopen(path, "r");
  if (!f)
    return 0;
  char quota[32] = "";
  long long period = 0;
  int got = fscanf(f, "%31s %lld", quota, &period);
  fclose(f);
  if (got != 2 || strcmp(quota, "max") == 0 || period <= 0)
    return 0;
  long long q = 0;
  if (sscanf(quota, "%lld", &q) != 1 || q <= 0)
    return 0;
  return (int64_t)((q + period - 1) / period);
}

/* The smallest quota of the process's cgroup v2 and its ancestors; 0 when
 * none applies. */
static int64_t cgroup_cpus(void) {
  FILE *f = fopen("/proc/self/cgroup", "r");
  if (!f)
    return 0;
  char line[4096], dir[4096] = "";
  bool v2 = false;
  while (fgets(line, sizeof line, f))
    if (strncmp(line, "0::", 3) == 0) {
      size_t n = strcspn(line + 3, "\n");
      if (n < sizeof dir) {
        memcpy(dir, line + 3, n);
        dir[n] = '\0';
        v2 = true;
      }
    }
  fclose(f);
  int64_t best = 0;
  if (!v2)
    return 0;
  if (strcmp(dir, "/") == 0)
    dir[0] = '\0';
  for (;;) { /* "/a/b", then "/a", then "" (the root) */
    int64_t q = quota_cpus(dir);
    if (q > 0 && (best == 0 || q < best))
      best = q;
    char *slash = strrchr(dir, '/');
    if (!slash)
      break;
    *slash = '\0';
  }
  return best;
}

int32_t attn_cpu_count(void) {
  int64_t n = 0;
  cpu_set_t set;
  if (sched_getaffinity(0, sizeof set, &set) == 0)
    n = CPU_COUNT(&set);
  if (n <= 0) {
    long online = sysconf(_SC_NPROCESSORS_ONLN);
    n = online > 0 ? online : 1;
  }
  int64_t q = cgroup_cpus();
  if (q > 0 && q < n)
    n = q;
  return (int32_t)(n < ATTN_MAX_THREADS ? n : ATTN_MAX_THREADS);
}
