/* Layer configuration, creation and weights in torch's layout. */
#include "internal.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* The first released attn_config ends with num_kv_heads. */
#define CONFIG_MIN_SIZE sizeof(attn_config)

void attn_config_init(attn_config *cfg) {
  if (!cfg)
    return;
  memset(cfg, 0, sizeof *cfg);
  cfg->struct_size = sizeof *cfg;
  cfg->num_heads = 1;
  cfg->bias = 1;
}

static attn_status check_config(const attn_config *c) {
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
                     "num_threads %d must not be negative (0 means all cores)",
                     c->num_threads);
  /* The scale is applied in float: it must stay finite and, when given,
   * not round to zero (which would silently make attention uniform). */
  if (!(c->scale >= 0.0) || !isfinite(c->scale) || isinf((float)c->scale) ||
      (c->scale > 0 && (float)c->scale == 0.0f))
    return attn_fail(ATTN_ERR_BAD_OPTION,
                     "scale %g must be 0 (meaning 1/sqrt(head_dim)) or a "
                     "positive value representable as a float",
                     c->scale);
  return ATTN_OK;
}

attn_status attn_layer_create(const attn_config *cfg_in, attn_layer **out) {
  if (!cfg_in || !out)
    return attn_fail(ATTN_ERR_NULL_POINTER, "attn_layer_create: %s is NULL",
                     !cfg_in ? "cfg" : "out");
  attn_config c;
  attn_config_init(&c);
  attn_status st =
      attn_load_struct(&c, sizeof c, cfg_in, CONFIG_MIN_SIZE, "attn_config");
  if (st != ATTN_OK)
    return st;
  if ((st = check_config(&c)) != ATTN_OK)
    return st;

  int64_t E = c.embed_dim, H = c.num_heads, hd = E / H;
  int64_t kdim = c.kdim ? c.kdim : E, vdim = c.vdim ? c.vdim : E;
  int64_t hkv = c.num_kv_heads ? c.num_kv_heads : H;
  int64_t kv = hkv * hd;
  int64_t counts[ATTN_SLOT_COUNT];
  bool ok = attn_mul64(E, E, &counts[ATTN_SLOT_WQ]) &&
            attn_mul64(kv, kdim, &counts[ATTN_SLOT_WK]) &&
            attn_mul64(kv, vdim, &counts[ATTN_SLOT_WV]);
  counts[ATTN_SLOT_WO] = counts[ATTN_SLOT_WQ];
  counts[ATTN_SLOT_BQ] = E;
  counts[ATTN_SLOT_BK] = kv;
  counts[ATTN_SLOT_BV] = kv;
  counts[ATTN_SLOT_BO] = E;
  int64_t nw = 0, nb = 0;
  int64_t offs[ATTN_SLOT_COUNT];
  for (int s = 0; ok && s < ATTN_SLOT_COUNT; s++) {
    int64_t *total = s >= ATTN_SLOT_BQ ? &nb : &nw;
    offs[s] = *total;
    ok = attn_add64(*total, counts[s], total);
  }
  size_t wbytes, bbytes;
  if (!ok || !attn_mulsz((size_t)nw, sizeof(float), &wbytes) ||
      !attn_mulsz((size_t)nb, sizeof(float), &bbytes) ||
      (uint64_t)nw > PTRDIFF_MAX / sizeof(float))
    return attn_fail(ATTN_ERR_OVERFLOW,
                     "weights of embed_dim %lld, kdim %lld, vdim %lld do not "
                     "fit in memory",
                     (long long)E, (long long)kdim, (long long)vdim);

  attn_layer *l = calloc(1, sizeof *l);
  float *w = calloc((size_t)nw, sizeof(float));
  float *b = c.bias ? calloc((size_t)nb, sizeof(float)) : NULL;
  if (!l || !w || (c.bias && !b)) {
    free(l);
    free(w);
    free(b);
    return attn_fail(ATTN_ERR_NO_MEMORY,
                     "cannot allocate %zu bytes of layer weights",
                     wbytes + bbytes);
  }
  l->embed_dim = E;
  l->num_heads = H;
  l->head_dim = hd;
  l->kdim = kdim;
  l->vdim = vdim;
  l->num_kv_heads = hkv;
  l->kv_dim = kv;
  l->bias = c.bias != 0;
  l->num_threads = c.num_threads;
  l->scale_d = c.scale > 0 ? c.scale : 1.0 / sqrt((double)hd);
  l->scale = (float)l->scale_d;
  l->weights = w;
  l->biases = b;
  memcpy(l->slot_offset, offs, sizeof offs);
  memcpy(l->slot_count, counts, sizeof counts);
  *out = l;
  return ATTN_OK;
}

