// SPDX-License-Identifier: MIT
//! Checks that attn-sys says what include/attn/attn.h says:
//!
//! - `tests/layout.c`, compiled with the C compiler against the header
//!   attn-sys was built with, prints each struct's size and field offsets
//!   and each constant; the Rust mirrors and constants must give the same;
//! - every field of every struct in the header, every `#define` constant
//!   and every exported function is covered, so that a header that grows
//!   fails here until attn-sys grows with it;
//! - every exported function's parameter and return types, translated from
//!   the header's C, match the `extern "C"` declarations of src/lib.rs.

use attn_sys::*;
use std::collections::BTreeMap;
use std::mem::{size_of, MaybeUninit};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Mutex;

fn include_dir() -> PathBuf {
    match option_env!("ATTN_SYS_INCLUDE_DIR") {
        Some(dir) => PathBuf::from(dir),
        None => panic!("build.rs found no header directory; set ATTN_INCLUDE_DIR"),
    }
}

fn header_text() -> String {
    let path = include_dir().join("attn").join("attn.h");
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {}", path.display(), e))
}

/// What tests/layout.c prints, "kind name" -> value (compiled and run once;
/// the tests run on several threads).
fn c_view() -> BTreeMap<String, String> {
    static VIEW: Mutex<Option<BTreeMap<String, String>>> = Mutex::new(None);
    let mut view = VIEW.lock().unwrap_or_else(|e| e.into_inner());
    view.get_or_insert_with(run_layout_c).clone()
}

