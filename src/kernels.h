/* The attention core's building blocks: masks on score tiles, the online
 * softmax, and the per-(batch, head, query block) work item. */
#ifndef ATTN_KERNELS_H
#define ATTN_KERNELS_H

#include "internal.h"

/* mask.c ----------------------------------------------------------------- */

/* Validates a caller's mask (NULL = none) for these sizes and copies it into
 * *out, resolved: out is always a full, current-size descriptor. */
attn_status attn_mask_load(const attn_mask *in, int64_t batch, int64_t heads,
                           int64_t len_q, int64_t len_k, attn_mask *out);

/* For query rows i0 .. i0+rows-1 of batch row b: the key range [lo, hi) left
 * by key lengths, causality and the window (lo >= hi: no key). */
void attn_mask_ranges(const attn_mask *m, int64_t b, int64_t len_q,
                      int64_t len_k, int64_t i0, int64_t rows, int64_t *lo,
                      int64_t *hi);

/* softmax.c -------------------------------------------------------------- */

/* Hides keys outside each row's [lo, hi) and keys marked in pad (row of
 * key_padding for this batch row, or NULL), adds the additive bias (pointer
 * to the bias of the tile's first query and key 0, row stride bias_ld, or
 * NULL). The tile s[rows, cols] (row stride lds) holds keys j0 .. j0+cols-1.
 */
void attn_mask_tile(float *s, int64_t lds, int64_t rows, int64_t cols,
                    int64_t j0, const int64_t *lo, const int64_t *hi,
                    const uint8_t *pad, const float *bias, int64_t bias_ld);

/* One online-softmax step over a masked tile: per row, raises the running
 * max m, rescales the running sum l and the accumulator row acc (acc_cols
 * wide, stride ldacc) to the new max, replaces the tile by exp(s - m) and
 * adds its sum to l. Rows with no visible key so far are left at m = -inf,
 * l = 0 and their tile row set to zero. Returns the number of rows with a
 * visible key in this tile (0: the tile is all zeros). */
int64_t attn_softmax_step(float *s, int64_t lds, int64_t rows, int64_t cols,
                          float *m, float *l, float *acc, int64_t ldacc,
                          int64_t acc_cols);

/* Vector primitives, chosen once at run time for the CPU (AVX2/FMA or
 * portable); every table is immutable, so any thread may use them. */
typedef struct {
  /* Largest of x[0..n-1]; -inf when n is 0. */
  float (*max)(const float *x, int64_t n);
  /* x[i] = exp(x[i] - shift) for shift >= max(x), shift finite; returns
   * the sum of the new values. -inf inputs give exactly 0. */
  float (*exp_sum)(float *x, int64_t n, float shift);
  const char *name;
  /* x[i] *= f. */
  void (*scale)(float *x, int64_t n, float f);
  /* dst[c * ldd + r] = src[r * lds + c] for r < rows, c < cols. */
  void (*transpose)(const float *src, int64_t lds, int64_t rows, int64_t cols,
                    float *dst, int64_t ldd);
} attn_vec_ops;
/* The best table this CPU supports. */
const attn_vec_ops *attn_vec(void);
/* Each implementation; attn_vec_avx2() is NULL where it is not built (not
 * x86-64), and must only be used when attn_cpu_has_avx2_fma(). */
const attn_vec_ops *attn_vec_portable(void);
const attn_vec_ops *attn_vec_avx2(void);

/* cpu.c ------------------------------------------------------------------ */

/* True when the CPU and the OS support AVX2 and FMA. */
bool attn_cpu_has_avx2_fma(void);

/* Size of one core's L2 cache in bytes (1 MiB when it cannot be read). */
int64_t attn_cpu_l2_bytes(void);

/* core.c ----------------------------------------------------------------- */

typedef struct {
  const attn_layer *layer;
  const attn_mask *mask; /* resolved, never NULL */
  int64_t batch, len_q, len_k;
  const float *q; /* [batch*len_q, ldq], head h at column h*head_dim */
  const float *k; /* [batch*len_k, ldk], kv head g at column g*head_dim */
  const float *v;
  int64_t ldq, ldk, ldv;
  /* Rows per batch row in k and v (>= len_k; a cache's capacity). 0 means
   * len_k. */
  int64_t kv_rows;
  float *ctx; /* may be q: each item overwrites only the Q block it read */
  int64_t ldctx;
  float *weights; /* NULL or the caller's attention weight output */
  int32_t weights_mode;
  int64_t qblock, kblock;
  /* Query rows per BLAS product. 0 (the normal case) means the library's
   * choice (core.c); other values are for measurements. */
  int64_t gemm_rows;
} attn_core;

