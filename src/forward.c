/* Forward pass: argument checks, the scratch plan, projections, the
 * attention core on threads, and the output projection. */
#include "kernels.h"

#include <limits.h>
#include <stdlib.h>
#include <string.h>

void attn_options_init(attn_options *opts) {
  if (!opts)
    return;
  memset(opts, 0, sizeof *opts);
  opts->struct_size = sizeof *opts;
}

/* Where everything of one call lives, in floats from an aligned base. */
typedef struct {
  bool fused_qkv; /* one product for Q, K and V */
  bool fused_kv;  /* one product for K and V */
  int64_t ldq, ldk, ldv;
  int64_t q_off, k_off, v_off; /* buffers; k/v may alias q's */
  int64_t tile_off, tile_floats;
  int64_t qblock, kblock;
  int32_t threads;
  size_t bytes;
} plan;

#define ALIGN_FLOATS 16 /* 64 bytes */

static int64_t round_up(int64_t n) {
  return (n + ALIGN_FLOATS - 1) / ALIGN_FLOATS * ALIGN_FLOATS;
}

static attn_status overflow(const char *what) {
  return attn_fail(ATTN_ERR_OVERFLOW, "%s is too large: size overflows", what);
}

/* Sizes and options shared by attn_forward and the scratch-size query. */
static attn_status make_plan(const attn_layer *l, int64_t B, int64_t Lq,
                             int64_t Lk, bool same_qkv, bool same_kv,
                             const attn_options *o, plan *p) {
  if (B <= 0 || Lq <= 0 || Lk <= 0)
    return attn_fail(ATTN_ERR_BAD_SIZE,
                     "batch %lld, len_q %lld and len_k %lld must be positive",
                     (long long)B, (long long)Lq, (long long)Lk);
  int64_t E = l->embed_dim, KV = l->kv_dim, hd = l->head_dim;
  memset(p, 0, sizeof *p);
  p->fused_qkv = same_qkv && Lq == Lk && l->kdim == E && l->vdim == E;
  p->fused_kv = !p->fused_qkv && same_kv && l->kdim == l->vdim;
  if (E + 2 * KV > INT_MAX || l->kdim > INT_MAX || l->vdim > INT_MAX ||
      Lk > INT_MAX)
    return overflow("a dimension beyond the BLAS's int range");

  int64_t nq, nk, t;
  if (!attn_mul64(B, Lq, &nq) || !attn_mul64(B, Lk, &nk))
    return overflow("batch * length");
  /* Every input and output element count must be addressable. */
  if (!attn_mul64(nq, E, &t) || !attn_mul64(nk, l->kdim, &t) ||
      !attn_mul64(nk, l->vdim, &t))
    return overflow("an input tensor");
  if (o->attn_weights) {
    int64_t w;
    if (!attn_mul64(nq, Lk, &w) ||
        (o->weights_mode == ATTN_WEIGHTS_PER_HEAD &&
         !attn_mul64(w, l->num_heads, &w)) ||
        (uint64_t)w > PTRDIFF_MAX / sizeof(float))
      return overflow("the attention weight output");
  }

  int64_t total = 0, a, b;
  if (p->fused_qkv) {
    p->ldq = p->ldk = p->ldv = E + 2 * KV;
    if (!attn_mul64(nq, p->ldq, &a))
      return overflow("the projected Q/K/V buffer");
    p->k_off = E;
    p->v_off = E + KV;
    total = round_up(a);
  } else {
    p->ldq = E;
    p->ldk = p->ldv = p->fused_kv ? 2 * KV : KV;
    if (!attn_mul64(nq, E, &a) ||
        !attn_mul64(nk, p->fused_kv ? 2 * KV : KV, &b))
      return overflow("the projected Q/K/V buffers");
    p->k_off = round_up(a);
    if (p->fused_kv) {
      p->v_off = p->k_off + KV;
      total = p->k_off + round_up(b);
    } else {
      p->v_off = p->k_off + round_up(b);
      total = p->v_off + round_up(b);
    }
    if (total < 0 || total > INT64_MAX / 2)
      return overflow("the projected Q/K/V buffers");
  }

  attn_core_blocks(l, Lq, Lk, o->attn_weights != NULL, &p->qblock, &p->kblock);
  int64_t tile = round_up(attn_core_tile_floats(p->qblock, p->kblock, hd));
  p->threads = attn_resolve_threads(o->num_threads, l->num_threads);
  p->tile_off = total;
  p->tile_floats = tile;
  int64_t tiles;
  if (!attn_mul64(tile, p->threads, &tiles) ||
      !attn_add64(total, tiles, &total) ||
      (uint64_t)total > (SIZE_MAX - 64) / sizeof(float))
    return overflow("the scratch memory");
  p->bytes = (size_t)total * sizeof(float) + 64; /* + alignment slack */
  return ATTN_OK;
}

