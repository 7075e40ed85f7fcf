/* SPDX-License-Identifier: MIT */
/* The scratch plan of a decoding step (step.h). */
#include "layer/step.h"

#include "common/checked.h"
#include "common/error.h"
#include "common/policy.h"
#include "core/stream.h"

#include <limits.h>
#include <stdatomic.h>

attn_status attn_step_check_n(int64_t n, const char *what) {
  if (n <= 0)
    return attn_fail(ATTN_ERR_BAD_SIZE, "%s %lld must be positive", what,
                     (long long)n);
  return ATTN_OK;
}

/* Threads and tile of the streaming kernel over rows of up to len_k keys:
 * the planned count is for full rows (a step with shorter rows uses
 * fewer). */
static void plan_stream(const attn_call *c, const attn_layer *l, int64_t B,
                        int64_t n, int64_t len_k, attn_step_plan *p,
                        attn_layout *s) {
  /* n <= the stream's row limit and len_k <= INT_MAX keep these small. */
  p->chunks = attn_stream_chunks(len_k);
  p->partial_off = attn_layout_add(
      s, attn_stream_partial_floats(&l->heads, 1, n, p->chunks), B);
  p->done_off = attn_layout_add(
      s, B, (int64_t)((sizeof(atomic_llong) + 3) / sizeof(float))); /* B */
  p->tile_floats = attn_stream_tile_floats(&l->heads, n);
  double bytes =
      (double)B * (double)len_k * 2.0 * (double)l->heads.kv_dim * sizeof(float);
  p->threads =
      attn_threads_for(c->x.threads, B * p->chunks, attn_cost_bytes(bytes));
}

attn_status attn_step_plan_make(const attn_call *c, const attn_layer *l,
                                int64_t B, int64_t n, int64_t ldq,
                                int64_t len_k, int64_t pad_bytes, bool streamed,
                                attn_step_plan *p) {
  *p = (attn_step_plan){.ldq = ldq, .streamed = streamed};
  int64_t rows, t;
  if (n > INT_MAX || ldq > INT_MAX || !attn_mul64(B, n, &rows) ||
      !attn_mul64(rows, ldq, &t) || !attn_float_count_ok(t) ||
      !attn_mul64(rows, l->embed_dim, &t) || !attn_float_count_ok(t))
    return attn_fail_overflow("the new tokens' projections");
  attn_status st = attn_check_weights_out(l, rows, len_k, &c->o);
  if (st != ATTN_OK)
    return st;
  attn_layout s = {0};
  attn_layout_add(&s, rows, ldq);
  p->lens_off = attn_layout_add(&s, B, 2); /* B int64 */
  p->pad_off = attn_layout_add(&s, pad_bytes / 4 + 1, 1);
  if (streamed) {
    plan_stream(c, l, B, n, len_k, p, &s);
    attn_round_floats(p->tile_floats, &p->tile_floats);
    p->tile_off = attn_layout_add(&s, p->tile_floats, p->threads);
  } else {
    attn_layout_core(c, l, B, n, len_k, &s, &p->threads, &p->tile_off,
                     &p->tile_floats);
  }
  return attn_layout_bytes(&s, &p->bytes);
}
