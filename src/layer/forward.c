/* SPDX-License-Identifier: MIT */
/* Forward pass: argument checks, the scratch plan, projections, the
 * attention core on the call's threads, and the output projection. */
#include "layer/call.h"
#include "layer/positions.h"
#include "layer/project.h"

#include "common/checked.h"
#include "common/error.h"
#include "core/mask.h"

#include <limits.h>
#include <stdlib.h>

/* Where everything of one call lives, in floats from an aligned base. */
typedef struct {
  bool fused_qkv; /* one product for Q, K and V */
  bool fused_kv;  /* one product for K and V */
  int64_t ldq, ldk, ldv;
  int64_t k_off, v_off; /* into the buffers; Q at 0, k/v may alias q's */
  int64_t tile_off, tile_floats;
  int64_t pos_off; /* query then key positions (int64), -1 = none */
  int64_t shared_off, shared_floats; /* the core's packed keys and values */
  int32_t threads;                   /* of the core, which sized the tiles */
  size_t bytes;
} plan;

/* Sizes every forward checks: positive, addressable, within the BLAS's
 * int range. */
static attn_status check_sizes(const attn_layer *l, int64_t B, int64_t Lq,
                               int64_t Lk, const attn_options *o) {
  if (B <= 0 || Lq <= 0 || Lk <= 0)
    return attn_fail(ATTN_ERR_BAD_SIZE,
                     "batch %lld, len_q %lld and len_k %lld must be positive",
                     (long long)B, (long long)Lq, (long long)Lk);
  int64_t E = l->embed_dim, KV = l->heads.kv_dim;
  if (E + 2 * KV > INT_MAX || l->kdim > INT_MAX || l->vdim > INT_MAX ||
      Lk > INT_MAX)
    return attn_fail_overflow("a dimension beyond the BLAS's int range");
  int64_t nq, nk, t;
  if (!attn_mul64(B, Lq, &nq) || !attn_mul64(B, Lk, &nk))
    return attn_fail_overflow("batch * length");
  if (!attn_mul64(nq, E, &t) || !attn_float_count_ok(t) ||
      !attn_mul64(nk, l->kdim, &t) || !attn_float_count_ok(t) ||
      !attn_mul64(nk, l->vdim, &t) || !attn_float_count_ok(t))
    return attn_fail_overflow("an input tensor");
  return attn_check_weights_out(l, nq, Lk, o);
}

/* The projected Q, K and V: one buffer [B*Lq, E + 2 KV] when fused, else
 * Q [B*Lq, E] and K, V [B*Lk, KV] each or side by side. */
static void layout_qkv(const attn_layer *l, int64_t nq, int64_t nk, plan *p,
                       attn_layout *s) {
  int64_t E = l->embed_dim, KV = l->heads.kv_dim;
  if (p->fused_qkv) {
    p->ldq = p->ldk = p->ldv = E + 2 * KV;
    attn_layout_add(s, nq, p->ldq);
    p->k_off = E;
    p->v_off = E + KV;
    return;
  }
  p->ldq = E;
  p->ldk = p->ldv = p->fused_kv ? 2 * KV : KV;
  attn_layout_add(s, nq, E);
  p->k_off = attn_layout_add(s, nk, p->ldk);
  p->v_off = p->fused_kv ? p->k_off + KV : attn_layout_add(s, nk, KV);
}

static attn_status make_plan(const attn_call *c, const attn_layer *l, int64_t B,
                             int64_t Lq, int64_t Lk, bool same_qkv,
                             bool same_kv, plan *p) {
  attn_status st = check_sizes(l, B, Lq, Lk, &c->o);
  if (st != ATTN_OK)
    return st;
  *p = (plan){0};
  p->fused_qkv = same_qkv && Lq == Lk && attn_layer_is_square(l);
  p->fused_kv = !p->fused_qkv && same_kv && l->kdim == l->vdim;
  attn_layout s = {0};
  layout_qkv(l, B * Lq, B * Lk, p, &s);
  p->pos_off = attn_fx_positional(&l->fx)
                   ? attn_layout_add(&s, B * (Lq + Lk), 2) /* int64 */
                   : -1;
  attn_layout_core(c, l, B, Lq, Lk, &s, &p->threads, &p->tile_off,
                   &p->tile_floats);
  attn_core core =
      attn_call_core(c, l, NULL, B, Lq, Lk, NULL, 0, (attn_kv_view){0});
  attn_score_fx fx;
  core.fx = attn_layer_score_fx(l, NULL, NULL, &fx);
  p->shared_floats = attn_core_shared_head_floats(&core);
  p->shared_off =
      attn_layout_add(&s, p->shared_floats, attn_core_shared_pairs(&core));
  return attn_layout_bytes(&s, &p->bytes);
}

