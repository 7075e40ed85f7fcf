// SPDX-License-Identifier: MIT

package attn

/*
#include <attn/attn.h>
#include <stddef.h>

// Offsets as the C compiler lays the structs out, to compare with what cgo
// made of them.
static size_t attn_go_offset(int i) {
  static const size_t offsets[] = {
    offsetof(attn_mask, key_lengths),      offsetof(attn_mask, key_padding),
    offsetof(attn_mask, bias),             offsetof(attn_mask, window),
    offsetof(attn_options, attn_weights),  offsetof(attn_options, scratch),
    offsetof(attn_options, scratch_size),  offsetof(attn_options, runtime),
    offsetof(attn_decode_mask, new_lengths), offsetof(attn_decode_mask, empty_rows),
    offsetof(attn_config, scale),          offsetof(attn_config, num_kv_heads),
    offsetof(attn_cache_config, window),   offsetof(attn_memory_config, capacity),
    offsetof(attn_runtime_config, blas_policy),
    offsetof(attn_options, core),          offsetof(attn_options, reserved),
    offsetof(attn_options, positions),
    offsetof(attn_config, bias_parts),     offsetof(attn_config, qk_norm),
    offsetof(attn_config, qk_norm_eps),    offsetof(attn_config, qk_norm_unit_offset),
    offsetof(attn_config, alibi),          offsetof(attn_config, alibi_slopes),
    offsetof(attn_config, softcap),        offsetof(attn_config, rope),
    offsetof(attn_config, sinks),
    offsetof(attn_rope_config, pairing),   offsetof(attn_rope_config, reserved),
    offsetof(attn_rope_config, rotary_dim), offsetof(attn_rope_config, theta),
    offsetof(attn_rope_config, linear_factor), offsetof(attn_rope_config, inv_freq),
    offsetof(attn_rope_config, attention_factor),
    offsetof(attn_positions, start),       offsetof(attn_positions, q_positions),
    offsetof(attn_positions, k_positions),
  };
  return offsets[i];
}
*/
import "C"

import "unsafe"

