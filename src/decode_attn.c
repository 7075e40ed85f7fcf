/* Attention of a few new queries over long KV cache rows, and the small
 * projections of a decoding step: the loops that bound a step's speed by
 * the memory bandwidth of reading the cache and the weights.
 *
 * The general core (core.c) runs one (batch row, head) per work item with
 * two sgemm calls per key block. For a handful of query rows that costs
 * per-call overheads and BLAS packing copies, and a head reads only its
 * head_dim floats out of each cache slot [K of every head | V of every
 * head]: one short read per 4 KiB page (E = 512), which the hardware
 * prefetchers do not follow, so the step ends up waiting on memory latency
 * instead of streaming. Here a work item is one (batch row, chunk of
 * keys): it walks the chunk's slots in order, reading every key and value
 * once for every query head and every new query row at the same time (a
 * key/value head serves its group of query heads from where it is), and
 * leaves a partial softmax (max, sum, weighted values) per query row. A
 * second pass merges each row's chunks in order. Chunks give the threads
 * work even for a single sequence, and their size depends only on the
 * shapes, so results never depend on the thread count. */
#include "decode.h"

#include <math.h>
#include <string.h>

/* Keys per work item: a chunk's keys (E = 512: 512 KiB) stay in the L2
 * cache between the score and the value pass. */
#define CHUNK 128

/* The loops below are plain C written so that the compiler vectorises
 * them; on x86-64 with GCC and glibc (whose loader resolves the choice) a
 * second copy built for AVX2 is chosen at load time when the CPU has it
 * (both copies do the same arithmetic in the same order, so results do not
 * depend on which one runs). */
#if defined(__GNUC__) && !defined(__clang__) && defined(__x86_64__) &&         \
    defined(__linux__) && defined(__GLIBC__)
#define HOT_LOOP __attribute__((target_clones("avx2", "default")))
#else
#define HOT_LOOP
#endif

/* Query rows of one item: every head of each of the n new tokens, row
 * r = i * num_heads + h. */
static int64_t item_rows(const attn_dec_attn *a) {
  return a->n * a->layer->num_heads;
}

int64_t attn_dec_attn_chunks(int64_t max_held) {
  return max_held > 0 ? (max_held + CHUNK - 1) / CHUNK : 1;
}

int64_t attn_dec_attn_partial_floats(const attn_layer *l, int64_t batch,
                                     int64_t n, int64_t chunks) {
  return batch * chunks * n * l->num_heads * (l->head_dim + 2);
}

int64_t attn_dec_attn_tile_floats(const attn_layer *l, int64_t n) {
  /* Key ranges [n] int64 twice, scores [rows, CHUNK], accumulators
   * [rows, head_dim]. */
  return 4 * n + n * l->num_heads * (CHUNK + l->head_dim);
}

/* Dot product with eight partial sums, so the compiler can vectorise it
 * without reassociating a single sum. */
static inline float dot(const float *x, const float *y, int64_t n) {
  float acc[8] = {0, 0, 0, 0, 0, 0, 0, 0};
  int64_t d = 0;
  for (; d + 8 <= n; d += 8)
    for (int k = 0; k < 8; k++)
      acc[k] += x[d + k] * y[d + k];
  for (; d < n; d++)
    acc[0] += x[d] * y[d];
  return ((acc[0] + acc[4]) + (acc[1] + acc[5])) +
         ((acc[2] + acc[6]) + (acc[3] + acc[7]));
}

/* Slots ahead that the portable loops prefetch. */
#define PREFETCH_SLOTS 4

/* s[r * lds + j - jmin] = scale * q_r . k_j for every query row r of the
 * batch row (q: its n rows) and key j in [jmin, jmax), walking the slots
 * in order. */
