/* SPDX-License-Identifier: MIT */
/* A layer's weights in torch's layout: ids, setters, getters and torch's
 * initialisation. */
#include "layer/layer.h"

#include "common/checked.h"
#include "common/error.h"

#include <math.h>
#include <string.h>

/* torch's names, by slot. */
static const char *const slot_names[ATTN_SLOT_COUNT] = {
    "q_proj_weight", "k_proj_weight", "v_proj_weight", "out_proj.weight",
    "q bias",        "k bias",        "v bias",        "out_proj.bias",
    "q_norm.weight", "k_norm.weight", "sinks"};

const char *attn_slot_name(int slot) { return slot_names[slot]; }

/* A weight id names a run of consecutive slots. */
typedef struct {
  int first, last;
} slot_range;

static attn_status weight_range(const attn_layer *l, attn_weight_id which,
                                slot_range *r) {
  switch (which) {
  case ATTN_W_IN_PROJ:
    if (l->kdim != l->embed_dim || l->vdim != l->embed_dim)
      return attn_fail(ATTN_ERR_WEIGHT_LAYOUT,
                       "packed in_proj_weight needs kdim == vdim == "
                       "embed_dim (%lld), this layer has kdim %lld, vdim "
                       "%lld: use q/k/v_proj_weight",
                       (long long)l->embed_dim, (long long)l->kdim,
                       (long long)l->vdim);
    *r = (slot_range){ATTN_SLOT_WQ, ATTN_SLOT_WV};
    return ATTN_OK;
  case ATTN_W_Q:
  case ATTN_W_K:
  case ATTN_W_V:
    r->first = r->last = ATTN_SLOT_WQ + (which - ATTN_W_Q);
    return ATTN_OK;
  case ATTN_W_OUT:
    *r = (slot_range){ATTN_SLOT_WO, ATTN_SLOT_WO};
    return ATTN_OK;
  case ATTN_B_IN_PROJ:
  case ATTN_B_OUT:
  case ATTN_B_Q:
  case ATTN_B_K:
  case ATTN_B_V:
    if (which == ATTN_B_IN_PROJ)
      *r = (slot_range){ATTN_SLOT_BQ, ATTN_SLOT_BV};
    else if (which == ATTN_B_OUT)
      *r = (slot_range){ATTN_SLOT_BO, ATTN_SLOT_BO};
    else
      r->first = r->last = ATTN_SLOT_BQ + (which - ATTN_B_Q);
    for (int s = r->first; s <= r->last; s++)
      if (!attn_has_bias(l, s))
        return attn_fail(ATTN_ERR_WEIGHT_LAYOUT,
                         "%s does not exist: the layer was created without "
                         "the %s (bias %s, bias_parts %d)",
                         which == ATTN_B_IN_PROJ ? "in_proj_bias"
                         : which == ATTN_B_OUT   ? "out_proj.bias"
                                                 : slot_names[s],
                         slot_names[s], l->bias ? "on" : "off",
                         l->fx.bias_parts);
    return ATTN_OK;
  case ATTN_W_Q_NORM:
  case ATTN_W_K_NORM:
  case ATTN_W_SINKS:
    r->first = r->last = ATTN_SLOT_QN + (which - ATTN_W_Q_NORM);
    if (l->slot_count[r->first] == 0)
      return attn_fail(ATTN_ERR_WEIGHT_LAYOUT,
                       "%s does not exist: the layer was created without %s",
                       slot_names[r->first],
                       which == ATTN_W_SINKS ? "sinks" : "qk_norm");
    return ATTN_OK;
  default:
    return attn_fail(ATTN_ERR_WEIGHT_LAYOUT, "unknown weight id %d",
                     (int)which);
  }
}

static int64_t range_count(const attn_layer *l, slot_range r) {
  int64_t n = 0;
  for (int s = r.first; s <= r.last; s++)
    n += l->slot_count[s];
  return n;
}

attn_status attn_layer_weight_count(const attn_layer *l, attn_weight_id which,
                                    int64_t *count) {
  if (!l || !count)
    return attn_fail(ATTN_ERR_NULL_POINTER,
                     "attn_layer_weight_count: %s is NULL",
                     !l ? "layer" : "count");
  slot_range r = {0, 0};
  attn_status st = weight_range(l, which, &r);
  if (st == ATTN_OK)
    *count = range_count(l, r);
  return st;
}

static attn_status check_weight_call(const attn_layer *l, attn_weight_id which,
                                     const void *data, int64_t count,
                                     const char *fn, slot_range *r) {
  if (!l || !data)
    return attn_fail(ATTN_ERR_NULL_POINTER, "%s: %s is NULL", fn,
                     !l ? "layer" : "data");
  attn_status st = weight_range(l, which, r);
  if (st != ATTN_OK)
    return st;
  int64_t want = range_count(l, *r);
  if (count != want)
    return attn_fail(ATTN_ERR_WEIGHT_SIZE,
                     "%s: weight %d needs %lld floats for this layer, got "
                     "%lld",
                     fn, (int)which, (long long)want, (long long)count);
  return ATTN_OK;
}

