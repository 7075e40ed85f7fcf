/* SPDX-License-Identifier: MIT */
/* Weight files in the safetensors format.
 *
 * Loading has three stages so that a bad file can never leave a layer half
 * loaded: the header is parsed (with libcjson) and every entry checked
 * against the file; the layer's tensors are picked by name and checked for
 * dtype and shape; their data are then read, converted to float into a
 * staging copy and checked to be finite. Only after all of that succeeds is
 * the staging copy written into the layer.
 *
 * Files are read with pread(): the header, then only the bytes of the
 * tensors the layer needs, so one layer can be taken from a large model file
 * without reading the rest of it. Saving writes a temporary file next to the
 * target and renames it into place. */
#define _FILE_OFFSET_BITS 64

#include "io/half.h"

#include "common/checked.h"
#include "common/error.h"
#include "layer/layer.h"

#include <cJSON.h>

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

/* ------------------------------------------------------------------------ */
/* Small helpers                                                             */
/* ------------------------------------------------------------------------ */

/* Bytes converted per read when loading from a file (a multiple of every
 * element size). */
#define READ_CHUNK ((size_t)1 << 20)
/* Bytes converted per write when saving. */
#define WRITE_CHUNK ((size_t)1 << 16)
/* JSON numbers are doubles: integers above 2^53 are not exact any more. */
#define JSON_MAX_EXACT 9007199254740992.0

/* The message of errno, thread-safely. */
static const char *errno_text(int err, char *buf, size_t size) {
  if (strerror_r(err, buf, size) != 0)
    snprintf(buf, size, "error %d", err);
  return buf;
}

static char *concat(const char *a, const char *b) {
  size_t na = strlen(a), nb = strlen(b), total;
  if (!attn_addsz(na, nb, &total) || !attn_addsz(total, 1, &total))
    return NULL;
  char *s = malloc(total);
  if (s) {
    memcpy(s, a, na);
    memcpy(s + na, b, nb + 1);
  }
  return s;
}

/* ------------------------------------------------------------------------ */
/* Header                                                                    */
/* ------------------------------------------------------------------------ */

/* Element sizes of the dtypes the format defines; 0 for dtypes of less than
 * a byte or unknown ones (their entries are checked without the size). */
static int dtype_size(const char *dtype) {
  static const struct {
    const char *name;
    int size;
  } known[] = {{"F64", 8},  {"F32", 4},     {"F16", 2},     {"BF16", 2},
               {"I64", 8},  {"I32", 4},     {"I16", 2},     {"I8", 1},
               {"U64", 8},  {"U32", 4},     {"U16", 2},     {"U8", 1},
               {"BOOL", 1}, {"F8_E5M2", 1}, {"F8_E4M3", 1}, {"F8_E8M0", 1}};
  for (size_t i = 0; i < sizeof known / sizeof known[0]; i++)
    if (strcmp(dtype, known[i].name) == 0)
      return known[i].size;
  return 0;
}

typedef struct {
  const char *name;   /* owned by the cJSON tree */
  const char *dtype;  /* owned by the cJSON tree */
  const cJSON *shape; /* array of dimensions */
  int rank;
  uint64_t begin, end; /* data_offsets, relative to the data section */
} st_entry;

typedef struct {
  cJSON *root;
  st_entry *entries; /* sorted by name */
  size_t count;
  uint64_t data_start; /* 8 + header length */
  uint64_t data_size;
} st_header;

static void header_free(st_header *h) {
  cJSON_Delete(h->root);
  free(h->entries);
}

/* A JSON number that is a non-negative integer represented exactly. */
static bool json_u64(const cJSON *item, uint64_t *out) {
  if (!cJSON_IsNumber(item))
    return false;
  double d = item->valuedouble;
  if (!(d >= 0.0 && d <= JSON_MAX_EXACT) || (double)(uint64_t)d != d)
    return false;
  *out = (uint64_t)d;
  return true;
}

/* "[3, 4]" (at most size bytes, shortened with "..." when long). */
static const char *shape_text(const cJSON *shape, char *buf, size_t size) {
  size_t used = 0;
  int n = snprintf(buf, size, "[");
  used = n > 0 ? (size_t)n : 0;
  const cJSON *dim;
  bool first = true;
  cJSON_ArrayForEach(dim, shape) {
    if (used + 24 >= size) {
      snprintf(buf + used, size - used, ", ...");
      used = strlen(buf);
      break;
    }
    n = snprintf(buf + used, size - used, "%s%.0f", first ? "" : ", ",
                 dim->valuedouble);
    used += n > 0 ? (size_t)n : 0;
    first = false;
  }
  if (used + 2 <= size)
    snprintf(buf + used, size - used, "]");
  return buf;
}

static attn_status bad_entry(const char *name, const char *what) {
  return attn_fail(ATTN_ERR_FILE_FORMAT,
                   "corrupt safetensors header: tensor '%.200s' %s", name,
                   what);
}

