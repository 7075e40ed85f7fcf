/* SPDX-License-Identifier: MIT */
/* libFuzzer target: attn_forward(), attn_self_forward() and
 * attn_forward_scratch_size() with sizes, masks (causal modes, windows,
 * key lengths, padding, bias with any strides), options (weights modes,
 * thread counts, caller scratch) and struct sizes drawn from the input.
 * Every call must fail with a documented status and leave out and the
 * attention weights untouched, or succeed with finite results matching
 * the double-precision reference. Sizes too large to hold are passed with
 * tiny buffers: the library must refuse them before reading anything. */
#include "fuzz.h"

#include <math.h>

#define FORWARD_ERRORS                                                         \
  (FZ_BIT(ATTN_ERR_NULL_POINTER) | FZ_BIT(ATTN_ERR_STRUCT_SIZE) |              \
   FZ_BIT(ATTN_ERR_BAD_SIZE) | FZ_BIT(ATTN_ERR_OVERFLOW) |                     \
   FZ_BIT(ATTN_ERR_BAD_MASK) | FZ_BIT(ATTN_ERR_BAD_OPTION) |                   \
   FZ_BIT(ATTN_ERR_NOT_FINITE) | FZ_BIT(ATTN_ERR_SCRATCH_TOO_SMALL))

/* Sizes of one call, and whether they are small enough to allocate. */
typedef struct {
  int64_t B, Lq, Lk, E, H, kdim, vdim;
  bool small; /* buffers allocated; else tiny stand-ins */
} shape;

static float dummy[64];

/* Positive sizes whose tensors overflow are kept (the library must say
 * so); other large ones are folded into small ones. */
static void pick_sizes(fz_input *in, shape *s) {
  s->B = fz_size(in, 1, 3);
  s->Lq = fz_size(in, 1, 9);
  s->Lk = fz_size(in, 1, 9);
  s->small = s->B > 0 && s->B <= 3 && s->Lq > 0 && s->Lq <= 9 && s->Lk > 0 &&
             s->Lk <= 9;
  if (s->small || s->B <= 0 || s->Lq <= 0 || s->Lk <= 0)
    return;
  __int128 nq = fz_mul(fz_mul(s->B, s->Lq), s->E);
  __int128 nk =
      fz_mul(fz_mul(s->B, s->Lk), s->kdim > s->vdim ? s->kdim : s->vdim);
  if (fz_too_big(nq) || fz_too_big(nk) || s->Lk > INT32_MAX)
    return;
  s->B = 1 + s->B % 3;
  s->Lq = 1 + s->Lq % 9;
  s->Lk = 1 + s->Lk % 9;
  s->small = true;
}

typedef struct {
  attn_mask m;
  int64_t *lengths;
  uint8_t *padding;
  float *bias;
  unsigned char *sized; /* the mask as passed, struct_size bytes */
} mask_parts;

static void pick_bias(fz_input *in, const shape *s, mask_parts *mp) {
  int64_t B = s->B, H = s->H, Lq = s->Lq, Lk = s->Lk;
  int64_t sb = 0, sh = 0, sq = Lk;
  switch (fz_u8(in) % 5) {
  case 1: /* [B, Lq, Lk] */
    sb = Lq * Lk;
    break;
  case 2: /* [B, H, Lq, Lk] */
    sb = H * Lq * Lk, sh = Lq * Lk;
    break;
  case 3: /* anything */
    sb = fz_size(in, 0, 40), sh = fz_size(in, 0, 40), sq = fz_size(in, 0, 12);
    break;
  case 4: /* broadcast rows */
    sq = 0;
    break;
  }
  /* Extent read: refused strides get a stand-in buffer, others a real
   * one (addressable but large ones are folded into the [Lq, Lk] case). */
  bool refused = sb < 0 || sh < 0 || sq < 0;
  __int128 last =
      refused ? 0
              : fz_mul(B - 1, sb) + fz_mul(H - 1, sh) + fz_mul(Lq - 1, sq) + Lk;
  if (!refused && !fz_too_big(last) && last > 4096) {
    sb = sh = 0, sq = Lk;
    last = (__int128)(Lq - 1) * sq + Lk;
  }
  if (refused || fz_too_big(last)) {
    mp->m.bias = dummy;
  } else {
    mp->bias = ref_xmalloc((size_t)last * sizeof(float));
    for (int64_t i = 0; i < (int64_t)last; i++) {
      uint8_t c = fz_u8(in);
      mp->bias[i] = c == 255   ? -INFINITY
                    : c == 254 ? NAN
                    : c == 253 ? INFINITY
                               : (float)((int)c - 128) / 64.0f;
    }
    mp->m.bias = mp->bias;
  }
  mp->m.bias_stride_b = sb;
  mp->m.bias_stride_h = sh;
  mp->m.bias_stride_q = sq;
}

