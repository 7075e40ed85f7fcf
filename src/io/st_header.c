/* SPDX-License-Identifier: MIT */
/* Parsing and checking a safetensors header (st_header.h).
 *
 * Two passes over the text: the first checks that all of it is JSON (and
 * UTF-8) and counts the tensors, the second reads each entry into a
 * compact index: names and dtypes in one arena, shapes in one array. A
 * header of the largest size allowed then costs a few times its own size
 * in memory, whatever its number of entries. */
#include "io/st_header.h"

#include "common/checked.h"
#include "common/error.h"
#include "io/json.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int attn_st_dtype_size(const char *dtype) {
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

void attn_st_header_free(st_header *h) {
  free(h->arena);
  free(h->entries);
  free(h->dims);
  memset(h, 0, sizeof *h);
}

const char *attn_st_shape_text(const st_header *h, const st_entry *e, char *buf,
                               size_t size) {
  size_t used = 0;
  int n = snprintf(buf, size, "[");
  used = n > 0 ? (size_t)n : 0;
  for (int d = 0; d < e->rank; d++) {
    if (used + 24 >= size) {
      snprintf(buf + used, size - used, ", ...");
      used = strlen(buf);
      break;
    }
    n = snprintf(buf + used, size - used, "%s%" PRIu64, d ? ", " : "",
                 h->dims[e->dims_at + (size_t)d]);
    used += n > 0 ? (size_t)n : 0;
  }
  if (used + 2 <= size)
    snprintf(buf + used, size - used, "]");
  return buf;
}

static attn_status json_failure(const attn_json *j, size_t n) {
  if (j->error == ATTN_JSON_UTF8)
    return attn_fail(ATTN_ERR_FILE_FORMAT,
                     "safetensors header is not valid UTF-8, as the format "
                     "requires (at byte %zu of %zu)",
                     j->error_at, n);
  if (j->error == ATTN_JSON_NUL)
    return attn_fail(ATTN_ERR_FILE_FORMAT,
                     "corrupt safetensors header: a name or dtype holds the "
                     "character U+0000 (at byte %zu of %zu)",
                     j->error_at, n);
  return attn_fail(ATTN_ERR_FILE_FORMAT,
                   "safetensors header is not valid JSON (error at byte %zu "
                   "of %zu)",
                   j->error_at, n);
}

/* A UTF-8 byte order mark is skipped, as most JSON readers do. */
static void skip_bom(attn_json *j) {
  if (j->end - j->p >= 3 && memcmp(j->p, "\xef\xbb\xbf", 3) == 0)
    j->p += 3;
}

/* Pass one: the text is one JSON value and nothing else but spaces; an
 * object's members are counted in *members. */
static attn_status check_syntax(const char *text, size_t n, size_t *members) {
  attn_json j;
  attn_json_init(&j, text, n, NULL);
  skip_bom(&j);
  bool object = attn_json_peek(&j) == '{', ok = true, more = true;
  *members = 0;
  if (!object) {
    ok = attn_json_skip(&j);
  } else if (j.p++, attn_json_peek(&j) == '}') {
    j.p++;
  } else {
    while (ok && more) {
      ok = attn_json_string(&j, NULL) && attn_json_eat(&j, ':') &&
           attn_json_skip(&j) && attn_json_next(&j, '}', &more);
      *members += ok;
    }
  }
  if (!ok)
    return json_failure(&j, n);
  if (attn_json_peek(&j) >= 0)
    return attn_fail(ATTN_ERR_FILE_FORMAT,
                     "safetensors header has bytes after its JSON value "
                     "(at byte %zu of %zu)",
                     (size_t)(j.p - text), n);
  if (!object)
    return attn_fail(ATTN_ERR_FILE_FORMAT,
                     "safetensors header is JSON but not an object of "
                     "tensors");
  return ATTN_OK;
}

/* What one entry's object holds (the first of repeated keys counts). */
typedef struct {
  const char *dtype; /* NULL unless a string */
  bool dtype_seen, shape_seen, offsets_seen;
  bool shape_array, shape_ok; /* an array; of integers in [0, 2^53] */
  bool offsets_pair, offsets_ok;
  int rank;
  size_t dims_at;
  uint64_t offsets[2];
} raw_entry;

static bool push_dim(st_header *h, uint64_t d) {
  if (h->ndims == h->dims_cap) {
    size_t cap = h->dims_cap ? 2 * h->dims_cap : 64, bytes;
    uint64_t *grown;
    if (!attn_mulsz(cap, sizeof *grown, &bytes) ||
        !(grown = realloc(h->dims, bytes)))
      return false;
    h->dims = grown;
    h->dims_cap = cap;
  }
  h->dims[h->ndims++] = d;
  return true;
}

/* An array (the cursor at its '[') whose integers are kept in h->dims
 * (out NULL: a shape) or in out[0..1] (data_offsets); *all_ok tells
 * whether every element was an integer in [0, 2^53]. */
