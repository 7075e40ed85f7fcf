/* SPDX-License-Identifier: MIT */
/* The self-attention key/value cache: creation (library- or
 * caller-allocated), appending, lengths, truncation, beam reordering and
 * reset. The decoding step that fills it is in decode_step.c. */
#include "layer/kv_cache.h"

#include "common/error.h"
#include "common/structs.h"

#include <stdlib.h>
#include <string.h>

static const attn_cache_config config_defaults = {
    .struct_size = sizeof(attn_cache_config), .batch = 1};

ATTN_VERSIONED_STRUCT(attn_cache_config, config_kind,
                      ATTN_CACHE_CONFIG_SIZE_0_1, config_defaults,
                      attn_cache_config_init_sized)

/* Creation --------------------------------------------------------------- */

/* Meta arrays per row: len, first, and reorder's need and stack. */
#define META_PER_ROW 4

static attn_status plan_cache(const attn_layer *l, const attn_cache_config *in,
                              attn_cache_config *cfg, attn_kv_plan *p) {
  if (!l || !in)
    return attn_fail(ATTN_ERR_NULL_POINTER, "attn_kv_cache: %s is NULL",
                     !l ? "layer" : "cfg");
  attn_status st = attn_struct_load(&config_kind, cfg, in);
  if (st != ATTN_OK)
    return st;
  if (!attn_layer_is_square(l))
    return attn_fail(ATTN_ERR_BAD_SIZE,
                     "a KV cache is for self-attention, which needs kdim == "
                     "vdim == embed_dim (%lld); this layer has kdim %lld, "
                     "vdim %lld (use an attn_memory for cross-attention)",
                     (long long)l->embed_dim, (long long)l->kdim,
                     (long long)l->vdim);
  if (cfg->window < 0)
    return attn_fail(ATTN_ERR_BAD_SIZE,
                     "cache window %lld must not be negative (0 means none)",
                     (long long)cfg->window);
  return attn_kv_plan_make(l, cfg->batch, cfg->capacity,
                           sizeof(struct attn_kv_cache), META_PER_ROW, "cache",
                           p);
}

attn_status attn_kv_cache_size(const attn_layer *l,
                               const attn_cache_config *cfg, size_t *bytes) {
  if (!bytes)
    return attn_fail(ATTN_ERR_NULL_POINTER, "attn_kv_cache_size: bytes is "
                                            "NULL");
  attn_cache_config c;
  attn_kv_plan p;
  attn_status st = plan_cache(l, cfg, &c, &p);
  if (st == ATTN_OK)
    *bytes = p.bytes;
  return st;
}

/* A cache in buffer (NULL: allocated). */
static attn_status create(const attn_layer *l, const attn_cache_config *in,
                          void *buffer, size_t size, attn_kv_cache **out) {
  attn_cache_config cfg;
  attn_kv_plan p;
  void *owned;
  unsigned char *base;
  attn_status st = plan_cache(l, in, &cfg, &p);
  if (st != ATTN_OK || (st = attn_kv_store_memory(&p, buffer, size, "KV cache",
                                                  "attn_kv_cache_size", &owned,
                                                  &base)) != ATTN_OK)
    return st;
  attn_kv_cache *c = (attn_kv_cache *)(void *)base;
  memset(c, 0, sizeof *c);
  attn_kv_owner_init(&c->owner, l);
  c->batch = p.batch;
  c->capacity = p.capacity;
  c->window = cfg.window;
  c->kv_dim = l->heads.kv_dim;
  c->slot_ld = p.slot_ld;
  c->kv = (float *)(void *)(base + p.kv_off);
  c->pad = base + p.pad_off;
  c->len = (int64_t *)(void *)(base + p.meta_off);
  c->first = c->len + c->batch;
  c->need = c->first + c->batch;
  c->stack = c->need + c->batch;
  memset(c->len, 0, (size_t)c->batch * META_PER_ROW * sizeof(int64_t));
  c->owned = owned;
  *out = c;
  return ATTN_OK;
}

attn_status attn_kv_cache_create(const attn_layer *l,
                                 const attn_cache_config *cfg,
                                 attn_kv_cache **out) {
  if (!out)
    return attn_fail(ATTN_ERR_NULL_POINTER, "attn_kv_cache_create: out is "
                                            "NULL");
  return create(l, cfg, NULL, 0, out);
}

attn_status attn_kv_cache_create_in(const attn_layer *l,
                                    const attn_cache_config *cfg, void *buffer,
                                    size_t size, attn_kv_cache **out) {
  if (!buffer || !out)
    return attn_fail(ATTN_ERR_NULL_POINTER,
                     "attn_kv_cache_create_in: %s is NULL",
                     !buffer ? "buffer" : "out");
  return create(l, cfg, buffer, size, out);
}

