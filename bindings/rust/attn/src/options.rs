// SPDX-License-Identifier: MIT
//! Per-call options: attention weights output, threads, scratch, runtime,
//! attention core.

use crate::error::{Error, Result, Status};
use crate::runtime::Runtime;
use attn_sys as sys;
use attn_sys::Versioned;
use std::ptr;

/// Layout of the attention weights a call writes (`ATTN_WEIGHTS_*`).
///
/// The library may add layouts: match with a wildcard arm.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum WeightsMode {
    /// Per head: `[B, H, Lq, Lk]`.
    PerHead,
    /// Averaged over heads: `[B, Lq, Lk]` (torch's default).
    Average,
}

impl WeightsMode {
    /// The C value, `ATTN_WEIGHTS_*`. Use this rather than `as i32`, which
    /// stops compiling if an enum gains a variant with data.
    pub const fn raw(self) -> i32 {
        match self {
            WeightsMode::PerHead => sys::ATTN_WEIGHTS_PER_HEAD,
            WeightsMode::Average => sys::ATTN_WEIGHTS_AVERAGE,
        }
    }
}

/// The attention core a call runs on (`ATTN_CORE_*`, `attn_options.core`).
/// The cores agree within float rounding, not bit for bit; each alone gives
/// the same bits on any thread count.
///
/// The library may add cores: match with a wildcard arm.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Core {
    /// The library chooses (default): the packed core where the CPU has it,
    /// the call has 8 query rows or more and the layer no score features;
    /// otherwise the BLAS core (short decoding steps: the streaming kernel).
    Auto,
    /// Both products of every tile through cblas_sgemm: any CPU, any layer.
    Blas,
    /// The packed AVX2/FMA micro-kernel core. Where the CPU lacks it (or
    /// `ATTN_SIMD=portable` caps the library), or the layer has ALiBi,
    /// soft-capping or sinks, calls fail with [`Status::UNSUPPORTED`].
    Packed,
}

impl Default for Core {
    fn default() -> Core {
        Core::Auto
    }
}

impl Core {
    /// Whether this CPU and library can run the core
    /// (`attn_core_available`).
    pub fn available(self) -> bool {
        // SAFETY: takes and returns plain integers.
        unsafe { sys::attn_core_available(self.raw()) != 0 }
    }

    /// The C value, `ATTN_CORE_*`. Use this rather than `as i32`, which
    /// stops compiling if an enum gains a variant with data.
    pub const fn raw(self) -> i32 {
        match self {
            Core::Auto => sys::ATTN_CORE_AUTO,
            Core::Blas => sys::ATTN_CORE_BLAS,
            Core::Packed => sys::ATTN_CORE_PACKED,
        }
    }
}

/// Scratch memory reused from call to call: a call given one through
/// [`Options::scratch`] grows it to what it needs (asked from the library
/// first) and then allocates nothing. One call at a time (it is borrowed
/// mutably for the call).
#[derive(Debug, Default)]
pub struct Scratch {
    buf: Vec<u8>,
}

impl Scratch {
    /// Empty scratch; the first call sizes it.
    pub fn new() -> Scratch {
        Scratch { buf: Vec::new() }
    }

    /// Scratch of `bytes` bytes (e.g. from
    /// [`Layer::forward_scratch_size`](crate::Layer::forward_scratch_size)).
    pub fn with_size(bytes: usize) -> Scratch {
        Scratch {
            buf: vec![0; bytes],
        }
    }

    /// Its size in bytes.
    pub fn len(&self) -> usize {
        self.buf.len()
    }

    /// Whether it has no bytes yet.
    pub fn is_empty(&self) -> bool {
        self.buf.is_empty()
    }
}

