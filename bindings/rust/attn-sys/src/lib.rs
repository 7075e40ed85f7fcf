// SPDX-License-Identifier: MIT
//! Raw declarations of libattn's C API (`include/attn/attn.h`, release
//! 0.1.0): every exported function, every public struct and every constant,
//! with the types the C API uses (statuses, weight ids and modes are
//! `i32` like the `int32_t` fields and returns they are compared with).
//!
//! Everything here is `unsafe` to call and follows the header's contracts.
//! The `attn` crate is the safe API on top.
//!
//! Versioned structs start with `struct_size`. Never fill them by hand:
//! call the matching `attn_*_init_sized(ptr, size_of::<T>())`, which writes
//! the library's defaults into the bytes this crate knows of and records
//! their number, so that a newer or older libattn reads only those
//! (docs/ABI.md). The `*_init_default` helpers below do exactly that.
//!
//! `tests/layout.rs` compiles a C program against the header and checks
//! that every struct's size and field offsets and every constant here agree
//! with it.
#![allow(non_camel_case_types)]

use std::mem::{align_of, size_of, MaybeUninit};
pub use std::os::raw::{c_char, c_uint, c_void};

// ---------------------------------------------------------------------------
// Version

/// Major version of the header these declarations follow.
pub const ATTN_VERSION_MAJOR: c_uint = 0;
/// Minor version of the header these declarations follow.
pub const ATTN_VERSION_MINOR: c_uint = 1;
/// Patch version of the header these declarations follow.
pub const ATTN_VERSION_PATCH: c_uint = 0;
/// MAJOR * 10000 + MINOR * 100 + PATCH, as `attn_version_number()` returns.
pub const ATTN_VERSION_NUMBER: c_uint =
    ATTN_VERSION_MAJOR * 10000 + ATTN_VERSION_MINOR * 100 + ATTN_VERSION_PATCH;
/// "MAJOR.MINOR.PATCH" of the header these declarations follow.
pub const ATTN_VERSION_STRING: &str = "0.1.0";

// ---------------------------------------------------------------------------
// Status codes

/// Status of a fallible call (`int32_t`). Append-only, never renumbered.
pub type attn_status = i32;
pub const ATTN_OK: attn_status = 0;
pub const ATTN_ERR_NULL_POINTER: attn_status = 1;
pub const ATTN_ERR_STRUCT_SIZE: attn_status = 2;
pub const ATTN_ERR_BAD_SIZE: attn_status = 3;
pub const ATTN_ERR_OVERFLOW: attn_status = 4;
pub const ATTN_ERR_WEIGHT_SIZE: attn_status = 5;
pub const ATTN_ERR_WEIGHT_LAYOUT: attn_status = 6;
pub const ATTN_ERR_WEIGHTS_NOT_SET: attn_status = 7;
pub const ATTN_ERR_BAD_MASK: attn_status = 8;
pub const ATTN_ERR_BAD_OPTION: attn_status = 9;
pub const ATTN_ERR_NOT_FINITE: attn_status = 10;
pub const ATTN_ERR_NO_MEMORY: attn_status = 11;
pub const ATTN_ERR_SCRATCH_TOO_SMALL: attn_status = 12;
pub const ATTN_ERR_IO: attn_status = 13;
pub const ATTN_ERR_FILE_FORMAT: attn_status = 14;
pub const ATTN_ERR_TENSOR_MISSING: attn_status = 15;
pub const ATTN_ERR_TENSOR_DTYPE: attn_status = 16;
pub const ATTN_ERR_TENSOR_SHAPE: attn_status = 17;
pub const ATTN_ERR_CAPACITY: attn_status = 18;
pub const ATTN_ERR_MISMATCH: attn_status = 19;
pub const ATTN_ERR_UNSUPPORTED: attn_status = 20;

// ---------------------------------------------------------------------------
// Runtimes

/// `attn_runtime_config.blas_policy`: hold OpenBLAS at one thread during
/// calls (default).
pub const ATTN_BLAS_HOLD: i32 = 0;
/// `attn_runtime_config.blas_policy`: never change a BLAS setting.
pub const ATTN_BLAS_LEAVE: i32 = 1;
/// Largest number of threads of a runtime.
pub const ATTN_MAX_THREADS: i32 = 1024;