/* Checks one tensor entry on its own (not against the others). */
static attn_status parse_entry(const cJSON *item, uint64_t data_size,
                               st_entry *e) {
  const char *name = item->string;
  if (!cJSON_IsObject(item))
    return bad_entry(name, "is not a JSON object");
  const cJSON *dtype = cJSON_GetObjectItemCaseSensitive(item, "dtype");
  const cJSON *shape = cJSON_GetObjectItemCaseSensitive(item, "shape");
  const cJSON *offsets = cJSON_GetObjectItemCaseSensitive(item, "data_offsets");
  if (!cJSON_IsString(dtype))
    return bad_entry(name, "has no \"dtype\" string");
  if (!cJSON_IsArray(shape))
    return bad_entry(name, "has no \"shape\" array");
  if (!cJSON_IsArray(offsets) || cJSON_GetArraySize(offsets) != 2)
    return bad_entry(name, "has no \"data_offsets\" array of two numbers");

  /* Element count, overflow-checked. */
  uint64_t numel = 1;
  bool numel_ok = true;
  int rank = 0;
  const cJSON *dim;
  cJSON_ArrayForEach(dim, shape) {
    uint64_t d;
    if (!json_u64(dim, &d))
      return bad_entry(name, "has a shape entry that is not a non-negative "
                             "integer");
    if (numel_ok && __builtin_mul_overflow(numel, d, &numel))
      numel_ok = false;
    rank++;
  }
  uint64_t begin, end;
  if (!json_u64(cJSON_GetArrayItem(offsets, 0), &begin) ||
      !json_u64(cJSON_GetArrayItem(offsets, 1), &end))
    return bad_entry(name, "has data_offsets that are not non-negative "
                           "integers");
  if (begin > end)
    return attn_fail(ATTN_ERR_FILE_FORMAT,
                     "corrupt safetensors header: tensor '%.200s' has "
                     "reversed data_offsets [%" PRIu64 ", %" PRIu64 "]",
                     name, begin, end);
  if (end > data_size)
    return attn_fail(ATTN_ERR_FILE_FORMAT,
                     "safetensors data out of range: tensor '%.200s' has "
                     "data_offsets [%" PRIu64 ", %" PRIu64 "] but the data "
                     "section has only %" PRIu64 " bytes (truncated file?)",
                     name, begin, end, data_size);
  int elsize = dtype_size(dtype->valuestring);
  uint64_t bytes = 0;
  bool bytes_ok =
      numel_ok && !__builtin_mul_overflow(numel, (uint64_t)elsize, &bytes);
  if (elsize > 0 && (!bytes_ok || bytes != end - begin)) {
    char sbuf[160];
    return attn_fail(ATTN_ERR_FILE_FORMAT,
                     "corrupt safetensors header: tensor '%.200s' of dtype "
                     "%.16s and shape %s needs %s bytes but its data_offsets "
                     "[%" PRIu64 ", %" PRIu64 "] span %" PRIu64,
                     name, dtype->valuestring,
                     shape_text(shape, sbuf, sizeof sbuf),
                     bytes_ok ? "a different number of" : "more than 2^64",
                     begin, end, end - begin);
  }
  e->name = name;
  e->dtype = dtype->valuestring;
  e->shape = shape;
  e->rank = rank;
  e->begin = begin;
  e->end = end;
  return ATTN_OK;
}

static int by_name(const void *a, const void *b) {
  return strcmp(((const st_entry *)a)->name, ((const st_entry *)b)->name);
}

static int by_offset(const void *a, const void *b) {
  const st_entry *x = *(const st_entry *const *)a;
  const st_entry *y = *(const st_entry *const *)b;
  if (x->begin != y->begin)
    return x->begin < y->begin ? -1 : 1;
  if (x->end != y->end)
    return x->end < y->end ? -1 : 1;
  return 0;
}

/* The tensors must tile the data section exactly: no overlap (two tensors
 * sharing bytes would alias), no gap and nothing after the last one (the
 * format forbids both so that files cannot hide other content). */
static attn_status check_tiling(const st_header *h) {
  if (h->count == 0) {
    if (h->data_size != 0)
      return attn_fail(ATTN_ERR_FILE_FORMAT,
                       "corrupt safetensors file: no tensors but %" PRIu64
                       " bytes of data",
                       h->data_size);
    return ATTN_OK;
  }
  size_t bytes;
  if (!attn_mulsz(h->count, sizeof(st_entry *), &bytes))
    return attn_fail(ATTN_ERR_NO_MEMORY, "too many tensors in the header");
  const st_entry **order = malloc(bytes);
  if (!order)
    return attn_fail(ATTN_ERR_NO_MEMORY,
                     "cannot allocate %zu bytes to check a safetensors "
                     "header",
                     bytes);
  for (size_t i = 0; i < h->count; i++)
    order[i] = &h->entries[i];
  qsort(order, h->count, sizeof *order, by_offset);
  attn_status st = ATTN_OK;
  uint64_t covered = 0;
  const st_entry *prev = NULL;
  for (size_t i = 0; i < h->count && st == ATTN_OK; i++) {
    const st_entry *e = order[i];
    if (e->begin < covered)
      st = attn_fail(ATTN_ERR_FILE_FORMAT,
                     "corrupt safetensors header: data of tensor '%.200s' "
                     "[%" PRIu64 ", %" PRIu64 "] overlaps tensor '%.200s' "
                     "[%" PRIu64 ", %" PRIu64 "]",
                     e->name, e->begin, e->end, prev->name, prev->begin,
                     prev->end);
    else if (e->begin > covered)
      st = attn_fail(ATTN_ERR_FILE_FORMAT,
                     "corrupt safetensors header: %" PRIu64 " bytes of data "
                     "before tensor '%.200s' (offset %" PRIu64
                     ") belong to no tensor",
                     e->begin - covered, e->name, e->begin);
    covered = e->end;
    prev = e;
  }
  if (st == ATTN_OK && covered != h->data_size)
    st = attn_fail(ATTN_ERR_FILE_FORMAT,
                   "corrupt safetensors file: %" PRIu64 " bytes after the "
                   "last tensor's data belong to no tensor",
                   h->data_size - covered);
  free(order);
  return st;
}

/* Parses and checks the header text (n bytes, not NUL-terminated) of a file
 * of file_size bytes. On success *h owns the parsed header. */