void attn_kv_cache_destroy(attn_kv_cache *cache) {
  if (cache)
    free(cache->owned);
}

/* Appending --------------------------------------------------------------- */

int64_t attn_kv_cache_keep(const attn_kv_cache *c, int64_t b, int64_t add) {
  int64_t h = attn_kv_cache_held(c, b);
  if (add <= c->capacity - h)
    return h;
  if (c->window > 0) {
    int64_t keep = h < c->window - 1 ? h : c->window - 1;
    if (add <= c->capacity - keep)
      return keep;
  }
  return -1;
}

/* Drops the oldest tokens of row b so that `keep` remain, moving them to
 * the front of the row. Keys stay in order and contiguous, so the core
 * reads a row the same way whether or not it wrapped. */
static void slide_row(attn_kv_cache *c, int64_t b, int64_t keep) {
  int64_t drop = attn_kv_cache_held(c, b) - keep;
  if (drop <= 0)
    return;
  float *row = c->kv + b * c->capacity * c->slot_ld;
  uint8_t *pad = c->pad + b * c->capacity;
  memmove(row, row + drop * c->slot_ld,
          (size_t)(keep * c->slot_ld) * sizeof(float));
  memmove(pad, pad + drop, (size_t)keep);
  c->first[b] += drop;
}

void attn_kv_cache_append(attn_kv_cache *c, int64_t b, int64_t add,
                          const float *src, int64_t ld, const uint8_t *pad) {
  slide_row(c, b, attn_kv_cache_keep(c, b, add));
  int64_t h = attn_kv_cache_held(c, b);
  float *slot = c->kv + (b * c->capacity + h) * c->slot_ld;
  uint8_t *flags = c->pad + b * c->capacity + h;
  for (int64_t i = 0; i < add; i++) {
    memcpy(slot + i * c->slot_ld, src + i * ld,
           (size_t)c->slot_ld * sizeof(float));
    flags[i] = pad && pad[i] ? 1 : 0;
    c->any_pad = c->any_pad || flags[i];
  }
  c->len[b] += add;
}

/* Row state -------------------------------------------------------------- */

static attn_status check_batch(const attn_kv_cache *c, int64_t batch,
                               const void *arr, const char *fn,
                               const char *arr_name) {
  if (!c || !arr)
    return attn_fail(ATTN_ERR_NULL_POINTER, "%s: %s is NULL", fn,
                     !c ? "cache" : arr_name);
  if (batch != c->batch)
    return attn_fail(ATTN_ERR_BAD_SIZE,
                     "%s: batch %lld differs from the cache's batch %lld", fn,
                     (long long)batch, (long long)c->batch);
  return ATTN_OK;
}

attn_status attn_kv_cache_lengths(const attn_kv_cache *c, int64_t batch,
                                  int64_t *lengths, int64_t *first) {
  attn_status st =
      check_batch(c, batch, lengths, "attn_kv_cache_lengths", "lengths");
  if (st != ATTN_OK)
    return st;
  memcpy(lengths, c->len, (size_t)batch * sizeof *lengths);
  if (first)
    memcpy(first, c->first, (size_t)batch * sizeof *first);
  return ATTN_OK;
}

attn_status attn_kv_cache_truncate(attn_kv_cache *c, int64_t batch,
                                   const int64_t *lengths) {
  attn_status st =
      check_batch(c, batch, lengths, "attn_kv_cache_truncate", "lengths");
  if (st != ATTN_OK)
    return st;
  for (int64_t b = 0; b < batch; b++) {
    int64_t n = lengths[b];
    if (n < 0 || n > c->len[b])
      return attn_fail(ATTN_ERR_BAD_SIZE,
                       "attn_kv_cache_truncate: lengths[%lld] = %lld is "
                       "outside [0, %lld], the row's length",
                       (long long)b, (long long)n, (long long)c->len[b]);
    /* Continuing from n needs the keys the window lets position n see. */
    int64_t oldest_needed =
        c->window > 0 && n >= c->window ? n - c->window + 1 : 0;
    if (c->first[b] > 0 && oldest_needed < c->first[b])
      return attn_fail(ATTN_ERR_BAD_SIZE,
                       "attn_kv_cache_truncate: row %lld cannot go back to "
                       "length %lld: the window of %lld needs position "
                       "%lld, but the cache already dropped positions "
                       "before %lld",
                       (long long)b, (long long)n, (long long)c->window,
                       (long long)oldest_needed, (long long)c->first[b]);
  }
  memcpy(c->len, lengths, (size_t)batch * sizeof *lengths);
  return ATTN_OK;
}

