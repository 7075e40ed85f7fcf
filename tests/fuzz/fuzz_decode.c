/* SPDX-License-Identifier: MIT */
/* libFuzzer target: KV caches and decoding steps, cross-attention memories
 * and cross steps, driven by the input: cache and memory configurations
 * (struct sizes included), then a sequence of steps, truncations,
 * reorders and resets with per-step masks and options. Every failure must
 * be documented and leave the outputs and the cache's lengths untouched;
 * every success must give finite outputs matching the double-precision
 * reference run over each row's whole history (decoding) or over the
 * memory's keys and values (cross steps). */
#include "fuzz.h"

#include <math.h>

#define STEP_ERRORS                                                            \
  (FZ_BIT(ATTN_ERR_STRUCT_SIZE) | FZ_BIT(ATTN_ERR_BAD_SIZE) |                  \
   FZ_BIT(ATTN_ERR_OVERFLOW) | FZ_BIT(ATTN_ERR_BAD_MASK) |                     \
   FZ_BIT(ATTN_ERR_BAD_OPTION) | FZ_BIT(ATTN_ERR_NOT_FINITE) |                 \
   FZ_BIT(ATTN_ERR_CAPACITY) | FZ_BIT(ATTN_ERR_SCRATCH_TOO_SMALL))
#define CREATE_ERRORS                                                          \
  (FZ_BIT(ATTN_ERR_STRUCT_SIZE) | FZ_BIT(ATTN_ERR_BAD_SIZE) |                  \
   FZ_BIT(ATTN_ERR_OVERFLOW) | FZ_BIT(ATTN_ERR_NO_MEMORY))

#define MAX_HIST 40 /* tokens of history kept per row */
#define MAX_B 3

/* A config struct with a fuzzed struct_size, as the caller passes it. */
/* FUZZ_TRACE=1 prints every step and edit, to replay a crash. */

/* A count of new tokens or queries: in [1, hi], or one the library must
 * refuse before reading them (not positive, beyond int, or more floats
 * than memory holds); other large ones are folded into [1, hi]. */
static int64_t pick_count(fz_input *in, int64_t hi, int64_t B, int64_t E) {
  int64_t n = fz_size(in, 1, hi);
  if (n <= 0 || n > INT32_MAX || fz_too_big(fz_mul(fz_mul(B, n), E)))
    return n;
  return 1 + (n - 1) % hi;
}

static void *sized_copy(fz_input *in, const void *s, size_t size, size_t min) {
  size_t n = fz_struct_size(in, size, min);
  unsigned char *p = calloc(1, n > size ? n : size);
  memcpy(p, s, size);
  memcpy(p, &n, sizeof n); /* struct_size comes first */
  if (n > size && fz_u8(in) == 7)
    p[n - 1] = 1;
  return p;
}

typedef struct {
  const ref_model *m;
  attn_kv_cache *cache;
  int64_t B, E, H, W;
  float x[MAX_B][MAX_HIST * 16]; /* each row's tokens, [len, E] (E <= 16) */
  uint8_t pad[MAX_B][MAX_HIST];
  int64_t len[MAX_B];
} history;

static attn_options *pick_options(fz_input *in) {
  attn_options o;
  attn_options_init(&o);
  o.num_threads = (int32_t)fz_size(in, 0, 3);
  o.weights_mode = (int32_t)(fz_u8(in) % 3);
  return sized_copy(in, &o, sizeof o, ATTN_OPTIONS_SIZE_0_1);
}

/* The new tokens of row b in the step, against its whole history. */
static void check_row(const history *h, int64_t b, int64_t n_new, int64_t nb,
                      int32_t empty_rows, const float *out) {
  int64_t len = h->len[b], E = h->E;
  if (nb == 0)
    return;
  attn_mask mask;
  attn_mask_init(&mask);
  mask.causal = ATTN_CAUSAL_BOTTOM_RIGHT;
  mask.window = h->W;
  mask.key_padding = h->pad[b];
  mask.empty_rows = empty_rows;
  double want[MAX_HIST * 16];
  ref_forward(&h->m->ref, 1, nb, len, &h->x[b][(len - nb) * E], h->x[b],
              h->x[b], &mask, want, NULL);
  fz_check_close("decode step output", out + b * n_new * E, want, nb * E);
  for (int64_t i = nb * E; i < n_new * E; i++)
    if (out[b * n_new * E + i] != 0.0f)
      FZ_ABORT("decode step row %lld beyond its new tokens is not zero",
               (long long)b);
}

