/* SPDX-License-Identifier: MIT */
/* Checks and tables of a layer's position and score features
 * (features.h). */
#include "layer/features.h"

#include "common/checked.h"
#include "common/error.h"
#include "common/structs.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

static const attn_rope_config rope_defaults = {.struct_size =
                                                   sizeof(attn_rope_config),
                                               .theta = 10000.0,
                                               .linear_factor = 1.0,
                                               .attention_factor = 1.0};

ATTN_VERSIONED_STRUCT(attn_rope_config, rope_kind, ATTN_ROPE_CONFIG_SIZE_0_2,
                      rope_defaults, attn_rope_config_init_sized)

static bool positive_finite(double x) { return x > 0.0 && isfinite(x); }

static attn_status check_rope(const attn_rope_config *r, int64_t hd) {
  if (r->pairing != ATTN_ROPE_HALVES && r->pairing != ATTN_ROPE_ADJACENT)
    return attn_fail(ATTN_ERR_BAD_OPTION,
                     "rope.pairing %d is not ATTN_ROPE_HALVES or "
                     "ATTN_ROPE_ADJACENT",
                     r->pairing);
  if (r->reserved != 0)
    return attn_fail(ATTN_ERR_BAD_OPTION, "rope.reserved %d must be 0",
                     r->reserved);
  int64_t rot = r->rotary_dim ? r->rotary_dim : hd;
  if (rot < 0 || rot % 2 != 0 || rot > hd)
    return attn_fail(ATTN_ERR_BAD_SIZE,
                     "rope.rotary_dim %lld must be even and in [0, head_dim "
                     "= %lld] (0 means head_dim)",
                     (long long)r->rotary_dim, (long long)hd);
  if (!positive_finite(r->theta))
    return attn_fail(ATTN_ERR_BAD_OPTION,
                     "rope.theta %g must be positive and finite", r->theta);
  if (!positive_finite(r->linear_factor))
    return attn_fail(ATTN_ERR_BAD_OPTION,
                     "rope.linear_factor %g must be positive and finite",
                     r->linear_factor);
  if (!positive_finite(r->attention_factor))
    return attn_fail(ATTN_ERR_BAD_OPTION,
                     "rope.attention_factor %g must be positive and finite",
                     r->attention_factor);
  for (int64_t k = 0; r->inv_freq && k < rot / 2; k++)
    if (!(r->inv_freq[k] >= 0.0f) || isinf(r->inv_freq[k]))
      return attn_fail(ATTN_ERR_NOT_FINITE,
                       "rope.inv_freq[%lld] = %g must be finite and not "
                       "negative",
                       (long long)k, (double)r->inv_freq[k]);
  return ATTN_OK;
}

static attn_status check_scores(const attn_config *c, int64_t H) {
  if (c->alibi != ATTN_ALIBI_NONE && c->alibi != ATTN_ALIBI_CAUSAL &&
      c->alibi != ATTN_ALIBI_SYMMETRIC)
    return attn_fail(ATTN_ERR_BAD_OPTION, "unknown alibi mode %d", c->alibi);
  if (c->alibi == ATTN_ALIBI_NONE && c->alibi_slopes)
    return attn_fail(ATTN_ERR_BAD_OPTION,
                     "alibi_slopes given but alibi is ATTN_ALIBI_NONE (set "
                     "alibi, or leave alibi_slopes NULL)");
  for (int64_t h = 0; c->alibi_slopes && h < H; h++)
    if (!isfinite(c->alibi_slopes[h]))
      return attn_fail(ATTN_ERR_NOT_FINITE,
                       "alibi_slopes[%lld] is not finite (the array must "
                       "hold num_heads = %lld slopes)",
                       (long long)h, (long long)H);
  if (!(c->softcap >= 0.0) || !isfinite(c->softcap) ||
      (c->softcap > 0 && (float)c->softcap == 0.0f) || isinf((float)c->softcap))
    return attn_fail(ATTN_ERR_BAD_OPTION,
                     "softcap %g must be 0 (none) or a positive float",
                     c->softcap);
  return ATTN_OK;
}