attn_status attn_options_load(const attn_options *in, attn_options *o) {
  attn_options_init(o);
  if (in) {
    attn_status st =
        attn_load_struct(o, sizeof *o, in, sizeof *o, "attn_options");
    if (st != ATTN_OK)
      return st;
  }
  if (o->weights_mode != ATTN_WEIGHTS_PER_HEAD &&
      o->weights_mode != ATTN_WEIGHTS_AVERAGE)
    return attn_fail(ATTN_ERR_BAD_OPTION, "unknown weights_mode %d",
                     o->weights_mode);
  if (o->num_threads < 0)
    return attn_fail(ATTN_ERR_BAD_OPTION,
                     "num_threads %d must not be negative (0 means the "
                     "layer's setting)",
                     o->num_threads);
  return ATTN_OK;
}

attn_status attn_forward_scratch_size(const attn_layer *l, int64_t batch,
                                      int64_t len_q, int64_t len_k,
                                      const attn_options *opts, size_t *bytes) {
  if (!l || !bytes)
    return attn_fail(ATTN_ERR_NULL_POINTER,
                     "attn_forward_scratch_size: %s is NULL",
                     !l ? "layer" : "bytes");
  attn_options o;
  attn_status st = attn_options_load(opts, &o);
  if (st != ATTN_OK)
    return st;
  /* The fused and the separate layouts take the same room; plan the one
   * that needs most (separate buffers carry alignment padding). */
  plan p;
  if ((st = make_plan(l, batch, len_q, len_k, false, false, &o, &p)) != ATTN_OK)
    return st;
  *bytes = p.bytes;
  return ATTN_OK;
}

static attn_status check_inputs(const attn_layer *l, int64_t B, int64_t Lq,
                                int64_t Lk, const float *query,
                                const float *key, const float *value) {
  /* An input passed in two roles is scanned once, unless the second role
   * reads further than the first (e.g. query == key with Lk > Lq). */
  int64_t nq = B * Lq * l->embed_dim, nk = B * Lk * l->kdim;
  int64_t nv = B * Lk * l->vdim;
  if (!attn_all_finite(query, nq))
    return attn_fail(ATTN_ERR_NOT_FINITE, "query contains NaN or infinity");
  if (!(key == query && nk <= nq) && !attn_all_finite(key, nk))
    return attn_fail(ATTN_ERR_NOT_FINITE, "key contains NaN or infinity");
  if (!(value == key && nv <= nk) && !(value == query && nv <= nq) &&
      !attn_all_finite(value, nv))
    return attn_fail(ATTN_ERR_NOT_FINITE, "value contains NaN or infinity");
  return ATTN_OK;
}