static attn_status parse_header(const char *text, size_t n, uint64_t file_size,
                                st_header *h) {
  memset(h, 0, sizeof *h);
  h->data_start = 8 + (uint64_t)n;
  h->data_size = file_size - h->data_start;
  if (memchr(text, '\0', n))
    return attn_fail(ATTN_ERR_FILE_FORMAT,
                     "corrupt safetensors header: it contains a NUL byte");
  const char *end = NULL;
  cJSON *root = cJSON_ParseWithLengthOpts(text, n, &end, 0);
  if (!root) {
    size_t at =
        end && end >= text && end <= text + n ? (size_t)(end - text) : 0;
    return attn_fail(ATTN_ERR_FILE_FORMAT,
                     "safetensors header is not valid JSON (error at byte "
                     "%zu of %zu)",
                     at, n);
  }
  /* The header may be padded with spaces; nothing else may follow. */
  for (const char *p = end; p < text + n; p++)
    if (*p != ' ' && *p != '\t' && *p != '\n' && *p != '\r') {
      cJSON_Delete(root);
      return attn_fail(ATTN_ERR_FILE_FORMAT,
                       "safetensors header has bytes after its JSON value "
                       "(at byte %zu of %zu)",
                       (size_t)(p - text), n);
    }
  if (!cJSON_IsObject(root)) {
    cJSON_Delete(root);
    return attn_fail(ATTN_ERR_FILE_FORMAT,
                     "safetensors header is JSON but not an object of "
                     "tensors");
  }
  h->root = root;
  size_t count = 0;
  const cJSON *item;
  cJSON_ArrayForEach(item, root) count++;
  h->entries = calloc(count ? count : 1, sizeof *h->entries);
  if (!h->entries) {
    header_free(h);
    return attn_fail(ATTN_ERR_NO_MEMORY,
                     "cannot allocate the index of %zu tensors", count);
  }
  attn_status st = ATTN_OK;
  cJSON_ArrayForEach(item, root) {
    /* Free-form metadata (e.g. {"format": "pt"}); the library does not use
     * it. */
    if (strcmp(item->string, "__metadata__") == 0)
      continue;
    if ((st = parse_entry(item, h->data_size, &h->entries[h->count])) !=
        ATTN_OK) {
      header_free(h);
      return st;
    }
    h->count++;
  }
  qsort(h->entries, h->count, sizeof *h->entries, by_name);
  for (size_t i = 1; i < h->count; i++)
    if (strcmp(h->entries[i - 1].name, h->entries[i].name) == 0) {
      st = attn_fail(ATTN_ERR_FILE_FORMAT,
                     "corrupt safetensors header: tensor '%.200s' is listed "
                     "twice",
                     h->entries[i].name);
      header_free(h);
      return st;
    }
  if ((st = check_tiling(h)) != ATTN_OK) {
    header_free(h);
    return st;
  }
  return ATTN_OK;
}

static const st_entry *find_entry(const st_header *h, const char *name) {
  st_entry key = {.name = name};
  if (h->count == 0)
    return NULL;
  return bsearch(&key, h->entries, h->count, sizeof key, by_name);
}

/* ------------------------------------------------------------------------ */
/* Where the bytes come from                                                 */
/* ------------------------------------------------------------------------ */

typedef struct {
  const unsigned char *mem; /* whole file in memory, or NULL for fd */
  int fd;
  uint64_t size;
} st_source;

static attn_status read_at(const st_source *src, uint64_t offset, size_t len,
                           void *dst) {
  if (src->mem) {
    memcpy(dst, src->mem + offset, len);
    return ATTN_OK;
  }
  unsigned char *out = dst;
  while (len > 0) {
    size_t want = len > ((size_t)1 << 30) ? (size_t)1 << 30 : len;
    ssize_t got = pread(src->fd, out, want, (off_t)offset);
    if (got < 0 && errno == EINTR)
      continue;
    if (got < 0) {
      char msg[128];
      return attn_fail(ATTN_ERR_IO, "cannot read the weight file: %s",
                       errno_text(errno, msg, sizeof msg));
    }
    if (got == 0)
      return attn_fail(ATTN_ERR_IO,
                       "weight file ended at byte %" PRIu64 " while being "
                       "read (was it changed meanwhile?)",
                       offset);
    out += got;
    offset += (uint64_t)got;
    len -= (size_t)got;
  }
  return ATTN_OK;
}

/* ------------------------------------------------------------------------ */
/* Which tensors a layer needs                                               */
/* ------------------------------------------------------------------------ */

/* Every name the loader looks for, after the prefix. */
enum {
  N_IN_W,  /* torch */
  N_IN_B,  /* torch */
  N_Q_W,   /* torch */
  N_K_W,   /* torch */
  N_V_W,   /* torch */
  N_OUT_W, /* torch and Hugging Face */
  N_OUT_B, /* torch and Hugging Face */
  N_HQ_W,
  N_HK_W,
  N_HV_W,
  N_HQ_B,
  N_HK_B,
  N_HV_B,
  N_HO_W,
  N_HO_B,
  N_BIAS_K, /* torch's add_bias_kv */
  N_BIAS_V,
  N_Q_NORM, /* QK-norm and sinks: the same names in both schemes */
  N_K_NORM,
  N_SINKS,
  N_COUNT
};

static const char *const suffix_of[N_COUNT] = {
    "in_proj_weight", "in_proj_bias",    "q_proj_weight", "k_proj_weight",
    "v_proj_weight",  "out_proj.weight", "out_proj.bias", "q_proj.weight",
    "k_proj.weight",  "v_proj.weight",   "q_proj.bias",   "k_proj.bias",
    "v_proj.bias",    "o_proj.weight",   "o_proj.bias",   "bias_k",
    "bias_v",         "q_norm.weight",   "k_norm.weight", "sinks"};

#define TORCH_ONLY_MASK                                                        \
  ((1u << N_IN_W) | (1u << N_IN_B) | (1u << N_Q_W) | (1u << N_K_W) |           \
   (1u << N_V_W) | (1u << N_BIAS_K) | (1u << N_BIAS_V))
#define HF_ONLY_MASK                                                           \
  ((1u << N_HQ_W) | (1u << N_HK_W) | (1u << N_HV_W) | (1u << N_HQ_B) |         \
   (1u << N_HK_B) | (1u << N_HV_B) | (1u << N_HO_W) | (1u << N_HO_B))

