/* SPDX-License-Identifier: MIT */
/* The naming schemes of weight files (st_names.h). */
#include "io/st_names.h"

/* Names that are not a slot's torch name (attn_slot_name() has those). */
static const char *const other_names[ST_NAME_COUNT] = {
    [ST_IN_W] = "in_proj_weight",  [ST_IN_B] = "in_proj_bias",
    [ST_HQ_W] = "q_proj.weight",   [ST_HK_W] = "k_proj.weight",
    [ST_HV_W] = "v_proj.weight",   [ST_HQ_B] = "q_proj.bias",
    [ST_HK_B] = "k_proj.bias",     [ST_HV_B] = "v_proj.bias",
    [ST_HO_W] = "o_proj.weight",   [ST_HO_B] = "o_proj.bias",
    [ST_BIAS_K] = "bias_k",        [ST_BIAS_V] = "bias_v",
    [ST_Q_NORM] = "q_norm.weight", [ST_K_NORM] = "k_norm.weight",
    [ST_SINKS] = "sinks"};

const char *attn_st_name(int n) {
  switch (n) {
  case ST_Q_W:
    return attn_slot_name(ATTN_SLOT_WQ);
  case ST_K_W:
    return attn_slot_name(ATTN_SLOT_WK);
  case ST_V_W:
    return attn_slot_name(ATTN_SLOT_WV);
  case ST_OUT_W:
    return attn_slot_name(ATTN_SLOT_WO);
  case ST_OUT_B:
    return attn_slot_name(ATTN_SLOT_BO);
  default:
    return other_names[n];
  }
}

int attn_st_layer_tensors(const attn_layer *l, int scheme,
                          st_tensor t[ST_MAX_TENSORS]) {
  int64_t E = l->embed_dim, KV = l->heads.kv_dim;
  bool hf = scheme == ST_HF_OUT_PROJ || scheme == ST_HF_O_PROJ;
  bool o = scheme == ST_HF_O_PROJ;
  bool bq = attn_has_bias(l, ATTN_SLOT_BQ), bk = attn_has_bias(l, ATTN_SLOT_BK);
  bool bv = attn_has_bias(l, ATTN_SLOT_BV), bo = attn_has_bias(l, ATTN_SLOT_BO);
  int n = 0;
#define ADD(name_, slot_, rows, cols)                                          \
  (t[n++] = (st_tensor){name_, slot_, (cols) > 0 ? 2 : 1, {rows, cols}})
  if (scheme == ST_TORCH_PACKED) {
    ADD(ST_IN_W, ATTN_SLOT_WQ, E + 2 * KV, E);
  } else {
    ADD(hf ? ST_HQ_W : ST_Q_W, ATTN_SLOT_WQ, E, E);
    if (hf && bq)
      ADD(ST_HQ_B, ATTN_SLOT_BQ, E, 0);
    ADD(hf ? ST_HK_W : ST_K_W, ATTN_SLOT_WK, KV, l->kdim);
    if (hf && bk)
      ADD(ST_HK_B, ATTN_SLOT_BK, KV, 0);
    ADD(hf ? ST_HV_W : ST_V_W, ATTN_SLOT_WV, KV, l->vdim);
    if (hf && bv)
      ADD(ST_HV_B, ATTN_SLOT_BV, KV, 0);
  }
  if (!hf && bq && bk && bv)
    ADD(ST_IN_B, ATTN_SLOT_BQ, E + 2 * KV, 0);
  ADD(o ? ST_HO_W : ST_OUT_W, ATTN_SLOT_WO, E, E);
  if (bo)
    ADD(o ? ST_HO_B : ST_OUT_B, ATTN_SLOT_BO, E, 0);
  for (int i = 0; i < 3; i++)
    if (l->slot_count[ATTN_SLOT_QN + i] > 0)
      ADD(ST_Q_NORM + i, ATTN_SLOT_QN + i, l->slot_count[ATTN_SLOT_QN + i], 0);
#undef ADD
  return n;
}