/* One attn_decode_step with tokens from the input. */
static void step(fz_input *in, history *h) {
  int64_t B = h->B, E = h->E, n_new = pick_count(in, 3, B, 3 * E);
  bool sane = n_new >= 1 && n_new <= 3;
  int64_t lens[MAX_B], nb[MAX_B];
  uint8_t padding[MAX_B * 3] = {0};
  attn_decode_mask dm;
  attn_decode_mask_init(&dm);
  uint8_t parts = fz_u8(in);
  dm.empty_rows = (int32_t)(fz_u8(in) % 3);
  for (int64_t b = 0; b < B; b++) {
    lens[b] = parts & 1 ? fz_size(in, 0, sane ? n_new : 3) : n_new;
    nb[b] = lens[b] >= 0 && sane && lens[b] <= n_new ? lens[b] : 0;
    if (sane && h->len[b] + n_new > MAX_HIST)
      return; /* the model keeps no more */
  }
  dm.new_lengths = parts & 1 ? lens : NULL;
  if (sane && (parts & 2))
    for (int64_t i = 0; i < B * n_new; i++)
      padding[i] = fz_u8(in) % 3 == 0;
  dm.new_padding = parts & 2 ? padding : NULL;
  attn_decode_mask *sized_mask =
      sized_copy(in, &dm, sizeof dm, ATTN_DECODE_MASK_SIZE_0_1);
  attn_options *opts = pick_options(in);
  float x[MAX_B * 3 * 16], out[MAX_B * 3 * 16], before[MAX_B * 3 * 16];
  ref_rng r;
  ref_rng_seed(&r, fz_u8(in));
  ref_fill(&r, x, B * 3 * E, -2, 2);
  if (parts & 4)
    x[fz_below(in, B * 3 * E)] = NAN;
  memset(out, 0x5a, sizeof out);
  memcpy(before, out, sizeof out);
  int64_t old_len[MAX_B];
  memcpy(old_len, h->len, sizeof old_len);
  attn_status st = attn_decode_step(h->m->layer, h->cache, B, n_new, x,
                                    parts & 8 ? NULL : sized_mask, opts, out);
  int64_t got[MAX_B];
  if (attn_kv_cache_lengths(h->cache, B, got, NULL) != ATTN_OK)
    FZ_ABORT("attn_kv_cache_lengths failed");
  if (getenv("FUZZ_TRACE"))
    fprintf(stderr,
            "step: status %d, B %lld, W %lld, n_new %lld, parts %d, "
            "lengths %lld %lld, old %lld %lld\n",
            (int)st, (long long)B, (long long)h->W, (long long)n_new, parts,
            (long long)lens[0], (long long)(B > 1 ? lens[1] : -1),
            (long long)old_len[0], (long long)(B > 1 ? old_len[1] : -1));
  if (getenv("FUZZ_TRACE"))
    fprintf(stderr, "  E %lld H %lld empty_rows %d pad %d%d%d %d%d%d\n",
            (long long)E, (long long)h->H, dm.empty_rows, padding[0],
            padding[1], padding[2], padding[3], padding[4], padding[5]);
  if (st != ATTN_OK) {
    fz_check_failure(st, STEP_ERRORS, "attn_decode_step");
    fz_same(out, before, sizeof out, "decode step output");
    fz_same(got, old_len, (size_t)B * sizeof *got, "cache lengths");
  } else {
    bool masked = !(parts & 8);
    for (int64_t b = 0; b < B; b++) {
      int64_t k = masked ? nb[b] : n_new;
      for (int64_t i = 0; i < k; i++) {
        memcpy(&h->x[b][(h->len[b] + i) * E], x + (b * n_new + i) * E,
               (size_t)E * sizeof(float));
        h->pad[b][h->len[b] + i] =
            masked && (parts & 2) ? padding[b * n_new + i] : 0;
      }
      h->len[b] += k;
      if (got[b] != h->len[b])
        FZ_ABORT("cache row %lld has length %lld, expected %lld", (long long)b,
                 (long long)got[b], (long long)h->len[b]);
      check_row(h, b, n_new, k, masked ? dm.empty_rows : 0, out);
    }
  }
  free(sized_mask);
  free(opts);
}