HOT_LOOP static void scores_portable(const attn_dec_attn *a, const float *q,
                                     const float *slots, int64_t jmin,
                                     int64_t jmax, float *s, int64_t lds) {
  const attn_layer *L = a->layer;
  int64_t hd = L->head_dim, H = L->num_heads;
  int64_t group = H / L->num_kv_heads;
  for (int64_t j = jmin; j < jmax; j++) {
    const float *slot = slots + j * a->ldkv;
    attn_dec_prefetch_slot(slots, j + PREFETCH_SLOTS, jmax, a->ldkv, L->kv_dim);
    for (int64_t i = 0; i < a->n; i++)
      for (int64_t h = 0; h < H; h++)
        s[(i * H + h) * lds + (j - jmin)] =
            L->scale *
            dot(q + i * a->ldq + h * hd, slot + (h / group) * hd, hd);
  }
}

/* acc[r] += sum over j of p[r, j] v_j, in slot order. */
HOT_LOOP static void values_portable(const attn_dec_attn *a,
                                     const float *vslots, int64_t jmin,
                                     int64_t jmax, const float *p, int64_t ldp,
                                     float *acc) {
  const attn_layer *L = a->layer;
  int64_t hd = L->head_dim, H = L->num_heads;
  int64_t group = H / L->num_kv_heads, rows = a->n * H;
  for (int64_t j = jmin; j < jmax; j++) {
    const float *slot = vslots + j * a->ldkv;
    attn_dec_prefetch_slot(vslots, j + PREFETCH_SLOTS, jmax, a->ldkv,
                           L->kv_dim);
    for (int64_t r = 0; r < rows; r++) {
      float pj = p[r * ldp + (j - jmin)];
      if (pj == 0.0f)
        continue;
      const float *vj = slot + ((r % H) / group) * hd;
      float *ar = acc + r * hd;
      for (int64_t d = 0; d < hd; d++)
        ar[d] += pj * vj[d];
    }
  }
}

static const attn_dec_kernels portable_kernels = {scores_portable,
                                                  values_portable};

const attn_dec_kernels *attn_dec_kernels_for(int64_t head_dim) {
  const attn_dec_kernels *k = attn_dec_kernels_avx2();
  return k && head_dim % 8 == 0 ? k : &portable_kernels;
}

/* Partial results of chunk c of batch row b: per query row m, l and
 * acc[head_dim]. */
static float *partial_at(const attn_dec_attn *a, int64_t b, int64_t c) {
  int64_t rows = item_rows(a), hd = a->layer->head_dim;
  return a->partial + (b * a->chunks + c) * rows * (hd + 2);
}

void attn_dec_attn_chunk(const attn_dec_attn *a, int64_t item, float *tile) {
  const attn_layer *L = a->layer;
  int64_t hd = L->head_dim, H = L->num_heads;
  int64_t rows = item_rows(a), n = a->n;
  int64_t c = item % a->chunks, b = item / a->chunks;
  int64_t held = a->held[b];
  float *out = partial_at(a, b, c);
  /* Tile: key ranges first (8-byte aligned), then scores, accumulators. */
  int64_t *lo = (int64_t *)(void *)tile, *hi = lo + n;
  float *s = (float *)(void *)(hi + n), *acc = s + rows * CHUNK;

  for (int64_t r = 0; r < rows; r++) {
    out[r * (hd + 2)] = -INFINITY;
    out[r * (hd + 2) + 1] = 0.0f;
  }
  /* Visible keys of each new token within this chunk: token i sits at
   * slot held - n + i and sees itself and what precedes it (within the
   * window). */
  int64_t j0 = c * CHUNK, j1 = j0 + CHUNK < held ? j0 + CHUNK : held;
  int64_t jmin = j1, jmax = j0;
  for (int64_t i = 0; i < n; i++) {
    int64_t p = held - n + i;
    int64_t first =
        a->window > 0 && p - a->window + 1 > 0 ? p - a->window + 1 : 0;
    lo[i] = first > j0 ? first : j0;
    hi[i] = p + 1 < j1 ? p + 1 : j1;
    if (lo[i] < hi[i]) {
      jmin = lo[i] < jmin ? lo[i] : jmin;
      jmax = hi[i] > jmax ? hi[i] : jmax;
    }
  }
  if (held == 0 || jmin >= jmax)
    return;

  const float *slots = a->k + b * a->kv_rows * a->ldkv;
  const float *vslots = a->v + b * a->kv_rows * a->ldkv;
  const uint8_t *pad = a->pad ? a->pad + b * a->kv_rows : NULL;
  const float *q = a->q + b * n * a->ldq;
  int64_t cols = jmax - jmin;

  const attn_dec_kernels *kern = attn_dec_kernels_for(hd);
  kern->scores(a, q, slots, jmin, jmax, s, CHUNK);
  /* Mask, then exp(score - row max) in place. */
  const attn_vec_ops *vec = attn_vec();
  bool any = false;
  for (int64_t r = 0; r < rows; r++) {
    float *sr = s + r * CHUNK;
    int64_t i = r / H;
    for (int64_t j = jmin; j < jmax; j++)
      if (j < lo[i] || j >= hi[i] || (pad && pad[j]))
        sr[j - jmin] = -INFINITY;
    float m = vec->max(sr, cols);
    if (m == -INFINITY) {
      for (int64_t j = 0; j < cols; j++)
        sr[j] = 0.0f;
      continue;
    }
    out[r * (hd + 2)] = m;
    out[r * (hd + 2) + 1] = vec->exp_sum(sr, cols, m);
    any = true;
  }
  if (!any)
    return;
  /* Weighted values, again in slot order. */
  memset(acc, 0, (size_t)(rows * hd) * sizeof(float));
  kern->values(a, vslots, jmin, jmax, s, CHUNK, acc);
  for (int64_t r = 0; r < rows; r++)
    memcpy(out + r * (hd + 2) + 2, acc + r * hd, (size_t)hd * sizeof(float));
}

