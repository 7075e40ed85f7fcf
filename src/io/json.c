/* SPDX-License-Identifier: MIT */
/* The strict JSON reader of io/json.h (RFC 8259, UTF-8 only). */
#include "io/json.h"

#include <string.h>

void attn_json_init(attn_json *j, const char *text, size_t n, char *arena) {
  *j = (attn_json){.text = text, .p = text, .end = text + n, .arena = arena};
}

static bool fail(attn_json *j, int error, const char *at) {
  if (j->error == ATTN_JSON_OK) {
    j->error = error;
    j->error_at = (size_t)(at - j->text);
  }
  return false;
}

int attn_json_peek(attn_json *j) {
  while (j->p < j->end &&
         (*j->p == ' ' || *j->p == '\t' || *j->p == '\n' || *j->p == '\r'))
    j->p++;
  return j->p < j->end ? (unsigned char)*j->p : -1;
}

bool attn_json_eat(attn_json *j, char c) {
  if (attn_json_peek(j) != (unsigned char)c)
    return fail(j, ATTN_JSON_SYNTAX, j->p);
  j->p++;
  return true;
}

bool attn_json_next(attn_json *j, char close, bool *more) {
  int c = attn_json_peek(j);
  if (c != ',' && c != (unsigned char)close)
    return fail(j, ATTN_JSON_SYNTAX, j->p);
  j->p++;
  *more = c == ',';
  return true;
}

/* Length of the well-formed UTF-8 sequence at s (shortest form, no
 * surrogates, at most U+10FFFF), or 0. */
static int utf8_length(const unsigned char *s, const unsigned char *end) {
  unsigned c = s[0];
  int extra;
  uint32_t cp, min;
  if (c < 0x80)
    return 1;
  if ((c & 0xe0) == 0xc0)
    extra = 1, cp = c & 0x1f, min = 0x80;
  else if ((c & 0xf0) == 0xe0)
    extra = 2, cp = c & 0x0f, min = 0x800;
  else if ((c & 0xf8) == 0xf0)
    extra = 3, cp = c & 0x07, min = 0x10000;
  else
    return 0;
  if (end - s <= extra)
    return 0;
  for (int i = 1; i <= extra; i++) {
    if ((s[i] & 0xc0) != 0x80)
      return 0;
    cp = cp << 6 | (s[i] & 0x3fu);
  }
  if (cp < min || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff))
    return 0;
  return extra + 1;
}

bool attn_utf8_valid(const char *s) {
  const unsigned char *u = (const unsigned char *)s, *end = u + strlen(s);
  for (int len; u < end; u += len)
    if (!(len = utf8_length(u, end)))
      return false;
  return true;
}

static long hex4(const unsigned char *s) {
  long v = 0;
  for (int i = 0; i < 4; i++) {
    unsigned c = s[i];
    int d = c >= '0' && c <= '9'   ? (int)(c - '0')
            : c >= 'a' && c <= 'f' ? (int)(c - 'a' + 10)
            : c >= 'A' && c <= 'F' ? (int)(c - 'A' + 10)
                                   : -1;
    if (d < 0)
      return -1;
    v = v * 16 + d;
  }
  return v;
}

static size_t put_utf8(char *out, uint32_t cp) {
  unsigned char *o = (unsigned char *)out;
  if (cp < 0x80) {
    o[0] = (unsigned char)cp;
    return 1;
  }
  if (cp < 0x800) {
    o[0] = (unsigned char)(0xc0 | cp >> 6);
    o[1] = (unsigned char)(0x80 | (cp & 0x3f));
    return 2;
  }
  if (cp < 0x10000) {
    o[0] = (unsigned char)(0xe0 | cp >> 12);
    o[1] = (unsigned char)(0x80 | (cp >> 6 & 0x3f));
    o[2] = (unsigned char)(0x80 | (cp & 0x3f));
    return 3;
  }
  o[0] = (unsigned char)(0xf0 | cp >> 18);
  o[1] = (unsigned char)(0x80 | (cp >> 12 & 0x3f));
  o[2] = (unsigned char)(0x80 | (cp >> 6 & 0x3f));
  o[3] = (unsigned char)(0x80 | (cp & 0x3f));
  return 4;
}