/// Optional settings of one call. Build with the methods, pass as
/// `Some(&mut opts)`:
///
/// ```no_run
/// # fn f(layer: &attn::Layer, x: &[f32], y: &mut [f32]) -> attn::Result<()> {
/// let mut weights = vec![0.0f32; 1 * 5 * 5];
/// let mut opts = attn::Options::new().attn_weights(&mut weights, attn::WeightsMode::Average);
/// layer.self_forward(1, 5, x, None, Some(&mut opts), y)?;
/// # Ok(()) }
/// ```
#[derive(Debug, Default)]
pub struct Options<'a> {
    weights: Option<(&'a mut [f32], WeightsMode)>,
    num_threads: usize,
    scratch: Option<&'a mut Scratch>,
    runtime: Option<&'a Runtime>,
    core: Core,
    start: Option<&'a [i64]>,
    q_positions: Option<&'a [i64]>,
    k_positions: Option<&'a [i64]>,
}

impl<'a> Options<'a> {
    /// Defaults: no attention weights, the layer's thread count, scratch
    /// allocated by the library, the default runtime, [`Core::Auto`].
    pub fn new() -> Options<'a> {
        Options::default()
    }

    /// Writes the attention probabilities into `out`, whose length must be
    /// that of the mode's layout (checked at the call).
    pub fn attn_weights(mut self, out: &'a mut [f32], mode: WeightsMode) -> Options<'a> {
        self.weights = Some((out, mode));
        self
    }

    /// Threads for the call (0 = the layer's setting, 1 = the calling
    /// thread only). Results do not depend on it.
    pub fn threads(mut self, n: usize) -> Options<'a> {
        self.num_threads = n;
        self
    }

    /// Scratch memory to reuse (grown to what the call needs).
    pub fn scratch(mut self, scratch: &'a mut Scratch) -> Options<'a> {
        self.scratch = Some(scratch);
        self
    }

    /// The runtime whose threads and BLAS policy the call uses.
    pub fn runtime(mut self, rt: &'a Runtime) -> Options<'a> {
        self.runtime = Some(rt);
        self
    }

    /// The attention core of the call (default [`Core::Auto`]).
    pub fn core(mut self, core: Core) -> Options<'a> {
        self.core = core;
        self
    }

    /// Position of each batch row's first token, `[batch]` (default 0 for
    /// every row), for a layer with rotary embeddings or ALiBi (other
    /// layers ignore positions). In a forward call query i and key j of
    /// row b are then at `start[b] + i` and `start[b] + j` (unless given
    /// one by one); in a [`decode_step`](crate::Layer::decode_step) each
    /// new token is at its position in the cache row plus `start[b]`, so
    /// pass the same values at every step of a row that begins
    /// mid-sequence. Cross steps and memories take no positions and
    /// ignore these, as the library does (a layer with rotary embeddings
    /// or ALiBi cannot have a memory).
    ///
    /// Borrowed for the call. The length is checked at the call
    /// ([`Status::BAD_SIZE`]); a position below 0 or beyond
    /// [`sys::ATTN_MAX_POSITION`] is [`Status::BAD_OPTION`].
    pub fn start_positions(mut self, start: &'a [i64]) -> Options<'a> {
        self.start = Some(start);
        self
    }

    /// Position of each query, `[batch, len_q]` (Hugging Face's
    /// `position_ids`, e.g. for left-padded rows), for forward calls of a
    /// layer with rotary embeddings or ALiBi. When len_q = len_k and no
    /// [`key_positions`](Self::key_positions) are given, the keys take the
    /// same positions. Checked in forward calls as
    /// [`start_positions`](Self::start_positions). Decoding steps take
    /// positions from their cache and never read these: the library
    /// refuses them for a layer with rotary embeddings or ALiBi
    /// ([`Status::BAD_OPTION`]) and other layers ignore them, as they do
    /// all positions.
    pub fn query_positions(mut self, positions: &'a [i64]) -> Options<'a> {
        self.q_positions = Some(positions);
        self
    }

    /// Position of each key, `[batch, len_k]`, for forward calls of a layer
    /// with rotary embeddings or ALiBi; as
    /// [`query_positions`](Self::query_positions).
    pub fn key_positions(mut self, positions: &'a [i64]) -> Options<'a> {
        self.k_positions = Some(positions);
        self
    }

    /// The C positions of a forward call (`step` false) or of a decoding
    /// step (`step` true): lengths checked, `None` when no position was
    /// given. The result points into the borrowed slices, valid for 'a.
    ///
    /// A step reads only `start`; query and key positions are handed over
    /// unchecked for the library to decide on (it refuses them for a layer
    /// with rotary embeddings or ALiBi and ignores them otherwise, without
    /// reading an element).
    pub(crate) fn raw_positions(
        &self,
        batch: usize,
        len_q: usize,
        len_k: usize,
        step: bool,
    ) -> Result<Option<sys::attn_positions>> {
        if self.start.is_none() && self.q_positions.is_none() && self.k_positions.is_none() {
            return Ok(None);
        }
        let mut p = sys::attn_positions::init_default().map_err(Error::from_library)?;
        if let Some(s) = self.start {
            crate::error::expect_len(s.len(), &[batch], "start positions", "[batch]")?;
            p.start = s.as_ptr();
        }
        for (given, field, len, what, shape) in [
            (
                self.q_positions,
                &mut p.q_positions,
                len_q,
                "query positions",
                "[batch, len_q]",
            ),
            (
                self.k_positions,
                &mut p.k_positions,
                len_k,
                "key positions",
                "[batch, len_k]",
            ),
        ] {
            if let Some(v) = given {
                if !step {
                    crate::error::expect_len(v.len(), &[batch, len], what, shape)?;
                }
                *field = v.as_ptr();
            }
        }
        Ok(Some(p))
    }

    /// Checks the weights output against the element count of its layout.
    pub(crate) fn check_weights(
        &self,
        per_head: &[usize],
        average: &[usize],
        shape: &str,
    ) -> Result<()> {
        if let Some((w, mode)) = &self.weights {
            let (dims, name) = match mode {
                WeightsMode::PerHead => (per_head, "per-head"),
                WeightsMode::Average => (average, "averaged"),
            };
            let what = format!("attn_weights ({})", name);
            crate::error::expect_len(w.len(), dims, &what, shape)?;
        }
        Ok(())
    }

    /// The C struct without scratch (for the scratch size queries).
    pub(crate) fn raw(&mut self) -> Result<sys::attn_options> {
        let mut o = sys::attn_options::init_default().map_err(Error::from_library)?;
        if let Some((w, mode)) = &mut self.weights {
            o.attn_weights = w.as_mut_ptr();
            o.weights_mode = mode.raw();
        }
        o.num_threads = i32::try_from(self.num_threads).map_err(|_| {
            Error::new(
                Status::BAD_OPTION,
                format!("{} threads is too many", self.num_threads),
            )
        })?;
        o.runtime = self.runtime.map_or(ptr::null_mut(), |r| r.as_ptr());
        o.core = self.core.raw();
        Ok(o)
    }

    /// The C struct for a call: `size` tells the scratch bytes the call
    /// needs for these options, and is asked only when scratch was given.
    pub(crate) fn prepare(
        &mut self,
        size: impl FnOnce(&sys::attn_options) -> Result<usize>,
    ) -> Result<sys::attn_options> {
        let mut o = self.raw()?;
        if let Some(s) = &mut self.scratch {
            let need = size(&o)?;
            if s.buf.len() < need {
                s.buf.resize(need, 0);
            }
            o.scratch = s.buf.as_mut_ptr().cast();
            o.scratch_size = s.buf.len();
        }
        Ok(o)
    }
}

/// The C options of a call: `opts` prepared, or the defaults.
pub(crate) fn prepare(
    opts: Option<&mut Options<'_>>,
    size: impl FnOnce(&sys::attn_options) -> Result<usize>,
) -> Result<sys::attn_options> {
    match opts {
        Some(o) => o.prepare(size),
        None => sys::attn_options::init_default().map_err(Error::from_library),
    }
}
