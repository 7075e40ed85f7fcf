/* SPDX-License-Identifier: MIT */
/* Attention of a few new queries over long key/value rows (a decoding
 * step over its cache), streaming each row's slots once: work items of
 * (batch row, chunk of keys), then a merge per batch row once all of its
 * chunks are done (stream.c). */
#ifndef ATTN_CORE_STREAM_H
#define ATTN_CORE_STREAM_H

#include "core/heads.h"
#include "core/score.h"

#include <stdint.h>

struct attn_stream {
  const attn_heads *heads;
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
  int64_t chunks; /* attn_stream_chunks(max held) */
  float *partial; /* attn_stream_partial_floats() */
  /* Soft-capping, ALiBi (positions: the slots') and sinks; NULL = none. */
  const attn_score_fx *fx;
};
typedef struct attn_stream attn_stream;

/* Number of key chunks for rows holding at most max_held keys. */
int64_t attn_stream_chunks(int64_t max_held);
/* Floats of the partial results, and of one thread's tile. */
int64_t attn_stream_partial_floats(const attn_heads *g, int64_t batch,
                                   int64_t n, int64_t chunks);
int64_t attn_stream_tile_floats(const attn_heads *g, int64_t n);
/* First pass: items 0 .. batch * chunks - 1. */
void attn_stream_chunk(const attn_stream *a, int64_t item, float *tile);
/* Merge of batch row b, writing ctx: after every first-pass item of the
 * row (the others may still run). */
void attn_stream_merge(const attn_stream *a, int64_t b);

/* Prefetches the first `floats` floats of slot j (ld floats apart from
 * base) if j < end, into the L2 cache only (faster than into L1, which
 * ties up the line-fill buffers the loads need). The portable decoding
 * loops use it; the AVX2 ones do not: their slot-order walk is a stream
 * the hardware prefetchers follow, and on an Ice Lake server core steps
 * with the software prefetches took 1.2-1.7 times as long
 * (docs/DECODING.md). */
static inline void attn_stream_prefetch(const float *base, int64_t j,
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

#endif