// headerConstants is the value, as the C compiler sees it, of every
// integer constant of attn.h, by name (the tests compare them with the Go
// constants; test files cannot use cgo).
func headerConstants() map[string]int64 {
	return map[string]int64{
		"ATTN_VERSION_MAJOR": C.ATTN_VERSION_MAJOR, "ATTN_VERSION_MINOR": C.ATTN_VERSION_MINOR,
		"ATTN_VERSION_PATCH": C.ATTN_VERSION_PATCH, "ATTN_VERSION_NUMBER": C.ATTN_VERSION_NUMBER,
		"ATTN_OK": C.ATTN_OK, "ATTN_ERR_NULL_POINTER": C.ATTN_ERR_NULL_POINTER,
		"ATTN_ERR_STRUCT_SIZE": C.ATTN_ERR_STRUCT_SIZE, "ATTN_ERR_BAD_SIZE": C.ATTN_ERR_BAD_SIZE,
		"ATTN_ERR_OVERFLOW": C.ATTN_ERR_OVERFLOW, "ATTN_ERR_WEIGHT_SIZE": C.ATTN_ERR_WEIGHT_SIZE,
		"ATTN_ERR_WEIGHT_LAYOUT": C.ATTN_ERR_WEIGHT_LAYOUT, "ATTN_ERR_WEIGHTS_NOT_SET": C.ATTN_ERR_WEIGHTS_NOT_SET,
		"ATTN_ERR_BAD_MASK": C.ATTN_ERR_BAD_MASK, "ATTN_ERR_BAD_OPTION": C.ATTN_ERR_BAD_OPTION,
		"ATTN_ERR_NOT_FINITE": C.ATTN_ERR_NOT_FINITE, "ATTN_ERR_NO_MEMORY": C.ATTN_ERR_NO_MEMORY,
		"ATTN_ERR_SCRATCH_TOO_SMALL": C.ATTN_ERR_SCRATCH_TOO_SMALL, "ATTN_ERR_IO": C.ATTN_ERR_IO,
		"ATTN_ERR_FILE_FORMAT": C.ATTN_ERR_FILE_FORMAT, "ATTN_ERR_TENSOR_MISSING": C.ATTN_ERR_TENSOR_MISSING,
		"ATTN_ERR_TENSOR_DTYPE": C.ATTN_ERR_TENSOR_DTYPE, "ATTN_ERR_TENSOR_SHAPE": C.ATTN_ERR_TENSOR_SHAPE,
		"ATTN_ERR_CAPACITY": C.ATTN_ERR_CAPACITY, "ATTN_ERR_MISMATCH": C.ATTN_ERR_MISMATCH,
		"ATTN_ERR_UNSUPPORTED": C.ATTN_ERR_UNSUPPORTED,
		"ATTN_CORE_AUTO":       C.ATTN_CORE_AUTO, "ATTN_CORE_BLAS": C.ATTN_CORE_BLAS,
		"ATTN_CORE_PACKED": C.ATTN_CORE_PACKED,
		"ATTN_BLAS_HOLD":   C.ATTN_BLAS_HOLD, "ATTN_BLAS_LEAVE": C.ATTN_BLAS_LEAVE,
		"ATTN_MAX_THREADS": C.ATTN_MAX_THREADS,
		"ATTN_W_IN_PROJ":   C.ATTN_W_IN_PROJ, "ATTN_B_IN_PROJ": C.ATTN_B_IN_PROJ, "ATTN_W_Q": C.ATTN_W_Q,
		"ATTN_W_K": C.ATTN_W_K, "ATTN_W_V": C.ATTN_W_V, "ATTN_W_OUT": C.ATTN_W_OUT,
		"ATTN_B_OUT": C.ATTN_B_OUT, "ATTN_B_Q": C.ATTN_B_Q, "ATTN_B_K": C.ATTN_B_K, "ATTN_B_V": C.ATTN_B_V,
		"ATTN_CAUSAL_NONE": C.ATTN_CAUSAL_NONE, "ATTN_CAUSAL_TOP_LEFT": C.ATTN_CAUSAL_TOP_LEFT,
		"ATTN_CAUSAL_BOTTOM_RIGHT": C.ATTN_CAUSAL_BOTTOM_RIGHT,
		"ATTN_EMPTY_ROW_ZERO":      C.ATTN_EMPTY_ROW_ZERO, "ATTN_EMPTY_ROW_NAN": C.ATTN_EMPTY_ROW_NAN,
		"ATTN_WEIGHTS_PER_HEAD": C.ATTN_WEIGHTS_PER_HEAD, "ATTN_WEIGHTS_AVERAGE": C.ATTN_WEIGHTS_AVERAGE,
		"ATTN_NAMES_TORCH": C.ATTN_NAMES_TORCH, "ATTN_NAMES_HF": C.ATTN_NAMES_HF,
		"ATTN_NAMES_HF_O_PROJ":         C.ATTN_NAMES_HF_O_PROJ,
		"ATTN_SAFETENSORS_MAX_HEADER":  C.ATTN_SAFETENSORS_MAX_HEADER,
		"ATTN_RUNTIME_CONFIG_SIZE_0_1": C.ATTN_RUNTIME_CONFIG_SIZE_0_1,
		"ATTN_CONFIG_SIZE_0_1":         C.ATTN_CONFIG_SIZE_0_1, "ATTN_MASK_SIZE_0_1": C.ATTN_MASK_SIZE_0_1,
		"ATTN_OPTIONS_SIZE_0_1":       C.ATTN_OPTIONS_SIZE_0_1,
		"ATTN_CACHE_CONFIG_SIZE_0_1":  C.ATTN_CACHE_CONFIG_SIZE_0_1,
		"ATTN_DECODE_MASK_SIZE_0_1":   C.ATTN_DECODE_MASK_SIZE_0_1,
		"ATTN_MEMORY_CONFIG_SIZE_0_1": C.ATTN_MEMORY_CONFIG_SIZE_0_1,
		"ATTN_ROPE_HALVES":            C.ATTN_ROPE_HALVES, "ATTN_ROPE_ADJACENT": C.ATTN_ROPE_ADJACENT,
		"ATTN_ROPE_CONFIG_SIZE_0_2": C.ATTN_ROPE_CONFIG_SIZE_0_2,
		"ATTN_BIAS_Q":               C.ATTN_BIAS_Q, "ATTN_BIAS_K": C.ATTN_BIAS_K, "ATTN_BIAS_V": C.ATTN_BIAS_V,
		"ATTN_BIAS_O": C.ATTN_BIAS_O, "ATTN_BIAS_ALL": C.ATTN_BIAS_ALL,
		"ATTN_QK_NORM_NONE": C.ATTN_QK_NORM_NONE, "ATTN_QK_NORM_HEAD": C.ATTN_QK_NORM_HEAD,
		"ATTN_QK_NORM_ALL": C.ATTN_QK_NORM_ALL,
		"ATTN_ALIBI_NONE":  C.ATTN_ALIBI_NONE, "ATTN_ALIBI_CAUSAL": C.ATTN_ALIBI_CAUSAL,
		"ATTN_ALIBI_SYMMETRIC": C.ATTN_ALIBI_SYMMETRIC,
		"ATTN_W_Q_NORM":        C.ATTN_W_Q_NORM, "ATTN_W_K_NORM": C.ATTN_W_K_NORM, "ATTN_W_SINKS": C.ATTN_W_SINKS,
		"ATTN_POSITIONS_SIZE_0_2": C.ATTN_POSITIONS_SIZE_0_2, "ATTN_MAX_POSITION": C.ATTN_MAX_POSITION,
	}
}