/// Settings of a runtime (fill with `attn_runtime_config_init_sized`).
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct attn_runtime_config {
    pub struct_size: usize,
    pub num_threads: i32,
    pub blas_policy: i32,
}

/// Opaque execution context (worker threads and a BLAS policy).
#[repr(C)]
pub struct attn_runtime {
    _opaque: [u8; 0],
}

// ---------------------------------------------------------------------------
// Layers

/// Configuration of a layer (fill with `attn_config_init_sized`).
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct attn_config {
    pub struct_size: usize,
    pub embed_dim: i64,
    pub num_heads: i64,
    pub kdim: i64,
    pub vdim: i64,
    pub bias: i32,
    pub num_threads: i32,
    pub scale: f64,
    pub num_kv_heads: i64,
    pub bias_parts: i32,
    pub qk_norm: i32,
    pub qk_norm_eps: f64,
    pub qk_norm_unit_offset: i32,
    pub alibi: i32,
    pub alibi_slopes: *const f32,
    pub softcap: f64,
    pub rope: *const attn_rope_config,
    pub sinks: i32,
}

/// Rotary position embeddings of a layer (fill with
/// `attn_rope_config_init_sized`).
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct attn_rope_config {
    pub struct_size: usize,
    pub pairing: i32,
    pub reserved: i32,
    pub rotary_dim: i64,
    pub theta: f64,
    pub linear_factor: f64,
    pub inv_freq: *const f32,
    pub attention_factor: f64,
}
pub const ATTN_ROPE_HALVES: i32 = 0;
pub const ATTN_ROPE_ADJACENT: i32 = 1;
pub const ATTN_BIAS_Q: i32 = 1;
pub const ATTN_BIAS_K: i32 = 2;
pub const ATTN_BIAS_V: i32 = 4;
pub const ATTN_BIAS_O: i32 = 8;
pub const ATTN_BIAS_ALL: i32 = 15;
pub const ATTN_QK_NORM_NONE: i32 = 0;
pub const ATTN_QK_NORM_HEAD: i32 = 1;
pub const ATTN_QK_NORM_ALL: i32 = 2;
pub const ATTN_ALIBI_NONE: i32 = 0;
pub const ATTN_ALIBI_CAUSAL: i32 = 1;
pub const ATTN_ALIBI_SYMMETRIC: i32 = 2;

/// Token positions of a call (fill with `attn_positions_init_sized`).
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct attn_positions {
    pub struct_size: usize,
    pub start: *const i64,
    pub q_positions: *const i64,
    pub k_positions: *const i64,
}
pub const ATTN_MAX_POSITION: i64 = 2147483647;

/// Opaque multi-head attention layer.
#[repr(C)]
pub struct attn_layer {
    _opaque: [u8; 0],
}

/// Weight identifier (`int32_t`).
pub type attn_weight_id = i32;
pub const ATTN_W_IN_PROJ: attn_weight_id = 0;
pub const ATTN_B_IN_PROJ: attn_weight_id = 1;
pub const ATTN_W_Q: attn_weight_id = 2;
pub const ATTN_W_K: attn_weight_id = 3;
pub const ATTN_W_V: attn_weight_id = 4;
pub const ATTN_W_OUT: attn_weight_id = 5;
pub const ATTN_B_OUT: attn_weight_id = 6;
pub const ATTN_B_Q: attn_weight_id = 7;
pub const ATTN_B_K: attn_weight_id = 8;
pub const ATTN_B_V: attn_weight_id = 9;
pub const ATTN_W_Q_NORM: attn_weight_id = 10;
pub const ATTN_W_K_NORM: attn_weight_id = 11;
pub const ATTN_W_SINKS: attn_weight_id = 12;

// ---------------------------------------------------------------------------
// Masks

