/* SPDX-License-Identifier: MIT */
/* The attention core on every path this CPU has: the cblas core (portable
 * table), the packed core on AVX2 and on AVX-512 kernels. Each runs the
 * core directly (internal interface, tiled.h) on projected queries, keys
 * and values laid out as strided head views, and is compared with a
 * double-precision attention written here from the documented semantics
 * (the mask comes from ref_mask_matrix, tests/ref.c). Shapes cover panel
 * tails (query counts that are no multiple of a panel), head sizes that
 * are no multiple of the kernels' row blocks, several key blocks, grouped
 * kv heads, a key buffer with spare capacity, every mask, empty rows and
 * both kinds of attention weights, with keys and values packed per work
 * item and once per head. Each path must also give the same bits on 1 and
 * 2 threads. The core is named as a caller names it (attn_options.core),
 * so the packed tables run every shape, few query rows included; the rule
 * that turns a caller's choice into a path is checked on its own. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>

#include <cmocka.h>

#include "common/cpu.h"
#include "common/runtime.h"
#include "core/choice.h"
#include "core/packed.h"
#include "core/simd.h"
#include "core/tiled.h"
#include "ref.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* The paths to test: the cblas core always, then each packed table the
 * CPU can run. */
static int paths(const attn_simd **v) {
  int n = 0;
  v[n++] = attn_simd_portable();
  if (attn_simd_avx2() && attn_cpu()->avx2_fma)
    v[n++] = attn_simd_avx2();
  if (attn_simd_avx512() && attn_cpu()->avx512f)
    v[n++] = attn_simd_avx512();
  return n;
}

typedef struct {
  int64_t B, Lq, Lk, H, Hkv, hd;
  int64_t kv_rows;   /* rows per batch row of k and v (>= Lk) */
  int64_t qb, kb;    /* 0: the library's blocks */
  bool want_weights; /* the weights are asked for, in mode `weights` */
  int32_t weights;   /* ATTN_WEIGHTS_PER_HEAD (0) or ATTN_WEIGHTS_AVERAGE */
  attn_mask mask;
} shape;

/* Inputs of a case: q [B*Lq, ldq], k and v [B*kv_rows, ldkv] side by side
 * in one buffer (ldkv = 2 * Hkv * hd + 3: odd strides, as views of a
 * bigger buffer). */
typedef struct {
  float *q, *kv;
  int64_t ldq, ldkv;
} inputs;

static inputs make_inputs(const shape *s, ref_rng *r) {
  inputs in;
  in.ldq = s->H * s->hd + 5;
  in.ldkv = 2 * s->Hkv * s->hd + 3;
  in.q = ref_random(r, s->B * s->Lq * in.ldq, -1.0, 1.0);
  in.kv = ref_random(r, s->B * s->kv_rows * in.ldkv, -1.0, 1.0);
  return in;
}

/* The reference: per batch row and head, softmax(scale q k^T + bias) v
 * over the visible keys, and the weights as the library lays them out. */