// headerVersionString is ATTN_VERSION_STRING.
const headerVersionString = C.ATTN_VERSION_STRING

// cgoOffsets is the offsets of the fields listed in attn_go_offset, as
// cgo's Go types place them, next to the C compiler's.
func cgoOffsets() (goOff, cOff []uintptr) {
	var m C.attn_mask
	var o C.attn_options
	var d C.attn_decode_mask
	var c C.attn_config
	var cc C.attn_cache_config
	var mc C.attn_memory_config
	var rc C.attn_runtime_config
	var rp C.attn_rope_config
	var ps C.attn_positions
	goOff = []uintptr{
		unsafe.Offsetof(m.key_lengths), unsafe.Offsetof(m.key_padding),
		unsafe.Offsetof(m.bias), unsafe.Offsetof(m.window),
		unsafe.Offsetof(o.attn_weights), unsafe.Offsetof(o.scratch),
		unsafe.Offsetof(o.scratch_size), unsafe.Offsetof(o.runtime),
		unsafe.Offsetof(d.new_lengths), unsafe.Offsetof(d.empty_rows),
		unsafe.Offsetof(c.scale), unsafe.Offsetof(c.num_kv_heads),
		unsafe.Offsetof(cc.window), unsafe.Offsetof(mc.capacity),
		unsafe.Offsetof(rc.blas_policy),
		unsafe.Offsetof(o.core), unsafe.Offsetof(o.reserved),
		unsafe.Offsetof(o.positions),
		unsafe.Offsetof(c.bias_parts), unsafe.Offsetof(c.qk_norm),
		unsafe.Offsetof(c.qk_norm_eps), unsafe.Offsetof(c.qk_norm_unit_offset),
		unsafe.Offsetof(c.alibi), unsafe.Offsetof(c.alibi_slopes),
		unsafe.Offsetof(c.softcap), unsafe.Offsetof(c.rope),
		unsafe.Offsetof(c.sinks),
		unsafe.Offsetof(rp.pairing), unsafe.Offsetof(rp.reserved),
		unsafe.Offsetof(rp.rotary_dim), unsafe.Offsetof(rp.theta),
		unsafe.Offsetof(rp.linear_factor), unsafe.Offsetof(rp.inv_freq),
		unsafe.Offsetof(rp.attention_factor),
		unsafe.Offsetof(ps.start), unsafe.Offsetof(ps.q_positions),
		unsafe.Offsetof(ps.k_positions),
	}
	for i := range goOff {
		cOff = append(cOff, uintptr(C.attn_go_offset(C.int(i))))
	}
	return goOff, cOff
}

// cgoSizes is the sizes cgo gives the versioned structs, which the
// init_sized calls pass, next to the C compiler's (C.sizeof_*).
func cgoSizes() map[string][2]uintptr {
	return map[string][2]uintptr{
		"attn_mask":           {unsafe.Sizeof(C.attn_mask{}), C.sizeof_attn_mask},
		"attn_options":        {unsafe.Sizeof(C.attn_options{}), C.sizeof_attn_options},
		"attn_config":         {unsafe.Sizeof(C.attn_config{}), C.sizeof_attn_config},
		"attn_decode_mask":    {unsafe.Sizeof(C.attn_decode_mask{}), C.sizeof_attn_decode_mask},
		"attn_cache_config":   {unsafe.Sizeof(C.attn_cache_config{}), C.sizeof_attn_cache_config},
		"attn_memory_config":  {unsafe.Sizeof(C.attn_memory_config{}), C.sizeof_attn_memory_config},
		"attn_runtime_config": {unsafe.Sizeof(C.attn_runtime_config{}), C.sizeof_attn_runtime_config},
		"attn_rope_config":    {unsafe.Sizeof(C.attn_rope_config{}), C.sizeof_attn_rope_config},
		"attn_positions":      {unsafe.Sizeof(C.attn_positions{}), C.sizeof_attn_positions},
	}
}
