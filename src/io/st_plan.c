/* SPDX-License-Identifier: MIT */
/* Which tensors of a file a layer takes (st_plan.h). */
#include "io/st_plan.h"

#include "common/error.h"
#include "io/st_file.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define BIT(n) (1u << (n))
#define TORCH_ONLY_MASK                                                        \
  (BIT(ST_IN_W) | BIT(ST_IN_B) | BIT(ST_Q_W) | BIT(ST_K_W) | BIT(ST_V_W) |     \
   BIT(ST_BIAS_K) | BIT(ST_BIAS_V))
#define HF_ONLY_MASK                                                           \
  (BIT(ST_HQ_W) | BIT(ST_HK_W) | BIT(ST_HV_W) | BIT(ST_HQ_B) | BIT(ST_HK_B) |  \
   BIT(ST_HV_B) | BIT(ST_HO_W) | BIT(ST_HO_B))

static int lowest_bit(uint32_t mask) {
  int i = 0;
  while (!(mask & BIT(i)))
    i++;
  return i;
}

/* A bit per ST_* name present under the prefix. */
static attn_status names_found(const st_header *h, const char *prefix,
                               uint32_t *found) {
  *found = 0;
  for (int i = 0; i < ST_NAME_COUNT; i++) {
    char *name = attn_st_concat(prefix, attn_st_name(i));
    if (!name)
      return attn_fail(ATTN_ERR_NO_MEMORY, "cannot allocate a tensor name");
    if (attn_st_header_find(h, name))
      *found |= BIT(i);
    free(name);
  }
  return ATTN_OK;
}

/* With no attention tensors under the prefix, a hint naming the prefix of
 * the first attention layer the file does have, if any. */
static void prefix_hint(const st_header *h, char *buf, size_t size) {
  const char *const markers[] = {attn_st_name(ST_IN_W), attn_st_name(ST_Q_W),
                                 attn_st_name(ST_HQ_W)};
  buf[0] = '\0';
  for (size_t i = 0; i < h->count; i++) {
    size_t len = strlen(h->entries[i].name);
    for (size_t m = 0; m < sizeof markers / sizeof markers[0]; m++) {
      size_t ml = strlen(markers[m]);
      if (len >= ml && strcmp(h->entries[i].name + len - ml, markers[m]) == 0) {
        snprintf(buf, size,
                 "; the file has '%.200s', so prefix '%.*s' may be "
                 "meant",
                 h->entries[i].name, (int)(len - ml < 200 ? len - ml : 200),
                 h->entries[i].name);
        return;
      }
    }
  }
}

/* The scheme of the torch names found, or a failure. */
static attn_status torch_scheme(const attn_layer *l, const char *prefix,
                                uint32_t found, int *scheme) {
  bool packed = found & BIT(ST_IN_W);
  uint32_t separate = found & (BIT(ST_Q_W) | BIT(ST_K_W) | BIT(ST_V_W));
  if (packed && separate)
    return attn_fail(ATTN_ERR_FILE_FORMAT,
                     "the file has both the packed '%.150sin_proj_weight' "
                     "and the separate '%.150s%s': cannot tell which to "
                     "load",
                     prefix, prefix, attn_st_name(lowest_bit(separate)));
  if (packed && !attn_layer_is_square(l))
    return attn_fail(ATTN_ERR_WEIGHT_LAYOUT,
                     "the file has the packed '%.150sin_proj_weight' but "
                     "the layer has kdim %lld, vdim %lld != embed_dim "
                     "%lld, which needs separate q/k/v_proj_weight",
                     prefix, (long long)l->kdim, (long long)l->vdim,
                     (long long)l->embed_dim);
  *scheme = packed ? ST_TORCH_PACKED : ST_TORCH_SEPARATE;
  return ATTN_OK;
}

