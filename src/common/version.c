/* SPDX-License-Identifier: MIT */
/* Run-time version, to compare with the ATTN_VERSION_* macros. */
#include "attn/attn.h"

unsigned attn_version_number(void) { return ATTN_VERSION_NUMBER; }

const char *attn_version_string(void) { return ATTN_VERSION_STRING; }