static attn_status read_uints(attn_json *j, st_header *h, uint64_t *out,
                              int *count, bool *all_ok) {
  bool more = true;
  *count = 0;
  *all_ok = true;
  j->p++;
  if (attn_json_peek(j) == ']') {
    j->p++;
    return ATTN_OK;
  }
  while (more) {
    int c = attn_json_peek(j);
    uint64_t v = 0;
    bool is_uint = false;
    if (c == '-' || (c >= '0' && c <= '9')) {
      if (!attn_json_number(j, &v, &is_uint))
        return ATTN_ERR_FILE_FORMAT;
    } else if (!attn_json_skip(j)) {
      return ATTN_ERR_FILE_FORMAT;
    }
    *all_ok = *all_ok && is_uint;
    if (is_uint && !out && !push_dim(h, v))
      return ATTN_ERR_NO_MEMORY;
    if (out && *count < 2)
      out[*count] = v;
    if (*count < INT32_MAX)
      (*count)++;
    if (!attn_json_next(j, ']', &more))
      return ATTN_ERR_FILE_FORMAT;
  }
  return ATTN_OK;
}

enum { FIELD_DTYPE, FIELD_SHAPE, FIELD_OFFSETS, FIELD_OTHER };

/* The value of one member of an entry's object. */
static attn_status read_field(attn_json *j, st_header *h, int field,
                              raw_entry *r) {
  int c = attn_json_peek(j);
  if (field == FIELD_DTYPE && !r->dtype_seen) {
    r->dtype_seen = true;
    if (c == '"')
      return attn_json_string(j, &r->dtype) ? ATTN_OK : ATTN_ERR_FILE_FORMAT;
  } else if (field == FIELD_SHAPE && !r->shape_seen) {
    r->shape_seen = true;
    r->shape_array = c == '[';
    r->dims_at = h->ndims;
    if (c == '[')
      return read_uints(j, h, NULL, &r->rank, &r->shape_ok);
  } else if (field == FIELD_OFFSETS && !r->offsets_seen) {
    r->offsets_seen = true;
    if (c == '[') {
      int count;
      attn_status st = read_uints(j, h, r->offsets, &count, &r->offsets_ok);
      r->offsets_pair = count == 2;
      return st;
    }
  }
  return attn_json_skip(j) ? ATTN_OK : ATTN_ERR_FILE_FORMAT;
}

/* Reads an entry's value; *is_object false when it is not an object. */
static attn_status read_entry(attn_json *j, st_header *h, raw_entry *r,
                              bool *is_object) {
  static const char *const fields[] = {"dtype", "shape", "data_offsets"};
  memset(r, 0, sizeof *r);
  *is_object = attn_json_peek(j) == '{';
  if (!*is_object)
    return attn_json_skip(j) ? ATTN_OK : ATTN_ERR_FILE_FORMAT;
  j->p++;
  bool more = attn_json_peek(j) != '}';
  j->p += !more;
  while (more) {
    size_t mark = j->used;
    const char *key;
    if (!attn_json_string(j, &key) || !attn_json_eat(j, ':'))
      return ATTN_ERR_FILE_FORMAT;
    int field = 0;
    while (field < FIELD_OTHER && strcmp(key, fields[field]) != 0)
      field++;
    j->used = mark; /* the key is not kept */
    attn_status st = read_field(j, h, field, r);
    if (st != ATTN_OK)
      return st;
    if (!attn_json_next(j, '}', &more))
      return ATTN_ERR_FILE_FORMAT;
  }
  return ATTN_OK;
}

static attn_status bad_entry(const char *name, const char *what) {
  return attn_fail(ATTN_ERR_FILE_FORMAT,
                   "corrupt safetensors header: tensor '%.200s' %s", name,
                   what);
}