fn run_layout_c() -> BTreeMap<String, String> {
    let src = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests")
        .join("layout.c");
    let dir = std::env::temp_dir().join(format!("attn-sys-layout-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let exe = dir.join("layout");
    let cc = std::env::var("CC").unwrap_or_else(|_| "cc".into());
    let status = Command::new(&cc)
        .arg("-std=c11")
        .arg("-I")
        .arg(include_dir())
        .arg(&src)
        .arg("-o")
        .arg(&exe)
        .status()
        .unwrap_or_else(|e| panic!("cannot run the C compiler {}: {}", cc, e));
    assert!(
        status.success(),
        "{} could not compile {}",
        cc,
        src.display()
    );
    let out = Command::new(&exe).output().unwrap();
    std::fs::remove_dir_all(&dir).ok();
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout).unwrap();
    text.lines()
        .map(|l| {
            let mut parts = l.splitn(3, ' ');
            let kind = parts.next().unwrap();
            let name = parts.next().unwrap();
            let value = parts.next().unwrap();
            (format!("{} {}", kind, name), value.to_string())
        })
        .collect()
}

fn pointee_size<F>(_: *const F) -> usize {
    size_of::<F>()
}

/// (offset, size) of a field.
macro_rules! field_of {
    ($t:ty, $f:ident) => {{
        let u = MaybeUninit::<$t>::uninit();
        let base = u.as_ptr();
        // SAFETY: only the address of the field is taken, never read.
        let field = unsafe { std::ptr::addr_of!((*base).$f) };
        (field as usize - base as usize, pointee_size(field))
    }};
}

/// The Rust side of what layout.c prints.
fn rust_view() -> BTreeMap<String, String> {
    let mut m = BTreeMap::new();
    macro_rules! size {
        ($t:ident) => {
            m.insert(
                format!("size {}", stringify!($t)),
                size_of::<$t>().to_string(),
            );
        };
    }
    macro_rules! fields {
        ($t:ident: $($f:ident),*) => {
            size!($t);
            $(
                let (offset, size) = field_of!($t, $f);
                m.insert(format!("offset {}.{}", stringify!($t), stringify!($f)),
                         offset.to_string());
                m.insert(format!("size {}.{}", stringify!($t), stringify!($f)),
                         size.to_string());
            )*
        };
    }
    macro_rules! consts {
        ($($c:ident),*) => {
            $(m.insert(format!("const {}", stringify!($c)), ($c as i64).to_string());)*
        };
    }
    fields!(attn_runtime_config: struct_size, num_threads, blas_policy);
    fields!(attn_config: struct_size, embed_dim, num_heads, kdim, vdim, bias,
            num_threads, scale, num_kv_heads, bias_parts, qk_norm, qk_norm_eps,
            qk_norm_unit_offset, alibi, alibi_slopes, softcap, rope, sinks);
    fields!(attn_rope_config: struct_size, pairing, reserved, rotary_dim, theta,
            linear_factor, inv_freq, attention_factor);
    fields!(attn_positions: struct_size, start, q_positions, k_positions);
    fields!(attn_mask: struct_size, causal, empty_rows, key_lengths, key_padding,
            bias, bias_stride_b, bias_stride_h, bias_stride_q, window);
    fields!(attn_options: struct_size, attn_weights, weights_mode, num_threads,
            scratch, scratch_size, runtime, positions, core, reserved);
    fields!(attn_cache_config: struct_size, batch, capacity, window);
    fields!(attn_decode_mask: struct_size, new_lengths, new_padding, empty_rows);
    fields!(attn_memory_config: struct_size, batch, capacity);
    size!(attn_status);
    size!(attn_weight_id);
    consts!(
        ATTN_VERSION_MAJOR,
        ATTN_VERSION_MINOR,
        ATTN_VERSION_PATCH,
        ATTN_VERSION_NUMBER,
        ATTN_OK,
        ATTN_ERR_NULL_POINTER,
        ATTN_ERR_STRUCT_SIZE,
        ATTN_ERR_BAD_SIZE,
        ATTN_ERR_OVERFLOW,
        ATTN_ERR_WEIGHT_SIZE,
        ATTN_ERR_WEIGHT_LAYOUT,
        ATTN_ERR_WEIGHTS_NOT_SET,
        ATTN_ERR_BAD_MASK,
        ATTN_ERR_BAD_OPTION,
        ATTN_ERR_NOT_FINITE,
        ATTN_ERR_NO_MEMORY,
        ATTN_ERR_SCRATCH_TOO_SMALL,
        ATTN_ERR_IO,
        ATTN_ERR_FILE_FORMAT,
        ATTN_ERR_TENSOR_MISSING,
        ATTN_ERR_TENSOR_DTYPE,
        ATTN_ERR_TENSOR_SHAPE,
        ATTN_ERR_CAPACITY,
        ATTN_ERR_MISMATCH,
        ATTN_ERR_UNSUPPORTED,
        ATTN_BLAS_HOLD,
        ATTN_BLAS_LEAVE,
        ATTN_MAX_THREADS,
        ATTN_RUNTIME_CONFIG_SIZE_0_1,
        ATTN_CONFIG_SIZE_0_1,
        ATTN_W_IN_PROJ,
        ATTN_B_IN_PROJ,
        ATTN_W_Q,
        ATTN_W_K,
        ATTN_W_V,
        ATTN_W_OUT,
        ATTN_B_OUT,
        ATTN_B_Q,
        ATTN_B_K,
        ATTN_B_V,
        ATTN_CAUSAL_NONE,
        ATTN_CAUSAL_TOP_LEFT,
        ATTN_CAUSAL_BOTTOM_RIGHT,
        ATTN_EMPTY_ROW_ZERO,
        ATTN_EMPTY_ROW_NAN,
        ATTN_MASK_SIZE_0_1,
        ATTN_WEIGHTS_PER_HEAD,
        ATTN_WEIGHTS_AVERAGE,
        ATTN_CORE_AUTO,
        ATTN_CORE_BLAS,
        ATTN_CORE_PACKED,
        ATTN_OPTIONS_SIZE_0_1,
        ATTN_NAMES_TORCH,
        ATTN_NAMES_HF,
        ATTN_NAMES_HF_O_PROJ,
        ATTN_SAFETENSORS_MAX_HEADER,
        ATTN_CACHE_CONFIG_SIZE_0_1,
        ATTN_DECODE_MASK_SIZE_0_1,
        ATTN_MEMORY_CONFIG_SIZE_0_1,
        ATTN_ROPE_HALVES,
        ATTN_ROPE_ADJACENT,
        ATTN_ROPE_CONFIG_SIZE_0_2,
        ATTN_BIAS_Q,
        ATTN_BIAS_K,
        ATTN_BIAS_V,
        ATTN_BIAS_O,
        ATTN_BIAS_ALL,
        ATTN_QK_NORM_NONE,
        ATTN_QK_NORM_HEAD,
        ATTN_QK_NORM_ALL,
        ATTN_ALIBI_NONE,
        ATTN_ALIBI_CAUSAL,
        ATTN_ALIBI_SYMMETRIC,
        ATTN_W_Q_NORM,
        ATTN_W_K_NORM,
        ATTN_W_SINKS,
        ATTN_POSITIONS_SIZE_0_2,
        ATTN_MAX_POSITION
    );
    m.insert(
        "string ATTN_VERSION_STRING".into(),
        ATTN_VERSION_STRING.into(),
    );
    m
}

#[test]
fn structs_and_constants_match_the_c_compiler() {
    let c = c_view();
    let rust = rust_view();
    let mut bad = Vec::new();
    for (k, v) in &c {
        match rust.get(k) {
            Some(r) if r == v => {}
            Some(r) => bad.push(format!("{}: C {} but Rust {}", k, v, r)),
            None => bad.push(format!("{}: C {} but not checked in Rust", k, v)),
        }
    }
    for k in rust.keys() {
        if !c.contains_key(k) {
            bad.push(format!(
                "{}: checked in Rust but not printed by layout.c",
                k
            ));
        }
    }
    assert!(
        bad.is_empty(),
        "attn-sys disagrees with the header:\n{}",
        bad.join("\n")
    );
}

/// The header without comments, with whitespace collapsed.
fn header_code() -> String {
    let text = header_text();
    let mut out = String::new();
    let mut rest = text.as_str();
    while let Some(start) = rest.find("/*") {
        out.push_str(&rest[..start]);
        let end = rest[start..].find("*/").expect("unterminated comment") + start;
        rest = &rest[end + 2..];
    }
    out.push_str(rest);
    out
}

#[test]
fn every_field_and_constant_of_the_header_is_checked() {
    let code = header_code();
    let c = c_view();
    let mut missing = Vec::new();
    // Struct fields: the declarations between "typedef struct NAME {" and
    // "} NAME;".
    let mut rest = code.as_str();
    while let Some(pos) = rest.find("typedef struct ") {
        rest = &rest[pos + "typedef struct ".len()..];
        let name: String = rest
            .chars()
            .take_while(|c| c.is_alphanumeric() || *c == '_')
            .collect();
        let after_name = rest[name.len()..].trim_start();
        if !after_name.starts_with('{') {
            continue; // an opaque type
        }
        let body_end = after_name.find('}').unwrap();
        for decl in after_name[1..body_end].split(';') {
            let decl = decl.trim();
            if decl.is_empty() {
                continue;
            }
            let field: String = decl
                .chars()
                .rev()
                .take_while(|c| c.is_alphanumeric() || *c == '_')
                .collect::<Vec<_>>()
                .into_iter()
                .rev()
                .collect();
            let key = format!("offset {}.{}", name, field);
            if !c.contains_key(&key) {
                missing.push(key);
            }
        }
        if !c.contains_key(&format!("size {}", name)) {
            missing.push(format!("size {}", name));
        }
    }
    for line in code.lines() {
        if let Some(def) = line.trim().strip_prefix("#define ") {
            let name = def.split_whitespace().next().unwrap();
            let name = name.split('(').next().unwrap();
            if ["ATTN_ATTN_H", "ATTN_API"].contains(&name) {
                continue;
            }
            if !c.contains_key(&format!("const {}", name))
                && !c.contains_key(&format!("string {}", name))
            {
                missing.push(format!("constant {}", name));
            }
        }
    }
    assert!(missing.is_empty(), "not checked: {}", missing.join(", "));
}

/// C type (as in a declaration, without the name) -> Rust type of attn-sys.
fn rust_type(c: &str) -> String {
    let depth = c.matches('*').count();
    let is_const = c.trim_start().starts_with("const ");
    let base = c.replace("const", "").replace('*', "");
    let base = match base.trim() {
        "int64_t" => "i64",
        "int32_t" => "i32",
        "uint64_t" => "u64",
        "uint8_t" => "u8",
        "size_t" => "usize",
        "float" => "f32",
        "void" => "c_void",
        "char" => "c_char",
        "unsigned" => "c_uint",
        other => other, // attn_* types keep their names
    }
    .to_string();
    match depth {
        0 => base,
        1 if is_const => format!("*const {}", base),
        1 => format!("*mut {}", base),
        2 => format!("*mut *mut {}", base),
        _ => panic!("unexpected C type {}", c),
    }
}

/// Splits "TYPE name" into the type.
fn c_param_type(param: &str) -> String {
    let param = param.trim();
    let name_len = param
        .chars()
        .rev()
        .take_while(|c| c.is_alphanumeric() || *c == '_')
        .count();
    param[..param.len() - name_len].trim().to_string()
}

fn squash(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

#[test]
fn every_function_is_declared_with_the_header_types() {
    let code = header_code();
    let mut header = BTreeMap::new();
    for decl in code.split("ATTN_API ").skip(1) {
        if decl.starts_with("__") {
            continue; // the export macro's own definitions
        }
        let decl = squash(&decl[..decl.find(';').unwrap()]);
        let open = decl.find('(').unwrap();
        let head = &decl[..open];
        let name_len = head
            .chars()
            .rev()
            .take_while(|c| c.is_alphanumeric() || *c == '_')
            .count();
        let name = head[head.len() - name_len..].to_string();
        let ret = head[..head.len() - name_len].trim().to_string();
        let params = decl[open + 1..decl.rfind(')').unwrap()].trim();
        let mut sig: Vec<String> = Vec::new();
        if params != "void" {
            sig = params
                .split(',')
                .map(|p| rust_type(&c_param_type(p)))
                .collect();
        }
        let ret = if ret == "void" {
            String::new()
        } else {
            rust_type(&ret)
        };
        header.insert(name, (sig, ret));
    }
    assert!(
        header.len() >= 45,
        "only {} functions found in the header",
        header.len()
    );

    let src = include_str!("../src/lib.rs");
    let block = &src[src.find("extern \"C\" {").unwrap()..];
    let block = &block[..block.find("\n}\n").unwrap()];
    let mut rust = BTreeMap::new();
    for decl in block.split("pub fn ").skip(1) {
        let decl = squash(&decl[..decl.find(';').unwrap()]);
        let open = decl.find('(').unwrap();
        let name = decl[..open].to_string();
        let close = decl.rfind(')').unwrap();
        let params: Vec<String> = decl[open + 1..close]
            .split(',')
            .map(|p| p.trim())
            .filter(|p| !p.is_empty())
            .map(|p| p.split_once(':').unwrap().1.trim().to_string())
            .collect();
        let ret = decl[close + 1..]
            .trim()
            .trim_start_matches("->")
            .trim()
            .to_string();
        rust.insert(name, (params, ret));
    }
    let mut bad = Vec::new();
    for (name, sig) in &header {
        match rust.get(name) {
            None => bad.push(format!("{}: not declared", name)),
            Some(r) if r != sig => {
                bad.push(format!("{}: header {:?}, attn-sys {:?}", name, sig, r))
            }
            _ => {}
        }
    }
    for name in rust.keys() {
        if !header.contains_key(name) {
            bad.push(format!("{}: declared but not in the header", name));
        }
    }
    assert!(bad.is_empty(), "{}", bad.join("\n"));
}

#[test]
fn init_sized_gives_the_library_defaults() {
    let cfg = attn_config::init_default().unwrap();
    assert_eq!(cfg.struct_size, size_of::<attn_config>());
    assert_eq!((cfg.embed_dim, cfg.num_heads, cfg.bias), (0, 1, 1));
    let mem = attn_memory_config::init_default().unwrap();
    assert_eq!((mem.batch, mem.capacity), (1, 0));
    // A struct below the first layout is refused.
    let mut mask = MaybeUninit::<attn_mask>::zeroed();
    let st = unsafe { attn_mask_init_sized(mask.as_mut_ptr(), ATTN_MASK_SIZE_0_1 - 1) };
    assert_eq!(st, ATTN_ERR_STRUCT_SIZE);
    // Statuses are i32 like the constants: comparing them type-checks.
    let v = unsafe { attn_version_number() };
    assert_eq!(v, ATTN_VERSION_NUMBER, "header and library versions differ");
}