static void pick_mask(fz_input *in, const shape *s, mask_parts *mp) {
  memset(mp, 0, sizeof *mp);
  attn_mask_init(&mp->m);
  uint8_t parts = fz_u8(in);
  mp->m.causal = (int32_t)(fz_u8(in) % 4) - (parts & 0x80 ? 2 : 0);
  mp->m.empty_rows = (int32_t)(fz_u8(in) % 3);
  mp->m.window = parts & 1 ? fz_size(in, 0, 10) : 0;
  if (s->small && (parts & 2)) {
    mp->lengths = ref_xmalloc((size_t)s->B * sizeof(int64_t));
    for (int64_t b = 0; b < s->B; b++)
      mp->lengths[b] = fz_size(in, 0, s->Lk);
    mp->m.key_lengths = mp->lengths;
  }
  if (s->small && (parts & 4)) {
    mp->padding = ref_xmalloc((size_t)(s->B * s->Lk));
    for (int64_t i = 0; i < s->B * s->Lk; i++)
      mp->padding[i] = fz_u8(in) % 4 == 0;
    mp->m.key_padding = mp->padding;
  }
  if (s->small && (parts & 8))
    pick_bias(in, s, mp);
  else if (parts & 16)
    mp->m.bias_stride_q = fz_size(in, 0, 3); /* strides without a bias */
  size_t size = fz_struct_size(in, sizeof(attn_mask), ATTN_MASK_SIZE_0_1);
  mp->sized = calloc(1, size > sizeof(attn_mask) ? size : sizeof(attn_mask));
  mp->m.struct_size = size;
  memcpy(mp->sized, &mp->m, sizeof mp->m);
  if (size > sizeof(attn_mask) && (parts & 32))
    mp->sized[size - 1] = 1; /* a tail the library does not know */
}

static void free_mask(mask_parts *mp) {
  free(mp->lengths);
  free(mp->padding);
  free(mp->bias);
  free(mp->sized);
}

typedef struct {
  float *q, *k, *v; /* k, v may alias q */
  bool self, same_kv;
} inputs;

/* Random finite inputs, sometimes with one NaN or infinity. */
static void pick_inputs(fz_input *in, const shape *s, inputs *x) {
  uint8_t how = fz_u8(in);
  x->self = (how & 1) && s->kdim == s->E && s->vdim == s->E;
  x->same_kv = x->self || ((how & 2) && s->kdim == s->vdim);
  if (!s->small) {
    x->q = x->k = x->v = dummy;
    return;
  }
  ref_rng r;
  ref_rng_seed(&r, fz_u8(in));
  int64_t nq = s->B * s->Lq * s->E;
  int64_t nk = s->B * s->Lk * (s->kdim > s->vdim ? s->kdim : s->vdim);
  if (x->self) {
    int64_t n = nq > nk ? nq : nk;
    x->q = x->k = x->v = ref_random(&r, n, -2, 2);
  } else {
    x->q = ref_random(&r, nq, -2, 2);
    x->k = ref_random(&r, nk, -2, 2);
    x->v = x->same_kv ? x->k : ref_random(&r, nk, -2, 2);
  }
  if ((how & 0xf0) == 0xf0)
    x->k[fz_below(in, s->B * s->Lk * s->kdim)] = (how & 4) ? NAN : INFINITY;
}

static void free_inputs(inputs *x) {
  if (x->q == dummy)
    return;
  if (x->v != x->k && x->v != x->q)
    free(x->v);
  if (x->k != x->q)
    free(x->k);
  free(x->q);
}

typedef struct {
  attn_options o;
  float *weights;
  int64_t nweights;
  void *scratch;
  unsigned char *sized;
} option_parts;