attn_status attn_forward_scratch_size(const attn_layer *l, int64_t batch,
                                      int64_t len_q, int64_t len_k,
                                      const attn_options *opts, size_t *bytes) {
  if (!l || !bytes)
    return attn_fail(ATTN_ERR_NULL_POINTER,
                     "attn_forward_scratch_size: %s is NULL",
                     !l ? "layer" : "bytes");
  attn_call c;
  attn_status st = attn_call_load(opts, l, &c);
  if (st != ATTN_OK)
    return st;
  /* The fused and the separate layouts take the same room; plan the one
   * that needs most (separate buffers carry alignment padding). */
  plan p;
  if ((st = make_plan(&c, l, batch, len_q, len_k, false, false, &p)) != ATTN_OK)
    return st;
  *bytes = p.bytes;
  return ATTN_OK;
}

static attn_status check_inputs(const attn_call *c, const attn_layer *l,
                                int64_t B, int64_t Lq, int64_t Lk,
                                const float *query, const float *key,
                                const float *value) {
  /* An input passed in two roles is scanned once, unless the second role
   * reads further than the first (e.g. query == key with Lk > Lq). */
  int64_t nq = B * Lq * l->embed_dim, nk = B * Lk * l->kdim;
  int64_t nv = B * Lk * l->vdim;
  if (!attn_call_all_finite(c, query, nq))
    return attn_fail(ATTN_ERR_NOT_FINITE, "query contains NaN or infinity");
  if (!(key == query && nk <= nq) && !attn_call_all_finite(c, key, nk))
    return attn_fail(ATTN_ERR_NOT_FINITE, "key contains NaN or infinity");
  if (!(value == key && nv <= nk) && !(value == query && nv <= nq) &&
      !attn_call_all_finite(c, value, nv))
    return attn_fail(ATTN_ERR_NOT_FINITE, "value contains NaN or infinity");
  return ATTN_OK;
}

/* Q, K and V projections, fused where the inputs allow one product, each
 * followed by the norm and rotation of its query and key heads (pos: the
 * query then the key positions, or NULL). */
static void project_inputs(const attn_exec *x, const attn_layer *l,
                           const plan *p, int64_t nq, int64_t nk,
                           const float *query, const float *key,
                           const float *value, const int64_t *pos, float *f) {
  int64_t E = l->embed_dim, KV = l->heads.kv_dim;
  bool post = attn_fx_post(&l->fx);
  const int64_t *qpos = pos, *kpos = pos ? pos + nq : NULL;
  attn_qk_post pq = {l, 0, E, 0, 0, qpos, NULL, NULL, 1};
  attn_qk_post pk = {l, 0, 0, 0, KV, NULL, kpos, NULL, 1};
  attn_qk_post pqkv = {l, 0, E, E, KV, qpos, kpos, NULL, 1};
  const float *wq = attn_slot_ptr(l, ATTN_SLOT_WQ);
  const float *wk = attn_slot_ptr(l, ATTN_SLOT_WK);
  const float *wv = attn_slot_ptr(l, ATTN_SLOT_WV);
  const float *bq = attn_bias_ptr(l, ATTN_SLOT_BQ);
  const float *bk = attn_bias_ptr(l, ATTN_SLOT_BK);
  const float *bv = attn_bias_ptr(l, ATTN_SLOT_BV);
  if (p->fused_qkv) {
    attn_project_post(x, nq, E + 2 * KV, E, query, E, wq,
                      attn_bias_span(l, ATTN_SLOT_BQ, ATTN_SLOT_BV), f, p->ldq,
                      post ? &pqkv : NULL);
    return;
  }
  attn_project_post(x, nq, E, E, query, E, wq, bq, f, p->ldq,
                    post ? &pq : NULL);
  if (p->fused_kv) {
    attn_project_post(x, nk, 2 * KV, l->kdim, key, l->kdim, wk,
                      attn_bias_span(l, ATTN_SLOT_BK, ATTN_SLOT_BV),
                      f + p->k_off, p->ldk, post ? &pk : NULL);
  } else {
    attn_project_post(x, nk, KV, l->kdim, key, l->kdim, wk, bk, f + p->k_off,
                      p->ldk, post ? &pk : NULL);
    attn_project(x, nk, KV, l->vdim, value, l->vdim, wv, bv, f + p->v_off,
                 p->ldv);
  }
}

/* Every check of attn_forward() (inside the call's execution context: the
 * inputs are scanned on its threads): on success *p is the call's plan and
 * *mask the resolved mask. */
