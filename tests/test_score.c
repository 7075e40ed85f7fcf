/* SPDX-License-Identifier: MIT */
/* The score features of the attention kernels (core/score.c): the
 * soft-capping's own tanh against libm's in double, and the ALiBi ramp of
 * consecutive keys against the bias from explicit positions. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "core/score.h"

#include <math.h>
#include <stdio.h>

static void test_softcap_accuracy(void **state) {
  (void)state;
  enum { N = 20001 };
  static float s[N];
  const float caps[] = {0.5f, 30.0f, 50.0f};
  for (int c = 0; c < 3; c++) {
    float cap = caps[c];
    attn_score_fx fx = {.softcap = cap};
    for (int i = 0; i < N; i++) /* scores from -20 cap to 20 cap */
      s[i] = (float)((i - N / 2) * (40.0 / N)) * cap;
    s[0] = 1e-30f;
    s[1] = -3e-8f;
    s[2] = 0.0f;
    float in[3] = {s[0], s[1], s[2]};
    attn_score_rows(&fx, 0, NULL, 0, NULL, 0, s, N, 1, N);
    double worst = 0;
    for (int i = 0; i < N; i++) {
      double x =
          i < 3 ? in[i] : (double)(float)((i - N / 2) * (40.0 / N)) * cap;
      double want = cap * tanh(x / cap);
      double err = fabs((double)s[i] - want);
      /* 2e-7 of the cap, and half an ulp of the result. */
      double tol = 2.5e-7 * cap + 0.5 * fabs(want) * 0x1p-23;
      if (err > tol)
        fail_msg("softcap %g of %g: got %.9g want %.9g", cap, x, s[i], want);
      worst = fmax(worst, err / cap);
    }
    assert_true(s[0] > 0.0f && s[2] == 0.0f && s[1] < 0.0f);
    printf("softcap %g: largest error %.3g of the cap\n", cap, worst);
  }
}

static void test_alibi_ramp(void **state) {
  (void)state;
  enum { COLS = 37 };
  const float slopes[2] = {0.25f, 0.0625f};
  int64_t kpos[COLS];
  for (int j = 0; j < COLS; j++)
    kpos[j] = 100 + j;
  for (int sym = 0; sym < 2; sym++) {
    attn_score_fx fx = {.slopes = slopes, .symmetric = sym};
    float a[2 * COLS] = {0}, b[2 * COLS] = {0};
    int64_t qpos[2] = {110, 111};
    /* Rows 0 and 1 are queries at 110 and 111; keys from 100 on. */
    attn_score_rows(&fx, 1, NULL, 110, NULL, 100, a, COLS, 2, COLS);
    attn_score_rows(&fx, 1, qpos, 0, kpos, 0, b, COLS, 2, COLS);
    for (int r = 0; r < 2; r++)
      for (int j = 0; j < COLS; j++) {
        double d = (double)(100 + j) - (double)(110 + r);
        double want = sym ? -0.0625 * fabs(d) : 0.0625 * d;
        assert_float_equal(a[r * COLS + j], want, 1e-6);
        assert_float_equal(b[r * COLS + j], want, 1e-6);
      }
  }
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_softcap_accuracy),
      cmocka_unit_test(test_alibi_ramp),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
