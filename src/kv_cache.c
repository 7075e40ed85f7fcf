/* The self-attention key/value cache: creation (library- or
 * caller-allocated), lengths, truncation, beam reordering and reset. The
 * decoding step that fills it is in decode.c. */
/* madvise(MADV_HUGEPAGE) is a Linux extension. */
#if defined(__linux__) && !defined(_DEFAULT_SOURCE)
#define _DEFAULT_SOURCE
#endif

#include "decode.h"

#include <limits.h>
#include <stdlib.h>
#include <string.h>
#if defined(__linux__)
#include <sys/mman.h>
#endif

void attn_cache_config_init(attn_cache_config *cfg) {
  if (!cfg)
    return;
  memset(cfg, 0, sizeof *cfg);
  cfg->struct_size = sizeof *cfg;
  cfg->batch = 1;
}

/* Shared helpers of the cache and the memory ---------------------------- */

void attn_dec_owner_init(attn_dec_owner *o, const attn_layer *l) {
  o->layer = l;
  o->embed_dim = l->embed_dim;
  o->num_heads = l->num_heads;
  o->num_kv_heads = l->num_kv_heads;
  o->head_dim = l->head_dim;
  o->kdim = l->kdim;
  o->vdim = l->vdim;
}

attn_status attn_dec_owner_check(const attn_dec_owner *o, const attn_layer *l,
                                 const char *what) {
  if (o->layer != l || o->embed_dim != l->embed_dim ||
      o->num_heads != l->num_heads || o->num_kv_heads != l->num_kv_heads ||
      o->kdim != l->kdim || o->vdim != l->vdim)
    return attn_fail(ATTN_ERR_MISMATCH,
                     "this %s was created for another layer (embed_dim "
                     "%lld, num_heads %lld, num_kv_heads %lld): a %s holds "
                     "keys and values projected by its own layer's weights",
                     what, (long long)o->embed_dim, (long long)o->num_heads,
                     (long long)o->num_kv_heads, what);
  return ATTN_OK;
}

bool attn_dec_round64(size_t n, size_t *out) {
  if (n > SIZE_MAX - 63)
    return false;
  *out = (n + 63) / 64 * 64;
  return true;
}

/* Creation --------------------------------------------------------------- */

/* Byte offsets of the parts of a cache from a 64-byte aligned base. */
typedef struct {
  attn_cache_config cfg;
  int64_t slot_ld;
  size_t kv_off, pad_off, meta_off, bytes;
} cache_plan;

static attn_status plan_cache(const attn_layer *l, const attn_cache_config *in,
                              cache_plan *p) {
  if (!l || !in)
    return attn_fail(ATTN_ERR_NULL_POINTER, "attn_kv_cache: %s is NULL",
                     !l ? "layer" : "cfg");
  attn_cache_config_init(&p->cfg);
  attn_status st = attn_load_struct(&p->cfg, sizeof p->cfg, in, sizeof p->cfg,
                                    "attn_cache_config");
  if (st != ATTN_OK)
    return st;
  const attn_cache_config *c = &p->cfg;
  if (l->kdim != l->embed_dim || l->vdim != l->embed_dim)
    return attn_fail(ATTN_ERR_BAD_SIZE,
                     "a KV cache is for self-attention, which needs kdim == "
                     "vdim == embed_dim (%lld); this layer has kdim %lld, "
                     "vdim %lld (use an attn_memory for cross-attention)",
                     (long long)l->embed_dim, (long long)l->kdim,
                     (long long)l->vdim);
  if (c->batch <= 0 || c->capacity <= 0)
    return attn_fail(ATTN_ERR_BAD_SIZE,
                     "cache batch %lld and capacity %lld must be positive",
                     (long long)c->batch, (long long)c->capacity);
  if (c->window < 0)
    return attn_fail(ATTN_ERR_BAD_SIZE,
                     "cache window %lld must not be negative (0 means none)",
                     (long long)c->window);
  p->slot_ld = 2 * l->kv_dim;
  int64_t rows, floats;
  size_t kvb, padb, metab, total;
  if (c->capacity > INT_MAX || p->slot_ld > INT_MAX ||
      !attn_mul64(c->batch, c->capacity, &rows) ||
      !attn_mul64(rows, p->slot_ld, &floats) ||
      (uint64_t)floats > PTRDIFF_MAX / sizeof(float) ||
      (uint64_t)c->batch > PTRDIFF_MAX / (4 * sizeof(int64_t)) ||
      !attn_dec_round64(sizeof(struct attn_kv_cache), &total) ||
      !attn_dec_round64((size_t)floats * sizeof(float), &kvb) ||
      !attn_dec_round64((size_t)rows, &padb) ||
      !attn_dec_round64((size_t)c->batch * 4 * sizeof(int64_t), &metab))
    return attn_fail(ATTN_ERR_OVERFLOW,
                     "a cache of batch %lld and capacity %lld for width "
                     "%lld does not fit in memory",
                     (long long)c->batch, (long long)c->capacity,
                     (long long)p->slot_ld);
  p->kv_off = total;
  if (!attn_addsz(total, kvb, &total))
    goto overflow;
  p->pad_off = total;
  if (!attn_addsz(total, padb, &total))
    goto overflow;
  p->meta_off = total;
  if (!attn_addsz(total, metab, &total) || !attn_addsz(total, 64, &total))
    goto overflow;
  p->bytes = total; /* + 64: room to align the caller's buffer */
  return ATTN_OK;
overflow:
  return attn_fail(ATTN_ERR_OVERFLOW,
                   "a cache of batch %lld and capacity %lld does not fit in "
                   "memory",
                   (long long)c->batch, (long long)c->capacity);
}