/* attn_kv_cache_truncate, _reorder or _reset with arguments from the
 * input; on success the history follows, on failure nothing changed. */
static void edit(fz_input *in, history *h) {
  int64_t arg[MAX_B], old_len[MAX_B], got[MAX_B];
  int op = fz_u8(in) % 3;
  for (int64_t b = 0; b < h->B; b++)
    arg[b] = op == 0 ? fz_size(in, 0, h->len[b]) : fz_size(in, 0, h->B - 1);
  memcpy(old_len, h->len, sizeof old_len);
  attn_status st = op == 0   ? attn_kv_cache_truncate(h->cache, h->B, arg)
                   : op == 1 ? attn_kv_cache_reorder(h->cache, h->B, arg)
                             : attn_kv_cache_reset(h->cache);
  if (attn_kv_cache_lengths(h->cache, h->B, got, NULL) != ATTN_OK)
    FZ_ABORT("attn_kv_cache_lengths failed");
  if (getenv("FUZZ_TRACE"))
    fprintf(stderr, "edit %d: status %d, args %lld %lld\n", op, (int)st,
            (long long)arg[0], (long long)(h->B > 1 ? arg[1] : -1));
  if (st != ATTN_OK) {
    fz_check_failure(st, FZ_BIT(ATTN_ERR_BAD_SIZE), "cache edit");
    fz_same(got, old_len, (size_t)h->B * sizeof *got, "cache lengths");
    return;
  }
  if (op == 0) {
    for (int64_t b = 0; b < h->B; b++)
      h->len[b] = arg[b];
  } else if (op == 1) {
    history copy = *h;
    for (int64_t b = 0; b < h->B; b++) {
      memcpy(h->x[b], copy.x[arg[b]], sizeof h->x[b]);
      memcpy(h->pad[b], copy.pad[arg[b]], sizeof h->pad[b]);
      h->len[b] = copy.len[arg[b]];
    }
  } else {
    memset(h->len, 0, sizeof h->len);
  }
  for (int64_t b = 0; b < h->B; b++)
    if (got[b] != h->len[b])
      FZ_ABORT("cache row %lld has length %lld after an edit, expected %lld",
               (long long)b, (long long)got[b], (long long)h->len[b]);
}

/* A cache from a fuzzed configuration, then a sequence of operations. */
static void run_decode(fz_input *in) {
  static const int square[] = {0, 2, 3, 4};
  history *h = calloc(1, sizeof *h);
  h->m = &fz_models()[square[fz_u8(in) % 4]];
  h->E = h->m->ref.embed_dim;
  h->H = h->m->ref.num_heads;
  attn_cache_config cfg;
  attn_cache_config_init(&cfg);
  cfg.batch = fz_size(in, 1, MAX_B);
  cfg.capacity = fz_size(in, 1, 12);
  cfg.window = fz_u8(in) & 1 ? fz_size(in, 1, 6) : 0;
  void *sized = sized_copy(in, &cfg, sizeof cfg, ATTN_CACHE_CONFIG_SIZE_0_1);
  size_t bytes = 0;
  attn_status st = attn_kv_cache_size(h->m->layer, sized, &bytes);
  bool fits = cfg.batch >= 1 && cfg.batch <= MAX_B && cfg.capacity <= 64;
  if (st == ATTN_OK && fits) {
    st = attn_kv_cache_create(h->m->layer, sized, &h->cache);
    if (st != ATTN_OK)
      FZ_ABORT("attn_kv_cache_create failed after attn_kv_cache_size");
  } else if (st != ATTN_OK) {
    fz_check_failure(st, CREATE_ERRORS, "attn_kv_cache_size");
  }
  free(sized);
  if (h->cache) {
    h->B = cfg.batch;
    h->W = cfg.window;
    for (int ops = 0; ops < 8 && in->n > 0; ops++)
      if (fz_u8(in) % 4)
        step(in, h);
      else
        edit(in, h);
  }
  attn_kv_cache_destroy(h->cache);
  free(h);
}

