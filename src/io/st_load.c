/* SPDX-License-Identifier: MIT */
/* Loading a layer's weights from a safetensors file.
 *
 * Three stages, so that a bad file can never leave a layer half loaded:
 * the header is parsed and every entry checked against the file
 * (st_header.c); the layer's tensors are picked by name and checked for
 * dtype and shape (st_plan.c); their data are then read, converted to
 * float into a staging copy and checked to be finite. Only after all of
 * that succeeds is the staging copy written into the layer.
 *
 * From a file, only the header and the bytes of the tensors the layer
 * needs are read, so one layer can be taken from a large model file
 * without reading the rest of it. */
#include "io/half.h"
#include "io/st_file.h"
#include "io/st_plan.h"

#include "common/checked.h"
#include "common/error.h"

#include <inttypes.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* Bytes converted per read when loading from a file (a multiple of every
 * element size). */
#define READ_CHUNK ((size_t)1 << 20)

/* Reads the 8-byte length and the header text, and parses it. */
static attn_status read_header(const st_source *src, st_header *h) {
  if (src->size < 8)
    return attn_fail(ATTN_ERR_FILE_FORMAT,
                     "weight file has %" PRIu64 " bytes, fewer than the "
                     "8-byte header length of a safetensors file",
                     src->size);
  unsigned char lenbuf[8];
  attn_status st = attn_st_read_at(src, 0, 8, lenbuf);
  if (st != ATTN_OK)
    return st;
  uint64_t hlen = attn_le64(lenbuf);
  if (hlen == 0)
    return attn_fail(ATTN_ERR_FILE_FORMAT,
                     "safetensors header length is 0: not a safetensors "
                     "file");
  if (hlen > ATTN_SAFETENSORS_MAX_HEADER)
    return attn_fail(ATTN_ERR_FILE_FORMAT,
                     "safetensors header length %" PRIu64 " is absurd (the "
                     "limit is %d bytes): not a safetensors file",
                     hlen, ATTN_SAFETENSORS_MAX_HEADER);
  if (hlen > src->size - 8)
    return attn_fail(ATTN_ERR_FILE_FORMAT,
                     "safetensors header length %" PRIu64 " is more than the "
                     "%" PRIu64 " bytes that follow it: truncated or not a "
                     "safetensors file",
                     hlen, src->size - 8);
  /* From memory the header is parsed in place; from a file it is read
   * into a buffer of its own. */
  if (src->mem)
    return attn_st_header_parse((const char *)src->mem + 8, (size_t)hlen,
                                src->size, h);
  char *text = malloc((size_t)hlen);
  if (!text)
    return attn_fail(ATTN_ERR_NO_MEMORY,
                     "cannot allocate %" PRIu64 " bytes for the header", hlen);
  if ((st = attn_st_read_at(src, 8, (size_t)hlen, text)) == ATTN_OK)
    st = attn_st_header_parse(text, (size_t)hlen, src->size, h);
  free(text);
  return st;
}

static void convert(const unsigned char *src, int elsize, bool bf16,
                    size_t count, float *dst) {
  if (elsize == 4) {
    for (size_t i = 0; i < count; i++)
      dst[i] = attn_bits_to_float(attn_le32(src + 4 * i));
  } else if (bf16) {
    for (size_t i = 0; i < count; i++)
      dst[i] = attn_bf16_to_float(attn_le16(src + 2 * i));
  } else {
    for (size_t i = 0; i < count; i++)
      dst[i] = attn_half_to_float(attn_le16(src + 2 * i));
  }
}

/* Reads tensor e (already checked) into dst as floats. chunk is a buffer of
 * READ_CHUNK bytes for file sources. */
static attn_status load_tensor(const st_source *src, const st_header *h,
                               const st_entry *e, float *dst,
                               unsigned char *chunk) {
  int elsize = attn_st_dtype_size(e->dtype);
  bool bf16 = strcmp(e->dtype, "BF16") == 0;
  uint64_t offset = h->data_start + e->begin;
  size_t left = (size_t)(e->end - e->begin);
  size_t count = left / (size_t)elsize;
  if (src->mem) {
    convert(src->mem + offset, elsize, bf16, count, dst);
  } else {
    for (float *out = dst; left > 0;) {
      size_t len = left < READ_CHUNK ? left : READ_CHUNK;
      attn_status st = attn_st_read_at(src, offset, len, chunk);
      if (st != ATTN_OK)
        return st;
      convert(chunk, elsize, bf16, len / (size_t)elsize, out);
      out += len / (size_t)elsize;
      offset += len;
      left -= len;
    }
  }
  if (!attn_all_finite(dst, (int64_t)count)) {
    size_t i = 0;
    while (i < count && isfinite(dst[i]))
      i++;
    return attn_fail(ATTN_ERR_NOT_FINITE,
                     "tensor '%.300s' holds %s at element %zu; weights must "
                     "be finite",
                     e->name, isnan(dst[i]) ? "NaN" : "infinity", i);
  }
  return ATTN_OK;
}

