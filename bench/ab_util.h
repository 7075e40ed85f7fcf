/* SPDX-License-Identifier: MIT */
/* What the A/B programs (ab_decode, ab_forward) share: loading a build of
 * libattn with dlopen, each with its own symbols, and failing loudly. */
#ifndef ATTN_AB_UTIL_H
#define ATTN_AB_UTIL_H

#include <dlfcn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* The program's name in messages; set by main. */
static const char *ab_prog = "ab";

_Noreturn static inline void die(const char *what, const char *detail) {
  fprintf(stderr, "%s: %s%s%s\n", ab_prog, what, detail ? ": " : "",
          detail ? detail : "");
  exit(1);
}

static inline void *xmalloc(size_t n) {
  void *p = malloc(n);
  if (!p)
    die("out of memory", NULL);
  return p;
}

static inline void check(int status, const char *what) {
  if (status != 0)
    die(what, "failed");
}

/* dlsym returns void *; going through memcpy keeps the conversion to a
 * function pointer out of ISO C's way. */
static inline void ab_bind(void *dl, const char *name, void *fn, size_t size) {
  void *p = dlsym(dl, name);
  if (!p)
    die("missing symbol", name);
  memcpy(fn, &p, size);
}

#define BIND(b, field, name)                                                   \
  ab_bind((b)->dl, name, &(b)->field, sizeof(b)->field)

/* The library at path, its calls to itself kept inside it. */
static inline void *open_library(const char *path) {
  int mode = RTLD_NOW | RTLD_LOCAL;
#if defined(RTLD_DEEPBIND)
  mode |= RTLD_DEEPBIND;
#endif
  void *dl = dlopen(path, mode);
  if (!dl)
    die("cannot load", dlerror());
  return dl;
}

#endif