void attn_layer_destroy(attn_layer *layer) {
  if (!layer)
    return;
  free(layer->weights);
  free(layer->biases);
  free(layer);
}

attn_status attn_layer_get_config(const attn_layer *l, attn_config *cfg) {
  if (!l || !cfg)
    return attn_fail(ATTN_ERR_NULL_POINTER, "attn_layer_get_config: %s is NULL",
                     !l ? "layer" : "cfg");
  if (cfg->struct_size < CONFIG_MIN_SIZE)
    return attn_fail(ATTN_ERR_STRUCT_SIZE,
                     "attn_config.struct_size %zu is smaller than %zu",
                     cfg->struct_size, (size_t)CONFIG_MIN_SIZE);
  attn_config c;
  attn_config_init(&c);
  c.embed_dim = l->embed_dim;
  c.num_heads = l->num_heads;
  c.kdim = l->kdim;
  c.vdim = l->vdim;
  c.bias = l->bias;
  c.num_threads = l->num_threads;
  c.scale = l->scale_d;
  c.num_kv_heads = l->num_kv_heads;
  size_t n = cfg->struct_size < sizeof c ? cfg->struct_size : sizeof c;
  c.struct_size = cfg->struct_size;
  memcpy(cfg, &c, n);
  return ATTN_OK;
}

/* A weight id names a run of consecutive slots. */
typedef struct {
  int first, last;
} slot_range;

static attn_status weight_range(const attn_layer *l, attn_weight_id which,
                                slot_range *r) {
  static const char *const names[] = {
      "in_proj_weight", "in_proj_bias",    "q_proj_weight", "k_proj_weight",
      "v_proj_weight",  "out_proj.weight", "out_proj.bias", "q bias",
      "k bias",         "v bias"};
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
    if (!l->bias)
      return attn_fail(ATTN_ERR_WEIGHT_LAYOUT,
                       "%s does not exist: the layer was created with bias "
                       "off",
                       names[which]);
    if (which == ATTN_B_IN_PROJ)
      *r = (slot_range){ATTN_SLOT_BQ, ATTN_SLOT_BV};
    else if (which == ATTN_B_OUT)
      *r = (slot_range){ATTN_SLOT_BO, ATTN_SLOT_BO};
    else
      r->first = r->last = ATTN_SLOT_BQ + (which - ATTN_B_Q);
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
  int64_t E = l->embed_dim, kv = l->kv_dim;
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
  l->slots_set = (1u << ATTN_SLOT_COUNT) - 1;
  return ATTN_OK;
}

attn_status attn_layer_check_set(const attn_layer *l, const char *action) {
  static const char *const names[ATTN_SLOT_COUNT] = {
      "q_proj_weight", "k_proj_weight", "v_proj_weight", "out_proj.weight",
      "q bias",        "k bias",        "v bias",        "out_proj.bias"};
  uint32_t need = (1u << (l->bias ? ATTN_SLOT_COUNT : ATTN_SLOT_BQ)) - 1;
  uint32_t missing = need & ~l->slots_set;
  if (!missing)
    return ATTN_OK;
  int s = 0;
  while (!(missing & (1u << s)))
    s++;
  return attn_fail(ATTN_ERR_WEIGHTS_NOT_SET,
                   "%s: %s has never been set (set every weight, load a "
                   "weight file or call attn_layer_init_weights)",
                   action, names[s]);
}

int32_t attn_resolve_threads(int32_t requested, int32_t layer_default) {
  int32_t n = requested > 0 ? requested : layer_default;
  if (n <= 0) {
    long cores = sysconf(_SC_NPROCESSORS_ONLN);
    n = cores > 0 ? (int32_t)(cores < 1024 ? cores : 1024) : 1;
  }
  return n;
}