/* One tensor to load: where it goes and the shape it must have. */
typedef struct {
  int name;       /* N_* */
  int slot;       /* first slot it fills */
  int rank;       /* 1 or 2 */
  int64_t dim[2]; /* [rows, cols] or [len] */
} st_need;

#define MAX_NEEDS 12

typedef struct {
  st_need items[MAX_NEEDS];
  int count;
} st_plan;

static void need(st_plan *p, int name, int slot, int64_t rows, int64_t cols) {
  st_need *n = &p->items[p->count++];
  n->name = name;
  n->slot = slot;
  n->rank = cols > 0 ? 2 : 1;
  n->dim[0] = rows;
  n->dim[1] = cols;
}

static int lowest_bit(uint32_t mask) {
  int i = 0;
  while (!(mask & (1u << i)))
    i++;
  return i;
}

/* With no attention tensors under the prefix, a hint naming the prefix of
 * the first attention layer the file does have, if any. */
static void prefix_hint(const st_header *h, char *buf, size_t size) {
  static const char *const markers[] = {"in_proj_weight", "q_proj_weight",
                                        "q_proj.weight"};
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

static attn_status bias_off(const char *prefix, int name) {
  return attn_fail(ATTN_ERR_WEIGHT_LAYOUT,
                   "the file has '%.150s%s' but the layer was created with "
                   "bias off: create it with bias on to use the file's "
                   "biases",
                   prefix, suffix_of[name]);
}

/* torch's packed in_proj_bias: needed when the layer has the q, k and v
 * biases, refused when it has none of them, and a layout error when it has
 * some (torch cannot store that). */
static attn_status plan_in_proj_bias(const attn_layer *l, const char *prefix,
                                     uint32_t found, st_plan *p) {
  int n = 0;
  for (int s = ATTN_SLOT_BQ; s <= ATTN_SLOT_BV; s++)
    n += attn_has_bias(l, s);
  if (n == 3) {
    need(p, N_IN_B, ATTN_SLOT_BQ, l->embed_dim + 2 * l->heads.kv_dim, 0);
    return ATTN_OK;
  }
  if (n == 0 && !(found & (1u << N_IN_B)))
    return ATTN_OK;
  if (!l->bias)
    return bias_off(prefix, N_IN_B);
  return attn_fail(ATTN_ERR_WEIGHT_LAYOUT,
                   "%s'%.150sin_proj_bias' packs the q, k and v biases, and "
                   "the layer has %d of them (bias_parts %d)",
                   n ? "torch's " : "the file has ", prefix, n,
                   l->fx.bias_parts);
}

/* QK-norm weights and sinks: needed when the layer has them, refused when
 * it has not (the layer would silently compute something else). */
static attn_status plan_extras(const attn_layer *l, const char *prefix,
                               uint32_t found, st_plan *p) {
  const int names[3] = {N_Q_NORM, N_K_NORM, N_SINKS};
  for (int i = 0; i < 3; i++) {
    int slot = ATTN_SLOT_QN + i;
    if (l->slot_count[slot] > 0)
      need(p, names[i], slot, l->slot_count[slot], 0);
    else if (found & (1u << names[i]))
      return attn_fail(ATTN_ERR_WEIGHT_LAYOUT,
                       "the file has '%.150s%s' but the layer was created "
                       "without %s",
                       prefix, suffix_of[names[i]],
                       i == 2 ? "sinks" : "qk_norm");
  }
  return ATTN_OK;
}

/* Decides the naming scheme from the names found (bit per N_*) and lists
 * the tensors to load. */
static attn_status make_plan(const attn_layer *l, const st_header *h,
                             const char *prefix, uint32_t found, st_plan *p) {
  int64_t E = l->embed_dim, KV = l->heads.kv_dim;
  uint32_t torch = found & TORCH_ONLY_MASK, hf = found & HF_ONLY_MASK;
  memset(p, 0, sizeof *p);
  if (torch && hf)
    return attn_fail(ATTN_ERR_FILE_FORMAT,
                     "the file has both torch names ('%.150s%s') and Hugging "
                     "Face names ('%.150s%s') under prefix '%.150s': cannot "
                     "tell which to load",
                     prefix, suffix_of[lowest_bit(torch)], prefix,
                     suffix_of[lowest_bit(hf)], prefix);
  if (!torch && !hf) {
    char hint[320];
    prefix_hint(h, hint, sizeof hint);
    return attn_fail(ATTN_ERR_TENSOR_MISSING,
                     "tensor '%.150sin_proj_weight' not found, nor "
                     "q_proj_weight (torch) or q_proj.weight (Hugging Face) "
                     "under prefix '%.150s'%s",
                     prefix, prefix, hint);
  }
  if (found & ((1u << N_BIAS_K) | (1u << N_BIAS_V)))
    return attn_fail(ATTN_ERR_WEIGHT_LAYOUT,
                     "the file has '%.150s%s' (torch's add_bias_kv=True), "
                     "which libattn layers do not support",
                     prefix,
                     suffix_of[found & (1u << N_BIAS_K) ? N_BIAS_K : N_BIAS_V]);

  uint32_t bias_names = 0;
  int out_w = N_OUT_W, out_b = N_OUT_B;
  if (torch) {
    bool packed = found & (1u << N_IN_W);
    uint32_t separate = found & ((1u << N_Q_W) | (1u << N_K_W) | (1u << N_V_W));
    if (packed && separate)
      return attn_fail(ATTN_ERR_FILE_FORMAT,
                       "the file has both the packed '%.150sin_proj_weight' "
                       "and the separate '%.150s%s': cannot tell which to "
                       "load",
                       prefix, prefix, suffix_of[lowest_bit(separate)]);
    if (packed) {
      if (l->kdim != E || l->vdim != E)
        return attn_fail(ATTN_ERR_WEIGHT_LAYOUT,
                         "the file has the packed '%.150sin_proj_weight' but "
                         "the layer has kdim %lld, vdim %lld != embed_dim "
                         "%lld, which needs separate q/k/v_proj_weight",
                         prefix, (long long)l->kdim, (long long)l->vdim,
                         (long long)E);
      need(p, N_IN_W, ATTN_SLOT_WQ, E + 2 * KV, E);
    } else {
      need(p, N_Q_W, ATTN_SLOT_WQ, E, E);
      need(p, N_K_W, ATTN_SLOT_WK, KV, l->kdim);
      need(p, N_V_W, ATTN_SLOT_WV, KV, l->vdim);
    }
    bias_names = 0;
    attn_status st = plan_in_proj_bias(l, prefix, found, p);
    if (st != ATTN_OK)
      return st;
  } else {
    bool o = found & ((1u << N_HO_W) | (1u << N_HO_B));
    bool out = found & ((1u << N_OUT_W) | (1u << N_OUT_B));
    if (o && out)
      return attn_fail(ATTN_ERR_FILE_FORMAT,
                       "the file has both '%.150so_proj.*' and "
                       "'%.150sout_proj.*': cannot tell which is the output "
                       "projection",
                       prefix, prefix);
    if (o) {
      out_w = N_HO_W;
      out_b = N_HO_B;
    }
    need(p, N_HQ_W, ATTN_SLOT_WQ, E, E);
    need(p, N_HK_W, ATTN_SLOT_WK, KV, l->kdim);
    need(p, N_HV_W, ATTN_SLOT_WV, KV, l->vdim);
    const int names[3] = {N_HQ_B, N_HK_B, N_HV_B};
    const int64_t rows[3] = {E, KV, KV};
    for (int i = 0; i < 3; i++) {
      if (attn_has_bias(l, ATTN_SLOT_BQ + i))
        need(p, names[i], ATTN_SLOT_BQ + i, rows[i], 0);
      else
        bias_names |= 1u << names[i];
    }
  }
  need(p, out_w, ATTN_SLOT_WO, E, E);
  if (attn_has_bias(l, ATTN_SLOT_BO))
    need(p, out_b, ATTN_SLOT_BO, E, 0);
  else
    bias_names |= 1u << out_b;
  if ((found & bias_names) && !l->bias)
    return bias_off(prefix, lowest_bit(found & bias_names));
  if (found & bias_names)
    return attn_fail(ATTN_ERR_WEIGHT_LAYOUT,
                     "the file has '%.150s%s' but the layer has no such bias "
                     "(bias %s, bias_parts %d): create it with that bias to "
                     "use the file's",
                     prefix, suffix_of[lowest_bit(found & bias_names)],
                     l->bias ? "on" : "off", l->fx.bias_parts);
  return plan_extras(l, prefix, found, p);
}

/* Checks that a planned tensor exists with a usable dtype and the shape the
 * layer needs. */
static attn_status check_need(const st_header *h, const char *prefix,
                              const st_need *n, const st_entry **out) {
  char *name = concat(prefix, suffix_of[n->name]);
  if (!name)
    return attn_fail(ATTN_ERR_NO_MEMORY, "cannot allocate a tensor name");
  attn_status st = ATTN_OK;
  const st_entry *e = find_entry(h, name);
  if (!e) {
    st = attn_fail(ATTN_ERR_TENSOR_MISSING,
                   "tensor '%.300s' not found in the weight file%s", name,
                   n->slot >= ATTN_SLOT_BQ && n->slot <= ATTN_SLOT_BO
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
    bool match = e->rank == n->rank;
    for (int d = 0; match && d < n->rank; d++) {
      uint64_t got = 0;
      json_u64(cJSON_GetArrayItem(e->shape, d), &got);
      match = got == (uint64_t)n->dim[d];
    }
    if (!match) {
      char got[160], want[64];
      shape_text(e->shape, got, sizeof got);
      if (n->rank == 2)
        snprintf(want, sizeof want, "[%lld, %lld]", (long long)n->dim[0],
                 (long long)n->dim[1]);
      else
        snprintf(want, sizeof want, "[%lld]", (long long)n->dim[0]);
      st = attn_fail(ATTN_ERR_TENSOR_SHAPE,
                     "tensor '%.300s' has shape %s, the layer needs %s", name,
                     got, want);
    }
  }
  free(name);
  if (st == ATTN_OK)
    *out = e;
  return st;
}

/* ------------------------------------------------------------------------ */
/* Loading                                                                   */
/* ------------------------------------------------------------------------ */

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
  int elsize = dtype_size(e->dtype);
  bool bf16 = strcmp(e->dtype, "BF16") == 0;
  uint64_t offset = h->data_start + e->begin;
  size_t left = (size_t)(e->end - e->begin);
  size_t count = left / (size_t)elsize;
  if (src->mem) {
    convert(src->mem + offset, elsize, bf16, count, dst);
  } else {
    for (float *out = dst; left > 0;) {
      size_t len = left < READ_CHUNK ? left : READ_CHUNK;
      attn_status st = read_at(src, offset, len, chunk);
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

static attn_status load(attn_layer *l, const st_source *src,
                        const char *prefix) {
  if (!prefix)
    prefix = "";
  if (src->size < 8)
    return attn_fail(ATTN_ERR_FILE_FORMAT,
                     "weight file has %" PRIu64 " bytes, fewer than the "
                     "8-byte header length of a safetensors file",
                     src->size);
  unsigned char lenbuf[8];
  attn_status st = read_at(src, 0, 8, lenbuf);
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
  const char *text = src->mem ? (const char *)src->mem + 8 : NULL;
  char *owned = NULL;
  if (!src->mem) {
    text = owned = malloc((size_t)hlen);
    if (!owned)
      return attn_fail(ATTN_ERR_NO_MEMORY,
                       "cannot allocate %" PRIu64 " bytes for the header",
                       hlen);
    if ((st = read_at(src, 8, (size_t)hlen, owned)) != ATTN_OK) {
      free(owned);
      return st;
    }
  }
  st_header h;
  st = parse_header(text, (size_t)hlen, src->size, &h);
  free(owned);
  if (st != ATTN_OK)
    return st;

  uint32_t found = 0;
  for (int i = 0; i < N_COUNT && st == ATTN_OK; i++) {
    char *name = concat(prefix, suffix_of[i]);
    if (!name)
      st = attn_fail(ATTN_ERR_NO_MEMORY, "cannot allocate a tensor name");
    else if (find_entry(&h, name))
      found |= 1u << i;
    free(name);
  }
  st_plan plan;
  const st_entry *entries[MAX_NEEDS] = {NULL};
  if (st == ATTN_OK)
    st = make_plan(l, &h, prefix, found, &plan);
  for (int i = 0; st == ATTN_OK && i < plan.count; i++)
    st = check_need(&h, prefix, &plan.items[i], &entries[i]);

  /* Staging copy of all weights and biases, in the layer's storage order. */
  int64_t nw = l->slot_offset[ATTN_SLOT_WO] + l->slot_count[ATTN_SLOT_WO];
  int64_t nb = l->slot_offset[ATTN_SLOT_BO] + l->slot_count[ATTN_SLOT_BO];
  int64_t nx = l->slot_offset[ATTN_SLOT_SINK] + l->slot_count[ATTN_SLOT_SINK];
  float *stage_w = NULL, *stage_b = NULL, *stage_x = NULL;
  unsigned char *chunk = NULL;
  if (st == ATTN_OK) {
    stage_w = malloc((size_t)nw * sizeof(float));
    /* A bias the layer lacks stays zero in its storage. */
    stage_b = l->bias ? calloc((size_t)nb, sizeof(float)) : NULL;
    stage_x = nx ? malloc((size_t)nx * sizeof(float)) : NULL;
    chunk = src->mem ? NULL : malloc(READ_CHUNK);
    if (!stage_w || (l->bias && !stage_b) || (nx && !stage_x) ||
        (!src->mem && !chunk))
      st = attn_fail(ATTN_ERR_NO_MEMORY,
                     "cannot allocate %zu bytes to stage the weights",
                     (size_t)(nw + nb) * sizeof(float) + READ_CHUNK);
  }
  for (int i = 0; st == ATTN_OK && i < plan.count; i++) {
    const st_need *n = &plan.items[i];
    float *base = n->slot >= ATTN_SLOT_QN   ? stage_x
                  : n->slot >= ATTN_SLOT_BQ ? stage_b
                                            : stage_w;
    st =
        load_tensor(src, &h, entries[i], base + l->slot_offset[n->slot], chunk);
  }
  if (st == ATTN_OK) {
    /* The plan covers every slot (the packed tensors fill three). */
    memcpy(l->weights, stage_w, (size_t)nw * sizeof(float));
    if (l->bias)
      memcpy(l->biases, stage_b, (size_t)nb * sizeof(float));
    if (nx)
      memcpy(l->extras, stage_x, (size_t)nx * sizeof(float));
    attn_layer_mark_all_set(l);
  }
  free(stage_x);
  free(chunk);
  free(stage_w);
  free(stage_b);
  header_free(&h);
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
  char msg[128];
  int fd;
  do
    fd = open(path, O_RDONLY | O_CLOEXEC);
  while (fd < 0 && errno == EINTR);
  if (fd < 0)
    return attn_fail(ATTN_ERR_IO, "cannot open weight file '%.300s': %s", path,
                     errno_text(errno, msg, sizeof msg));
  struct stat sb;
  attn_status st = ATTN_OK;
  if (fstat(fd, &sb) != 0)
    st = attn_fail(ATTN_ERR_IO, "cannot stat weight file '%.300s': %s", path,
                   errno_text(errno, msg, sizeof msg));
  else if (!S_ISREG(sb.st_mode))
    st = attn_fail(ATTN_ERR_IO, "weight file '%.300s' is not a regular file",
                   path);
  if (st == ATTN_OK) {
    st_source src = {.mem = NULL, .fd = fd, .size = (uint64_t)sb.st_size};
    st = load(layer, &src, prefix);
  }
  close(fd);
  return st;
}

/* ------------------------------------------------------------------------ */
/* Saving                                                                    */
/* ------------------------------------------------------------------------ */

/* One tensor to write. */
typedef struct {
  const char *suffix;
  int slot; /* first slot; the tensor covers count floats from there */
  int rank;
  int64_t dim[2];
} st_out;

static int save_plan(const attn_layer *l, int32_t naming, st_out *t) {
  int64_t E = l->embed_dim, KV = l->heads.kv_dim;
  int n = 0;
  bool bq = attn_has_bias(l, ATTN_SLOT_BQ), bo = attn_has_bias(l, ATTN_SLOT_BO);
#define ADD(name, slot_, rows, cols)                                           \
  (t[n++] = (st_out){name, slot_, (cols) > 0 ? 2 : 1, {rows, cols}})
  if (naming == ATTN_NAMES_TORCH) {
    if (l->kdim == E && l->vdim == E) {
      ADD("in_proj_weight", ATTN_SLOT_WQ, E + 2 * KV, E);
    } else {
      ADD("q_proj_weight", ATTN_SLOT_WQ, E, E);
      ADD("k_proj_weight", ATTN_SLOT_WK, KV, l->kdim);
      ADD("v_proj_weight", ATTN_SLOT_WV, KV, l->vdim);
    }
    if (bq) /* all three: save_check refused a part of them */
      ADD("in_proj_bias", ATTN_SLOT_BQ, E + 2 * KV, 0);
    ADD("out_proj.weight", ATTN_SLOT_WO, E, E);
    if (bo)
      ADD("out_proj.bias", ATTN_SLOT_BO, E, 0);
  } else {
    bool o = naming == ATTN_NAMES_HF_O_PROJ;
    ADD("q_proj.weight", ATTN_SLOT_WQ, E, E);
    if (bq)
      ADD("q_proj.bias", ATTN_SLOT_BQ, E, 0);
    ADD("k_proj.weight", ATTN_SLOT_WK, KV, l->kdim);
    if (attn_has_bias(l, ATTN_SLOT_BK))
      ADD("k_proj.bias", ATTN_SLOT_BK, KV, 0);
    ADD("v_proj.weight", ATTN_SLOT_WV, KV, l->vdim);
    if (attn_has_bias(l, ATTN_SLOT_BV))
      ADD("v_proj.bias", ATTN_SLOT_BV, KV, 0);
    ADD(o ? "o_proj.weight" : "out_proj.weight", ATTN_SLOT_WO, E, E);
    if (bo)
      ADD(o ? "o_proj.bias" : "out_proj.bias", ATTN_SLOT_BO, E, 0);
  }
  const char *extras[3] = {"q_norm.weight", "k_norm.weight", "sinks"};
  for (int i = 0; i < 3; i++)
    if (l->slot_count[ATTN_SLOT_QN + i] > 0)
      ADD(extras[i], ATTN_SLOT_QN + i, l->slot_count[ATTN_SLOT_QN + i], 0);
#undef ADD
  return n;
}

/* torch's names pack the q, k and v biases into one tensor: a layer with
 * some of them only cannot be saved so. */
static attn_status save_check(const attn_layer *l, int32_t naming) {
  int n = 0;
  for (int s = ATTN_SLOT_BQ; s <= ATTN_SLOT_BV; s++)
    n += attn_has_bias(l, s);
  if (naming == ATTN_NAMES_TORCH && n != 0 && n != 3)
    return attn_fail(ATTN_ERR_BAD_OPTION,
                     "ATTN_NAMES_TORCH packs the q, k and v biases into "
                     "in_proj_bias, and the layer has %d of them (bias_parts "
                     "%d): save it with Hugging Face names",
                     n, l->fx.bias_parts);
  return ATTN_OK;
}

static bool valid_utf8(const unsigned char *s) {
  while (*s) {
    unsigned c = *s;
    int extra;
    uint32_t cp, min;
    if (c < 0x80) {
      s++;
      continue;
    } else if ((c & 0xe0) == 0xc0) {
      extra = 1, cp = c & 0x1f, min = 0x80;
    } else if ((c & 0xf0) == 0xe0) {
      extra = 2, cp = c & 0x0f, min = 0x800;
    } else if ((c & 0xf8) == 0xf0) {
      extra = 3, cp = c & 0x07, min = 0x10000;
    } else {
      return false;
    }
    for (int i = 1; i <= extra; i++) {
      if ((s[i] & 0xc0) != 0x80)
        return false;
      cp = cp << 6 | (s[i] & 0x3fu);
    }
    if (cp < min || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff))
      return false;
    s += extra + 1;
  }
  return true;
}

/* Adds a JSON integer written exactly (cJSON would print doubles, with an
 * exponent beyond 15 digits). */
static bool add_int(cJSON *array, uint64_t v) {
  char buf[24];
  snprintf(buf, sizeof buf, "%" PRIu64, v);
  cJSON *item = cJSON_CreateRaw(buf);
  return item && cJSON_AddItemToArray(array, item);
}

static int64_t out_count(const st_out *t) {
  return t->rank == 2 ? t->dim[0] * t->dim[1] : t->dim[0];
}

/* Adds prefix + t's name with its dtype, shape and data_offsets [offset,
 * offset + bytes) to root, keys in the order torch writes them. */
static bool add_entry(cJSON *root, const char *prefix, const st_out *t,
                      uint64_t offset, uint64_t bytes) {
  cJSON *entry = cJSON_CreateObject();
  char *name = concat(prefix, t->suffix);
  bool ok = entry && name && cJSON_AddItemToObject(root, name, entry);
  free(name);
  if (!ok) {
    cJSON_Delete(entry);
    return false;
  }
  cJSON *shape = NULL, *offsets = NULL;
  ok = cJSON_AddStringToObject(entry, "dtype", "F32") &&
       (shape = cJSON_AddArrayToObject(entry, "shape")) &&
       (offsets = cJSON_AddArrayToObject(entry, "data_offsets"));
  for (int d = 0; ok && d < t->rank; d++)
    ok = add_int(shape, (uint64_t)t->dim[d]);
  return ok && add_int(offsets, offset) && add_int(offsets, offset + bytes);
}

/* The header text (unpadded) for tensors t, to be freed with cJSON_free();
 * NULL when out of memory. */
static char *build_header(const char *prefix, const st_out *t, int n) {
  cJSON *root = cJSON_CreateObject();
  cJSON *meta = root ? cJSON_AddObjectToObject(root, "__metadata__") : NULL;
  bool ok = meta && cJSON_AddStringToObject(meta, "format", "pt");
  uint64_t offset = 0;
  for (int i = 0; ok && i < n; i++) {
    uint64_t bytes = (uint64_t)out_count(&t[i]) * sizeof(float);
    ok = add_entry(root, prefix, &t[i], offset, bytes);
    offset += bytes;
  }
  char *text = ok ? cJSON_PrintUnformatted(root) : NULL;
  cJSON_Delete(root);
  return text;
}

static attn_status write_all(int fd, const void *buf, size_t len,
                             const char *path) {
  const unsigned char *p = buf;
  while (len > 0) {
    ssize_t put = write(fd, p, len);
    if (put < 0 && errno == EINTR)
      continue;
    if (put <= 0) {
      char msg[128];
      return attn_fail(ATTN_ERR_IO, "cannot write '%.300s': %s", path,
                       errno_text(put < 0 ? errno : EIO, msg, sizeof msg));
    }
    p += put;
    len -= (size_t)put;
  }
  return ATTN_OK;
}

static attn_status write_file(int fd, const char *tmp, const attn_layer *l,
                              const char *header, size_t padded,
                              const st_out *t, int n) {
  unsigned char *buf = malloc(WRITE_CHUNK);
  if (!buf)
    return attn_fail(ATTN_ERR_NO_MEMORY, "cannot allocate a write buffer");
  size_t hlen = strlen(header);
  attn_put_le64(buf, padded);
  attn_status st = write_all(fd, buf, 8, tmp);
  if (st == ATTN_OK)
    st = write_all(fd, header, hlen, tmp);
  if (st == ATTN_OK) {
    memset(buf, ' ', padded - hlen);
    st = write_all(fd, buf, padded - hlen, tmp);
  }
  for (int i = 0; st == ATTN_OK && i < n; i++) {
    const float *src = attn_slot_ptr(l, t[i].slot);
    int64_t count = out_count(&t[i]);
    size_t per = WRITE_CHUNK / 4;
    for (int64_t k = 0; st == ATTN_OK && k < count; k += (int64_t)per) {
      size_t m = (size_t)(count - k) < per ? (size_t)(count - k) : per;
      for (size_t j = 0; j < m; j++)
        attn_put_le32(buf + 4 * j, attn_float_to_bits(src[k + (int64_t)j]));
      st = write_all(fd, buf, 4 * m, tmp);
    }
  }
  free(buf);
  return st;
}

/* Flushes the directory holding path so that the rename survives a crash.
 * Best effort: some file systems cannot sync directories. */
static void sync_parent_dir(const char *path) {
  const char *slash = strrchr(path, '/');
  char *dir = slash ? malloc((size_t)(slash - path) + 2) : NULL;
  if (slash && !dir)
    return;
  if (dir) {
    size_t len = slash == path ? 1 : (size_t)(slash - path);
    memcpy(dir, path, len);
    dir[len] = '\0';
  }
  int fd = open(dir ? dir : ".", O_RDONLY | O_CLOEXEC);
  if (fd >= 0) {
    (void)fsync(fd);
    close(fd);
  }
  free(dir);
}

attn_status attn_layer_save_safetensors(const attn_layer *l, const char *path,
                                        const char *prefix, int32_t naming) {
  if (!l || !path)
    return attn_fail(ATTN_ERR_NULL_POINTER,
                     "attn_layer_save_safetensors: %s is NULL",
                     !l ? "layer" : "path");
  if (!prefix)
    prefix = "";
  if (naming != ATTN_NAMES_TORCH && naming != ATTN_NAMES_HF &&
      naming != ATTN_NAMES_HF_O_PROJ)
    return attn_fail(ATTN_ERR_BAD_OPTION,
                     "unknown naming %d (ATTN_NAMES_TORCH, ATTN_NAMES_HF or "
                     "ATTN_NAMES_HF_O_PROJ)",
                     (int)naming);
  if (!valid_utf8((const unsigned char *)prefix))
    return attn_fail(ATTN_ERR_BAD_OPTION,
                     "prefix is not valid UTF-8, which safetensors headers "
                     "must be");
  attn_status st = attn_layer_check_set(l, "cannot save the layer");
  if (st != ATTN_OK || (st = save_check(l, naming)) != ATTN_OK)
    return st;
  /* The layer's sizes already fit in memory as floats, so the data section
   * (the same floats) cannot overflow; the header is small. */
  st_out t[MAX_NEEDS];
  int n = save_plan(l, naming, t);
  char *header = build_header(prefix, t, n);
  if (!header)
    return attn_fail(ATTN_ERR_NO_MEMORY, "cannot build the safetensors header");
  /* Pad with spaces so that the data start at a multiple of 8 bytes. */
  size_t hlen = strlen(header), padded;
  if (!attn_addsz(hlen, 7, &padded)) {
    cJSON_free(header);
    return attn_fail(ATTN_ERR_OVERFLOW, "safetensors header too long");
  }
  padded &= ~(size_t)7;

  char *tmp = NULL;
  int fd = -1;
  char msg[128];
  int err = 0;
  size_t tmp_size;
  if (attn_addsz(strlen(path), 48, &tmp_size))
    tmp = malloc(tmp_size);
  if (!tmp) {
    cJSON_free(header);
    return attn_fail(ATTN_ERR_NO_MEMORY, "cannot allocate a file name");
  }
  /* O_EXCL makes the name ours; the umask applies as to any new file. */
  for (unsigned attempt = 0; fd < 0 && attempt < 100; attempt++) {
    snprintf(tmp, tmp_size, "%s.tmp-%ld-%u", path, (long)getpid(), attempt);
    fd = open(tmp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0666);
    err = errno;
    if (fd < 0 && err != EEXIST && err != EINTR)
      break;
  }
  if (fd < 0) {
    st = attn_fail(ATTN_ERR_IO, "cannot create '%.300s': %s", tmp,
                   errno_text(err, msg, sizeof msg));
    free(tmp);
    cJSON_free(header);
    return st;
  }
  st = write_file(fd, tmp, l, header, padded, t, n);
  cJSON_free(header);
  if (st == ATTN_OK && fsync(fd) != 0)
    st = attn_fail(ATTN_ERR_IO, "cannot flush '%.300s' to disk: %s", tmp,
                   errno_text(errno, msg, sizeof msg));
  if (close(fd) != 0 && st == ATTN_OK)
    st = attn_fail(ATTN_ERR_IO, "cannot close '%.300s': %s", tmp,
                   errno_text(errno, msg, sizeof msg));
  if (st == ATTN_OK && rename(tmp, path) != 0)
    st = attn_fail(ATTN_ERR_IO, "cannot rename '%.300s' to '%.300s': %s", tmp,
                   path, errno_text(errno, msg, sizeof msg));
  if (st != ATTN_OK)
    unlink(tmp);
  else
    sync_parent_dir(path);
  free(tmp);
  return st;
}
