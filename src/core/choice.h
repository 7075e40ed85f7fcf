/* SPDX-License-Identifier: MIT */
/* Which attention core runs a call (attn_options.core): the caller's
 * choice checked against what the CPU and the layer allow, and the one
 * rule that turns it into "packed or cblas" for the tiled core. */
#ifndef ATTN_CORE_CHOICE_H
#define ATTN_CORE_CHOICE_H

#include "attn/attn.h"
#include "core/simd.h"

#include <stdbool.h>
#include <stdint.h>

/* ATTN_OK when `core` can run here on a layer with (score_features) or
 * without score features; ATTN_ERR_BAD_OPTION for an unknown value,
 * ATTN_ERR_UNSUPPORTED (the message says why) for ATTN_CORE_PACKED where
 * it cannot run. */
attn_status attn_core_check(int32_t core, bool score_features);

/* True when a call with choice `core`, len_q query rows per batch row and
 * (plain) no score features runs on the packed core with table v. An
 * explicit ATTN_CORE_PACKED takes any number of rows; a table without
 * panel kernels (tests and benchmarks pass one) always means the cblas
 * core. */
bool attn_core_choose_packed(int32_t core, const attn_simd *v, int64_t len_q,
                             bool plain);

#endif