attn_status attn_kv_cache_reset(attn_kv_cache *c) {
  if (!c)
    return attn_fail(ATTN_ERR_NULL_POINTER, "attn_kv_cache_reset: cache is "
                                            "NULL");
  memset(c->len, 0, (size_t)c->batch * sizeof *c->len);
  memset(c->first, 0, (size_t)c->batch * sizeof *c->first);
  c->any_pad = false;
  return ATTN_OK;
}

/* Reordering ------------------------------------------------------------- */

/* Row dst takes row src's tokens and state; src is unchanged. */
static void copy_row(attn_kv_cache *c, int64_t dst, int64_t src) {
  size_t n = (size_t)attn_kv_cache_held(c, src);
  memcpy(c->kv + dst * c->capacity * c->slot_ld,
         c->kv + src * c->capacity * c->slot_ld,
         n * (size_t)c->slot_ld * sizeof(float));
  memcpy(c->pad + dst * c->capacity, c->pad + src * c->capacity, n);
  c->len[dst] = c->len[src];
  c->first[dst] = c->first[src];
}

static void swap_bytes(unsigned char *a, unsigned char *b, size_t n) {
  for (size_t i = 0; i < n; i++) {
    unsigned char t = a[i];
    a[i] = b[i];
    b[i] = t;
  }
}

/* Exchanges rows a and b without a buffer: the tokens both hold are
 * swapped, the longer row's remaining tokens copied over. */
static void swap_rows(attn_kv_cache *c, int64_t a, int64_t b) {
  int64_t na = attn_kv_cache_held(c, a), nb = attn_kv_cache_held(c, b);
  int64_t common = na < nb ? na : nb;
  size_t slot = (size_t)c->slot_ld * sizeof(float);
  unsigned char *ka = (unsigned char *)(c->kv + a * c->capacity * c->slot_ld);
  unsigned char *kb = (unsigned char *)(c->kv + b * c->capacity * c->slot_ld);
  uint8_t *pa = c->pad + a * c->capacity, *pb = c->pad + b * c->capacity;
  swap_bytes(ka, kb, (size_t)common * slot);
  swap_bytes(pa, pb, (size_t)common);
  if (na > nb) {
    memcpy(kb + (size_t)common * slot, ka + (size_t)common * slot,
           (size_t)(na - common) * slot);
    memcpy(pb + common, pa + common, (size_t)(na - common));
  } else if (nb > na) {
    memcpy(ka + (size_t)common * slot, kb + (size_t)common * slot,
           (size_t)(nb - common) * slot);
    memcpy(pa + common, pb + common, (size_t)(nb - common));
  }
  int64_t t = c->len[a];
  c->len[a] = c->len[b];
  c->len[b] = t;
  t = c->first[a];
  c->first[a] = c->first[b];
  c->first[b] = t;
}

attn_status attn_kv_cache_reorder(attn_kv_cache *c, int64_t batch,
                                  const int64_t *src) {
  attn_status st =
      check_batch(c, batch, src, "attn_kv_cache_reorder", "src_rows");
  if (st != ATTN_OK)
    return st;
  for (int64_t b = 0; b < batch; b++)
    if (src[b] < 0 || src[b] >= batch)
      return attn_fail(ATTN_ERR_BAD_SIZE,
                       "attn_kv_cache_reorder: src_rows[%lld] = %lld is "
                       "outside [0, %lld)",
                       (long long)b, (long long)src[b], (long long)batch);

  /* Row b becomes old row src[b] for every b at once. A row may be
   * overwritten once no pending row still has to read it (need == 0);
   * rows left after that form cycles, rotated by swaps. need == -1 marks a
   * row that is done. */
  int64_t *need = c->need, *stack = c->stack, top = 0;
  for (int64_t b = 0; b < batch; b++)
    need[b] = 0;
  for (int64_t b = 0; b < batch; b++)
    if (src[b] != b)
      need[src[b]]++;
  for (int64_t b = 0; b < batch; b++) {
    if (src[b] == b)
      need[b] = -1;
    else if (need[b] == 0)
      stack[top++] = b;
  }
  while (top > 0) {
    int64_t b = stack[--top];
    copy_row(c, b, src[b]);
    need[b] = -1;
    int64_t s = src[b];
    if (need[s] > 0 && --need[s] == 0)
      stack[top++] = s;
  }
  for (int64_t b0 = 0; b0 < batch; b0++) {
    if (need[b0] < 0)
      continue;
    /* b0 <- src[b0] <- src[src[b0]] ... <- b0: a pure cycle. */
    int64_t b = b0;
    while (src[b] != b0) {
      swap_rows(c, b, src[b]);
      need[b] = -1;
      b = src[b];
    }
    need[b] = -1;
  }
  return ATTN_OK;
}