/* Decides the naming scheme from the names found (bit per ST_*). */
static attn_status pick_scheme(const attn_layer *l, const st_header *h,
                               const char *prefix, uint32_t found,
                               int *scheme) {
  uint32_t torch = found & TORCH_ONLY_MASK, hf = found & HF_ONLY_MASK;
  if (torch && hf)
    return attn_fail(ATTN_ERR_FILE_FORMAT,
                     "the file has both torch names ('%.150s%s') and Hugging "
                     "Face names ('%.150s%s') under prefix '%.150s': cannot "
                     "tell which to load",
                     prefix, attn_st_name(lowest_bit(torch)), prefix,
                     attn_st_name(lowest_bit(hf)), prefix);
  if (!torch && !hf) {
    char hint[320];
    prefix_hint(h, hint, sizeof hint);
    return attn_fail(ATTN_ERR_TENSOR_MISSING,
                     "tensor '%.150sin_proj_weight' not found, nor "
                     "q_proj_weight (torch) or q_proj.weight (Hugging Face) "
                     "under prefix '%.150s'%s",
                     prefix, prefix, hint);
  }
  if (found & (BIT(ST_BIAS_K) | BIT(ST_BIAS_V)))
    return attn_fail(
        ATTN_ERR_WEIGHT_LAYOUT,
        "the file has '%.150s%s' (torch's add_bias_kv=True), "
        "which libattn layers do not support",
        prefix, attn_st_name(found & BIT(ST_BIAS_K) ? ST_BIAS_K : ST_BIAS_V));
  if (torch)
    return torch_scheme(l, prefix, found, scheme);
  bool o = found & (BIT(ST_HO_W) | BIT(ST_HO_B));
  bool out = found & (BIT(ST_OUT_W) | BIT(ST_OUT_B));
  if (o && out)
    return attn_fail(ATTN_ERR_FILE_FORMAT,
                     "the file has both '%.150so_proj.*' and "
                     "'%.150sout_proj.*': cannot tell which is the output "
                     "projection",
                     prefix, prefix);
  *scheme = o ? ST_HF_O_PROJ : ST_HF_OUT_PROJ;
  return ATTN_OK;
}

/* The names of tensors the layer has no place for under `scheme`: biases
 * it lacks (all, for torch's packed in_proj_bias, unless it has the q, k
 * and v biases), and QK-norm weights and sinks it does not have. */
static uint32_t unused_names(const attn_layer *l, int scheme) {
  bool bq = attn_has_bias(l, ATTN_SLOT_BQ), bk = attn_has_bias(l, ATTN_SLOT_BK);
  bool bv = attn_has_bias(l, ATTN_SLOT_BV), bo = attn_has_bias(l, ATTN_SLOT_BO);
  uint32_t names = 0;
  if (scheme <= ST_TORCH_SEPARATE)
    names |= bq && bk && bv ? 0 : BIT(ST_IN_B);
  else
    names |= (bq ? 0 : BIT(ST_HQ_B)) | (bk ? 0 : BIT(ST_HK_B)) |
             (bv ? 0 : BIT(ST_HV_B));
  if (!bo)
    names |= BIT(scheme == ST_HF_O_PROJ ? ST_HO_B : ST_OUT_B);
  for (int i = 0; i < 3; i++)
    if (l->slot_count[ATTN_SLOT_QN + i] == 0)
      names |= BIT(ST_Q_NORM + i);
  return names;
}

/* A layer must not silently drop what the file has for it: a bias it was
 * created without, QK-norm weights or sinks it does not have. Torch's
 * names cannot hold only some of the q, k and v biases at all. */