/* Per-thread scratch of the core, in floats, for these block sizes. */
int64_t attn_core_tile_floats(int64_t qblock, int64_t kblock, int64_t head_dim);

/* Block sizes for a call. They depend only on the shapes (never on the
 * thread count), so results are the same whatever the threads. */
void attn_core_blocks(const attn_layer *l, int64_t len_q, int64_t len_k,
                      bool want_weights, int64_t *qblock, int64_t *kblock);

/* Work item `item` of attn_core_items(): computes the attention output (and
 * the weights, if asked) of one (batch row, head, query block), or of all
 * heads of one (batch row, query block) when averaged weights are asked. */
int64_t attn_core_items(const attn_core *c);
void attn_core_run(const attn_core *c, int64_t item, float *tile);

/* Every item of c on up to `threads` threads (attn_core_threads() decides
 * how many are worth it), worker w using tiles + w * tile_floats. */
void attn_core_run_all(const attn_core *c, int32_t threads, float *tiles,
                       int64_t tile_floats);

/* How many of `threads` threads the core should use for c: fewer when the
 * work is too small to pay for starting them, 1 when its BLAS products
 * are too big to stay single-threaded (the BLAS then threads them). The
 * result never changes the output: each item computes the same bits on
 * any thread. */
int32_t attn_core_threads(const attn_core *c, int32_t threads);

/* threads.c -------------------------------------------------------------- */

/* Runs fn(ctx, item, worker) for item 0..items-1 on up to `threads`
 * threads (the caller's included). Falls back to fewer threads if they
 * cannot be started. */
void attn_parallel_for(int32_t threads, int64_t items,
                       void (*fn)(void *ctx, int64_t item, int32_t worker),
                       void *ctx);

/* blas_threads.c --------------------------------------------------------- */

/* Starts a section in which the BLAS runs every product in the calling
 * thread: with OpenBLAS (pthreads build), sets it to one thread until the
 * last concurrent section ends, then restores its count. Returns false
 * when the BLAS's threading cannot be controlled (generic CBLAS, OpenMP
 * OpenBLAS): the section then changes nothing, and the BLAS may still
 * thread big products. Every begin needs one attn_blas_serial_end(). */
bool attn_blas_serial_begin(void);
void attn_blas_serial_end(void);

/* attn_linear split into blocks of rows (and columns, for few rows) run on
 * up to `threads` threads; the blocks depend on the shapes only. For use
 * inside a serial section (otherwise the BLAS may thread every block). */
void attn_linear_threads(int32_t threads, int64_t M, int64_t N, int64_t K,
                         const float *x, int64_t ldx, const float *w,
                         const float *b, float *y, int64_t ldy);

/* A projection as a call runs it: on the library's threads when `serial`
 * (the section from attn_blas_serial_begin() holds the BLAS to one thread),
 * else one product that the BLAS may thread itself. */
void attn_project(bool serial, int32_t threads, int64_t M, int64_t N, int64_t K,
                  const float *x, int64_t ldx, const float *w, const float *b,
                  float *y, int64_t ldy);

/* forward.c -------------------------------------------------------------- */

/* Copies the caller's options (NULL = defaults) into *o and checks them. */
attn_status attn_options_load(const attn_options *in, attn_options *o);

/* The scratch of a call: the caller's (o->scratch, refused when smaller
 * than `need` bytes; `who` names the size query in the message) or a new
 * allocation returned in *mem for the caller to free. *f is the scratch's
 * first 64-byte-aligned float (need includes 64 bytes of slack). */
attn_status attn_scratch_acquire(const attn_options *o, size_t need,
                                 const char *who, void **mem, float **f);

/* project.c -------------------------------------------------------------- */

/* y[M, N] = x[M, K] * w[N, K]^T + b (b may be NULL), row strides ldx, ldy. */
void attn_linear(int64_t M, int64_t N, int64_t K, const float *x, int64_t ldx,
                 const float *w, const float *b, float *y, int64_t ldy);

#endif