void attn_dec_attn_merge(const attn_dec_attn *a, int64_t b) {
  const attn_layer *L = a->layer;
  int64_t hd = L->head_dim, H = L->num_heads, rows = item_rows(a);
  float empty = a->empty_rows == ATTN_EMPTY_ROW_NAN ? NAN : 0.0f;
  for (int64_t r = 0; r < rows; r++) {
    int64_t i = r / H, h = r % H;
    float *dst = a->ctx + (b * a->n + i) * a->ldctx + h * hd;
    float m = -INFINITY;
    for (int64_t c = 0; c < a->chunks; c++) {
      const float *o = partial_at(a, b, c) + r * (hd + 2);
      m = o[0] > m ? o[0] : m;
    }
    if (m == -INFINITY) {
      for (int64_t d = 0; d < hd; d++)
        dst[d] = empty;
      continue;
    }
    float l = 0.0f;
    for (int64_t d = 0; d < hd; d++)
      dst[d] = 0.0f;
    for (int64_t c = 0; c < a->chunks; c++) {
      const float *o = partial_at(a, b, c) + r * (hd + 2);
      if (o[1] == 0.0f)
        continue;
      float f = expf(o[0] - m);
      l += o[1] * f;
      for (int64_t d = 0; d < hd; d++)
        dst[d] += o[2 + d] * f;
    }
    float inv = 1.0f / l;
    for (int64_t d = 0; d < hd; d++)
      dst[d] *= inv;
  }
}

/* Small projections ------------------------------------------------------ */

HOT_LOOP void attn_dec_linear_block(const attn_dec_linear *p, int64_t item) {
  int64_t n0 = item * ATTN_DEC_LINEAR_BLOCK;
  int64_t n1 =
      n0 + ATTN_DEC_LINEAR_BLOCK < p->N ? n0 + ATTN_DEC_LINEAR_BLOCK : p->N;
  if (attn_dec_linear_avx2(p, n0, n1))
    return;
  /* Each weight row is read once and meets every input row while it is in
   * the L1 cache. */
  for (int64_t j = n0; j < n1; j++) {
    const float *wj = p->w + j * p->K;
    float bj = p->b ? p->b[j] : 0.0f;
    for (int64_t m = 0; m < p->M; m++)
      p->y[m * p->ldy + j] = bj + dot(p->x + m * p->ldx, wj, p->K);
  }
}
