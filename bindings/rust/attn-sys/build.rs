// SPDX-License-Identifier: MIT
//! Finds libattn for linking, with the standard library only.
//!
//! In order:
//! 1. `ATTN_LIB_DIR`: the directory holding libattn.so (an install's lib/ or
//!    a CMake build directory). The header is then looked up in
//!    `ATTN_INCLUDE_DIR`, else `ATTN_LIB_DIR/../include`, else this
//!    repository's `include/`.
//! 2. The `pkg-config` command (`$PKG_CONFIG`, default `pkg-config`) and its
//!    module `attn` (set `PKG_CONFIG_PATH` for an install outside the system
//!    directories).
//! 3. Otherwise `-lattn` alone, for a library in the linker's default path.
//!
//! `ATTN_STATIC=1` links libattn.a instead, through `pkg-config --static`
//! (which names the BLAS and the other libraries it needs).
//!
//! The header's directory is passed on as `DEP_ATTN_INCLUDE` to crates that
//! depend on this one and as `ATTN_SYS_INCLUDE_DIR` to this crate's tests,
//! which compile a small C program against it to check the declarations.

use std::env;
use std::path::{Path, PathBuf};
use std::process::Command;

fn main() {
    for var in [
        "ATTN_LIB_DIR",
        "ATTN_INCLUDE_DIR",
        "ATTN_STATIC",
        "PKG_CONFIG",
        "PKG_CONFIG_PATH",
        "PKG_CONFIG_LIBDIR",
        "PKG_CONFIG_SYSROOT_DIR",
    ] {
        println!("cargo:rerun-if-env-changed={}", var);
    }
    println!("cargo:rerun-if-changed=build.rs");
    let statik = env::var("ATTN_STATIC").map(|v| v == "1").unwrap_or(false);

    let include = if let Some(dir) = env::var_os("ATTN_LIB_DIR") {
        let dir = PathBuf::from(dir);
        println!("cargo:rustc-link-search=native={}", dir.display());
        if statik {
            panic!(
                "libattn: ATTN_STATIC=1 needs pkg-config (for the BLAS and \
                 the other libraries a static libattn needs); unset \
                 ATTN_LIB_DIR and set PKG_CONFIG_PATH instead"
            );
        }
        println!("cargo:rustc-link-lib=dylib=attn");
        header_dir_near(&dir)
    } else if let Some(include) = probe_pkg_config(statik) {
        Some(include)
    } else {
        println!(
            "cargo:warning=libattn: neither ATTN_LIB_DIR nor pkg-config's \
             module attn found; linking -lattn from the default path"
        );
        println!("cargo:rustc-link-lib=attn");
        env::var_os("ATTN_INCLUDE_DIR")
            .map(PathBuf::from)
            .or_else(|| Some(PathBuf::from("/usr/include")))
    };
    if let Some(dir) = include {
        println!("cargo:include={}", dir.display());
        println!("cargo:rustc-env=ATTN_SYS_INCLUDE_DIR={}", dir.display());
    }
}

/// The directory of attn/attn.h for a library found in `lib_dir`.
fn header_dir_near(lib_dir: &Path) -> Option<PathBuf> {
    if let Some(dir) = env::var_os("ATTN_INCLUDE_DIR") {
        return Some(PathBuf::from(dir));
    }
    let manifest = PathBuf::from(env::var_os("CARGO_MANIFEST_DIR")?);
    let candidates = [
        lib_dir.join("..").join("include"),
        // This crate inside the libattn repository: bindings/rust/attn-sys.
        manifest.join("..").join("..").join("..").join("include"),
    ];
    candidates
        .iter()
        .find(|d| d.join("attn").join("attn.h").is_file())
        .cloned()
}

/// Asks pkg-config for module attn; prints the link flags and returns the
/// include directory, or None when pkg-config or the module is missing.
fn probe_pkg_config(statik: bool) -> Option<PathBuf> {
    let pkg_config = env::var("PKG_CONFIG").unwrap_or_else(|_| "pkg-config".into());
    let mut args = vec!["--libs", "--cflags"];
    if statik {
        args.push("--static");
    }
    args.push("attn");
    let out = Command::new(&pkg_config).args(&args).output().ok()?;
    if !out.status.success() {
        let err = String::from_utf8_lossy(&out.stderr);
        println!(
            "cargo:warning=libattn: `{} {}` failed: {}",
            pkg_config,
            args.join(" "),
            err.trim()
        );
        return None;
    }
    let flags = String::from_utf8(out.stdout).ok()?;
    let mut include = None;
    let mut first_lib = true;
    for flag in flags.split_whitespace() {
        if let Some(dir) = flag.strip_prefix("-L") {
            println!("cargo:rustc-link-search=native={}", dir);
        } else if let Some(lib) = flag.strip_prefix("-l") {
            // libattn itself comes first in pkg-config's output.
            if statik && first_lib && lib == "attn" {
                println!("cargo:rustc-link-lib=static=attn");
            } else {
                println!("cargo:rustc-link-lib={}", lib);
            }
            first_lib = false;
        } else if let Some(dir) = flag.strip_prefix("-I") {
            if include.is_none() {
                include = Some(PathBuf::from(dir));
            }
        }
    }
    include.or_else(|| Some(PathBuf::from("/usr/include")))
}