static void reference(const shape *s, const inputs *in, double *ctx,
                      double *w) {
  int64_t Lq = s->Lq, Lk = s->Lk, hd = s->hd, KV = s->Hkv * hd;
  double scale = 1.0 / sqrt((double)hd);
  unsigned char *vis = ref_xmalloc((size_t)(Lq * Lk));
  double *add = ref_xmalloc((size_t)(Lq * Lk) * sizeof(double));
  double *p = ref_xmalloc((size_t)Lk * sizeof(double));
  double empty = s->mask.empty_rows == ATTN_EMPTY_ROW_NAN ? NAN : 0.0;
  if (w && s->weights == ATTN_WEIGHTS_AVERAGE)
    memset(w, 0, (size_t)(s->B * Lq * Lk) * sizeof(double));
  for (int64_t b = 0; b < s->B; b++)
    for (int64_t h = 0; h < s->H; h++) {
      ref_mask_matrix(&s->mask, Lq, Lk, b, h, vis, add);
      int64_t g = h / (s->H / s->Hkv);
      for (int64_t i = 0; i < Lq; i++) {
        const float *q = in->q + (b * Lq + i) * in->ldq + h * hd;
        double top = -INFINITY, sum = 0.0;
        for (int64_t j = 0; j < Lk; j++) {
          const float *k = in->kv + (b * s->kv_rows + j) * in->ldkv + g * hd;
          double dot = 0.0;
          for (int64_t d = 0; d < hd; d++)
            dot += (double)q[d] * (double)k[d];
          p[j] = vis[i * Lk + j] ? scale * dot + add[i * Lk + j] : -INFINITY;
          top = p[j] > top ? p[j] : top;
        }
        for (int64_t j = 0; j < Lk; j++) {
          p[j] = top == -INFINITY ? 0.0 : exp(p[j] - top);
          sum += p[j];
        }
        double *out = ctx + (b * Lq + i) * s->H * hd + h * hd;
        for (int64_t d = 0; d < hd; d++) {
          double acc = 0.0;
          for (int64_t j = 0; j < Lk; j++)
            acc += p[j] *
                   in->kv[(b * s->kv_rows + j) * in->ldkv + KV + g * hd + d];
          out[d] = sum > 0.0 ? acc / sum : empty;
        }
        if (!w)
          continue;
        bool avg = s->weights == ATTN_WEIGHTS_AVERAGE;
        double *wr =
            avg ? w + (b * Lq + i) * Lk : w + ((b * s->H + h) * Lq + i) * Lk;
        for (int64_t j = 0; j < Lk; j++) {
          double x = sum > 0.0 ? p[j] / sum : empty;
          wr[j] = avg ? wr[j] + x / (double)s->H : x;
        }
      }
    }
  free(vis);
  free(add);
  free(p);
}

/* Runs the core with table v on `threads` threads: ctx [B*Lq, H*hd] and
 * the weights (when asked) into w. shared 1: with a buffer for keys and
 * values packed once per (batch row, kv head), as forward calls pass; 2:
 * a buffer for the fewest pairs, filled group after group. */
static void run_core(const shape *s, const inputs *in, const attn_simd *v,
                     int32_t threads, int shared, float *ctx, float *w) {
  attn_heads heads = {.num_heads = s->H,
                      .num_kv_heads = s->Hkv,
                      .head_dim = s->hd,
                      .kv_dim = s->Hkv * s->hd,
                      .scale = (float)(1.0 / sqrt((double)s->hd))};
  int64_t E = s->H * s->hd;
  /* The core writes its context over the queries: work on a copy. */
  float *q = ref_xmalloc((size_t)(s->B * s->Lq * in->ldq) * sizeof(float));
  memcpy(q, in->q, (size_t)(s->B * s->Lq * in->ldq) * sizeof(float));
  attn_core c = {.heads = &heads,
                 .mask = &s->mask,
                 .batch = s->B,
                 .len_q = s->Lq,
                 .len_k = s->Lk,
                 .q = q,
                 .k = in->kv,
                 .v = in->kv + heads.kv_dim,
                 .ldq = in->ldq,
                 .ldk = in->ldkv,
                 .ldv = in->ldkv,
                 .kv_rows = s->kv_rows,
                 .ctx = q,
                 .ldctx = in->ldq,
                 .weights = w,
                 .weights_mode = s->weights,
                 .simd = v,
                 /* As a caller naming the table's core: few query rows
                  * run on the packed kernels too. */
                 .choice = v->panels ? ATTN_CORE_PACKED : ATTN_CORE_BLAS};
  attn_core_blocks_for(&heads, s->B, s->Lq, s->Lk, w != NULL, v->panels != NULL,
                       &c.qblock, &c.kblock);
  if (s->qb)
    c.qblock = s->qb;
  if (s->kb && !w)
    c.kblock = s->kb;
  attn_runtime_config rc;
  attn_runtime_config_init(&rc);
  rc.num_threads = threads;
  attn_runtime *rt = NULL;
  attn_exec x;
  assert_int_equal(attn_runtime_create(&rc, &rt), ATTN_OK);
  assert_int_equal(attn_exec_resolve(rt, threads, 0, &x), ATTN_OK);
  int32_t used = attn_core_threads(&c, threads);
  int64_t tf =
      (attn_core_tile_floats(c.qblock, c.kblock, s->hd) + 15) / 16 * 16;
  float *tiles = aligned_alloc(64, (size_t)(tf * used) * sizeof(float));
  assert_non_null(tiles);
  int64_t sf = shared ? attn_core_shared_head_floats(&c) : 0;
  c.shared_bytes = shared == 2 ? 1 : 0;
  int64_t pairs = attn_core_shared_pairs(&c);
  if (shared == 2 && sf > 0) /* the fewest pairs: one, or a batch row */
    assert_int_equal(pairs,
                     w && s->weights == ATTN_WEIGHTS_AVERAGE ? s->Hkv : 1);
  c.shared = sf ? aligned_alloc(64, (size_t)(sf * pairs) * 4) : NULL;
  assert_true(!sf || c.shared);
  attn_exec_enter(&x);
  attn_core_run_all(&c, &x, used, tiles, tf);
  attn_exec_leave(&x);
  for (int64_t r = 0; r < s->B * s->Lq; r++)
    memcpy(ctx + r * E, q + r * in->ldq, (size_t)E * sizeof(float));
  free(tiles);
  free(c.shared);
  free(q);
  attn_runtime_destroy(rt);
}