/* The escape at s (a backslash): its code point in *cp and its length in
 * *len; 0 when it is not a valid escape, -1 when it is a \u escape of a
 * lone surrogate (no text). */
static int escape(const unsigned char *s, const unsigned char *end,
                  uint32_t *cp, int *len) {
  static const char from[] = "\"\\/bfnrt", to[] = "\"\\/\b\f\n\r\t";
  if (end - s < 2)
    return 0;
  *len = 2;
  const char *at = s[1] ? strchr(from, s[1]) : NULL;
  if (at) {
    *cp = (unsigned char)to[at - from];
    return 1;
  }
  long hi = s[1] == 'u' && end - s >= 6 ? hex4(s + 2) : -1;
  if (hi < 0)
    return 0;
  *len = 6;
  *cp = (uint32_t)hi;
  if (hi >= 0xdc00 && hi <= 0xdfff)
    return -1;
  if (hi < 0xd800 || hi > 0xdbff)
    return 1;
  long lo = end - s >= 12 && s[6] == '\\' && s[7] == 'u' ? hex4(s + 8) : -1;
  if (lo < 0xdc00 || lo > 0xdfff)
    return -1;
  *cp = 0x10000 + ((uint32_t)(hi - 0xd800) << 10) + (uint32_t)(lo - 0xdc00);
  *len = 12;
  return 1;
}

/* The end of the run of plain ASCII at s: no quote, backslash or control
 * character (the common case, copied as it is). */
static const unsigned char *plain_run(const unsigned char *s,
                                      const unsigned char *end) {
  while (s < end && *s >= 0x20 && *s < 0x80 && *s != '"' && *s != '\\')
    s++;
  return s;
}

bool attn_json_string(attn_json *j, const char **out) {
  if (attn_json_peek(j) != '"')
    return fail(j, ATTN_JSON_SYNTAX, j->p);
  const unsigned char *s = (const unsigned char *)j->p + 1;
  const unsigned char *end = (const unsigned char *)j->end;
  char *dst = j->arena ? j->arena + j->used : NULL;
  size_t k = 0;
  for (;;) {
    const unsigned char *run = s;
    s = plain_run(s, end);
    if (dst)
      memcpy(dst + k, run, (size_t)(s - run));
    k += (size_t)(s - run);
    if (s >= end || *s == '"')
      break;
    int len;
    uint32_t cp;
    if (*s < 0x20)
      return fail(j, ATTN_JSON_SYNTAX, (const char *)s);
    if (*s == '\\') {
      int kind = escape(s, end, &cp, &len);
      if (kind <= 0)
        return fail(j, kind ? ATTN_JSON_UTF8 : ATTN_JSON_SYNTAX,
                    (const char *)s);
      if (dst && cp == 0)
        return fail(j, ATTN_JSON_NUL, (const char *)s);
      k += dst ? put_utf8(dst + k, cp) : 0;
    } else {
      if (!(len = utf8_length(s, end)))
        return fail(j, ATTN_JSON_UTF8, (const char *)s);
      if (dst)
        memcpy(dst + k, s, (size_t)len);
      k += (size_t)len;
    }
    s += len;
  }
  if (s >= end)
    return fail(j, ATTN_JSON_SYNTAX, (const char *)s);
  if (dst) {
    dst[k] = '\0';
    j->used += k + 1;
  }
  if (out)
    *out = dst;
  j->p = (const char *)s + 1;
  return true;
}

static bool is_digit(const char *s, const char *end) {
  return s < end && *s >= '0' && *s <= '9';
}

/* Whether the digits int_digits . frac_digits * 10^exp (the number's
 * significand split at its point) are an integer in [0, 2^53]. */
static bool exact_uint(const char *ip, size_t ni, const char *fp, size_t nf,
                       long exp, uint64_t *value) {
  size_t n = ni + nf, first = n, last = 0;
  for (size_t i = 0; i < n; i++)
    if ((i < ni ? ip[i] : fp[i - ni]) != '0') {
      first = first == n ? i : first;
      last = i;
    }
  *value = 0;
  if (first == n)
    return true; /* zero, whatever the sign or exponent */
  /* significand digits first..last, times 10^e */
  long long e = (long long)exp - (long long)nf + (long long)(n - 1 - last);
  size_t digits = last - first + 1;
  if (e < 0 || (long long)digits + e > 16)
    return false; /* a fraction, or at least 10^16 > 2^53 */
  uint64_t v = 0;
  for (size_t i = first; i <= last; i++)
    v = v * 10 + (uint64_t)((i < ni ? ip[i] : fp[i - ni]) - '0');
  for (long long i = 0; i < e; i++)
    v *= 10;
  *value = v;
  return v <= (uint64_t)1 << 53;
}

