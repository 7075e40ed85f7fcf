/* SPDX-License-Identifier: MIT */
/* Layer configuration and creation. */
#include "layer/layer.h"

#include "common/alloc.h"
#include "common/checked.h"
#include "common/error.h"
#include "common/structs.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

static const attn_config config_defaults = {
    .struct_size = sizeof(attn_config), .num_heads = 1, .bias = 1};

ATTN_VERSIONED_STRUCT(attn_config, config_kind, ATTN_CONFIG_SIZE_0_1,
                      config_defaults, attn_config_init_sized)

static attn_status check_config(const attn_config *c, attn_rope_config *rope) {
  if (c->embed_dim <= 0)
    return attn_fail(ATTN_ERR_BAD_SIZE, "embed_dim %lld must be positive",
                     (long long)c->embed_dim);
  if (c->num_heads <= 0)
    return attn_fail(ATTN_ERR_BAD_SIZE, "num_heads %lld must be positive",
                     (long long)c->num_heads);
  if (c->embed_dim % c->num_heads != 0)
    return attn_fail(ATTN_ERR_BAD_SIZE,
                     "embed_dim %lld is not divisible by num_heads %lld",
                     (long long)c->embed_dim, (long long)c->num_heads);
  if (c->kdim < 0 || c->vdim < 0)
    return attn_fail(ATTN_ERR_BAD_SIZE,
                     "kdim %lld and vdim %lld must not be negative (0 means "
                     "embed_dim)",
                     (long long)c->kdim, (long long)c->vdim);
  if (c->num_kv_heads < 0 ||
      (c->num_kv_heads > 0 && c->num_heads % c->num_kv_heads != 0))
    return attn_fail(ATTN_ERR_BAD_SIZE,
                     "num_kv_heads %lld must divide num_heads %lld",
                     (long long)c->num_kv_heads, (long long)c->num_heads);
  if (c->num_threads < 0)
    return attn_fail(ATTN_ERR_BAD_OPTION,
                     "num_threads %d must not be negative (0 means every "
                     "thread of the call's runtime)",
                     c->num_threads);
  /* The scale is applied in float: it must stay finite and, when given,
   * not round to zero (which would silently make attention uniform). */
  if (!(c->scale >= 0.0) || !isfinite(c->scale) || isinf((float)c->scale) ||
      (c->scale > 0 && (float)c->scale == 0.0f))
    return attn_fail(ATTN_ERR_BAD_OPTION,
                     "scale %g must be 0 (meaning 1/sqrt(head_dim)) or a "
                     "positive value representable as a float",
                     c->scale);
  return attn_fx_check(c, c->num_heads, c->embed_dim / c->num_heads, rope);
}

/* Element counts and offsets of the weight slots (weights, biases and
 * extras, *nw, *nb and *nx floats); false on overflow. */
static bool layout_slots(attn_layer *l, int64_t *nw, int64_t *nb, int64_t *nx) {
  int64_t E = l->embed_dim, kv = l->heads.kv_dim;
  int64_t *counts = l->slot_count;
  bool ok = attn_mul64(E, E, &counts[ATTN_SLOT_WQ]) &&
            attn_mul64(kv, l->kdim, &counts[ATTN_SLOT_WK]) &&
            attn_mul64(kv, l->vdim, &counts[ATTN_SLOT_WV]);
  counts[ATTN_SLOT_WO] = counts[ATTN_SLOT_WQ];
  counts[ATTN_SLOT_BQ] = E;
  counts[ATTN_SLOT_BK] = kv;
  counts[ATTN_SLOT_BV] = kv;
  counts[ATTN_SLOT_BO] = E;
  bool all = l->fx.qk_norm == ATTN_QK_NORM_ALL;
  bool norm = l->fx.qk_norm != ATTN_QK_NORM_NONE;
  counts[ATTN_SLOT_QN] = norm ? (all ? E : l->heads.head_dim) : 0;
  counts[ATTN_SLOT_KN] = norm ? (all ? kv : l->heads.head_dim) : 0;
  counts[ATTN_SLOT_SINK] = l->fx.sinks ? l->heads.num_heads : 0;
  *nw = *nb = *nx = 0;
  for (int s = 0; ok && s < ATTN_SLOT_COUNT; s++) {
    int64_t *total = s >= ATTN_SLOT_QN ? nx : s >= ATTN_SLOT_BQ ? nb : nw;
    l->slot_offset[s] = *total;
    ok = attn_add64(*total, counts[s], total);
  }
  return ok && attn_float_count_ok(*nw);
}