attn_status attn_layer_set_weight(attn_layer *l, attn_weight_id which,
                                  const float *data, int64_t count) {
  slot_range r = {0, 0};
  attn_status st =
      check_weight_call(l, which, data, count, "attn_layer_set_weight", &r);
  if (st != ATTN_OK)
    return st;
  if (!attn_all_finite(data, count))
    return attn_fail(ATTN_ERR_NOT_FINITE,
                     "attn_layer_set_weight: weight %d contains NaN or "
                     "infinity",
                     (int)which);
  /* Slots of one range are contiguous in storage. */
  memcpy(attn_slot_ptr(l, r.first), data, (size_t)count * sizeof(float));
  for (int s = r.first; s <= r.last; s++)
    l->slots_set |= 1u << s;
  return ATTN_OK;
}

attn_status attn_layer_get_weight(const attn_layer *l, attn_weight_id which,
                                  float *data, int64_t count) {
  slot_range r = {0, 0};
  attn_status st =
      check_weight_call(l, which, data, count, "attn_layer_get_weight", &r);
  if (st != ATTN_OK)
    return st;
  memcpy(data, attn_slot_ptr(l, r.first), (size_t)count * sizeof(float));
  return ATTN_OK;
}

/* splitmix64: a small, well-mixed generator; reproducible everywhere. */
static uint64_t next_u64(uint64_t *state) {
  uint64_t z = (*state += 0x9e3779b97f4a7c15ull);
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
  return z ^ (z >> 31);
}

static void fill_uniform(float *w, int64_t n, double bound, uint64_t *state) {
  for (int64_t i = 0; i < n; i++) {
    double u = (double)(next_u64(state) >> 11) * 0x1.0p-53; /* [0,1) */
    w[i] = (float)((2.0 * u - 1.0) * bound);
  }
}

attn_status attn_layer_init_weights(attn_layer *l, uint64_t seed) {
  if (!l)
    return attn_fail(ATTN_ERR_NULL_POINTER,
                     "attn_layer_init_weights: layer is NULL");
  uint64_t state = seed;
  int64_t E = l->embed_dim, kv = l->heads.kv_dim;
  if (l->kdim == E && l->vdim == E) {
    /* torch: xavier_uniform_ on the packed [E + 2 KV, E] matrix. */
    double bound = sqrt(6.0 / (double)(E + (E + 2 * kv)));
    fill_uniform(attn_slot_ptr(l, ATTN_SLOT_WQ), E * E + 2 * kv * E, bound,
                 &state);
  } else {
    /* torch: xavier_uniform_ on each of q/k/v_proj_weight. */
    fill_uniform(attn_slot_ptr(l, ATTN_SLOT_WQ), E * E,
                 sqrt(6.0 / (double)(2 * E)), &state);
    fill_uniform(attn_slot_ptr(l, ATTN_SLOT_WK), kv * l->kdim,
                 sqrt(6.0 / (double)(kv + l->kdim)), &state);
    fill_uniform(attn_slot_ptr(l, ATTN_SLOT_WV), kv * l->vdim,
                 sqrt(6.0 / (double)(kv + l->vdim)), &state);
  }
  /* torch's Linear default for out_proj: kaiming_uniform(a = sqrt 5), which
   * is uniform in +-1/sqrt(fan_in). */
  fill_uniform(attn_slot_ptr(l, ATTN_SLOT_WO), E * E, 1.0 / sqrt((double)E),
               &state);
  if (l->biases)
    memset(l->biases, 0,
           (size_t)(2 * E + 2 * kv) * sizeof(float)); /* all zero */
  attn_layer_default_extras(l);
  attn_layer_mark_all_set(l);
  return ATTN_OK;
}

void attn_layer_default_extras(attn_layer *l) {
  float one = l->fx.qk_unit_offset ? 0.0f : 1.0f;
  for (int s = ATTN_SLOT_QN; s <= ATTN_SLOT_SINK; s++) {
    float *p = l->slot_count[s] ? attn_slot_ptr(l, s) : NULL;
    for (int64_t i = 0; p && i < l->slot_count[s]; i++)
      p[i] = s == ATTN_SLOT_SINK ? 0.0f : one;
    l->slots_set |= 1u << s;
  }
}

uint32_t attn_layer_slots(const attn_layer *l) {
  uint32_t need = (1u << ATTN_SLOT_BQ) - 1;
  for (int s = ATTN_SLOT_BQ; s <= ATTN_SLOT_BO; s++)
    if (attn_has_bias(l, s))
      need |= 1u << s;
  for (int s = ATTN_SLOT_QN; s <= ATTN_SLOT_SINK; s++)
    if (l->slot_count[s])
      need |= 1u << s;
  return need;
}

void attn_layer_mark_all_set(attn_layer *l) {
  l->slots_set = attn_layer_slots(l);
}

attn_status attn_layer_check_set(const attn_layer *l, const char *action) {
  uint32_t need = attn_layer_slots(l);
  uint32_t missing = need & ~l->slots_set;
  if (!missing)
    return ATTN_OK;
  int s = 0;
  while (!(missing & (1u << s)))
    s++;
  return attn_fail(ATTN_ERR_WEIGHTS_NOT_SET,
                   "%s: %s has never been set (set every weight, load a "
                   "weight file or call attn_layer_init_weights)",
                   action, slot_names[s]);
}
