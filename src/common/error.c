/* SPDX-License-Identifier: MIT */
/* Status names and the per-thread detail message. */
#include "common/error.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>

static _Thread_local char last_error[512];

attn_status attn_fail(attn_status status, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(last_error, sizeof last_error, fmt, ap);
  va_end(ap);
  return status;
}

attn_status attn_fail_overflow(const char *what) {
  return attn_fail(ATTN_ERR_OVERFLOW, "%s is too large: size overflows", what);
}

const char *attn_last_error(void) { return last_error; }

const char *attn_status_string(attn_status status) {
  switch (status) {
  case ATTN_OK:
    return "ok";
  case ATTN_ERR_NULL_POINTER:
    return "a required pointer is NULL";
  case ATTN_ERR_STRUCT_SIZE:
    return "struct_size does not match a known version of the struct";
  case ATTN_ERR_BAD_SIZE:
    return "a size is zero, negative or inconsistent";
  case ATTN_ERR_OVERFLOW:
    return "a size computation overflows";
  case ATTN_ERR_WEIGHT_SIZE:
    return "weight array has the wrong number of elements";
  case ATTN_ERR_WEIGHT_LAYOUT:
    return "weight does not exist in this layer's layout";
  case ATTN_ERR_WEIGHTS_NOT_SET:
    return "layer weights are not all set";
  case ATTN_ERR_BAD_MASK:
    return "invalid mask descriptor";
  case ATTN_ERR_BAD_OPTION:
    return "option value out of range";
  case ATTN_ERR_NOT_FINITE:
    return "data contain NaN or infinity";
  case ATTN_ERR_NO_MEMORY:
    return "out of memory";
  case ATTN_ERR_SCRATCH_TOO_SMALL:
    return "scratch buffer too small";
  case ATTN_ERR_IO:
    return "file input/output error";
  case ATTN_ERR_FILE_FORMAT:
    return "file is not in the expected format";
  case ATTN_ERR_TENSOR_MISSING:
    return "tensor missing from weight file";
  case ATTN_ERR_TENSOR_DTYPE:
    return "tensor has an unsupported data type";
  case ATTN_ERR_TENSOR_SHAPE:
    return "tensor has the wrong shape";
  case ATTN_ERR_CAPACITY:
    return "not enough capacity";
  case ATTN_ERR_MISMATCH:
    return "object does not belong to this layer";
  case ATTN_ERR_UNSUPPORTED:
    return "not supported on this CPU, build or layer";
  default:
    return "unknown status";
  }
}
