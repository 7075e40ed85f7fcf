/* SPDX-License-Identifier: MIT */
/* The load plan: which naming scheme a file uses under a prefix, which of
 * its tensors a layer takes, and whether each has a usable dtype and the
 * shape the layer needs. */
#ifndef ATTN_IO_ST_PLAN_H
#define ATTN_IO_ST_PLAN_H

#include "io/st_header.h"
#include "io/st_names.h"

typedef struct {
  st_tensor items[ST_MAX_TENSORS];
  const st_entry *entries[ST_MAX_TENSORS]; /* the file's entry of each */
  int count;
} st_plan;

/* Detects the naming scheme from the names present under prefix, lists
 * the tensors of layer l and finds and checks each in the header. */
attn_status attn_st_plan_make(const struct attn_layer *l, const st_header *h,
                              const char *prefix, st_plan *p);

#endif
