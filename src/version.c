/* Run-time version, to compare with the ATTN_VERSION_* macros. */
#include "internal.h"

unsigned attn_version_number(void) { return ATTN_VERSION_NUMBER; }

const char *attn_version_string(void) { return ATTN_VERSION_STRING; }
