/* SPDX-License-Identifier: MIT */
/* A strict JSON reader over a text of known length, for the safetensors
 * header: the caller walks the structure it expects with a cursor and
 * skips what it does not need. Nothing is allocated here: decoded strings
 * go into an arena the caller provides (n + 1 bytes always suffice for a
 * text of n bytes, since decoding never lengthens a string and its quotes
 * pay for the NUL). Strings must be valid UTF-8, escapes included, and
 * nesting deeper than ATTN_JSON_MAX_DEPTH is refused, so that no input can
 * exhaust the stack or give a string that is not text. */
#ifndef ATTN_IO_JSON_H
#define ATTN_IO_JSON_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define ATTN_JSON_MAX_DEPTH 1000

/* Why reading stopped. */
enum {
  ATTN_JSON_OK,
  ATTN_JSON_SYNTAX, /* not JSON */
  ATTN_JSON_UTF8,   /* a string that is not valid UTF-8 */
  ATTN_JSON_NUL     /* a decoded string holding U+0000 */
};

typedef struct {
  const char *text, *p, *end; /* the text, the cursor, its end */
  char *arena;                /* decoded strings (NULL: validate only) */
  size_t used;                /* arena bytes in use */
  int error;                  /* ATTN_JSON_* */
  size_t error_at;            /* byte offset of the error */
} attn_json;

void attn_json_init(attn_json *j, const char *text, size_t n, char *arena);

/* Skips whitespace; the next byte, or -1 at the end of the text. */
int attn_json_peek(attn_json *j);

/* Skips whitespace and the byte c; false (a syntax error) if c is not
 * next. */
bool attn_json_eat(attn_json *j, char c);

/* Reads a string into the arena (NUL-terminated, in *out). */
bool attn_json_string(attn_json *j, const char **out);

/* Reads a number. *is_uint: it is an integer in [0, 2^53], whose value is
 * then in *value (JSON numbers are doubles to most readers, exact only up
 * to 2^53). */
bool attn_json_number(attn_json *j, uint64_t *value, bool *is_uint);

/* Skips one value of any kind, checking it. */
bool attn_json_skip(attn_json *j);

/* Skips an object member's separator after the first: true with *more set
 * when a ',' came (another member follows) or the closing `close` byte
 * (*more false); false on anything else. */
bool attn_json_next(attn_json *j, char close, bool *more);

/* True when the NUL-terminated s is valid UTF-8. */
bool attn_utf8_valid(const char *s);

#endif
