/* Internal declarations of incremental decoding: the key/value cache and
 * the cross-attention memory objects, shared by kv_cache.c, memory.c and
 * decode.c. Nothing here is exported. */
#ifndef ATTN_DECODE_H
#define ATTN_DECODE_H

#include "kernels.h"

/* The layer dimensions a cache or memory was made for. The layer's address
 * is only compared, never dereferenced. */
typedef struct {
  const attn_layer *layer;
  int64_t embed_dim, num_heads, num_kv_heads, head_dim, kdim, vdim;
} attn_dec_owner;

/* Rows of a cache: kv[b] is capacity slots of [K (kv_dim) | V (kv_dim)],
 * the layout the attention core reads with ldk = ldv = 2 * kv_dim and
 * kv_rows = capacity. Slot j of row b holds position first[b] + j; the row
 * holds len[b] - first[b] tokens. */
struct attn_kv_cache {
  attn_dec_owner owner;
  int64_t batch, capacity, window;
  int64_t kv_dim;  /* num_kv_heads * head_dim */
  int64_t slot_ld; /* floats per slot: 2 * kv_dim */
  float *kv;       /* [batch, capacity, slot_ld] */
  uint8_t *pad;    /* [batch, capacity]: nonzero = padding, never seen */
  int64_t *len;    /* [batch] positions appended so far */
  int64_t *first;  /* [batch] position held in slot 0 */
  int64_t *need;   /* [batch] work array of reorder */
  int64_t *stack;  /* [batch] work array of reorder */
  bool any_pad;    /* some slot may be marked as padding */
  void *owned;     /* the allocation to free, NULL for a caller buffer */
};

/* Keys and values of an encoder output, same slot layout as the cache:
 * kv[b] is capacity slots of [K | V]; len_k positions are set (0 = never
 * set), row b shows lengths[b] of them, and pad (stride len_k) hides some
 * when any_pad. */
struct attn_memory {
  attn_dec_owner owner;
  int64_t batch, capacity;
  int64_t kv_dim, slot_ld;
  int64_t len_k;
  float *kv;        /* [batch, capacity, slot_ld] */
  uint8_t *pad;     /* [batch, len_k] within [batch * capacity] bytes */
  int64_t *lengths; /* [batch] */
  bool any_pad;
  void *owned;
};

/* decode_attn.c: attention of n new queries per row over a cache, in work
 * items of (batch row, chunk of keys), then merged per batch row. */
typedef struct {
  const attn_layer *layer;
  int64_t n;      /* query rows per batch row */
  const float *q; /* [batch * n, ldq], head h at h * head_dim */
  int64_t ldq;
  const float *k, *v; /* kv_rows slots per batch row, stride ldkv */
  int64_t ldkv, kv_rows;
  const int64_t *held; /* [batch] keys held, new ones included;
                          0 = the row is skipped */
  const uint8_t *pad;  /* [batch, kv_rows] or NULL */
  int64_t window;      /* 0 = none */
  float *ctx;          /* may be q: written only by the merges */
  int64_t ldctx;
  int32_t empty_rows;
  int64_t chunks; /* attn_dec_attn_chunks(max held) */
  float *partial; /* attn_dec_attn_partial_floats() */
} attn_dec_attn;

/* The two inner loops of a chunk (decode_attn.c's portable ones, or
 * decode_avx2.c's): scores s[r * lds + j - jmin] = scale * q_r . k_j for
 * query row r = i * num_heads + h of the batch row whose n query rows
 * start at q, and acc[r * head_dim ..] += sum_j p[r * ldp + j - jmin] v_j,
 * over keys j in [jmin, jmax) of the batch row's slots (k or v). */
typedef struct {
  void (*scores)(const attn_dec_attn *a, const float *q, const float *slots,
                 int64_t jmin, int64_t jmax, float *s, int64_t lds);
  void (*values)(const attn_dec_attn *a, const float *vslots, int64_t jmin,
                 int64_t jmax, const float *p, int64_t ldp, float *acc);
} attn_dec_kernels;
/* The fastest kernels for this head size on this CPU. */
const attn_dec_kernels *attn_dec_kernels_for(int64_t head_dim);
/* decode_avx2.c: the AVX2/FMA kernels (head_dim a multiple of 8), or NULL
 * when the CPU lacks them or they are not built. */
const attn_dec_kernels *attn_dec_kernels_avx2(void);
/* Prefetches the first `floats` floats of slot j (ld floats apart from
 * base) if j < end. A step reads a few KiB from each slot; the hardware
 * prefetchers lose the stream at page ends and between the key and the
 * value halves of the slots, so the loops ask for the slots a few ahead.
 * Into the L2 cache only (measured: faster than into L1, which ties up the
 * line-fill buffers the loads need). */
static inline void attn_dec_prefetch_slot(const float *base, int64_t j,
                                          int64_t end, int64_t ld,
                                          int64_t floats) {
#if defined(__GNUC__)
  if (j >= end)
    return;
  const char *p = (const char *)(base + j * ld);
  for (int64_t off = 0; off < floats * (int64_t)sizeof(float); off += 64)
    __builtin_prefetch(p + off, 0, 1);
#else
  (void)base;
  (void)j;
  (void)end;
  (void)ld;
  (void)floats;
#endif
}

/* Number of key chunks for rows holding at most max_held keys. */
int64_t attn_dec_attn_chunks(int64_t max_held);
/* Floats of the partial results, and of one thread's tile. */
int64_t attn_dec_attn_partial_floats(const attn_layer *l, int64_t batch,
                                     int64_t n, int64_t chunks);
int64_t attn_dec_attn_tile_floats(const attn_layer *l, int64_t n);
/* First pass: items 0 .. batch * chunks - 1. */
void attn_dec_attn_chunk(const attn_dec_attn *a, int64_t item, float *tile);
/* Second pass, after every first-pass item: batch row b, writing ctx. */
void attn_dec_attn_merge(const attn_dec_attn *a, int64_t b);

/* decode_attn.c: y[M, N] = x[M, K] W[N, K]^T + b for a few rows, reading
 * the weights once: work items of ATTN_DEC_LINEAR_BLOCK output columns. */
#define ATTN_DEC_LINEAR_BLOCK 32
typedef struct {
  int64_t M, N, K;
  const float *x;
  int64_t ldx;
  const float *w, *b; /* b may be NULL */
  float *y;           /* must not overlap x */
  int64_t ldy;
} attn_dec_linear;
void attn_dec_linear_block(const attn_dec_linear *p, int64_t item);
/* decode_avx2.c: output columns [n0, n1) of p with AVX2/FMA; false (and
 * nothing done) when the CPU lacks them, K is not a multiple of 8 or M is
 * above 8. */
bool attn_dec_linear_avx2(const attn_dec_linear *p, int64_t n0, int64_t n1);

/* Fills *o from a layer. */
void attn_dec_owner_init(attn_dec_owner *o, const attn_layer *l);

/* ATTN_ERR_MISMATCH (naming `what`, e.g. "cache") unless l is the layer o
 * was made for and still has its dimensions. */
attn_status attn_dec_owner_check(const attn_dec_owner *o, const attn_layer *l,
                                 const char *what);

/* Rounds a byte count up to a multiple of 64; false on overflow. */
bool attn_dec_round64(size_t n, size_t *out);

#endif
