/* SPDX-License-Identifier: MIT */
/* The tensor names of the naming schemes (torch's state_dict and Hugging
 * Face's), written once: the loader looks them up, the saver writes
 * them. */
#ifndef ATTN_IO_ST_NAMES_H
#define ATTN_IO_ST_NAMES_H

#include "layer/layer.h"

/* Every name, after the prefix. */
enum {
  ST_IN_W,  /* torch */
  ST_IN_B,  /* torch */
  ST_Q_W,   /* torch */
  ST_K_W,   /* torch */
  ST_V_W,   /* torch */
  ST_OUT_W, /* torch and Hugging Face */
  ST_OUT_B, /* torch and Hugging Face */
  ST_HQ_W,
  ST_HK_W,
  ST_HV_W,
  ST_HQ_B,
  ST_HK_B,
  ST_HV_B,
  ST_HO_W,
  ST_HO_B,
  ST_BIAS_K, /* torch's add_bias_kv, which layers do not have */
  ST_BIAS_V,
  ST_Q_NORM, /* QK-norm and sinks: the same names in both schemes */
  ST_K_NORM,
  ST_SINKS,
  ST_NAME_COUNT
};

/* The text of name n ("in_proj_weight", "o_proj.bias", ...). */
const char *attn_st_name(int n);

/* Which names a layer's tensors go by. */
enum {
  ST_TORCH_PACKED,   /* in_proj_weight */
  ST_TORCH_SEPARATE, /* q/k/v_proj_weight */
  ST_HF_OUT_PROJ,    /* q/k/v_proj.*, out_proj.* */
  ST_HF_O_PROJ       /* q/k/v_proj.*, o_proj.* */
};

/* One tensor of a layer in a file: its name (ST_*), the first slot it
 * fills (a packed tensor fills three) and its shape. */
typedef struct {
  int name;
  int slot;
  int rank;       /* 1 or 2 */
  int64_t dim[2]; /* [rows, cols] or [len] */
} st_tensor;

#define ST_MAX_TENSORS 12

/* The tensors of layer l under `scheme` in file order (torch's state_dict
 * order; Hugging Face's each weight with its bias), each bias only when
 * the layer has it (torch's packed in_proj_bias when it has all of the q,
 * k and v biases), then its QK-norm weights and sinks if any. Returns
 * their number. */
int attn_st_layer_tensors(const struct attn_layer *l, int scheme,
                          st_tensor t[ST_MAX_TENSORS]);

/* Elements of a tensor. */
static inline int64_t st_tensor_count(const st_tensor *t) {
  return t->rank == 2 ? t->dim[0] * t->dim[1] : t->dim[0];
}

#endif
