// SPDX-License-Identifier: MIT
//! Multi-head self- and cross-attention layers from libattn, with
//! torch.nn.MultiheadAttention's computation and weight layout.
//!
//! ```no_run
//! use attn::{Causal, Layer, Mask};
//!
//! fn main() -> Result<(), Box<dyn std::error::Error>> {
//!     let mut layer = Layer::builder(16).num_heads(4).build()?;
//!     layer.init_weights(42)?; // or load_safetensors / set_weight
//!     let (batch, len) = (2, 5);
//!     let x = vec![0.5f32; batch * len * 16];
//!     let mut y = vec![0.0f32; x.len()];
//!     let mask = Mask::new().causal(Causal::TopLeft);
//!     layer.self_forward(batch, len, &x, Some(&mask), None, &mut y)?;
//!     Ok(())
//! }
//! ```
//!
//! Tensors are row-major `f32` slices, batch first (`[B, L, E]`). Every call
//! checks each slice's length against the sizes it is given before calling
//! the library, so a wrong length is an [`Error`], never undefined
//! behaviour. Errors carry the library's status and its message.
//!
//! Threads: a [`Layer`] is `Send + Sync`; forward calls and steps take
//! `&self` and may run from many threads at once, while changing weights
//! takes `&mut self`. Caches and memories borrow their layer. Each call runs
//! on a [`Runtime`] (the library's default one unless
//! [`Options::runtime`] names another).
//!
//! Across versions: libattn's enums and structs only grow, so this crate's
//! enums and the structs the library reports ([`LayerConfig`],
//! [`RopeConfig`], [`BiasParts`]) are `#[non_exhaustive]`. Match them with a
//! wildcard arm, build values through builders, constructors and constants
//! ([`BiasShape::strided`]), and read fields. A value a newer libattn
//! reports that this crate does not know is kept, never a panic: an
//! `Unknown` variant ([`QkNorm::Unknown`], [`Alibi::Unknown`],
//! [`RopePairing::Unknown`]) holding an [`UnknownValue`] that only this
//! crate makes, or [`BiasParts::other_bits`]. An enum's C value is its
//! `raw()` (e.g. [`Causal::raw`]).
//!
//! Linking: the `attn-sys` crate finds libattn with `pkg-config` (module
//! `attn`) or in `ATTN_LIB_DIR`; see its build script.

mod decode;
mod error;
mod features;
mod layer;
mod mask;
mod options;
mod runtime;

pub use attn_sys as sys;
pub use decode::{KvCache, Memory};
pub use error::{Error, Result, Status};
pub use features::{Alibi, BiasParts, QkNorm, Rope, RopeConfig, RopePairing, UnknownValue};
pub use layer::{Layer, LayerBuilder, LayerConfig, Naming, Weight};
pub use mask::{BiasShape, Causal, DecodeMask, EmptyRows, Mask};
pub use options::{Core, Options, Scratch, WeightsMode};
pub use runtime::{cpu_count, default_runtime_threads, trim_default_runtime, BlasPolicy, Runtime};

use std::ffi::CStr;

/// The examples of `bindings/rust/README.md`, compiled (and, unless marked
/// `no_run`, run) as doc tests so that they stay correct.
#[cfg(doctest)]
#[doc = include_str!("../../README.md")]
pub struct ReadmeExamples;

/// Doc tests that must not compile: what the crate's promises across
/// versions forbid a program to write.
#[cfg(doctest)]
mod compile_fail;

/// Version of the libattn actually loaded ("0.1.0").
pub fn library_version() -> &'static str {
    // SAFETY: static storage, NUL-terminated.
    unsafe { CStr::from_ptr(sys::attn_version_string()) }
        .to_str()
        .unwrap_or("")
}

/// Version number of the libattn loaded (MAJOR*10000 + MINOR*100 + PATCH).
pub fn library_version_number() -> u32 {
    // SAFETY: no arguments.
    unsafe { sys::attn_version_number() }
}