attn_status attn_fx_check(const attn_config *c, int64_t H, int64_t hd,
                          attn_rope_config *rope) {
  if (c->bias_parts < 0 || c->bias_parts > ATTN_BIAS_ALL)
    return attn_fail(ATTN_ERR_BAD_OPTION,
                     "bias_parts %d has bits other than ATTN_BIAS_Q, _K, _V "
                     "and _O",
                     c->bias_parts);
  if (c->qk_norm != ATTN_QK_NORM_NONE && c->qk_norm != ATTN_QK_NORM_HEAD &&
      c->qk_norm != ATTN_QK_NORM_ALL)
    return attn_fail(ATTN_ERR_BAD_OPTION, "unknown qk_norm mode %d",
                     c->qk_norm);
  if (!(c->qk_norm_eps >= 0.0) || !isfinite(c->qk_norm_eps))
    return attn_fail(ATTN_ERR_BAD_OPTION,
                     "qk_norm_eps %g must be finite and not negative (0 "
                     "means 1e-6)",
                     c->qk_norm_eps);
  attn_status st = check_scores(c, H);
  if (st != ATTN_OK || !c->rope)
    return st;
  if ((st = attn_struct_load(&rope_kind, rope, c->rope)) != ATTN_OK)
    return st;
  return check_rope(rope, hd);
}

void attn_alibi_slopes(int64_t H, float *slopes) {
  int64_t n = 1;
  while (n * 2 <= H)
    n *= 2;
  for (int64_t h = 0; h < H; h++) {
    double e = h < n ? -8.0 * (double)(h + 1) / (double)n
                     : -4.0 * (double)(2 * (h - n) + 1) / (double)n;
    slopes[h] = (float)exp2(e);
  }
}

static bool create_rope(attn_layer_fx *fx, const attn_rope_config *r,
                        int64_t hd) {
  fx->rope = true;
  fx->rope_cfg = *r;
  fx->rot = r->rotary_dim ? r->rotary_dim : hd;
  fx->rope_cfg.rotary_dim = fx->rot;
  int64_t half = fx->rot / 2;
  fx->inv_freq = malloc((size_t)(half > 0 ? half : 1) * sizeof(double));
  if (r->inv_freq)
    fx->rope_table = malloc((size_t)(half > 0 ? half : 1) * sizeof(float));
  if (!fx->inv_freq || (r->inv_freq && !fx->rope_table))
    return false;
  for (int64_t k = 0; k < half; k++) {
    if (r->inv_freq) {
      fx->rope_table[k] = r->inv_freq[k];
      fx->inv_freq[k] = r->inv_freq[k];
    } else {
      fx->inv_freq[k] =
          pow(r->theta, -2.0 * (double)k / (double)fx->rot) / r->linear_factor;
    }
  }
  fx->rope_cfg.inv_freq = fx->rope_table;
  return true;
}

bool attn_fx_create(attn_layer_fx *fx, const attn_config *c,
                    const attn_rope_config *rope, const attn_heads *g) {
  memset(fx, 0, sizeof *fx);
  fx->bias_parts = c->bias_parts ? c->bias_parts : c->bias ? ATTN_BIAS_ALL : 0;
  fx->qk_norm = c->qk_norm;
  fx->qk_unit_offset = c->qk_norm_unit_offset != 0;
  fx->qk_eps = c->qk_norm_eps > 0 ? c->qk_norm_eps : 1e-6;
  fx->alibi = c->alibi;
  fx->softcap = c->softcap;
  fx->sinks = c->sinks != 0;
  if (fx->alibi) {
    fx->slopes = malloc((size_t)g->num_heads * sizeof(float));
    if (!fx->slopes)
      return false;
    if (c->alibi_slopes)
      memcpy(fx->slopes, c->alibi_slopes, (size_t)g->num_heads * sizeof(float));
    else
      attn_alibi_slopes(g->num_heads, fx->slopes);
  }
  if (c->rope && !create_rope(fx, rope, g->head_dim)) {
    attn_fx_destroy(fx);
    return false;
  }
  return true;
}

void attn_fx_destroy(attn_layer_fx *fx) {
  free(fx->slopes);
  free(fx->inv_freq);
  free(fx->rope_table);
  memset(fx, 0, sizeof *fx);
}

void attn_fx_to_config(const attn_layer_fx *fx, attn_config *c) {
  c->bias = fx->bias_parts != 0;
  c->bias_parts = fx->bias_parts;
  c->qk_norm = fx->qk_norm;
  c->qk_norm_eps = fx->qk_eps;
  c->qk_norm_unit_offset = fx->qk_unit_offset;
  c->alibi = fx->alibi;
  c->alibi_slopes = fx->slopes;
  c->softcap = fx->softcap;
  c->rope = fx->rope ? &fx->rope_cfg : NULL;
  c->sinks = fx->sinks;
}
