/* SPDX-License-Identifier: MIT */
/* A plain double-precision model of multi-head attention for the tests, and
 * the small helpers the tests share (seeded random numbers, comparisons
 * that name the worst element, layers with random weights).
 *
 * ref_forward() is written from the documented semantics only (attn.h and
 * torch.nn.MultiheadAttention): it shares no code with src/, materialises
 * the whole Lq x Lk mask for every (batch row, head) and computes every sum
 * in double precision, one element at a time. It is slow on purpose:
 * nothing here tries to be clever. */
#ifndef ATTN_TESTS_REF_H
#define ATTN_TESTS_REF_H

#include "attn/attn.h"

#include <stddef.h>
#include <stdint.h>

/* A layer as the reference sees it. Weights in torch's layout [out, in],
 * row-major. kdim, vdim and num_kv_heads may be 0 (= embed_dim, embed_dim,
 * num_heads). wk/wv are [num_kv_heads * head_dim, kdim / vdim]. Biases are
 * NULL when bias is 0. */
typedef struct {
  int64_t embed_dim, num_heads, kdim, vdim, num_kv_heads;
  int bias;
  double scale; /* 0 = 1/sqrt(head_dim) */
  const float *wq, *wk, *wv, *wo, *bq, *bk, *bv, *bo;
} ref_layer;

/* out [B, Lq, E] = multi-head attention of query [B, Lq, E] over key
 * [B, Lk, kdim] and value [B, Lk, vdim] under mask (NULL = none). weights,
 * when not NULL, receives the per-head probabilities [B, H, Lq, Lk]. Rows
 * with no visible key follow mask->empty_rows (zeros or NaN, in both the
 * attention output before out_proj and the weights). */
void ref_forward(const ref_layer *l, int64_t B, int64_t Lq, int64_t Lk,
                 const float *query, const float *key, const float *value,
                 const attn_mask *mask, double *out, double *weights);

/* visible [Lq, Lk] (1 = the query may see the key) and add [Lq, Lk] (bias
 * added to the scaled score; 0 without bias) for batch row b and head h, as
 * ref_forward uses them. add may be NULL. */
void ref_mask_matrix(const attn_mask *mask, int64_t Lq, int64_t Lk, int64_t b,
                     int64_t h, unsigned char *visible, double *add);

/* avg [B, Lq, Lk] = mean over the H heads of per_head [B, H, Lq, Lk]. */
void ref_average_heads(int64_t B, int64_t H, int64_t Lq, int64_t Lk,
                       const double *per_head, double *avg);

/* Seeded random numbers (xoshiro256**), the same sequence everywhere. */
typedef struct {
  uint64_t s[4];
} ref_rng;
void ref_rng_seed(ref_rng *r, uint64_t seed);
uint64_t ref_rng_u64(ref_rng *r);
/* Uniform in [0, 1). */
double ref_rng_unit(ref_rng *r);
/* Uniform integer in [lo, hi] (inclusive). */
int64_t ref_rng_int(ref_rng *r, int64_t lo, int64_t hi);
/* x[i] uniform in [lo, hi). */
void ref_fill(ref_rng *r, float *x, int64_t n, double lo, double hi);
/* A new array of n floats uniform in [lo, hi) (free() it). */
float *ref_random(ref_rng *r, int64_t n, double lo, double hi);

/* Result of comparing float results with a double reference. */
typedef struct {
  int ok;           /* every element within tolerance */
  int64_t worst;    /* index of the element with the largest excess */
  double got, want; /* values at worst */
  double max_abs;   /* largest |got - want| over finite pairs */
  double max_rel;   /* largest |got - want| / |want| over want != 0 */
  int64_t mismatches;
} ref_cmp;

/* Compares got[i] with want[i]: passes when |got - want| <= atol + rtol *
 * |want|; a NaN in want requires NaN in got and a finite want requires a
 * finite got. */
ref_cmp ref_compare(const float *got, const double *want, int64_t n,
                    double rtol, double atol);

/* ref_compare, printing the worst element (prefixed by what) on failure,
 * and the error figures of every comparison when the environment variable
 * REF_VERBOSE is set. Returns 1 when close. For use as
 * assert_true(ref_close(...)). */
int ref_close(const char *what, const float *got, const double *want, int64_t n,
              double rtol, double atol);

/* The same for two float arrays (want widened to double). */
int ref_close_f(const char *what, const float *got, const float *want,
                int64_t n, double rtol, double atol);

/* Tolerances of the core tests against ref_forward. See ref.c for why. */
#define REF_RTOL 1e-4
#define REF_ATOL 2e-5

/* Largest |x| over n doubles, ignoring NaN. */
double ref_max_abs(const double *x, int64_t n);

/* A library layer with random weights and the same weights as a ref_layer.
 * storage owns the arrays ref points into. */
typedef struct {
  attn_layer *layer;
  ref_layer ref;
  float *storage;
} ref_model;

/* Creates cfg's layer and sets random weights (through the separate setters
 * ATTN_W_Q/K/V, ATTN_W_OUT and ATTN_B_Q/K/V/OUT), drawn from seed: weights
 * uniform in +-sqrt(3/fan_in) so activations stay near unit size, biases
 * uniform in +-0.5 so that a dropped bias shows. Returns the status of the
 * first failing library call (the model is then empty). */
attn_status ref_model_create(ref_model *m, const attn_config *cfg,
                             uint64_t seed);
void ref_model_destroy(ref_model *m);

/* Reads a library layer's configuration and weights back into *rl (via
 * attn_layer_get_config and attn_layer_get_weight). *storage receives the
 * arrays rl points into; free() it. */
attn_status ref_layer_from_attn(const attn_layer *layer, ref_layer *rl,
                                float **storage);

/* malloc that aborts the test program on failure. */
void *ref_xmalloc(size_t bytes);

#endif
