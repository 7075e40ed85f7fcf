/* SPDX-License-Identifier: MIT */
/* Failing with a status and a per-thread message: every fallible internal
 * function reports through attn_fail(). */
#ifndef ATTN_COMMON_ERROR_H
#define ATTN_COMMON_ERROR_H

#include "attn/attn.h"

#if defined(__GNUC__)
#define ATTN_PRINTF(f, a) __attribute__((format(printf, f, a)))
#else
#define ATTN_PRINTF(f, a)
#endif

/* Records the calling thread's message and returns status. */
attn_status attn_fail(attn_status status, const char *fmt, ...)
    ATTN_PRINTF(2, 3);

/* ATTN_ERR_OVERFLOW: "<what> is too large: size overflows". */
attn_status attn_fail_overflow(const char *what);

#endif