/// `attn_mask.causal`: no causal mask.
pub const ATTN_CAUSAL_NONE: i32 = 0;
/// `attn_mask.causal`: query i sees keys j <= i.
pub const ATTN_CAUSAL_TOP_LEFT: i32 = 1;
/// `attn_mask.causal`: query i sees keys j <= i + (n - Lq).
pub const ATTN_CAUSAL_BOTTOM_RIGHT: i32 = 2;
/// `empty_rows`: a query with no key gives zeros (default).
pub const ATTN_EMPTY_ROW_ZERO: i32 = 0;
/// `empty_rows`: a query with no key gives NaN, as torch.
pub const ATTN_EMPTY_ROW_NAN: i32 = 1;

/// Mask descriptor (fill with `attn_mask_init_sized`).
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct attn_mask {
    pub struct_size: usize,
    pub causal: i32,
    pub empty_rows: i32,
    pub key_lengths: *const i64,
    pub key_padding: *const u8,
    pub bias: *const f32,
    pub bias_stride_b: i64,
    pub bias_stride_h: i64,
    pub bias_stride_q: i64,
    pub window: i64,
}

// ---------------------------------------------------------------------------
// Forward

/// `attn_options.weights_mode`: per head, [B, H, Lq, Lk].
pub const ATTN_WEIGHTS_PER_HEAD: i32 = 0;
/// `attn_options.weights_mode`: averaged over heads, [B, Lq, Lk].
pub const ATTN_WEIGHTS_AVERAGE: i32 = 1;

/// `attn_options.core`: the library chooses (default).
pub const ATTN_CORE_AUTO: i32 = 0;
/// `attn_options.core`: the cblas_sgemm core (any CPU).
pub const ATTN_CORE_BLAS: i32 = 1;
/// `attn_options.core`: the packed AVX2/FMA micro-kernel core.
pub const ATTN_CORE_PACKED: i32 = 2;

/// Per-call settings (fill with `attn_options_init_sized`).
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct attn_options {
    pub struct_size: usize,
    pub attn_weights: *mut f32,
    pub weights_mode: i32,
    pub num_threads: i32,
    pub scratch: *mut c_void,
    pub scratch_size: usize,
    pub runtime: *mut attn_runtime,
    pub positions: *const attn_positions,
    pub core: i32,
    pub reserved: i32,
}

// ---------------------------------------------------------------------------
// Weight files

/// Naming scheme: torch's state_dict names.
pub const ATTN_NAMES_TORCH: i32 = 0;
/// Naming scheme: Hugging Face, output projection `out_proj`.
pub const ATTN_NAMES_HF: i32 = 1;
/// Naming scheme: Hugging Face, output projection `o_proj`.
pub const ATTN_NAMES_HF_O_PROJ: i32 = 2;
/// Largest JSON header of a weight file, in bytes.
pub const ATTN_SAFETENSORS_MAX_HEADER: usize = 100_000_000;

// ---------------------------------------------------------------------------
// Incremental decoding

/// Settings of a key/value cache (fill with `attn_cache_config_init_sized`).
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct attn_cache_config {
    pub struct_size: usize,
    pub batch: i64,
    pub capacity: i64,
    pub window: i64,
}

/// Opaque self-attention key/value cache.
#[repr(C)]
pub struct attn_kv_cache {
    _opaque: [u8; 0],
}

/// Per-step mask of `attn_decode_step` (fill with
/// `attn_decode_mask_init_sized`).
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct attn_decode_mask {
    pub struct_size: usize,
    pub new_lengths: *const i64,
    pub new_padding: *const u8,
    pub empty_rows: i32,
}

/// Settings of a cross-attention memory (fill with
/// `attn_memory_config_init_sized`).
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct attn_memory_config {
    pub struct_size: usize,
    pub batch: i64,
    pub capacity: i64,
}

/// Opaque cross-attention memory.
#[repr(C)]
pub struct attn_memory {
    _opaque: [u8; 0],
}

// ---------------------------------------------------------------------------
// First layouts (the header's ATTN_*_SIZE_0_1, docs/ABI.md): the end of
// each struct's last field in 0.1.0's first header, computed from the
// fields' sizes and alignments as a C compiler lays them out.