static void pick_options(fz_input *in, const ref_model *m, const shape *s,
                         option_parts *op) {
  memset(op, 0, sizeof *op);
  attn_options_init(&op->o);
  uint8_t parts = fz_u8(in);
  op->o.weights_mode = (int32_t)(fz_u8(in) % 3);
  op->o.num_threads = (int32_t)fz_size(in, 0, 4);
  if (s->small && (parts & 1)) {
    op->nweights = s->B * s->H * s->Lq * s->Lk;
    op->weights = ref_xmalloc((size_t)op->nweights * sizeof(float));
    memset(op->weights, 0xa5, (size_t)op->nweights * sizeof(float));
    op->o.attn_weights = op->weights;
  } else if (!s->small && (parts & 1)) {
    op->o.attn_weights = dummy;
  }
  if (parts & 2) {
    size_t need = 0;
    attn_status st =
        attn_forward_scratch_size(m->layer, s->B, s->Lq, s->Lk, &op->o, &need);
    if (st != ATTN_OK)
      fz_check_failure(st, FORWARD_ERRORS, "attn_forward_scratch_size");
    if (st == ATTN_OK && need <= ((size_t)1 << 24)) {
      size_t have = (parts & 4) && need > 0 ? need - 1 - need % 7 : need;
      op->scratch = ref_xmalloc(have ? have : 1);
      op->o.scratch = op->scratch;
      op->o.scratch_size = have;
    }
  }
  size_t size = fz_struct_size(in, sizeof(attn_options), ATTN_OPTIONS_SIZE_0_1);
  op->sized =
      calloc(1, size > sizeof(attn_options) ? size : sizeof(attn_options));
  op->o.struct_size = size;
  memcpy(op->sized, &op->o, sizeof op->o);
  if (size > sizeof(attn_options) && (parts & 8))
    op->sized[size - 1] = 1;
}

static void free_options(option_parts *op) {
  free(op->weights);
  free(op->scratch);
  free(op->sized);
}

/* The call succeeded: compare with the reference. */
static void check_result(const ref_model *m, const shape *s, const inputs *x,
                         const attn_mask *mask, const attn_options *o,
                         const float *out) {
  int64_t n = s->B * s->Lq * s->E;
  int64_t nw = s->B * s->H * s->Lq * s->Lk;
  double *want = ref_xmalloc((size_t)n * sizeof(double));
  double *w = ref_xmalloc((size_t)nw * sizeof(double));
  ref_forward(&m->ref, s->B, s->Lq, s->Lk, x->q, x->k, x->v, mask, want, w);
  fz_check_close("attn_forward output", out, want, n);
  if (o->attn_weights && o->weights_mode == ATTN_WEIGHTS_PER_HEAD) {
    fz_check_close("attention weights", o->attn_weights, w, nw);
  } else if (o->attn_weights) {
    double *avg = ref_xmalloc((size_t)(nw / s->H) * sizeof(double));
    ref_average_heads(s->B, s->H, s->Lq, s->Lk, w, avg);
    fz_check_close("averaged attention weights", o->attn_weights, avg,
                   nw / s->H);
    free(avg);
  }
  free(want);
  free(w);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  fz_input in = {data, size};
  const ref_model *m = &fz_models()[fz_u8(&in) % FZ_LAYERS];
  shape s = {.E = m->ref.embed_dim, .H = m->ref.num_heads};
  s.kdim = m->ref.kdim ? m->ref.kdim : s.E;
  s.vdim = m->ref.vdim ? m->ref.vdim : s.E;
  pick_sizes(&in, &s);
  inputs x;
  mask_parts mp;
  option_parts op;
  pick_inputs(&in, &s, &x);
  pick_mask(&in, &s, &mp);
  pick_options(&in, m, &s, &op);
  bool use_mask = fz_u8(&in) % 4 != 0;

  int64_t n_out = s.small ? s.B * s.Lq * s.E : 16;
  float *out = ref_xmalloc((size_t)n_out * sizeof(float));
  memset(out, 0x5a, (size_t)n_out * sizeof(float));
  void *out_before = fz_snapshot(out, (size_t)n_out * sizeof(float));
  size_t wbytes = (size_t)op.nweights * sizeof(float);
  void *w_before = fz_snapshot(op.weights, op.weights ? wbytes : 0);

  const attn_mask *mask = use_mask ? (const attn_mask *)mp.sized : NULL;
  const attn_options *opts = (const attn_options *)op.sized;
  attn_status st =
      x.self && s.Lq == s.Lk && (fz_u8(&in) & 1)
          ? attn_self_forward(m->layer, s.B, s.Lq, x.q, mask, opts, out)
          : attn_forward(m->layer, s.B, s.Lq, s.Lk, x.q, x.k, x.v, mask, opts,
                         out);
  if (st != ATTN_OK) {
    fz_check_failure(st, FORWARD_ERRORS, "attn_forward");
    fz_same(out, out_before, (size_t)n_out * sizeof(float), "out");
    if (op.weights)
      fz_same(op.weights, w_before, wbytes, "attn_weights");
  } else if (!s.small) {
    FZ_ABORT("attn_forward accepted B %lld, Lq %lld, Lk %lld", (long long)s.B,
             (long long)s.Lq, (long long)s.Lk);
  } else {
    check_result(m, &s, &x, use_mask ? &mp.m : NULL, &op.o, out);
  }
  free(out);
  free(out_before);
  free(w_before);
  free_options(&op);
  free_mask(&mp);
  free_inputs(&x);
  return 0;
}
