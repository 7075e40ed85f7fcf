/* SPDX-License-Identifier: MIT */
/* Prints what the C compiler makes of include/attn/attn.h: the size and
 * every field's offset and size of each public struct and the value of each
 * constant, one "kind name value" line each. tests/layout.rs compiles and runs
 * it and compares every line with the Rust declarations of attn-sys. */
#include <attn/attn.h>

#include <stddef.h>
#include <stdio.h>

#define SIZE(T) printf("size %s %zu\n", #T, sizeof(T))
#define FIELD(T, f)                                                            \
  printf("offset %s.%s %zu\nsize %s.%s %zu\n", #T, #f, offsetof(T, f), #T, #f, \
         sizeof(((T *)0)->f))
#define CONST(c) printf("const %s %lld\n", #c, (long long)(c))

int main(void) {
  SIZE(attn_runtime_config);
  FIELD(attn_runtime_config, struct_size);
  FIELD(attn_runtime_config, num_threads);
  FIELD(attn_runtime_config, blas_policy);

  SIZE(attn_config);
  FIELD(attn_config, struct_size);
  FIELD(attn_config, embed_dim);
  FIELD(attn_config, num_heads);
  FIELD(attn_config, kdim);
  FIELD(attn_config, vdim);
  FIELD(attn_config, bias);
  FIELD(attn_config, num_threads);
  FIELD(attn_config, scale);
  FIELD(attn_config, num_kv_heads);
  FIELD(attn_config, bias_parts);
  FIELD(attn_config, qk_norm);
  FIELD(attn_config, qk_norm_eps);
  FIELD(attn_config, qk_norm_unit_offset);
  FIELD(attn_config, alibi);
  FIELD(attn_config, alibi_slopes);
  FIELD(attn_config, softcap);
  FIELD(attn_config, rope);
  FIELD(attn_config, sinks);

  SIZE(attn_rope_config);
  FIELD(attn_rope_config, struct_size);
  FIELD(attn_rope_config, pairing);
  FIELD(attn_rope_config, reserved);
  FIELD(attn_rope_config, rotary_dim);
  FIELD(attn_rope_config, theta);
  FIELD(attn_rope_config, linear_factor);
  FIELD(attn_rope_config, inv_freq);
  FIELD(attn_rope_config, attention_factor);

  SIZE(attn_positions);
  FIELD(attn_positions, struct_size);
  FIELD(attn_positions, start);
  FIELD(attn_positions, q_positions);
  FIELD(attn_positions, k_positions);

  SIZE(attn_mask);
  FIELD(attn_mask, struct_size);
  FIELD(attn_mask, causal);
  FIELD(attn_mask, empty_rows);
  FIELD(attn_mask, key_lengths);
  FIELD(attn_mask, key_padding);
  FIELD(attn_mask, bias);
  FIELD(attn_mask, bias_stride_b);
  FIELD(attn_mask, bias_stride_h);
  FIELD(attn_mask, bias_stride_q);
  FIELD(attn_mask, window);

  SIZE(attn_options);
  FIELD(attn_options, struct_size);
  FIELD(attn_options, attn_weights);
  FIELD(attn_options, weights_mode);
  FIELD(attn_options, num_threads);
  FIELD(attn_options, scratch);
  FIELD(attn_options, scratch_size);
  FIELD(attn_options, runtime);
  FIELD(attn_options, positions);
  FIELD(attn_options, core);
  FIELD(attn_options, reserved);

  SIZE(attn_cache_config);
  FIELD(attn_cache_config, struct_size);
  FIELD(attn_cache_config, batch);
  FIELD(attn_cache_config, capacity);
  FIELD(attn_cache_config, window);

  SIZE(attn_decode_mask);
  FIELD(attn_decode_mask, struct_size);
  FIELD(attn_decode_mask, new_lengths);
  FIELD(attn_decode_mask, new_padding);
  FIELD(attn_decode_mask, empty_rows);

  SIZE(attn_memory_config);
  FIELD(attn_memory_config, struct_size);
  FIELD(attn_memory_config, batch);
  FIELD(attn_memory_config, capacity);

  SIZE(attn_status);
  SIZE(attn_weight_id);

  CONST(ATTN_VERSION_MAJOR);
  CONST(ATTN_VERSION_MINOR);
  CONST(ATTN_VERSION_PATCH);
  CONST(ATTN_VERSION_NUMBER);
  CONST(ATTN_OK);
  CONST(ATTN_ERR_NULL_POINTER);
  CONST(ATTN_ERR_STRUCT_SIZE);
  CONST(ATTN_ERR_BAD_SIZE);
  CONST(ATTN_ERR_OVERFLOW);
  CONST(ATTN_ERR_WEIGHT_SIZE);
  CONST(ATTN_ERR_WEIGHT_LAYOUT);
  CONST(ATTN_ERR_WEIGHTS_NOT_SET);
  CONST(ATTN_ERR_BAD_MASK);
  CONST(ATTN_ERR_BAD_OPTION);
  CONST(ATTN_ERR_NOT_FINITE);
  CONST(ATTN_ERR_NO_MEMORY);
  CONST(ATTN_ERR_SCRATCH_TOO_SMALL);
  CONST(ATTN_ERR_IO);
  CONST(ATTN_ERR_FILE_FORMAT);
  CONST(ATTN_ERR_TENSOR_MISSING);
  CONST(ATTN_ERR_TENSOR_DTYPE);
  CONST(ATTN_ERR_TENSOR_SHAPE);
  CONST(ATTN_ERR_CAPACITY);
  CONST(ATTN_ERR_MISMATCH);
  CONST(ATTN_ERR_UNSUPPORTED);
  CONST(ATTN_BLAS_HOLD);
  CONST(ATTN_BLAS_LEAVE);
  CONST(ATTN_MAX_THREADS);
  CONST(ATTN_RUNTIME_CONFIG_SIZE_0_1);
  CONST(ATTN_CONFIG_SIZE_0_1);
  CONST(ATTN_W_IN_PROJ);
  CONST(ATTN_B_IN_PROJ);
  CONST(ATTN_W_Q);
  CONST(ATTN_W_K);
  CONST(ATTN_W_V);
  CONST(ATTN_W_OUT);
  CONST(ATTN_B_OUT);
  CONST(ATTN_B_Q);
  CONST(ATTN_B_K);
  CONST(ATTN_B_V);
  CONST(ATTN_CAUSAL_NONE);
  CONST(ATTN_CAUSAL_TOP_LEFT);
  CONST(ATTN_CAUSAL_BOTTOM_RIGHT);
  CONST(ATTN_EMPTY_ROW_ZERO);
  CONST(ATTN_EMPTY_ROW_NAN);
  CONST(ATTN_MASK_SIZE_0_1);
  CONST(ATTN_WEIGHTS_PER_HEAD);
  CONST(ATTN_WEIGHTS_AVERAGE);
  CONST(ATTN_CORE_AUTO);
  CONST(ATTN_CORE_BLAS);
  CONST(ATTN_CORE_PACKED);
  CONST(ATTN_OPTIONS_SIZE_0_1);
  CONST(ATTN_NAMES_TORCH);
  CONST(ATTN_NAMES_HF);
  CONST(ATTN_NAMES_HF_O_PROJ);
  CONST(ATTN_SAFETENSORS_MAX_HEADER);
  CONST(ATTN_CACHE_CONFIG_SIZE_0_1);
  CONST(ATTN_DECODE_MASK_SIZE_0_1);
  CONST(ATTN_MEMORY_CONFIG_SIZE_0_1);
  CONST(ATTN_ROPE_HALVES);
  CONST(ATTN_ROPE_ADJACENT);
  CONST(ATTN_ROPE_CONFIG_SIZE_0_2);
  CONST(ATTN_BIAS_Q);
  CONST(ATTN_BIAS_K);
  CONST(ATTN_BIAS_V);
  CONST(ATTN_BIAS_O);
  CONST(ATTN_BIAS_ALL);
  CONST(ATTN_QK_NORM_NONE);
  CONST(ATTN_QK_NORM_HEAD);
  CONST(ATTN_QK_NORM_ALL);
  CONST(ATTN_ALIBI_NONE);
  CONST(ATTN_ALIBI_CAUSAL);
  CONST(ATTN_ALIBI_SYMMETRIC);
  CONST(ATTN_W_Q_NORM);
  CONST(ATTN_W_K_NORM);
  CONST(ATTN_W_SINKS);
  CONST(ATTN_POSITIONS_SIZE_0_2);
  CONST(ATTN_MAX_POSITION);
  printf("string ATTN_VERSION_STRING %s\n", ATTN_VERSION_STRING);
  return 0;
}