#define MAX_LK 10

/* What the last successful attn_memory_set() gave the memory. */
typedef struct {
  const ref_model *m;
  attn_memory *mem;
  int64_t B, len_k, kdim, vdim;
  float key[MAX_B * MAX_LK * 16], value[MAX_B * MAX_LK * 16];
  int64_t lens[MAX_B];
  uint8_t pad[MAX_B * MAX_LK];
} memory_model;

static void memory_set(fz_input *in, memory_model *mm) {
  int64_t B = mm->B, len_k = pick_count(in, MAX_LK, B, 16);
  bool sane = len_k >= 1 && len_k <= MAX_LK;
  float key[MAX_B * MAX_LK * 16], value[MAX_B * MAX_LK * 16];
  int64_t lens[MAX_B];
  uint8_t pad[MAX_B * MAX_LK] = {0}, parts = fz_u8(in);
  ref_rng r;
  ref_rng_seed(&r, fz_u8(in));
  ref_fill(&r, key, B * MAX_LK * 16, -2, 2);
  ref_fill(&r, value, B * MAX_LK * 16, -2, 2);
  for (int64_t b = 0; b < B; b++)
    lens[b] = fz_size(in, 0, sane ? len_k : 1);
  for (int64_t i = 0; sane && (parts & 2) && i < B * len_k; i++)
    pad[i] = fz_u8(in) % 3 == 0;
  if (parts & 4)
    value[fz_below(in, B * MAX_LK * 16)] = INFINITY;
  attn_options *opts = pick_options(in);
  attn_status st =
      attn_memory_set(mm->m->layer, mm->mem, B, len_k, key, value,
                      parts & 1 ? lens : NULL, parts & 2 ? pad : NULL, opts);
  free(opts);
  if (st != ATTN_OK) {
    fz_check_failure(st,
                     STEP_ERRORS | FZ_BIT(ATTN_ERR_NO_MEMORY) |
                         FZ_BIT(ATTN_ERR_MISMATCH),
                     "attn_memory_set");
    return;
  }
  if (!sane)
    FZ_ABORT("attn_memory_set accepted len_k %lld", (long long)len_k);
  mm->len_k = len_k;
  memcpy(mm->key, key, sizeof key);
  memcpy(mm->value, value, sizeof value);
  for (int64_t b = 0; b < B; b++)
    mm->lens[b] = parts & 1 ? lens[b] : len_k;
  memcpy(mm->pad, pad, sizeof pad);
}

/* The reference of a cross step: the memory's lengths and padding
 * narrowed by the step's mask. */
static void cross_reference(const memory_model *mm, int64_t n,
                            const float *query, const attn_mask *step_mask,
                            double *want) {
  int64_t B = mm->B, Lk = mm->len_k;
  int64_t lens[MAX_B];
  uint8_t pad[MAX_B * MAX_LK];
  attn_mask m;
  attn_mask_init(&m);
  if (step_mask)
    m = *step_mask;
  for (int64_t b = 0; b < B; b++) {
    lens[b] = mm->lens[b];
    if (m.key_lengths && m.key_lengths[b] < lens[b])
      lens[b] = m.key_lengths[b];
  }
  for (int64_t i = 0; i < B * Lk; i++)
    pad[i] =
        mm->pad[(i / Lk) * Lk + i % Lk] || (m.key_padding && m.key_padding[i]);
  m.key_lengths = lens;
  m.key_padding = pad;
  ref_forward(&mm->m->ref, B, n, Lk, query, mm->key, mm->value, &m, want, NULL);
}

