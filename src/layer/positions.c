/* SPDX-License-Identifier: MIT */
/* Token positions of a call and the layer's score features (positions.h). */
#include "layer/positions.h"

#include "common/error.h"
#include "common/structs.h"

static const attn_positions positions_defaults = {.struct_size =
                                                      sizeof(attn_positions)};

ATTN_VERSIONED_STRUCT(attn_positions, positions_kind, ATTN_POSITIONS_SIZE_0_2,
                      positions_defaults, attn_positions_init_sized)

/* The caller's positions over the defaults. */
static attn_status load(const attn_call *c, attn_positions *p) {
  *p = positions_defaults;
  if (!c->o.positions)
    return ATTN_OK;
  return attn_struct_load(&positions_kind, p, c->o.positions);
}

static attn_status bad(const char *what, int64_t i, int64_t v) {
  return attn_fail(ATTN_ERR_BAD_OPTION,
                   "positions: %s[%lld] = %lld is outside [0, "
                   "ATTN_MAX_POSITION = %lld]",
                   what, (long long)i, (long long)v,
                   (long long)ATTN_MAX_POSITION);
}

/* Every start[b] + [0, L) within range. */
static attn_status check_start(const int64_t *start, int64_t B, int64_t L) {
  for (int64_t b = 0; start && b < B; b++)
    if (start[b] < 0 || start[b] > ATTN_MAX_POSITION - (L - 1))
      return attn_fail(ATTN_ERR_BAD_OPTION,
                       "positions: start[%lld] = %lld puts tokens outside "
                       "[0, ATTN_MAX_POSITION = %lld] (%lld tokens follow)",
                       (long long)b, (long long)start[b],
                       (long long)ATTN_MAX_POSITION, (long long)L);
  return ATTN_OK;
}

static attn_status check_array(const char *what, const int64_t *p, int64_t n) {
  for (int64_t i = 0; p && i < n; i++)
    if (p[i] < 0 || p[i] > ATTN_MAX_POSITION)
      return bad(what, i, p[i]);
  return ATTN_OK;
}

attn_status attn_positions_check(const attn_call *c, const attn_layer *l,
                                 int64_t B, int64_t Lq, int64_t Lk) {
  attn_positions p;
  attn_status st;
  if (!attn_fx_positional(&l->fx))
    return ATTN_OK;
  if ((st = load(c, &p)) != ATTN_OK ||
      (st = check_start(p.start, B, Lq > Lk ? Lq : Lk)) != ATTN_OK ||
      (st = check_array("q_positions", p.q_positions, B * Lq)) != ATTN_OK)
    return st;
  return check_array("k_positions", p.k_positions, B * Lk);
}

void attn_positions_fill(const attn_call *c, int64_t B, int64_t Lq, int64_t Lk,
                         int64_t *qpos, int64_t *kpos) {
  attn_positions p;
  load(c, &p); /* checked before */
  const int64_t *kp = p.k_positions
                          ? p.k_positions
                          : (p.q_positions && Lq == Lk ? p.q_positions : NULL);
  for (int64_t b = 0; b < B; b++) {
    int64_t s = p.start ? p.start[b] : 0;
    for (int64_t i = 0; i < Lq; i++)
      qpos[b * Lq + i] = p.q_positions ? p.q_positions[b * Lq + i] : s + i;
    for (int64_t j = 0; j < Lk; j++)
      kpos[b * Lk + j] = kp ? kp[b * Lk + j] : s + j;
  }
}

bool attn_positions_contiguous(const attn_call *c) {
  attn_positions p;
  load(c, &p); /* checked before */
  return !p.q_positions && !p.k_positions;
}

attn_status attn_positions_check_step(const attn_call *c, const attn_layer *l,
                                      int64_t B, const int64_t *len, int64_t n,
                                      const int64_t **start) {
  attn_positions p;
  attn_status st;
  *start = NULL;
  if (!attn_fx_positional(&l->fx))
    return ATTN_OK;
  if ((st = load(c, &p)) != ATTN_OK)
    return st;
  if (p.q_positions || p.k_positions)
    return attn_fail(ATTN_ERR_BAD_OPTION,
                     "positions: a decoding step takes its tokens' positions "
                     "from the cache; q_positions and k_positions must be "
                     "NULL (start may offset them)");
  for (int64_t b = 0; b < B; b++) {
    int64_t s = p.start ? p.start[b] : 0;
    if (s < 0 || s > ATTN_MAX_POSITION - len[b] - (n - 1))
      return attn_fail(ATTN_ERR_BAD_OPTION,
                       "positions: row %lld would reach position %lld + %lld "
                       "+ %lld, outside [0, ATTN_MAX_POSITION = %lld]",
                       (long long)b, (long long)s, (long long)len[b],
                       (long long)(n - 1), (long long)ATTN_MAX_POSITION);
  }
  *start = p.start;
  return ATTN_OK;
}

const attn_score_fx *attn_layer_score_fx(const attn_layer *l,
                                         const int64_t *qpos,
                                         const int64_t *kpos,
                                         attn_score_fx *fx) {
  const attn_layer_fx *f = &l->fx;
  if (f->softcap <= 0 && !f->alibi && !f->sinks)
    return NULL;
  *fx = (attn_score_fx){.softcap = (float)f->softcap,
                        .slopes = f->alibi ? f->slopes : NULL,
                        .symmetric = f->alibi == ATTN_ALIBI_SYMMETRIC,
                        .qpos = qpos,
                        .kpos = kpos,
                        .sinks =
                            f->sinks ? attn_slot_ptr(l, ATTN_SLOT_SINK) : NULL};
  return fx;
}