static int64_t weight_count(const shape *s) {
  if (!s->want_weights)
    return 0;
  int64_t heads = s->weights == ATTN_WEIGHTS_AVERAGE ? 1 : s->H;
  return s->B * heads * s->Lq * s->Lk;
}

/* Every path against the reference, and 1 against 2 threads bit for bit. */
static void check(const shape *s, uint64_t seed) {
  ref_rng r;
  ref_rng_seed(&r, seed);
  inputs in = make_inputs(s, &r);
  int64_t nctx = s->B * s->Lq * s->H * s->hd, nw = weight_count(s);
  double *want = ref_xmalloc((size_t)nctx * sizeof(double));
  double *want_w = nw ? ref_xmalloc((size_t)nw * sizeof(double)) : NULL;
  reference(s, &in, want, want_w);
  float *got[2], *got_w[2];
  float *grouped = ref_xmalloc((size_t)nctx * sizeof(float));
  for (int t = 0; t < 2; t++) {
    got[t] = ref_xmalloc((size_t)nctx * sizeof(float));
    got_w[t] = nw ? ref_xmalloc((size_t)nw * sizeof(float)) : NULL;
  }
  const attn_simd *v[3];
  int n = paths(v);
  for (int p = 0; p < n; p++) {
    char what[160];
    snprintf(what, sizeof what,
             "%s B=%lld Lq=%lld Lk=%lld H=%lld/%lld hd=%lld w=%d", v[p]->name,
             (long long)s->B, (long long)s->Lq, (long long)s->Lk,
             (long long)s->H, (long long)s->Hkv, (long long)s->hd, s->weights);
    /* Per-item packing on 1 and 2 threads, then packing once per head,
     * for all heads at once and in groups of the fewest heads (which
     * must not change a bit). */
    for (int shared = 0; shared < 3; shared++) {
      for (int t = 0; t < 2; t++)
        run_core(s, &in, v[p], t + 1, shared, got[t], got_w[t]);
      if (shared == 2)
        assert_memory_equal(got[0], grouped, (size_t)nctx * sizeof(float));
      if (shared == 1)
        memcpy(grouped, got[0], (size_t)nctx * sizeof(float));
      assert_true(ref_close(what, got[0], want, nctx, REF_RTOL, REF_ATOL));
      assert_memory_equal(got[0], got[1], (size_t)nctx * sizeof(float));
      if (nw) {
        assert_true(ref_close(what, got_w[0], want_w, nw, REF_RTOL, REF_ATOL));
        assert_memory_equal(got_w[0], got_w[1], (size_t)nw * sizeof(float));
      }
    }
  }
  for (int t = 0; t < 2; t++) {
    free(got[t]);
    free(got_w[t]);
  }
  free(grouped);
  free(want);
  free(want_w);
  free(in.q);
  free(in.kv);
}

static shape base(int64_t B, int64_t Lq, int64_t Lk, int64_t H, int64_t hd) {
  shape s = {.B = B, .Lq = Lq, .Lk = Lk, .H = H, .Hkv = H, .hd = hd};
  s.kv_rows = Lk;
  attn_mask_init(&s.mask);
  return s;
}