/* The layer's dimensions from a checked configuration. */
static void set_dims(attn_layer *l, const attn_config *c) {
  int64_t E = c->embed_dim, H = c->num_heads, hd = E / H;
  int64_t hkv = c->num_kv_heads ? c->num_kv_heads : H;
  l->embed_dim = E;
  l->kdim = c->kdim ? c->kdim : E;
  l->vdim = c->vdim ? c->vdim : E;
  l->heads.num_heads = H;
  l->heads.num_kv_heads = hkv;
  l->heads.head_dim = hd;
  l->heads.kv_dim = hkv * hd;
  l->bias = c->bias != 0 || c->bias_parts != 0;
  l->num_threads = c->num_threads;
  l->scale = c->scale > 0 ? c->scale : 1.0 / sqrt((double)hd);
  l->heads.scale = (float)l->scale;
}

attn_status attn_layer_create(const attn_config *cfg_in, attn_layer **out) {
  if (!cfg_in || !out)
    return attn_fail(ATTN_ERR_NULL_POINTER, "attn_layer_create: %s is NULL",
                     !cfg_in ? "cfg" : "out");
  attn_config c;
  attn_rope_config rope;
  attn_status st = attn_struct_load(&config_kind, &c, cfg_in);
  if (st != ATTN_OK || (st = check_config(&c, &rope)) != ATTN_OK)
    return st;
  attn_layer shape = {0};
  set_dims(&shape, &c);
  shape.fx.qk_norm = c.qk_norm;
  shape.fx.sinks = c.sinks != 0;
  int64_t nw, nb, nx;
  if (!layout_slots(&shape, &nw, &nb, &nx))
    return attn_fail(ATTN_ERR_OVERFLOW,
                     "weights of embed_dim %lld, kdim %lld, vdim %lld do not "
                     "fit in memory",
                     (long long)shape.embed_dim, (long long)shape.kdim,
                     (long long)shape.vdim);
  attn_layer *l = malloc(sizeof *l);
  float *w = attn_calloc_large((size_t)nw, sizeof(float));
  float *b = shape.bias ? calloc((size_t)nb, sizeof(float)) : NULL;
  float *x = nx ? malloc((size_t)nx * sizeof(float)) : NULL;
  bool fx = l && attn_fx_create(&shape.fx, &c, &rope, &shape.heads);
  if (!l || !w || (shape.bias && !b) || (nx && !x) || !fx) {
    if (fx)
      attn_fx_destroy(&shape.fx);
    free(l);
    free(w);
    free(b);
    free(x);
    return attn_fail(ATTN_ERR_NO_MEMORY,
                     "cannot allocate %lld floats of layer weights",
                     (long long)(nw + nb));
  }
  *l = shape;
  l->weights = w;
  l->biases = b;
  l->extras = x;
  attn_layer_default_extras(l);
  *out = l;
  return ATTN_OK;
}

void attn_layer_destroy(attn_layer *layer) {
  if (!layer)
    return;
  free(layer->weights);
  free(layer->biases);
  free(layer->extras);
  attn_fx_destroy(&layer->fx);
  free(layer);
}

attn_status attn_layer_get_config(const attn_layer *l, attn_config *cfg) {
  if (!l || !cfg)
    return attn_fail(ATTN_ERR_NULL_POINTER, "attn_layer_get_config: %s is NULL",
                     !l ? "layer" : "cfg");
  attn_config c = config_defaults;
  c.embed_dim = l->embed_dim;
  c.num_heads = l->heads.num_heads;
  c.kdim = l->kdim;
  c.vdim = l->vdim;
  c.bias = l->bias;
  c.num_threads = l->num_threads;
  c.scale = l->scale;
  c.num_kv_heads = l->heads.num_kv_heads;
  attn_fx_to_config(&l->fx, &c);
  return attn_struct_store(&config_kind, cfg, &c);
}
