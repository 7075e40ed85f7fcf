/* SPDX-License-Identifier: MIT */
/* Timing helpers shared by the benchmark programs. */
#ifndef ATTN_BENCH_UTIL_H
#define ATTN_BENCH_UTIL_H

#include <stddef.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

/* Monotonic wall-clock time in seconds. */
static inline double now(void) {
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return (double)t.tv_sec + 1e-9 * (double)t.tv_nsec;
}

/* qsort comparator for doubles, ascending. */
static inline int cmp_double(const void *a, const void *b) {
  double x = *(const double *)a, y = *(const double *)b;
  return (x > y) - (x < y);
}

/* Median of v[0 .. n-1] (n > 0); sorts v in place. */
static inline double median(double *v, int n) {
  qsort(v, (size_t)n, sizeof *v, cmp_double);
  return n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

/* Sum of x[0 .. n-1], to read memory at full bandwidth: four independent
 * eight-wide sums (GCC and Clang vector extension), so the loop is bound
 * by the loads rather than by the latency of one chain of additions (a
 * plain loop of scalar sums measured 3-5% below this). */
typedef float bench_f8 __attribute__((vector_size(32)));

static inline float bench_sum(const float *x, size_t n) {
  bench_f8 a0 = {0}, a1 = {0}, a2 = {0}, a3 = {0};
  size_t whole = n - n % 32;
  for (size_t i = 0; i < whole; i += 32) {
    bench_f8 t0, t1, t2, t3;
    memcpy(&t0, x + i, sizeof t0);
    memcpy(&t1, x + i + 8, sizeof t1);
    memcpy(&t2, x + i + 16, sizeof t2);
    memcpy(&t3, x + i + 24, sizeof t3);
    a0 += t0;
    a1 += t1;
    a2 += t2;
    a3 += t3;
  }
  bench_f8 a = a0 + a1 + a2 + a3;
  float s = 0;
  for (int k = 0; k < 8; k++)
    s += a[k];
  for (size_t i = whole; i < n; i++)
    s += x[i];
  return s;
}

#endif
