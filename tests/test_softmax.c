/* SPDX-License-Identifier: MIT */
/* The softmax kernels: each vector implementation this CPU can run
 * (portable, and AVX2/FMA when available) against plain double-precision
 * arithmetic. Measures and bounds the exp error over the range the softmax
 * uses it on (x - max in [-87.34, 0]), checks the exact cases (-inf gives 0,
 * tails of every length), the transpose and scale helpers, the mask tile
 * and the online softmax over several tiles against a whole-row softmax. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "common/cpu.h"
#include "core/simd.h"
#include "core/softmax.h"

#include <float.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Implementations to test: portable always, AVX2 when the CPU has it. */
static int implementations(const attn_simd **ops) {
  int n = 0;
  ops[n++] = attn_simd_portable();
  if (attn_simd_avx2() && attn_cpu()->avx2_fma)
    ops[n++] = attn_simd_avx2();
  return n;
}

static uint64_t rng = 88172645463325252u;
static double unit(void) { /* [0, 1) */
  rng ^= rng << 13;
  rng ^= rng >> 7;
  rng ^= rng << 17;
  return (double)(rng >> 11) / 9007199254740992.0;
}

static void *xmalloc(size_t n) {
  void *p = malloc(n ? n : 1);
  assert_non_null(p);
  return p;
}

/* Where the library's dispatch points: the best table of the CPU under
 * the ATTN_SIMD cap, the same on every call, and the portable one for
 * shapes the vector kernels do not take. */
static void test_dispatch(void **state) {
  (void)state;
  const attn_simd *v = attn_simd_get();
  assert_non_null(v);
  const char *cap = getenv("ATTN_SIMD");
  const attn_simd *want = attn_simd_portable();
  if (!(cap && strcmp(cap, "portable") == 0)) {
    if (attn_simd_avx2() && attn_cpu()->avx2_fma)
      want = attn_simd_avx2();
    if (attn_simd_avx512() && attn_cpu()->avx512f &&
        !(cap && strcmp(cap, "avx2") == 0))
      want = attn_simd_avx512();
  }
  assert_ptr_equal(v, want);
  assert_ptr_equal(attn_simd_get(), v);
  assert_ptr_equal(attn_simd_for_head(64), v);
  assert_ptr_equal(attn_simd_for_head(12), attn_simd_portable());
  assert_ptr_equal(attn_simd_for_rows(8, 512), v);
  assert_ptr_equal(attn_simd_for_rows(9, 512), attn_simd_portable());
  assert_ptr_equal(attn_simd_for_rows(1, 20), attn_simd_portable());
  print_message("dispatch: %s\n", v->name);
}

/* exp over the softmax's range: relative error against exp() in double,
 * on a dense grid plus random points, with shift 0 and with a shift. */
static void test_exp_accuracy(void **state) {
  (void)state;
  const attn_simd *ops[2];
  int nops = implementations(ops);
  const double lo = -87.33654; /* ln(FLT_MIN): below, results may be 0 */
  const int64_t n = 1 << 21;
  float *x = xmalloc((size_t)n * sizeof(float));
  float *y = xmalloc((size_t)n * sizeof(float));
  for (int k = 0; k < nops; k++) {
    for (int shifted = 0; shifted < 2; shifted++) {
      float shift = shifted ? 3.25f : 0.0f;
      for (int64_t i = 0; i < n; i++) {
        double t = i < n / 2 ? lo * (double)i / (double)(n / 2) : lo * unit();
        x[i] = (float)t + shift;
      }
      memcpy(y, x, (size_t)n * sizeof(float));
      double worst = 0, worst_x = 0, worst_ulps = 0;
      /* Rows of a few thousand keys, as the core passes them. */
      const int64_t row = 4099;
      for (int64_t i0 = 0; i0 < n; i0 += row) {
        int64_t len = n - i0 < row ? n - i0 : row;
        float sum = ops[k]->exp_sum(y + i0, len, shift);
        double sum_d = 0, want_sum = 0;
        for (int64_t i = i0; i < i0 + len; i++) {
          /* The exact argument the kernel sees: x - shift in float. */
          double t = (double)(x[i] - shift);
          double want = exp(t);
          want_sum += want;
          sum_d += y[i];
          double rel = fabs((double)y[i] - want) / want;
          if (rel > worst) {
            worst = rel;
            worst_x = t;
          }
          /* One ulp of a float near want: 2^(exponent - 23). */
          int e;
          frexp(want, &e);
          double ulps = fabs((double)y[i] - want) / ldexp(1.0, e - 24);
          worst_ulps = ulps > worst_ulps ? ulps : worst_ulps;
        }
        /* The returned sum is the sum of the values written. */
        assert_true(fabs((double)sum - sum_d) <= 1e-5 * sum_d);
        assert_true(fabs((double)sum - want_sum) <= 1e-5 * want_sum);
      }
      print_message("%s exp, shift %g, %lld points in [%g, 0]: max relative "
                    "error %.3g at x = %.6g, max %.2f ulp\n",
                    ops[k]->name, (double)shift, (long long)n, lo, worst,
                    worst_x, worst_ulps);
      /* Within 2 ulp of the result, relative error under 2 FLT_EPSILON. */
      assert_true(worst < 2.0 * FLT_EPSILON);
      assert_true(worst_ulps <= 2.0);
    }
  }
  free(x);
  free(y);
}

