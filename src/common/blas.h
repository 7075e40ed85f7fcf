/* SPDX-License-Identifier: MIT */
/* The BLAS policy ATTN_BLAS_HOLD: holding OpenBLAS (pthreads build) at one
 * thread while calls run. The only process-wide state the library
 * touches, and only when a runtime's policy asks for it. */
#ifndef ATTN_COMMON_BLAS_H
#define ATTN_COMMON_BLAS_H

#include <stdbool.h>

/* Starts a hold: the first of overlapping holds reads OpenBLAS's thread
 * count and sets it to 1. Returns false, changing nothing, when the BLAS's
 * threads cannot be controlled (generic CBLAS, OpenMP or sequential
 * OpenBLAS); true holds need one attn_blas_release() each. */
bool attn_blas_hold(void);

/* Ends a hold. The last one puts the count read by the first back, unless
 * the count is no longer 1: then the program changed it meanwhile and its
 * value is kept. */
void attn_blas_release(void);

#endif