static attn_status prepare(const attn_layer *l, int64_t B, int64_t Lq,
                           int64_t Lk, const float *query, const float *key,
                           const float *value, const attn_mask *mask_in,
                           attn_call *c, plan *p, attn_mask *mask) {
  bool same_kv = key == value;
  attn_status st =
      make_plan(c, l, B, Lq, Lk, query == key && same_kv, same_kv, p);
  if (st != ATTN_OK ||
      (st = attn_layer_check_set(l, "attn_forward")) != ATTN_OK ||
      (st = attn_mask_load(mask_in, B, l->heads.num_heads, Lq, Lk, mask)) !=
          ATTN_OK ||
      (st = check_inputs(c, l, B, Lq, Lk, query, key, value)) != ATTN_OK ||
      (st = attn_positions_check(c, l, B, Lq, Lk)) != ATTN_OK)
    return st;
  /* Callers are held to the size attn_forward_scratch_size reports, even
   * when this call's fused layout would fit in less: a short buffer is then
   * caught whichever inputs alias. */
  if (c->o.scratch) {
    plan reported;
    if ((st = make_plan(c, l, B, Lq, Lk, false, false, &reported)) != ATTN_OK)
      return st;
    p->bytes = reported.bytes;
  }
  return ATTN_OK;
}

attn_status attn_forward(const attn_layer *l, int64_t B, int64_t Lq, int64_t Lk,
                         const float *query, const float *key,
                         const float *value, const attn_mask *mask_in,
                         const attn_options *opts, float *out) {
  if (!l || !query || !key || !value || !out)
    return attn_fail(ATTN_ERR_NULL_POINTER, "attn_forward: %s is NULL",
                     !l       ? "layer"
                     : !query ? "query"
                     : !key   ? "key"
                     : !value ? "value"
                              : "out");
  attn_call c;
  plan p;
  attn_mask mask;
  void *mem = NULL;
  float *f = NULL;
  attn_status st = attn_call_load(opts, l, &c);
  if (st != ATTN_OK)
    return st;
  attn_exec_enter(&c.x);
  if ((st = prepare(l, B, Lq, Lk, query, key, value, mask_in, &c, &p, &mask)) !=
          ATTN_OK ||
      (st = attn_call_scratch(&c, p.bytes, "attn_forward_scratch_size", &mem,
                              &f)) != ATTN_OK) {
    attn_exec_leave(&c.x);
    return st;
  }

  int64_t *pos = p.pos_off >= 0 ? (int64_t *)(void *)(f + p.pos_off) : NULL;
  if (pos)
    attn_positions_fill(&c, B, Lq, Lk, pos, pos + B * Lq);
  project_inputs(&c.x, l, &p, B * Lq, B * Lk, query, key, value, pos, f);
  /* Attention per (batch, head, query block); the context overwrites Q. */
  attn_kv_view kv = {f + p.k_off, f + p.v_off, p.ldk, p.ldv, 0};
  attn_core core = attn_call_core(&c, l, &mask, B, Lq, Lk, f, p.ldq, kv);
  /* ALiBi needs the positions only when the caller gave them one by one;
   * otherwise key j is i - j from query i, which the core computes. */
  attn_score_fx fx;
  bool ramp = !pos || attn_positions_contiguous(&c);
  core.fx = attn_layer_score_fx(l, ramp ? NULL : pos,
                                ramp ? NULL : pos + B * Lq, &fx);
  fx.top_left = ramp;
  core.shared = p.shared_floats ? f + p.shared_off : NULL;
  attn_core_run_all(&core, &c.x, p.threads, f + p.tile_off, p.tile_floats);
  attn_project(&c.x, B * Lq, l->embed_dim, l->embed_dim, f, p.ldq,
               attn_slot_ptr(l, ATTN_SLOT_WO), attn_bias_ptr(l, ATTN_SLOT_BO),
               out, l->embed_dim);
  attn_call_scratch_done(&c, mem);
  attn_exec_leave(&c.x);
  return ATTN_OK;
}

attn_status attn_self_forward(const attn_layer *l, int64_t batch, int64_t len,
                              const float *x, const attn_mask *mask,
                              const attn_options *opts, float *out) {
  if (l && !attn_layer_is_square(l))
    return attn_fail(ATTN_ERR_BAD_SIZE,
                     "self-attention needs kdim == vdim == embed_dim (%lld); "
                     "this layer has kdim %lld, vdim %lld: use attn_forward",
                     (long long)l->embed_dim, (long long)l->kdim,
                     (long long)l->vdim);
  return attn_forward(l, batch, len, len, x, x, x, mask, opts, out);
}