/* Below the range: tiny or zero, never negative or NaN; -inf exactly 0;
 * every tail length; values past n untouched. */
static void test_exp_edges(void **state) {
  (void)state;
  const attn_simd *ops[2];
  int nops = implementations(ops);
  for (int k = 0; k < nops; k++) {
    float x[64];
    for (int n = 0; n <= 40; n++) {
      for (int i = 0; i < 64; i++)
        x[i] = i % 3 == 0 ? -INFINITY : (i % 3 == 1 ? -200.0f : -1.0f);
      x[n] = 123.0f; /* guard */
      float sum = ops[k]->exp_sum(x, n, 0.0f);
      double want = 0;
      for (int i = 0; i < n; i++) {
        if (i % 3 == 0)
          assert_true(x[i] == 0.0f && !signbit(x[i]));
        else if (i % 3 == 1)
          assert_true(x[i] >= 0.0f && x[i] <= FLT_MIN);
        else
          assert_true(fabsf(x[i] - expf(-1.0f)) <= 2 * FLT_EPSILON);
        want += x[i];
      }
      assert_true(x[n] == 123.0f);
      assert_true(fabs(sum - want) <= 1e-6 * (want + 1e-30));
    }
    /* exp(0) with the shift equal to the value: exactly 1. */
    float one[9] = {5, 5, 5, 5, 5, 5, 5, 5, 5};
    assert_true(ops[k]->exp_sum(one, 9, 5.0f) == 9.0f);
    for (int i = 0; i < 9; i++)
      assert_true(one[i] == 1.0f);
  }
}

static void test_max(void **state) {
  (void)state;
  const attn_simd *ops[2];
  int nops = implementations(ops);
  float x[100];
  for (int k = 0; k < nops; k++) {
    assert_true(ops[k]->max(x, 0) == -INFINITY);
    for (int n = 1; n <= 100; n++)
      for (int pos = 0; pos < n; pos += 7) {
        for (int i = 0; i < n; i++)
          x[i] = (float)(unit() * 10.0 - 20.0);
        x[pos] = 1.5f;
        if (n > 2)
          x[(pos + 1) % n] = -INFINITY;
        assert_true(ops[k]->max(x, n) == 1.5f);
      }
    for (int i = 0; i < 20; i++)
      x[i] = -INFINITY;
    assert_true(ops[k]->max(x, 20) == -INFINITY);
  }
}

static void test_scale_transpose(void **state) {
  (void)state;
  const attn_simd *ops[2];
  int nops = implementations(ops);
  float src[40 * 37], dst[37 * 45], y[100], z[100];
  for (int i = 0; i < 40 * 37; i++)
    src[i] = (float)i;
  for (int k = 0; k < nops; k++) {
    for (int rows = 0; rows <= 37; rows += (rows < 18 ? 1 : 5))
      for (int cols = 0; cols <= 37; cols += (cols < 18 ? 1 : 5)) {
        for (int i = 0; i < 37 * 45; i++)
          dst[i] = -1.0f;
        ops[k]->transpose(src, 40, rows, cols, dst, 45);
        for (int c = 0; c < 37; c++)
          for (int r = 0; r < 45; r++) {
            float want = r < rows && c < cols ? src[r * 40 + c] : -1.0f;
            assert_true(dst[c * 45 + r] == want);
          }
      }
    for (int n = 0; n < 100; n++) {
      for (int i = 0; i < 100; i++)
        y[i] = z[i] = (float)(unit() - 0.5);
      ops[k]->scale(y, n, 0.37f);
      for (int i = 0; i < 100; i++)
        assert_true(y[i] == (i < n ? z[i] * 0.37f : z[i]));
    }
  }
}

/* Mask tile: out-of-range keys, padding and bias, on a tile starting at
 * key j0. */