bool attn_json_number(attn_json *j, uint64_t *value, bool *is_uint) {
  attn_json_peek(j);
  const char *s = j->p, *end = j->end;
  bool negative = s < end && *s == '-';
  s += negative;
  const char *ip = s, *fp = s;
  if (s < end && *s == '0')
    s++;
  else if (is_digit(s, end) && *s != '0')
    while (is_digit(s, end))
      s++;
  else
    return fail(j, ATTN_JSON_SYNTAX, s);
  size_t ni = (size_t)(s - ip), nf = 0;
  if (s < end && *s == '.') {
    fp = ++s;
    if (!is_digit(s, end))
      return fail(j, ATTN_JSON_SYNTAX, s);
    while (is_digit(s, end))
      s++;
    nf = (size_t)(s - fp);
  }
  long exp = 0;
  if (s < end && (*s == 'e' || *s == 'E')) {
    s++;
    bool neg_exp = s < end && *s == '-';
    s += s < end && (*s == '+' || *s == '-');
    if (!is_digit(s, end))
      return fail(j, ATTN_JSON_SYNTAX, s);
    for (; is_digit(s, end); s++)
      if (exp < 1000000) /* far beyond any exact integer */
        exp = exp * 10 + (*s - '0');
    exp = neg_exp ? -exp : exp;
  }
  j->p = s;
  *is_uint = exact_uint(ip, ni, fp, nf, exp, value) && (!negative || !*value);
  return true;
}

/* A string, number or literal. */
static bool scalar(attn_json *j) {
  static const char *const literals[] = {"true", "false", "null"};
  int c = attn_json_peek(j);
  if (c == '"') {
    char *arena = j->arena;
    j->arena = NULL; /* validate only */
    bool ok = attn_json_string(j, NULL);
    j->arena = arena;
    return ok;
  }
  if (c == '-' || (c >= '0' && c <= '9')) {
    uint64_t v;
    bool u;
    return attn_json_number(j, &v, &u);
  }
  for (int i = 0; i < 3; i++) {
    size_t len = strlen(literals[i]);
    if ((size_t)(j->end - j->p) >= len && memcmp(j->p, literals[i], len) == 0) {
      j->p += len;
      return true;
    }
  }
  return fail(j, ATTN_JSON_SYNTAX, j->p);
}

/* After '{' or ',' in an object: the next key and its ':'. */
static bool key(attn_json *j) {
  char *arena = j->arena;
  j->arena = NULL;
  bool ok = attn_json_string(j, NULL) && attn_json_eat(j, ':');
  j->arena = arena;
  return ok;
}

bool attn_json_skip(attn_json *j) {
  char open[ATTN_JSON_MAX_DEPTH]; /* '{' or '[' of each open container */
  int depth = 0;
  for (;;) {
    int c = attn_json_peek(j);
    bool value_done = false;
    if (c == '{' || c == '[') {
      if (depth == ATTN_JSON_MAX_DEPTH)
        return fail(j, ATTN_JSON_SYNTAX, j->p);
      open[depth++] = (char)c;
      j->p++;
      int next = attn_json_peek(j);
      if (next == (c == '{' ? '}' : ']')) {
        j->p++;
        depth--;
        value_done = true;
      } else if (c == '{' && !key(j)) {
        return false;
      }
    } else if (!scalar(j)) {
      return false;
    } else {
      value_done = true;
    }
    /* Close what the value completed; stop after the outermost. */
    while (value_done) {
      if (depth == 0)
        return true;
      bool more;
      if (!attn_json_next(j, open[depth - 1] == '{' ? '}' : ']', &more))
        return false;
      if (more) {
        if (open[depth - 1] == '{' && !key(j))
          return false;
        value_done = false;
      } else {
        depth--;
      }
    }
  }
}