/* Panel tails, head sizes off the row blocks, one and several key blocks,
 * and the few-row path. */
static void test_shapes(void **state) {
  (void)state;
  const int64_t lens[][2] = {{1, 7},   {8, 8},     {23, 37},  {37, 300},
                             {64, 64}, {100, 513}, {300, 70}, {257, 1100}};
  const int64_t dims[] = {64, 12, 20, 3};
  uint64_t seed = 1;
  for (size_t i = 0; i < sizeof lens / sizeof lens[0]; i++)
    for (size_t d = 0; d < sizeof dims / sizeof dims[0]; d++) {
      shape s = base(2, lens[i][0], lens[i][1], 2, dims[d]);
      check(&s, seed++);
    }
}

/* Forced small blocks: many query blocks and key blocks of odd sizes. */
static void test_blocks(void **state) {
  (void)state;
  shape s = base(1, 150, 400, 3, 24);
  s.qb = 40;
  s.kb = 50;
  check(&s, 11);
  s.mask.causal = ATTN_CAUSAL_TOP_LEFT;
  check(&s, 12);
  s.mask.window = 33;
  check(&s, 13);
}

/* Grouped kv heads over a key buffer with spare capacity. */
static void test_grouped(void **state) {
  (void)state;
  shape s = base(2, 70, 90, 8, 16);
  s.Hkv = 2;
  s.kv_rows = 128;
  check(&s, 21);
  s.mask.causal = ATTN_CAUSAL_BOTTOM_RIGHT;
  check(&s, 22);
  /* Few query rows (the packed core only when named) over the shared
   * buffer of a group. */
  shape f = base(2, 5, 90, 4, 16);
  f.Hkv = 2;
  check(&f, 23);
}

static void test_masks(void **state) {
  (void)state;
  int64_t lens[2] = {0, 300};
  uint8_t *pad = calloc(2 * 333, 1);
  assert_non_null(pad);
  for (int64_t j = 0; j < 333; j++)
    pad[333 + j] = (uint8_t)(j % 3 == 0 || (j > 40 && j < 200));
  ref_rng r;
  ref_rng_seed(&r, 5);
  float *bias = ref_random(&r, 2 * 3 * 90 * 333, -2.0, 2.0);
  bias[5] = -INFINITY;
  for (int empty = 0; empty < 2; empty++) {
    shape s = base(2, 90, 333, 3, 40);
    s.mask.empty_rows = empty ? ATTN_EMPTY_ROW_NAN : ATTN_EMPTY_ROW_ZERO;
    s.mask.causal = ATTN_CAUSAL_BOTTOM_RIGHT;
    s.mask.key_lengths = lens;
    check(&s, 31 + (uint64_t)empty);
    s.mask.causal = ATTN_CAUSAL_TOP_LEFT;
    s.mask.key_lengths = NULL;
    s.mask.key_padding = pad;
    s.mask.window = 50;
    check(&s, 33);
    s.mask.bias = bias;
    s.mask.bias_stride_b = 3 * 90 * 333;
    s.mask.bias_stride_h = 90 * 333;
    s.mask.bias_stride_q = 333;
    check(&s, 34);
    s.mask.bias_stride_h = 0; /* broadcast over heads */
    s.mask.window = 0;
    s.mask.causal = 0;
    check(&s, 35);
  }
  free(pad);
  free(bias);
}

static void test_weights(void **state) {
  (void)state;
  for (int mode = 1; mode <= 2; mode++) {
    shape s = base(2, 45, 77, 4, 20);
    s.want_weights = true;
    s.weights = mode == 1 ? ATTN_WEIGHTS_PER_HEAD : ATTN_WEIGHTS_AVERAGE;
    check(&s, 41);
    int64_t lens[2] = {0, 30};
    s.mask.key_lengths = lens;
    s.mask.causal = ATTN_CAUSAL_TOP_LEFT;
    check(&s, 42);
    /* Two query blocks per head, then grouped kv heads: each kv head has
     * several readers, so the shared buffer runs (mode 2: in groups of
     * whole batch rows when the weights are averaged). */
    s.qb = 32;
    check(&s, 43);
    s.qb = 0;
    s.Hkv = 2;
    check(&s, 44);
  }
}