const fn after(offset: usize, align: usize, size: usize) -> usize {
    (offset + align - 1) / align * align + size
}
const SZ: usize = size_of::<usize>();
const I32: usize = size_of::<i32>();
const I64: usize = size_of::<i64>();
const A64: usize = align_of::<i64>();
const PTR: usize = size_of::<*const u8>();
const APTR: usize = align_of::<*const u8>();

pub const ATTN_RUNTIME_CONFIG_SIZE_0_1: usize = after(after(SZ, 4, I32), 4, I32);
pub const ATTN_CONFIG_SIZE_0_1: usize = {
    let dims = after(
        after(after(after(SZ, A64, I64), A64, I64), A64, I64),
        A64,
        I64,
    );
    let ints = after(after(dims, 4, I32), 4, I32);
    after(after(ints, align_of::<f64>(), size_of::<f64>()), A64, I64)
};
pub const ATTN_MASK_SIZE_0_1: usize = {
    let modes = after(after(SZ, 4, I32), 4, I32);
    let ptrs = after(after(after(modes, APTR, PTR), APTR, PTR), APTR, PTR);
    after(
        after(after(after(ptrs, A64, I64), A64, I64), A64, I64),
        A64,
        I64,
    )
};
pub const ATTN_OPTIONS_SIZE_0_1: usize = {
    let w = after(SZ, APTR, PTR);
    let modes = after(after(w, 4, I32), 4, I32);
    after(after(modes, APTR, PTR), align_of::<usize>(), SZ)
};
pub const ATTN_CACHE_CONFIG_SIZE_0_1: usize = after(after(after(SZ, A64, I64), A64, I64), A64, I64);
pub const ATTN_DECODE_MASK_SIZE_0_1: usize = after(after(after(SZ, APTR, PTR), APTR, PTR), 4, I32);
pub const ATTN_MEMORY_CONFIG_SIZE_0_1: usize = after(after(SZ, A64, I64), A64, I64);
pub const ATTN_ROPE_CONFIG_SIZE_0_2: usize = size_of::<attn_rope_config>();
pub const ATTN_POSITIONS_SIZE_0_2: usize = size_of::<attn_positions>();

// ---------------------------------------------------------------------------
// Functions