static void test_mask_tile(void **state) {
  (void)state;
  enum { R = 3, C = 10, LD = 12 };
  float s[R * LD], bias[R * 20];
  int64_t lo[R] = {0, 4, 7}, hi[R] = {20, 8, 7};
  uint8_t pad[20] = {0};
  pad[5] = pad[10] = 1;
  for (int i = 0; i < R * 20; i++)
    bias[i] = (float)i * 0.5f;
  for (int i = 0; i < R * LD; i++)
    s[i] = 1.0f;
  int64_t j0 = 3;
  attn_mask_tile(s, LD, R, C, j0, lo, hi, pad, bias, 20);
  for (int r = 0; r < R; r++)
    for (int c = 0; c < C; c++) {
      int64_t j = j0 + c;
      float got = s[r * LD + c];
      if (j < lo[r] || j >= hi[r] || pad[j])
        assert_true(got == -INFINITY);
      else
        assert_true(got == 1.0f + bias[r * 20 + j]);
    }
  for (int r = 0; r < R; r++) /* padding columns untouched */
    assert_true(s[r * LD + C] == 1.0f && s[r * LD + C + 1] == 1.0f);
}

/* Online softmax over tiles of several widths = whole-row softmax, in
 * double. Row 0 sees its maximum late (rescaling), row 1 early, row 2 never
 * sees a key, row 3 only in its last tile. */
static void test_online_softmax(void **state) {
  (void)state;
  enum { R = 4, N = 70, D = 5 };
  double scores[R][N], v[N][D];
  for (int r = 0; r < R; r++)
    for (int j = 0; j < N; j++)
      scores[r][j] = unit() * 8.0 - 4.0;
  scores[0][N - 3] = 12.0;
  scores[1][1] = 9.0;
  for (int j = 0; j < N; j++) {
    scores[2][j] = -INFINITY;
    if (j < 60)
      scores[3][j] = -INFINITY;
    for (int d = 0; d < D; d++)
      v[j][d] = unit() - 0.5;
  }
  const int widths[] = {1, 7, 16, 33, 70};
  for (int w = 0; w < 5; w++) {
    int kb = widths[w];
    float m[R], l[R], acc[R * D] = {0}, s[R * 70];
    for (int r = 0; r < R; r++) {
      m[r] = -INFINITY;
      l[r] = 0.0f;
    }
    for (int j0 = 0; j0 < N; j0 += kb) {
      int n = N - j0 < kb ? N - j0 : kb;
      for (int r = 0; r < R; r++)
        for (int j = 0; j < n; j++)
          s[r * kb + j] = (float)scores[r][j0 + j];
      int64_t live = attn_softmax_step(s, kb, R, n, m, l, acc, D, D);
      int64_t want_live = 0;
      for (int r = 0; r < R; r++) {
        bool any = false;
        for (int j = 0; j < n; j++)
          any |= scores[r][j0 + j] != -INFINITY;
        want_live += any;
        if (!any)
          for (int j = 0; j < n; j++)
            assert_true(s[r * kb + j] == 0.0f);
      }
      assert_int_equal(live, want_live);
      for (int r = 0; r < R; r++)
        for (int d = 0; d < D; d++)
          for (int j = 0; j < n; j++)
            acc[r * D + d] += s[r * kb + j] * (float)v[j0 + j][d];
    }
    for (int r = 0; r < R; r++) {
      double mx = -INFINITY, sum = 0;
      for (int j = 0; j < N; j++)
        mx = scores[r][j] > mx ? scores[r][j] : mx;
      if (mx == -INFINITY) {
        assert_true(m[r] == -INFINITY && l[r] == 0.0f);
        for (int d = 0; d < D; d++)
          assert_true(acc[r * D + d] == 0.0f);
        continue;
      }
      assert_true(m[r] == (float)mx);
      for (int j = 0; j < N; j++)
        sum += exp(scores[r][j] - mx);
      assert_true(fabs(l[r] - sum) <= 1e-5 * sum);
      for (int d = 0; d < D; d++) {
        double want = 0;
        for (int j = 0; j < N; j++)
          want += exp(scores[r][j] - mx) / sum * v[j][d];
        assert_true(fabs(acc[r * D + d] / l[r] - want) <= 1e-5);
      }
    }
  }
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_dispatch),
      cmocka_unit_test(test_exp_accuracy),
      cmocka_unit_test(test_exp_edges),
      cmocka_unit_test(test_max),
      cmocka_unit_test(test_scale_transpose),
      cmocka_unit_test(test_mask_tile),
      cmocka_unit_test(test_online_softmax),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