static void cross_step(fz_input *in, memory_model *mm) {
  int64_t B = mm->B, E = mm->m->ref.embed_dim, n = pick_count(in, 4, B, E);
  int64_t Lk = mm->len_k > 0 ? mm->len_k : 1;
  bool sane = n >= 1 && n <= 4;
  attn_mask mask;
  attn_mask_init(&mask);
  int64_t lens[MAX_B];
  uint8_t pad[MAX_B * MAX_LK] = {0}, parts = fz_u8(in);
  mask.causal = (int32_t)(fz_u8(in) % 4);
  mask.empty_rows = (int32_t)(fz_u8(in) % 2);
  mask.window = parts & 1 ? fz_size(in, 0, 5) : 0;
  for (int64_t b = 0; b < B; b++)
    lens[b] = fz_size(in, 0, Lk);
  mask.key_lengths = parts & 2 ? lens : NULL;
  for (int64_t i = 0; (parts & 4) && i < B * Lk; i++)
    pad[i] = fz_u8(in) % 4 == 0;
  mask.key_padding = parts & 4 ? pad : NULL;
  attn_options *opts = pick_options(in);
  float q[MAX_B * 4 * 16], out[MAX_B * 4 * 16], before[MAX_B * 4 * 16];
  ref_rng r;
  ref_rng_seed(&r, fz_u8(in));
  ref_fill(&r, q, B * 4 * 16, -2, 2);
  memset(out, 0x5a, sizeof out);
  memcpy(before, out, sizeof out);
  attn_status st = attn_cross_step(mm->m->layer, mm->mem, B, n, q,
                                   parts & 8 ? NULL : &mask, opts, out);
  free(opts);
  if (st != ATTN_OK) {
    fz_check_failure(st, STEP_ERRORS | FZ_BIT(ATTN_ERR_NO_MEMORY),
                     "attn_cross_step");
    fz_same(out, before, sizeof out, "cross step output");
    return;
  }
  if (!sane || mm->len_k == 0)
    FZ_ABORT("attn_cross_step accepted n %lld, len_k %lld", (long long)n,
             (long long)mm->len_k);
  double want[MAX_B * 4 * 16];
  cross_reference(mm, n, q, parts & 8 ? NULL : &mask, want);
  fz_check_close("cross step output", out, want, B * n * E);
}

static void run_cross(fz_input *in) {
  memory_model *mm = calloc(1, sizeof *mm);
  mm->m = &fz_models()[fz_u8(in) % FZ_LAYERS];
  attn_memory_config cfg;
  attn_memory_config_init(&cfg);
  cfg.batch = fz_size(in, 1, MAX_B);
  cfg.capacity = fz_size(in, 1, MAX_LK);
  void *sized = sized_copy(in, &cfg, sizeof cfg, ATTN_MEMORY_CONFIG_SIZE_0_1);
  size_t bytes = 0;
  attn_status st = attn_memory_size(mm->m->layer, sized, &bytes);
  bool fits = cfg.batch >= 1 && cfg.batch <= MAX_B && cfg.capacity <= MAX_LK;
  if (st == ATTN_OK && fits) {
    if (attn_memory_create(mm->m->layer, sized, &mm->mem) != ATTN_OK)
      FZ_ABORT("attn_memory_create failed after attn_memory_size");
  } else if (st != ATTN_OK) {
    fz_check_failure(st, CREATE_ERRORS, "attn_memory_size");
  }
  free(sized);
  if (mm->mem) {
    mm->B = cfg.batch;
    for (int ops = 0; ops < 6 && in->n > 0; ops++)
      if (fz_u8(in) % 3 == 0)
        memory_set(in, mm);
      else
        cross_step(in, mm);
  }
  attn_memory_destroy(mm->mem);
  free(mm);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  fz_input in = {data, size};
  if (fz_u8(&in) & 1)
    run_cross(&in);
  else
    run_decode(&in);
  return 0;
}