extern "C" {
    pub fn attn_version_number() -> c_uint;
    pub fn attn_version_string() -> *const c_char;
    pub fn attn_status_string(status: attn_status) -> *const c_char;
    pub fn attn_last_error() -> *const c_char;

    pub fn attn_runtime_config_init_sized(
        cfg: *mut attn_runtime_config,
        size: usize,
    ) -> attn_status;
    pub fn attn_runtime_create(
        cfg: *const attn_runtime_config,
        out: *mut *mut attn_runtime,
    ) -> attn_status;
    pub fn attn_runtime_destroy(rt: *mut attn_runtime);
    pub fn attn_runtime_threads(rt: *const attn_runtime, threads: *mut i32) -> attn_status;
    pub fn attn_runtime_trim(rt: *mut attn_runtime);
    pub fn attn_cpu_count() -> i32;
    pub fn attn_core_available(core: i32) -> i32;

    pub fn attn_rope_config_init_sized(cfg: *mut attn_rope_config, size: usize) -> attn_status;
    pub fn attn_positions_init_sized(pos: *mut attn_positions, size: usize) -> attn_status;

    pub fn attn_config_init_sized(cfg: *mut attn_config, size: usize) -> attn_status;
    pub fn attn_layer_create(cfg: *const attn_config, out: *mut *mut attn_layer) -> attn_status;
    pub fn attn_layer_destroy(layer: *mut attn_layer);
    pub fn attn_layer_get_config(layer: *const attn_layer, cfg: *mut attn_config) -> attn_status;
    pub fn attn_layer_weight_count(
        layer: *const attn_layer,
        which: attn_weight_id,
        count: *mut i64,
    ) -> attn_status;
    pub fn attn_layer_set_weight(
        layer: *mut attn_layer,
        which: attn_weight_id,
        data: *const f32,
        count: i64,
    ) -> attn_status;
    pub fn attn_layer_get_weight(
        layer: *const attn_layer,
        which: attn_weight_id,
        data: *mut f32,
        count: i64,
    ) -> attn_status;
    pub fn attn_layer_init_weights(layer: *mut attn_layer, seed: u64) -> attn_status;

    pub fn attn_mask_init_sized(mask: *mut attn_mask, size: usize) -> attn_status;
    pub fn attn_options_init_sized(opts: *mut attn_options, size: usize) -> attn_status;
    pub fn attn_forward(
        layer: *const attn_layer,
        batch: i64,
        len_q: i64,
        len_k: i64,
        query: *const f32,
        key: *const f32,
        value: *const f32,
        mask: *const attn_mask,
        opts: *const attn_options,
        out: *mut f32,
    ) -> attn_status;
    pub fn attn_self_forward(
        layer: *const attn_layer,
        batch: i64,
        len: i64,
        x: *const f32,
        mask: *const attn_mask,
        opts: *const attn_options,
        out: *mut f32,
    ) -> attn_status;
    pub fn attn_forward_scratch_size(
        layer: *const attn_layer,
        batch: i64,
        len_q: i64,
        len_k: i64,
        opts: *const attn_options,
        bytes: *mut usize,
    ) -> attn_status;

    pub fn attn_layer_load_safetensors(
        layer: *mut attn_layer,
        path: *const c_char,
        prefix: *const c_char,
    ) -> attn_status;
    pub fn attn_layer_load_safetensors_mem(
        layer: *mut attn_layer,
        data: *const c_void,
        size: usize,
        prefix: *const c_char,
    ) -> attn_status;
    pub fn attn_layer_save_safetensors(
        layer: *const attn_layer,
        path: *const c_char,
        prefix: *const c_char,
        naming: i32,
    ) -> attn_status;

    pub fn attn_cache_config_init_sized(cfg: *mut attn_cache_config, size: usize) -> attn_status;
    pub fn attn_kv_cache_size(
        layer: *const attn_layer,
        cfg: *const attn_cache_config,
        bytes: *mut usize,
    ) -> attn_status;
    pub fn attn_kv_cache_create(
        layer: *const attn_layer,
        cfg: *const attn_cache_config,
        out: *mut *mut attn_kv_cache,
    ) -> attn_status;
    pub fn attn_kv_cache_create_in(
        layer: *const attn_layer,
        cfg: *const attn_cache_config,
        buffer: *mut c_void,
        size: usize,
        out: *mut *mut attn_kv_cache,
    ) -> attn_status;
    pub fn attn_kv_cache_destroy(cache: *mut attn_kv_cache);
    pub fn attn_kv_cache_lengths(
        cache: *const attn_kv_cache,
        batch: i64,
        lengths: *mut i64,
        first: *mut i64,
    ) -> attn_status;
    pub fn attn_kv_cache_truncate(
        cache: *mut attn_kv_cache,
        batch: i64,
        lengths: *const i64,
    ) -> attn_status;
    pub fn attn_kv_cache_reorder(
        cache: *mut attn_kv_cache,
        batch: i64,
        src_rows: *const i64,
    ) -> attn_status;
    pub fn attn_kv_cache_reset(cache: *mut attn_kv_cache) -> attn_status;

    pub fn attn_decode_mask_init_sized(mask: *mut attn_decode_mask, size: usize) -> attn_status;
    pub fn attn_decode_step(
        layer: *const attn_layer,
        cache: *mut attn_kv_cache,
        batch: i64,
        n_new: i64,
        x: *const f32,
        mask: *const attn_decode_mask,
        opts: *const attn_options,
        out: *mut f32,
    ) -> attn_status;
    pub fn attn_decode_scratch_size(
        layer: *const attn_layer,
        cache: *const attn_kv_cache,
        n_new: i64,
        opts: *const attn_options,
        bytes: *mut usize,
    ) -> attn_status;

    pub fn attn_memory_config_init_sized(cfg: *mut attn_memory_config, size: usize) -> attn_status;
    pub fn attn_memory_size(
        layer: *const attn_layer,
        cfg: *const attn_memory_config,
        bytes: *mut usize,
    ) -> attn_status;
    pub fn attn_memory_create(
        layer: *const attn_layer,
        cfg: *const attn_memory_config,
        out: *mut *mut attn_memory,
    ) -> attn_status;
    pub fn attn_memory_create_in(
        layer: *const attn_layer,
        cfg: *const attn_memory_config,
        buffer: *mut c_void,
        size: usize,
        out: *mut *mut attn_memory,
    ) -> attn_status;
    pub fn attn_memory_destroy(mem: *mut attn_memory);
    pub fn attn_memory_set(
        layer: *const attn_layer,
        mem: *mut attn_memory,
        batch: i64,
        len_k: i64,
        key: *const f32,
        value: *const f32,
        key_lengths: *const i64,
        key_padding: *const u8,
        opts: *const attn_options,
    ) -> attn_status;
    pub fn attn_cross_step(
        layer: *const attn_layer,
        mem: *const attn_memory,
        batch: i64,
        n: i64,
        query: *const f32,
        mask: *const attn_mask,
        opts: *const attn_options,
        out: *mut f32,
    ) -> attn_status;
    pub fn attn_cross_scratch_size(
        layer: *const attn_layer,
        mem: *const attn_memory,
        n: i64,
        opts: *const attn_options,
        bytes: *mut usize,
    ) -> attn_status;
}