attn_status attn_forward(const attn_layer *l, int64_t B, int64_t Lq, int64_t Lk,
                         const float *query, const float *key,
                         const float *value, const attn_mask *mask_in,
                         const attn_options *opts, float *out) {
  if (!l || !query || !key || !value || !out)
    return attn_fail(ATTN_ERR_NULL_POINTER, "attn_forward: %s is NULL",
                     !l       ? "layer"
                     : !query ? "query"
                     : !key   ? "key"
                     : !value ? "value"
                              : "out");
  attn_options o;
  attn_status st = attn_options_load(opts, &o);
  if (st != ATTN_OK)
    return st;
  plan p;
  bool same_kv = key == value;
  if ((st = make_plan(l, B, Lq, Lk, query == key && same_kv, same_kv, &o,
                      &p)) != ATTN_OK)
    return st;
  if ((st = attn_layer_check_set(l, "attn_forward")) != ATTN_OK)
    return st;
  attn_mask mask;
  if ((st = attn_mask_load(mask_in, B, l->num_heads, Lq, Lk, &mask)) != ATTN_OK)
    return st;
  if ((st = check_inputs(l, B, Lq, Lk, query, key, value)) != ATTN_OK)
    return st;

  /* Callers are held to the size attn_forward_scratch_size reports, even
   * when this call's fused layout would fit in less: a short buffer is then
   * caught whichever inputs alias. */
  size_t need = p.bytes;
  if (o.scratch) {
    plan reported;
    if ((st = make_plan(l, B, Lq, Lk, false, false, &o, &reported)) != ATTN_OK)
      return st;
    need = reported.bytes;
  }
  void *mem = NULL;
  float *f = NULL;
  if ((st = attn_scratch_acquire(&o, need, "attn_forward_scratch_size", &mem,
                                 &f)) != ATTN_OK)
    return st;

  /* Projections: fused where the inputs allow one product. */
  const attn_layer *L = l;
  int64_t E = L->embed_dim, KV = L->kv_dim;
  const float *wq = attn_slot_ptr(L, ATTN_SLOT_WQ);
  const float *wk = attn_slot_ptr(L, ATTN_SLOT_WK);
  const float *wv = attn_slot_ptr(L, ATTN_SLOT_WV);
  const float *bq = L->bias ? attn_slot_ptr(L, ATTN_SLOT_BQ) : NULL;
  const float *bk = L->bias ? attn_slot_ptr(L, ATTN_SLOT_BK) : NULL;
  const float *bv = L->bias ? attn_slot_ptr(L, ATTN_SLOT_BV) : NULL;
  float *q = f, *k = f + p.k_off, *v = f + p.v_off;
  /* Every thread of the call is the library's: see blas_threads.c. */
  bool ours = attn_blas_serial_begin();
  int32_t t = p.threads;
  if (p.fused_qkv) {
    attn_project(ours, t, B * Lq, E + 2 * KV, E, query, E, wq, bq, q, p.ldq);
  } else {
    attn_project(ours, t, B * Lq, E, E, query, E, wq, bq, q, p.ldq);
    if (p.fused_kv) {
      attn_project(ours, t, B * Lk, 2 * KV, L->kdim, key, L->kdim, wk, bk, k,
                   p.ldk);
    } else {
      attn_project(ours, t, B * Lk, KV, L->kdim, key, L->kdim, wk, bk, k,
                   p.ldk);
      attn_project(ours, t, B * Lk, KV, L->vdim, value, L->vdim, wv, bv, v,
                   p.ldv);
    }
  }

  /* Attention per (batch, head, query block); the context overwrites Q. */
  attn_core core = {.layer = L,
                    .mask = &mask,
                    .batch = B,
                    .len_q = Lq,
                    .len_k = Lk,
                    .q = q,
                    .k = k,
                    .v = v,
                    .ldq = p.ldq,
                    .ldk = p.ldk,
                    .ldv = p.ldv,
                    .ctx = q,
                    .ldctx = p.ldq,
                    .weights = o.attn_weights,
                    .weights_mode = o.weights_mode,
                    .qblock = p.qblock,
                    .kblock = p.kblock};
  attn_core_run_all(&core, p.threads, f + p.tile_off, p.tile_floats);

  attn_project(ours, t, B * Lq, E, E, q, p.ldq, attn_slot_ptr(L, ATTN_SLOT_WO),
               L->bias ? attn_slot_ptr(L, ATTN_SLOT_BO) : NULL, out, E);
  if (ours)
    attn_blas_serial_end();
  free(mem);
  return ATTN_OK;
}

attn_status attn_self_forward(const attn_layer *l, int64_t batch, int64_t len,
                              const float *x, const attn_mask *mask,
                              const attn_options *opts, float *out) {
  if (l && (l->kdim != l->embed_dim || l->vdim != l->embed_dim))
    return attn_fail(ATTN_ERR_BAD_SIZE,
                     "self-attention needs kdim == vdim == embed_dim (%lld); "
                     "this layer has kdim %lld, vdim %lld: use attn_forward",
                     (long long)l->embed_dim, (long long)l->kdim,
                     (long long)l->vdim);
  return attn_forward(l, batch, len, len, x, x, x, mask, opts, out);
}

attn_status attn_scratch_acquire(const attn_options *o, size_t need,
                                 const char *who, void **mem, float **f) {
  unsigned char *base;
  *mem = NULL;
  if (o->scratch) {
    if (o->scratch_size < need)
      return attn_fail(ATTN_ERR_SCRATCH_TOO_SMALL,
                       "scratch of %zu bytes is smaller than the %zu bytes "
                       "this call needs (%s)",
                       o->scratch_size, need, who);
    base = o->scratch;
  } else {
    *mem = malloc(need);
    if (!*mem)
      return attn_fail(ATTN_ERR_NO_MEMORY,
                       "cannot allocate %zu bytes of scratch", need);
    base = *mem;
  }
  *f = (float *)(void *)(base + ((64 - (uintptr_t)base % 64) % 64));
  return ATTN_OK;
}
