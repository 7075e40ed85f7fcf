/* SPDX-License-Identifier: MIT */
/* What the A/B programs (ab_decode, ab_forward) share: loading a build of
 * libattn with dlopen, each with its own symbols, and failing loudly. */
#ifndef ATTN_AB_UTIL_H
#define ATTN_AB_UTIL_H

#include "attn/attn.h"

#include <dlfcn.h>
#include <stdint.h>
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

/* The layer functions every A/B program calls, bound from one build. */
typedef struct {
  attn_status (*config_init)(attn_config *, size_t);
  attn_status (*layer_create)(const attn_config *, attn_layer **);
  attn_status (*init_weights)(attn_layer *, uint64_t);
  void (*layer_destroy)(attn_layer *);
} ab_layer_api;

static inline void ab_bind_layer(void *dl, ab_layer_api *a) {
  ab_bind(dl, "attn_config_init_sized", &a->config_init, sizeof a->config_init);
  ab_bind(dl, "attn_layer_create", &a->layer_create, sizeof a->layer_create);
  ab_bind(dl, "attn_layer_init_weights", &a->init_weights,
          sizeof a->init_weights);
  ab_bind(dl, "attn_layer_destroy", &a->layer_destroy, sizeof a->layer_destroy);
}

#endif