/* Reads every planned tensor into a staging copy of the layer's weights
 * and biases, then copies it into the layer. */
static attn_status stage_and_commit(attn_layer *l, const st_source *src,
                                    const st_header *h, const st_plan *plan) {
  /* In the layer's storage order; the plan covers every slot (the packed
   * tensors fill three). */
  int64_t nw = l->slot_offset[ATTN_SLOT_WO] + l->slot_count[ATTN_SLOT_WO];
  int64_t nb = l->slot_offset[ATTN_SLOT_BO] + l->slot_count[ATTN_SLOT_BO];
  int64_t nx = l->slot_offset[ATTN_SLOT_SINK] + l->slot_count[ATTN_SLOT_SINK];
  float *stage_w = malloc((size_t)nw * sizeof(float));
  /* A bias the layer lacks stays zero in its storage. */
  float *stage_b = l->bias ? calloc((size_t)nb, sizeof(float)) : NULL;
  float *stage_x = nx ? malloc((size_t)nx * sizeof(float)) : NULL;
  unsigned char *chunk = src->mem ? NULL : malloc(READ_CHUNK);
  attn_status st = ATTN_OK;
  if (!stage_w || (l->bias && !stage_b) || (nx && !stage_x) ||
      (!src->mem && !chunk))
    st = attn_fail(ATTN_ERR_NO_MEMORY,
                   "cannot allocate %zu bytes to stage the weights",
                   (size_t)(nw + nb) * sizeof(float) + READ_CHUNK);
  for (int i = 0; st == ATTN_OK && i < plan->count; i++) {
    const st_tensor *t = &plan->items[i];
    float *base = t->slot >= ATTN_SLOT_QN   ? stage_x
                  : t->slot >= ATTN_SLOT_BQ ? stage_b
                                            : stage_w;
    st = load_tensor(src, h, plan->entries[i], base + l->slot_offset[t->slot],
                     chunk);
  }
  if (st == ATTN_OK) {
    memcpy(l->weights, stage_w, (size_t)nw * sizeof(float));
    if (l->bias)
      memcpy(l->biases, stage_b, (size_t)nb * sizeof(float));
    if (nx)
      memcpy(l->extras, stage_x, (size_t)nx * sizeof(float));
    attn_layer_mark_all_set(l);
  }
  free(chunk);
  free(stage_w);
  free(stage_b);
  free(stage_x);
  return st;
}

static attn_status load(attn_layer *l, const st_source *src,
                        const char *prefix) {
  st_header h;
  attn_status st = read_header(src, &h);
  if (st != ATTN_OK)
    return st;
  st_plan plan;
  st = attn_st_plan_make(l, &h, prefix ? prefix : "", &plan);
  if (st == ATTN_OK)
    st = stage_and_commit(l, src, &h, &plan);
  attn_st_header_free(&h);
  return st;
}

attn_status attn_layer_load_safetensors_mem(attn_layer *layer, const void *data,
                                            size_t size, const char *prefix) {
  if (!layer || !data)
    return attn_fail(ATTN_ERR_NULL_POINTER,
                     "attn_layer_load_safetensors_mem: %s is NULL",
                     !layer ? "layer" : "data");
  st_source src = {.mem = data, .fd = -1, .size = size};
  return load(layer, &src, prefix);
}

attn_status attn_layer_load_safetensors(attn_layer *layer, const char *path,
                                        const char *prefix) {
  if (!layer || !path)
    return attn_fail(ATTN_ERR_NULL_POINTER,
                     "attn_layer_load_safetensors: %s is NULL",
                     !layer ? "layer" : "path");
  st_source src;
  attn_status st = attn_st_open(path, &src);
  if (st != ATTN_OK)
    return st;
  st = load(layer, &src, prefix);
  close(src.fd);
  return st;
}