/* Lays the cache out in buf (at least p->bytes) and returns its handle. */
static attn_kv_cache *build_cache(const attn_layer *l, const cache_plan *p,
                                  void *buf, void *owned) {
  unsigned char *base = buf;
  base += (64 - (uintptr_t)base % 64) % 64;
  attn_kv_cache *c = (attn_kv_cache *)(void *)base;
  memset(c, 0, sizeof *c);
  attn_dec_owner_init(&c->owner, l);
  c->batch = p->cfg.batch;
  c->capacity = p->cfg.capacity;
  c->window = p->cfg.window;
  c->kv_dim = l->kv_dim;
  c->slot_ld = p->slot_ld;
  c->kv = (float *)(void *)(base + p->kv_off);
  c->pad = base + p->pad_off;
  c->len = (int64_t *)(void *)(base + p->meta_off);
  c->first = c->len + c->batch;
  c->need = c->first + c->batch;
  c->stack = c->need + c->batch;
  memset(c->len, 0, (size_t)c->batch * 4 * sizeof(int64_t));
  c->owned = owned;
  return c;
}

/* Memory for a cache. A step reads a few KiB in each slot, one slot per
 * 4 KiB page for E = 512, so a large cache spends much of a step on TLB
 * misses with small pages: where the kernel offers transparent huge pages
 * on request, ask for them (a hint; it changes nothing else). */
#define HUGE_PAGE ((size_t)2 << 20)

static void *alloc_cache(size_t bytes) {
#if defined(__linux__) && defined(MADV_HUGEPAGE)
  if (bytes >= 4 * HUGE_PAGE) {
    void *mem = NULL;
    if (posix_memalign(&mem, HUGE_PAGE, bytes) != 0)
      return NULL;
    size_t whole = bytes / HUGE_PAGE * HUGE_PAGE;
    (void)madvise(mem, whole, MADV_HUGEPAGE);
    return mem;
  }
#endif
  return malloc(bytes);
}

attn_status attn_kv_cache_size(const attn_layer *l,
                               const attn_cache_config *cfg, size_t *bytes) {
  if (!bytes)
    return attn_fail(ATTN_ERR_NULL_POINTER, "attn_kv_cache_size: bytes is "
                                            "NULL");
  cache_plan p;
  attn_status st = plan_cache(l, cfg, &p);
  if (st == ATTN_OK)
    *bytes = p.bytes;
  return st;
}

attn_status attn_kv_cache_create(const attn_layer *l,
                                 const attn_cache_config *cfg,
                                 attn_kv_cache **out) {
  if (!out)
    return attn_fail(ATTN_ERR_NULL_POINTER, "attn_kv_cache_create: out is "
                                            "NULL");
  cache_plan p;
  attn_status st = plan_cache(l, cfg, &p);
  if (st != ATTN_OK)
    return st;
  /* The key/value slots are not cleared: only slots written by a step are
   * ever read. */
  void *mem = alloc_cache(p.bytes);
  if (!mem)
    return attn_fail(ATTN_ERR_NO_MEMORY,
                     "cannot allocate %zu bytes for a KV cache", p.bytes);
  *out = build_cache(l, &p, mem, mem);
  return ATTN_OK;
}

attn_status attn_kv_cache_create_in(const attn_layer *l,
                                    const attn_cache_config *cfg, void *buffer,
                                    size_t size, attn_kv_cache **out) {
  if (!buffer || !out)
    return attn_fail(ATTN_ERR_NULL_POINTER,
                     "attn_kv_cache_create_in: %s is "
                     "NULL",
                     !buffer ? "buffer" : "out");
  cache_plan p;
  attn_status st = plan_cache(l, cfg, &p);
  if (st != ATTN_OK)
    return st;
  if (size < p.bytes)
    return attn_fail(ATTN_ERR_SCRATCH_TOO_SMALL,
                     "buffer of %zu bytes is smaller than the %zu bytes this "
                     "cache needs (attn_kv_cache_size)",
                     size, p.bytes);
  *out = build_cache(l, &p, buffer, NULL);
  return ATTN_OK;
}

void attn_kv_cache_destroy(attn_kv_cache *cache) {
  if (cache)
    free(cache->owned);
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

static int64_t held(const attn_kv_cache *c, int64_t b) {
  return c->len[b] - c->first[b];
}

/* Row dst takes row src's tokens and state; src is unchanged. */
static void copy_row(attn_kv_cache *c, int64_t dst, int64_t src) {
  size_t n = (size_t)held(c, src);
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
  int64_t na = held(c, a), nb = held(c, b);
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