// ---------------------------------------------------------------------------
// Initialisation through the library

/// A versioned struct of the C API and its `attn_*_init_sized` function.
///
/// # Safety
/// `INIT` must be the init function of `Self`, which must be the `repr(C)`
/// mirror of that struct.
pub unsafe trait Versioned: Sized {
    /// The struct's `attn_*_init_sized`.
    const INIT: unsafe extern "C" fn(*mut Self, usize) -> attn_status;

    /// The library's defaults for this struct, with `struct_size` =
    /// `size_of::<Self>()`, exactly as `attn_*_init()` gives C programs.
    /// Returns the status when the library refuses (none does: every
    /// libattn accepts this crate's sizes and zeroes a tail it does not
    /// know).
    fn init_default() -> Result<Self, attn_status> {
        let mut s = MaybeUninit::<Self>::zeroed();
        // SAFETY: the pointer is valid for size_of::<Self>() bytes, and a
        // zeroed mirror of these structs (integers, floats, raw pointers) is
        // a valid value even if the library wrote nothing.
        let st = unsafe { Self::INIT(s.as_mut_ptr(), size_of::<Self>()) };
        if st == ATTN_OK {
            Ok(unsafe { s.assume_init() })
        } else {
            Err(st)
        }
    }
}

unsafe impl Versioned for attn_runtime_config {
    const INIT: unsafe extern "C" fn(*mut Self, usize) -> attn_status =
        attn_runtime_config_init_sized;
}
unsafe impl Versioned for attn_config {
    const INIT: unsafe extern "C" fn(*mut Self, usize) -> attn_status = attn_config_init_sized;
}
unsafe impl Versioned for attn_mask {
    const INIT: unsafe extern "C" fn(*mut Self, usize) -> attn_status = attn_mask_init_sized;
}
unsafe impl Versioned for attn_options {
    const INIT: unsafe extern "C" fn(*mut Self, usize) -> attn_status = attn_options_init_sized;
}
unsafe impl Versioned for attn_cache_config {
    const INIT: unsafe extern "C" fn(*mut Self, usize) -> attn_status =
        attn_cache_config_init_sized;
}
unsafe impl Versioned for attn_decode_mask {
    const INIT: unsafe extern "C" fn(*mut Self, usize) -> attn_status = attn_decode_mask_init_sized;
}
unsafe impl Versioned for attn_memory_config {
    const INIT: unsafe extern "C" fn(*mut Self, usize) -> attn_status =
        attn_memory_config_init_sized;
}
unsafe impl Versioned for attn_rope_config {
    const INIT: unsafe extern "C" fn(*mut Self, usize) -> attn_status = attn_rope_config_init_sized;
}
unsafe impl Versioned for attn_positions {
    const INIT: unsafe extern "C" fn(*mut Self, usize) -> attn_status = attn_positions_init_sized;
}