/* Checks an entry on its own: its fields and its bytes. */
static attn_status check_entry(const st_header *h, const raw_entry *r,
                               st_entry *e) {
  if (!r->dtype)
    return bad_entry(e->name, "has no \"dtype\" string");
  if (!r->shape_array)
    return bad_entry(e->name, "has no \"shape\" array");
  if (!r->offsets_pair)
    return bad_entry(e->name, "has no \"data_offsets\" array of two numbers");
  if (!r->shape_ok)
    return bad_entry(e->name, "has a shape entry that is not a non-negative "
                              "integer");
  if (!r->offsets_ok)
    return bad_entry(e->name, "has data_offsets that are not non-negative "
                              "integers");
  uint64_t begin = r->offsets[0], end = r->offsets[1];
  *e = (st_entry){e->name, r->dtype, r->dims_at, r->rank, begin, end};
  if (begin > end)
    return attn_fail(ATTN_ERR_FILE_FORMAT,
                     "corrupt safetensors header: tensor '%.200s' has "
                     "reversed data_offsets [%" PRIu64 ", %" PRIu64 "]",
                     e->name, begin, end);
  if (end > h->data_size)
    return attn_fail(ATTN_ERR_FILE_FORMAT,
                     "safetensors data out of range: tensor '%.200s' has "
                     "data_offsets [%" PRIu64 ", %" PRIu64 "] but the data "
                     "section has only %" PRIu64 " bytes (truncated file?)",
                     e->name, begin, end, h->data_size);
  uint64_t numel = 1, bytes = 0;
  bool ok = true;
  for (int d = 0; d < e->rank && ok; d++)
    ok =
        !__builtin_mul_overflow(numel, h->dims[e->dims_at + (size_t)d], &numel);
  int elsize = attn_st_dtype_size(e->dtype);
  ok = ok && !__builtin_mul_overflow(numel, (uint64_t)elsize, &bytes);
  if (elsize > 0 && (!ok || bytes != end - begin)) {
    char sbuf[160];
    return attn_fail(ATTN_ERR_FILE_FORMAT,
                     "corrupt safetensors header: tensor '%.200s' of dtype "
                     "%.16s and shape %s needs %s bytes but its data_offsets "
                     "[%" PRIu64 ", %" PRIu64 "] span %" PRIu64,
                     e->name, e->dtype,
                     attn_st_shape_text(h, e, sbuf, sizeof sbuf),
                     ok ? "a different number of" : "more than 2^64", begin,
                     end, end - begin);
  }
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
  const st_entry **order = malloc(h->count * sizeof *order);
  if (!order)
    return attn_fail(ATTN_ERR_NO_MEMORY,
                     "cannot allocate %zu bytes to check a safetensors "
                     "header",
                     h->count * sizeof *order);
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

/* Pass two: every member of the root object into the index. */
static attn_status read_entries(const char *text, size_t n, st_header *h) {
  attn_json j;
  attn_json_init(&j, text, n, h->arena);
  skip_bom(&j);
  attn_json_eat(&j, '{');
  bool more = attn_json_peek(&j) != '}';
  while (more) {
    size_t mark = j.used;
    const char *name;
    if (!attn_json_string(&j, &name) || !attn_json_eat(&j, ':'))
      return json_failure(&j, n);
    attn_status st = ATTN_OK;
    if (strcmp(name, "__metadata__") == 0) {
      /* Free-form metadata (e.g. {"format": "pt"}); the library does not
       * use it. */
      j.used = mark;
      if (!attn_json_skip(&j))
        st = ATTN_ERR_FILE_FORMAT;
    } else {
      raw_entry r;
      bool is_object;
      st_entry *e = &h->entries[h->count];
      e->name = name;
      st = read_entry(&j, h, &r, &is_object);
      if (st == ATTN_OK && !is_object)
        return bad_entry(name, "is not a JSON object");
      if (st == ATTN_OK && (st = check_entry(h, &r, e)) != ATTN_OK)
        return st;
      h->count++;
    }
    if (st == ATTN_ERR_NO_MEMORY)
      return attn_fail(st, "cannot allocate the shapes of %zu tensors",
                       h->count + 1);
    if (st != ATTN_OK || !attn_json_next(&j, '}', &more))
      return json_failure(&j, n);
  }
  return ATTN_OK;
}

attn_status attn_st_header_parse(const char *text, size_t n, uint64_t file_size,
                                 st_header *h) {
  memset(h, 0, sizeof *h);
  h->data_start = 8 + (uint64_t)n;
  h->data_size = file_size - h->data_start;
  if (memchr(text, '\0', n))
    return attn_fail(ATTN_ERR_FILE_FORMAT,
                     "corrupt safetensors header: it contains a NUL byte");
  size_t members;
  attn_status st = check_syntax(text, n, &members);
  if (st != ATTN_OK)
    return st;
  /* Decoding never lengthens a string, and its quotes pay for its NUL. */
  h->arena = malloc(n + 1);
  h->entries = calloc(members ? members : 1, sizeof *h->entries);
  if (!h->arena || !h->entries) {
    attn_st_header_free(h);
    return attn_fail(ATTN_ERR_NO_MEMORY,
                     "cannot allocate the index of %zu tensors (%zu bytes "
                     "of header)",
                     members, n);
  }
  if ((st = read_entries(text, n, h)) != ATTN_OK) {
    attn_st_header_free(h);
    return st;
  }
  qsort(h->entries, h->count, sizeof *h->entries, by_name);
  for (size_t i = 1; i < h->count && st == ATTN_OK; i++)
    if (strcmp(h->entries[i - 1].name, h->entries[i].name) == 0)
      st = attn_fail(ATTN_ERR_FILE_FORMAT,
                     "corrupt safetensors header: tensor '%.200s' is listed "
                     "twice",
                     h->entries[i].name);
  if (st == ATTN_OK)
    st = check_tiling(h);
  if (st != ATTN_OK)
    attn_st_header_free(h);
  return st;
}

const st_entry *attn_st_header_find(const st_header *h, const char *name) {
  st_entry key = {.name = name};
  if (h->count == 0)
    return NULL;
  return bsearch(&key, h->entries, h->count, sizeof key, by_name);
}