/* Blocks count the items of the whole call, and a kv head read by one
 * item only is packed in that item's tile (no shared buffer). */
static void test_blocks_and_sharing(void **state) {
  (void)state;
  attn_heads h = {.num_heads = 8,
                  .num_kv_heads = 8,
                  .head_dim = 64,
                  .kv_dim = 512,
                  .scale = 0.125f};
  int64_t qb, kb;
  /* B=4, L=256: 4 x 8 x 1 = 32 items with one block per head, unless
   * 256 rows of query panels and accumulator exceed half the L2. */
  bool fits = attn_cpu()->l2_bytes / 2 >= 256 * 64 * 2 * 4;
  attn_core_blocks_for(&h, 4, 256, 256, false, true, &qb, &kb);
  if (fits)
    assert_int_equal(qb, 256);
  else
    assert_true(qb < 256);
  /* B=1: cut to 4 blocks of 64 (8 x 4 = 32 items). */
  attn_core_blocks_for(&h, 1, 256, 256, false, true, &qb, &kb);
  assert_int_equal(qb, 64);
  const attn_simd *v[3];
  int n = paths(v);
  for (int p = 0; p < n; p++) {
    if (!v[p]->panels)
      continue;
    attn_mask m;
    attn_mask_init(&m);
    attn_core c = {.heads = &h,
                   .mask = &m,
                   .batch = 4,
                   .len_q = 256,
                   .len_k = 256,
                   .qblock = 256,
                   .kblock = 256,
                   .simd = v[p],
                   .choice = ATTN_CORE_PACKED};
    assert_int_equal(attn_core_shared_head_floats(&c), 0);
    c.qblock = 128; /* two readers per kv head */
    assert_true(attn_core_shared_head_floats(&c) > 0);
    c.qblock = 256;
    h.num_kv_heads = 4; /* two query heads per kv head */
    h.kv_dim = 256;
    assert_true(attn_core_shared_head_floats(&c) > 0);
    h.num_kv_heads = 8;
    h.kv_dim = 512;
  }
}

/* The choice rule: the cblas core when named, the packed core when named
 * and the table has it (any rows, no score features), and the library's
 * rule (8 rows at least, no score features) by default. */
static void test_choice_rule(void **state) {
  (void)state;
  const attn_simd *tables[3];
  int n = paths(tables);
  for (int i = 0; i < n; i++) {
    const attn_simd *v = tables[i];
    bool has = v->panels != NULL;
    for (int64_t rows = 1; rows <= 9; rows++) {
      assert_false(attn_core_choose_packed(ATTN_CORE_BLAS, v, rows, true));
      assert_int_equal(attn_core_choose_packed(ATTN_CORE_PACKED, v, rows, true),
                       has);
      assert_false(attn_core_choose_packed(ATTN_CORE_PACKED, v, rows, false));
      assert_int_equal(attn_core_choose_packed(ATTN_CORE_AUTO, v, rows, true),
                       has && rows >= 8);
      assert_false(attn_core_choose_packed(ATTN_CORE_AUTO, v, rows, false));
    }
  }
  assert_int_equal(attn_core_check(ATTN_CORE_AUTO, true), ATTN_OK);
  assert_int_equal(attn_core_check(ATTN_CORE_BLAS, true), ATTN_OK);
  assert_int_equal(attn_core_check(3, false), ATTN_ERR_BAD_OPTION);
  assert_int_equal(attn_core_check(ATTN_CORE_PACKED, true),
                   ATTN_ERR_UNSUPPORTED);
  assert_int_equal(attn_core_check(ATTN_CORE_PACKED, false),
                   attn_simd_get()->panels ? ATTN_OK : ATTN_ERR_UNSUPPORTED);
}

int main(void) {
  const struct CMUnitTest tests[] = {cmocka_unit_test(test_shapes),
                                     cmocka_unit_test(test_blocks),
                                     cmocka_unit_test(test_grouped),
                                     cmocka_unit_test(test_masks),
                                     cmocka_unit_test(test_weights),
                                     cmocka_unit_test(test_choice_rule),
                                     cmocka_unit_test(test_blocks_and_sharing)};
  return cmocka_run_group_tests(tests, NULL, NULL);
}