static attn_status check_unused(const attn_layer *l, const char *prefix,
                                int scheme, uint32_t found) {
  int qkv = 0;
  for (int s = ATTN_SLOT_BQ; s <= ATTN_SLOT_BV; s++)
    qkv += attn_has_bias(l, s);
  if (scheme <= ST_TORCH_SEPARATE && qkv != 0 && qkv != 3)
    return attn_fail(ATTN_ERR_WEIGHT_LAYOUT,
                     "torch's '%.150sin_proj_bias' packs the q, k and v "
                     "biases, and the layer has %d of them (bias_parts %d)",
                     prefix, qkv, l->fx.bias_parts);
  uint32_t extra = found & unused_names(l, scheme);
  if (!extra)
    return ATTN_OK;
  int name = lowest_bit(extra);
  if (name >= ST_Q_NORM)
    return attn_fail(ATTN_ERR_WEIGHT_LAYOUT,
                     "the file has '%.150s%s' but the layer was created "
                     "without %s",
                     prefix, attn_st_name(name),
                     name == ST_SINKS ? "sinks" : "qk_norm");
  if (!l->bias)
    return attn_fail(ATTN_ERR_WEIGHT_LAYOUT,
                     "the file has '%.150s%s' but the layer was created with "
                     "bias off: create it with bias on to use the file's "
                     "biases",
                     prefix, attn_st_name(name));
  return attn_fail(ATTN_ERR_WEIGHT_LAYOUT,
                   "the file has '%.150s%s' but the layer has no such bias "
                   "(bias on, bias_parts %d): create it with that bias to use "
                   "the file's",
                   prefix, attn_st_name(name), l->fx.bias_parts);
}

/* Checks that a planned tensor exists with a usable dtype and the shape the
 * layer needs. */
static attn_status check_tensor(const st_header *h, const char *prefix,
                                const st_tensor *t, const st_entry **out) {
  char *name = attn_st_concat(prefix, attn_st_name(t->name));
  if (!name)
    return attn_fail(ATTN_ERR_NO_MEMORY, "cannot allocate a tensor name");
  attn_status st = ATTN_OK;
  const st_entry *e = attn_st_header_find(h, name);
  if (!e) {
    st = attn_fail(ATTN_ERR_TENSOR_MISSING,
                   "tensor '%.300s' not found in the weight file%s", name,
                   t->slot >= ATTN_SLOT_BQ && t->slot <= ATTN_SLOT_BO
                       ? " (for a model without that bias, create the layer "
                         "with attn_config.bias_parts naming the biases it "
                         "has)"
                       : "");
  } else if (strcmp(e->dtype, "F32") != 0 && strcmp(e->dtype, "F16") != 0 &&
             strcmp(e->dtype, "BF16") != 0) {
    st = attn_fail(ATTN_ERR_TENSOR_DTYPE,
                   "tensor '%.300s' has dtype %.32s; libattn loads F32, F16 "
                   "and BF16",
                   name, e->dtype);
  } else {
    bool match = e->rank == t->rank;
    for (int d = 0; match && d < t->rank; d++)
      match = h->dims[e->dims_at + (size_t)d] == (uint64_t)t->dim[d];
    if (!match) {
      char got[160], want[64];
      attn_st_shape_text(h, e, got, sizeof got);
      if (t->rank == 2)
        snprintf(want, sizeof want, "[%lld, %lld]", (long long)t->dim[0],
                 (long long)t->dim[1]);
      else
        snprintf(want, sizeof want, "[%lld]", (long long)t->dim[0]);
      st = attn_fail(ATTN_ERR_TENSOR_SHAPE,
                     "tensor '%.300s' has shape %s, the layer needs %s", name,
                     got, want);
    }
  }
  free(name);
  *out = e;
  return st;
}

attn_status attn_st_plan_make(const attn_layer *l, const st_header *h,
                              const char *prefix, st_plan *p) {
  memset(p, 0, sizeof *p);
  uint32_t found;
  int scheme;
  attn_status st = names_found(h, prefix, &found);
  if (st != ATTN_OK ||
      (st = pick_scheme(l, h, prefix, found, &scheme)) != ATTN_OK)
    return st;
  if ((st = check_unused(l, prefix, scheme, found)) != ATTN_OK)
    return st;
  p->count = attn_st_layer_tensors(l, scheme, p->items);
  for (int i = 0; st == ATTN_OK && i < p->count; i++)
    st = check_tensor(h, prefix, &p->items[i], &p->entries[i]);
  return st;
}
