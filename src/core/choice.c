/* SPDX-License-Identifier: MIT */
/* The caller's choice of attention core (choice.h). */
#include "core/choice.h"

#include "common/error.h"
#include "core/packed.h"

int32_t attn_core_available(int32_t core) {
  switch (core) {
  case ATTN_CORE_AUTO:
  case ATTN_CORE_BLAS:
    return 1;
  case ATTN_CORE_PACKED:
    return attn_simd_get()->panels != NULL;
  default:
    return 0;
  }
}

attn_status attn_core_check(int32_t core, bool score_features) {
  if (core != ATTN_CORE_AUTO && core != ATTN_CORE_BLAS &&
      core != ATTN_CORE_PACKED)
    return attn_fail(ATTN_ERR_BAD_OPTION,
                     "unknown core %d (ATTN_CORE_AUTO 0, ATTN_CORE_BLAS 1, "
                     "ATTN_CORE_PACKED 2)",
                     core);
  if (core != ATTN_CORE_PACKED)
    return ATTN_OK;
  if (!attn_core_available(core))
    return attn_fail(ATTN_ERR_UNSUPPORTED,
                     "core ATTN_CORE_PACKED needs AVX2 and FMA: this CPU "
                     "lacks them or ATTN_SIMD caps the library at the "
                     "portable kernels (use ATTN_CORE_BLAS or "
                     "ATTN_CORE_AUTO)");
  if (score_features)
    return attn_fail(ATTN_ERR_UNSUPPORTED,
                     "core ATTN_CORE_PACKED cannot run a layer with ALiBi, "
                     "soft-capping or sinks (use ATTN_CORE_BLAS or "
                     "ATTN_CORE_AUTO)");
  return ATTN_OK;
}

bool attn_core_choose_packed(int32_t core, const attn_simd *v, int64_t len_q,
                             bool plain) {
  switch (core) {
  case ATTN_CORE_BLAS:
    return false;
  case ATTN_CORE_PACKED:
    return v->panels != NULL && plain;
  default:
    return plain && attn_packed_applies(v, len_q);
  }
}
