// SPDX-License-Identifier: MIT
//! The decoder attention features of a layer: rotary position embeddings,
//! per-projection biases, QK-norm and ALiBi. Soft-capping, sinks and
//! grouped-query attention are plain numbers or switches of
//! [`LayerBuilder`](crate::LayerBuilder).

use crate::error::{Error, Result};
use attn_sys as sys;
use attn_sys::Versioned;
use std::ptr;

/// The C value of a variant this crate does not name, as a newer libattn
/// reports it: the payload of [`RopePairing::Unknown`], [`QkNorm::Unknown`]
/// and [`Alibi::Unknown`].
///
/// Only this crate makes one, and only for a value that none of the enum's
/// other variants stands for: so an `Unknown` is never another name of a
/// known variant (`QkNorm::Unknown` never means [`QkNorm::Head`]), and two
/// values compare equal exactly when they mean the same to the library.
/// Read the number with [`raw`](Self::raw).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct UnknownValue(i32);

impl UnknownValue {
    /// Only for values that no variant of the enum names (`from_raw`).
    pub(crate) const fn new(v: i32) -> UnknownValue {
        UnknownValue(v)
    }

    /// The C value (of `ATTN_ROPE_*`, `ATTN_QK_NORM_*` or `ATTN_ALIBI_*`)
    /// the library reported.
    pub const fn raw(self) -> i32 {
        self.0
    }
}

/// How the dimensions of a head are paired for rotation
/// (`ATTN_ROPE_*`).
///
/// The library may add pairings: match with a wildcard arm. A pairing this
/// crate has no variant for, as a newer libattn reports it, is
/// [`Unknown`](Self::Unknown).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum RopePairing {
    /// Dimension k rotates with dimension k + rotary_dim / 2, by the angle
    /// of frequency k (Hugging Face's `rotate_half`: Llama, Qwen, Mistral,
    /// GPT-NeoX). The default.
    Halves,
    /// Dimensions 2k and 2k + 1 rotate together, by the angle of frequency
    /// k (GPT-J, GGUF files).
    Adjacent,
    /// A value of `ATTN_ROPE_*` that this crate has no variant for, as a
    /// newer libattn reports it. Only this crate makes one (see
    /// [`UnknownValue`]); given back to [`Rope::pairing`] it is passed to
    /// the library as it is, which refuses a value it does not know
    /// ([`Status::BAD_OPTION`](crate::Status::BAD_OPTION)).
    Unknown(UnknownValue),
}

impl Default for RopePairing {
    fn default() -> RopePairing {
        RopePairing::Halves
    }
}

impl RopePairing {
    /// The C value, `ATTN_ROPE_*` (an [`Unknown`](Self::Unknown)'s own
    /// number). Use this rather than `as i32`, which does not compile for an
    /// enum with data.
    pub const fn raw(self) -> i32 {
        match self {
            RopePairing::Halves => sys::ATTN_ROPE_HALVES,
            RopePairing::Adjacent => sys::ATTN_ROPE_ADJACENT,
            RopePairing::Unknown(v) => v.raw(),
        }
    }

    /// The pairing of a library value; [`Unknown`](Self::Unknown) for one
    /// this crate does not know.
    pub(crate) fn from_raw(v: i32) -> RopePairing {
        match v {
            sys::ATTN_ROPE_HALVES => RopePairing::Halves,
            sys::ATTN_ROPE_ADJACENT => RopePairing::Adjacent,
            _ => RopePairing::Unknown(UnknownValue::new(v)),
        }
    }
}

/// Rotary position embeddings (RoPE) of a layer, given to
/// [`LayerBuilder::rope`](crate::LayerBuilder::rope).
///
/// After the Q and K projections (with their biases and QK-norm), the first
/// `rotary_dim` dimensions of every query and key head at position p are
/// rotated in pairs: pair k by the angle `p * inv_freq[k]`, with
/// `inv_freq[k] = theta^(-2k / rotary_dim) / linear_factor` unless a table
/// is given, and both rotated values multiplied by `attention_factor`.
///
/// The values are only checked when the layer is built: an odd
/// `rotary_dim` or one above head_dim is an [`Error`] with
/// [`Status::BAD_SIZE`](crate::Status::BAD_SIZE); a `theta`,
/// `linear_factor` or `attention_factor` that is not positive and finite is
/// [`Status::BAD_OPTION`](crate::Status::BAD_OPTION); a table of the wrong
/// length is [`Status::BAD_SIZE`](crate::Status::BAD_SIZE), and one with a
/// value that is negative or not finite
/// [`Status::NOT_FINITE`](crate::Status::NOT_FINITE).
///
/// The settings are owned values: the library copies them (and the table)
/// when the layer is built, so a `Rope` can be dropped or reused afterwards.
///
/// ```
/// use attn::{Rope, RopePairing};
/// // GPT-J: 64 of each head's dimensions rotate, in adjacent pairs.
/// let rope = Rope::new().pairing(RopePairing::Adjacent).rotary_dim(64);
/// assert_eq!(rope.get_rotary_dim(), Some(64));
/// ```
#[derive(Debug, Clone, PartialEq)]
pub struct Rope {
    pairing: RopePairing,
    rotary_dim: Option<usize>,
    theta: f64,
    linear_factor: f64,
    inv_freq: Option<Vec<f32>>,
    attention_factor: f64,
}

impl Default for Rope {
    fn default() -> Rope {
        Rope::new()
    }
}

impl Rope {
    /// The library's defaults: [`RopePairing::Halves`], every dimension of
    /// the head rotated, theta 10000, no scaling, attention factor 1.
    pub fn new() -> Rope {
        Rope {
            pairing: RopePairing::Halves,
            rotary_dim: None,
            theta: 10000.0,
            linear_factor: 1.0,
            inv_freq: None,
            attention_factor: 1.0,
        }
    }

    /// How a head's dimensions are paired.
    pub fn pairing(mut self, pairing: RopePairing) -> Rope {
        self.pairing = pairing;
        self
    }

    /// Dimensions of each head that rotate: even and at most head_dim; the
    /// rest of the head is kept as it is (partial rotary embeddings, as
    /// Phi and GPT-NeoX's `rotary_pct`). Default: all of head_dim.
    pub fn rotary_dim(mut self, dims: usize) -> Rope {
        self.rotary_dim = Some(dims);
        self
    }

    /// Base of the frequencies: positive and finite (default 10000).
    /// Ignored when a frequency table is given.
    pub fn theta(mut self, theta: f64) -> Rope {
        self.theta = theta;
        self
    }

    /// Linear position scaling ("position interpolation"): positions are
    /// divided by `factor`, positive and finite (default 1). Ignored when a
    /// frequency table is given.
    pub fn linear_factor(mut self, factor: f64) -> Rope {
        self.linear_factor = factor;
        self
    }

    /// The `rotary_dim / 2` inverse frequencies (radians per position)
    /// themselves, finite and not negative, in place of theta and
    /// linear_factor: how frequency-changing scaling schemes (Llama 3's,
    /// YaRN's) are given (attn.h, `attn_rope_config`). Copied here.
    pub fn inv_freq(mut self, table: &[f32]) -> Rope {
        self.inv_freq = Some(table.to_vec());
        self
    }

    /// Factor on both rotated q and k (YaRN's attention scaling): positive
    /// and finite (default 1).
    pub fn attention_factor(mut self, factor: f64) -> Rope {
        self.attention_factor = factor;
        self
    }

    /// The pairing set.
    pub fn get_pairing(&self) -> RopePairing {
        self.pairing
    }

    /// The rotary dimensions set (`None`: all of head_dim).
    pub fn get_rotary_dim(&self) -> Option<usize> {
        self.rotary_dim
    }

    /// The C struct, pointing at this value's table: valid while `self` is
    /// borrowed. Checks the table's length against `head_dim` when that is
    /// known (`None`: the layer's sizes are wrong, and building fails on
    /// them before the table would be read).
    pub(crate) fn raw(&self, head_dim: Option<usize>) -> Result<sys::attn_rope_config> {
        let mut r = sys::attn_rope_config::init_default().map_err(Error::from_library)?;
        r.pairing = self.pairing.raw();
        r.rotary_dim = self
            .rotary_dim
            .map_or(0, |d| i64::try_from(d).unwrap_or(i64::MAX));
        r.theta = self.theta;
        r.linear_factor = self.linear_factor;
        r.attention_factor = self.attention_factor;
        if let (Some(table), Some(hd)) = (&self.inv_freq, head_dim) {
            // rotary_dim 0, like none, is the whole head (attn.h).
            let rd = match self.rotary_dim {
                Some(d) if d != 0 => d,
                _ => hd,
            };
            // An odd or too large rotary_dim is the library's to refuse,
            // with its own message; the table is not handed over then.
            if rd % 2 == 0 && rd <= hd {
                crate::error::expect_len(
                    table.len(),
                    &[rd / 2],
                    "rope inv_freq",
                    "[rotary_dim / 2]",
                )?;
                r.inv_freq = table.as_ptr();
            }
        }
        Ok(r)
    }
}

/// A layer's rotary embeddings as the library reports them after building
/// ([`LayerConfig::rope`](crate::LayerConfig::rope)): the settings of the
/// [`Rope`] it was built with, defaults resolved.
///
/// Read its fields; it is never built by hand. The library may report more
/// rope settings, so this struct may gain fields: it cannot be written as a
/// struct literal or destructured without `..` outside this crate.
///
/// ```
/// use attn::{Layer, Rope, RopePairing};
/// let layer = Layer::builder(64)
///     .num_heads(4)
///     .rope(Rope::new().pairing(RopePairing::Adjacent).theta(500000.0))
///     .build()?;
/// let rope = layer.config().rope.as_ref().expect("the layer has rope");
/// assert_eq!(rope.pairing, RopePairing::Adjacent);
/// assert_eq!(rope.rotary_dim, 16); // all of head_dim
/// assert_eq!(rope.theta, 500000.0);
/// assert_eq!(rope.inv_freq, None);
/// # Ok::<(), attn::Error>(())
/// ```
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct RopeConfig {
    /// How a head's dimensions are paired.
    pub pairing: RopePairing,
    /// Dimensions of each head that rotate (all of head_dim unless
    /// [`Rope::rotary_dim`] said fewer).
    pub rotary_dim: usize,
    /// Base of the frequencies (not used when `inv_freq` is given).
    pub theta: f64,
    /// Linear position scaling (not used when `inv_freq` is given).
    pub linear_factor: f64,
    /// Factor on both rotated q and k.
    pub attention_factor: f64,
    /// The `rotary_dim / 2` inverse frequencies given with
    /// [`Rope::inv_freq`], copied from the layer; `None` when the
    /// frequencies come from `theta` and `linear_factor`.
    pub inv_freq: Option<Vec<f32>>,
}

impl RopeConfig {
    /// The settings the library reported in `r`, for a layer whose heads
    /// have `head_dim` dimensions (the rotary_dim that 0 stands for).
    ///
    /// # Safety
    /// `r.inv_freq` must be NULL or point at `rotary_dim / 2` floats.
    pub(crate) unsafe fn from_raw(r: &sys::attn_rope_config, head_dim: i64) -> RopeConfig {
        // Every field read here is in the struct's first layout
        // (ATTN_ROPE_CONFIG_SIZE_0_2), which any library fills; a field
        // added later must be read only when r.struct_size covers it.
        let dims = if r.rotary_dim > 0 {
            r.rotary_dim
        } else {
            head_dim
        };
        let dims = usize::try_from(dims).unwrap_or(0);
        let inv_freq = if r.inv_freq.is_null() {
            None
        } else {
            // SAFETY: the caller's promise.
            Some(std::slice::from_raw_parts(r.inv_freq, dims / 2).to_vec())
        };
        RopeConfig {
            pairing: RopePairing::from_raw(r.pairing),
            rotary_dim: dims,
            theta: r.theta,
            linear_factor: r.linear_factor,
            attention_factor: r.attention_factor,
            inv_freq,
        }
    }
}

/// QK-norm: an RMSNorm of the queries and keys after their projection (and
/// bias), before the rotation (`ATTN_QK_NORM_*`). Its weights are
/// [`Weight::QNorm`](crate::Weight::QNorm) and
/// [`Weight::KNorm`](crate::Weight::KNorm), ones until set.
///
/// The library may add modes: match with a wildcard arm. A mode this crate
/// has no variant for, as a newer libattn reports it, is
/// [`Unknown`](Self::Unknown).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum QkNorm {
    /// No norm (default).
    None,
    /// Each head's q and k over its head_dim values, with weights of
    /// head_dim values shared by the heads (Qwen3, Gemma 3).
    Head,
    /// A token's whole projected q (weights `[E]`) and k (weights `[KV]`),
    /// before the split into heads (OLMo 2).
    All,
    /// A value of `ATTN_QK_NORM_*` that this crate has no variant for, as a
    /// newer libattn reports it. Only this crate makes one (see
    /// [`UnknownValue`]); given back to
    /// [`LayerBuilder::qk_norm`](crate::LayerBuilder::qk_norm) it is passed
    /// to the library as it is, which refuses a value it does not know
    /// ([`Status::BAD_OPTION`](crate::Status::BAD_OPTION)).
    Unknown(UnknownValue),
}

impl Default for QkNorm {
    fn default() -> QkNorm {
        QkNorm::None
    }
}

impl QkNorm {
    /// The C value, `ATTN_QK_NORM_*` (an [`Unknown`](Self::Unknown)'s own
    /// number). Use this rather than `as i32`, which does not compile for an
    /// enum with data.
    pub const fn raw(self) -> i32 {
        match self {
            QkNorm::None => sys::ATTN_QK_NORM_NONE,
            QkNorm::Head => sys::ATTN_QK_NORM_HEAD,
            QkNorm::All => sys::ATTN_QK_NORM_ALL,
            QkNorm::Unknown(v) => v.raw(),
        }
    }

    /// The mode of a library value; [`Unknown`](Self::Unknown) for one this
    /// crate does not know.
    pub(crate) fn from_raw(v: i32) -> QkNorm {
        match v {
            sys::ATTN_QK_NORM_NONE => QkNorm::None,
            sys::ATTN_QK_NORM_HEAD => QkNorm::Head,
            sys::ATTN_QK_NORM_ALL => QkNorm::All,
            _ => QkNorm::Unknown(UnknownValue::new(v)),
        }
    }
}

/// ALiBi: a linear bias by position added to each head's scaled scores
/// (after soft-capping), from the positions of query and key
/// (`ATTN_ALIBI_*`).
///
/// The library may add forms: match with a wildcard arm. A form this crate
/// has no variant for, as a newer libattn reports it, is
/// [`Unknown`](Self::Unknown).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Alibi {
    /// No ALiBi (default).
    None,
    /// `slope_h * (p_key - p_query)` (BLOOM, MPT), which equals
    /// `-slope_h * |p_query - p_key|` for every key a causal query sees.
    Causal,
    /// `-slope_h * |p_query - p_key|` (bidirectional).
    Symmetric,
    /// A value of `ATTN_ALIBI_*` that this crate has no variant for, as a
    /// newer libattn reports it. Only this crate makes one (see
    /// [`UnknownValue`]); given back to
    /// [`LayerBuilder::alibi`](crate::LayerBuilder::alibi) it is passed to
    /// the library as it is, which refuses a value it does not know
    /// ([`Status::BAD_OPTION`](crate::Status::BAD_OPTION)).
    Unknown(UnknownValue),
}

impl Default for Alibi {
    fn default() -> Alibi {
        Alibi::None
    }
}

impl Alibi {
    /// The C value, `ATTN_ALIBI_*` (an [`Unknown`](Self::Unknown)'s own
    /// number). Use this rather than `as i32`, which does not compile for an
    /// enum with data.
    pub const fn raw(self) -> i32 {
        match self {
            Alibi::None => sys::ATTN_ALIBI_NONE,
            Alibi::Causal => sys::ATTN_ALIBI_CAUSAL,
            Alibi::Symmetric => sys::ATTN_ALIBI_SYMMETRIC,
            Alibi::Unknown(v) => v.raw(),
        }
    }

    /// The form of a library value; [`Unknown`](Self::Unknown) for one
    /// this crate does not know.
    pub(crate) fn from_raw(v: i32) -> Alibi {
        match v {
            sys::ATTN_ALIBI_NONE => Alibi::None,
            sys::ATTN_ALIBI_CAUSAL => Alibi::Causal,
            sys::ATTN_ALIBI_SYMMETRIC => Alibi::Symmetric,
            _ => Alibi::Unknown(UnknownValue::new(v)),
        }
    }
}

/// Which projections have a bias (`attn_config.bias_parts`), for
/// [`LayerBuilder::bias_parts`](crate::LayerBuilder::bias_parts).
///
/// Start from a constant and change parts with the `with_*` methods; read
/// the fields. The library may give more projections a bias choice, so
/// this struct may gain fields: it cannot be written as a struct literal
/// outside this crate.
///
/// ```
/// use attn::BiasParts;
/// // Qwen2: q, k and v have biases, the output projection has none.
/// let parts = BiasParts::QKV;
/// assert!(parts.v && !parts.o);
/// // Any other set, built from a constant.
/// let qv = BiasParts::NONE.with_q(true).with_v(true);
/// assert!(qv.q && !qv.k && qv.v && !qv.o);
/// assert_eq!(BiasParts::ALL.with_o(false), BiasParts::QKV);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
#[non_exhaustive]
pub struct BiasParts {
    /// Query projection bias ([`Weight::QBias`](crate::Weight::QBias)).
    pub q: bool,
    /// Key projection bias ([`Weight::KBias`](crate::Weight::KBias)).
    pub k: bool,
    /// Value projection bias ([`Weight::VBias`](crate::Weight::VBias)).
    pub v: bool,
    /// Output projection bias ([`Weight::OutBias`](crate::Weight::OutBias)).
    pub o: bool,
    /// `ATTN_BIAS_*` bits this crate has no field for, as a newer libattn
    /// reports them; 0 otherwise. See [`other_bits`](Self::other_bits).
    other: i32,
}

/// The `ATTN_BIAS_*` bits that `BiasParts` has fields for.
const KNOWN_BITS: i32 = sys::ATTN_BIAS_Q | sys::ATTN_BIAS_K | sys::ATTN_BIAS_V | sys::ATTN_BIAS_O;

impl BiasParts {
    /// No bias at all.
    pub const NONE: BiasParts = BiasParts {
        q: false,
        k: false,
        v: false,
        o: false,
        other: 0,
    };
    /// Every projection (torch's `bias=True`).
    pub const ALL: BiasParts = BiasParts {
        q: true,
        k: true,
        v: true,
        o: true,
        other: 0,
    };
    /// The q, k and v projections, not the output (Qwen2).
    pub const QKV: BiasParts = BiasParts {
        q: true,
        k: true,
        v: true,
        o: false,
        other: 0,
    };

    /// These parts, with or without the query projection's bias.
    pub const fn with_q(self, on: bool) -> BiasParts {
        BiasParts { q: on, ..self }
    }

    /// These parts, with or without the key projection's bias.
    pub const fn with_k(self, on: bool) -> BiasParts {
        BiasParts { k: on, ..self }
    }

    /// These parts, with or without the value projection's bias.
    pub const fn with_v(self, on: bool) -> BiasParts {
        BiasParts { v: on, ..self }
    }

    /// These parts, with or without the output projection's bias.
    pub const fn with_o(self, on: bool) -> BiasParts {
        BiasParts { o: on, ..self }
    }

    /// Bits of `attn_config.bias_parts` that a newer libattn reported and
    /// this crate has no field for (0 for every value built here). They are
    /// kept, so such parts compare unequal to the constants and go back to
    /// the library unchanged when given to
    /// [`LayerBuilder::bias_parts`](crate::LayerBuilder::bias_parts).
    pub const fn other_bits(self) -> i32 {
        self.other
    }

    pub(crate) fn bits(self) -> i32 {
        let mut b = self.other;
        if self.q {
            b |= sys::ATTN_BIAS_Q;
        }
        if self.k {
            b |= sys::ATTN_BIAS_K;
        }
        if self.v {
            b |= sys::ATTN_BIAS_V;
        }
        if self.o {
            b |= sys::ATTN_BIAS_O;
        }
        b
    }

    /// The parts of library bits; bits this crate does not know are kept in
    /// `other`.
    pub(crate) fn from_bits(b: i32) -> BiasParts {
        BiasParts {
            q: b & sys::ATTN_BIAS_Q != 0,
            k: b & sys::ATTN_BIAS_K != 0,
            v: b & sys::ATTN_BIAS_V != 0,
            o: b & sys::ATTN_BIAS_O != 0,
            other: b & !KNOWN_BITS,
        }
    }
}

/// The C rope pointer of a layer config: `raw` or NULL.
pub(crate) fn rope_ptr(raw: &Option<sys::attn_rope_config>) -> *const sys::attn_rope_config {
    raw.as_ref().map_or(ptr::null(), |r| r as *const _)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Values around and far from the known ones, as a newer (or broken)
    /// libattn might report them.
    const ODD_VALUES: [i32; 6] = [-1, 3, 4, 99, i32::MIN, i32::MAX];

    #[test]
    fn known_values_map_to_their_variants() {
        assert_eq!(
            RopePairing::from_raw(sys::ATTN_ROPE_HALVES),
            RopePairing::Halves
        );
        assert_eq!(
            RopePairing::from_raw(sys::ATTN_ROPE_ADJACENT),
            RopePairing::Adjacent
        );
        assert_eq!(QkNorm::from_raw(sys::ATTN_QK_NORM_NONE), QkNorm::None);
        assert_eq!(QkNorm::from_raw(sys::ATTN_QK_NORM_HEAD), QkNorm::Head);
        assert_eq!(QkNorm::from_raw(sys::ATTN_QK_NORM_ALL), QkNorm::All);
        assert_eq!(Alibi::from_raw(sys::ATTN_ALIBI_NONE), Alibi::None);
        assert_eq!(Alibi::from_raw(sys::ATTN_ALIBI_CAUSAL), Alibi::Causal);
        assert_eq!(Alibi::from_raw(sys::ATTN_ALIBI_SYMMETRIC), Alibi::Symmetric);
    }

    #[test]
    fn unknown_values_are_kept_and_go_back_unchanged() {
        for v in ODD_VALUES {
            let p = RopePairing::from_raw(v);
            assert_eq!(p, RopePairing::Unknown(UnknownValue::new(v)));
            assert_eq!(p.raw(), v);
            let n = QkNorm::from_raw(v);
            assert_eq!(n, QkNorm::Unknown(UnknownValue::new(v)));
            assert_eq!(n.raw(), v);
            let a = Alibi::from_raw(v);
            assert_eq!(a, Alibi::Unknown(UnknownValue::new(v)));
            assert_eq!(a.raw(), v);
        }
    }

    #[test]
    fn unknown_bias_bits_are_kept_apart_from_the_fields() {
        let b = BiasParts::from_bits(sys::ATTN_BIAS_Q | sys::ATTN_BIAS_V | 16 | 64);
        assert!(b.q && !b.k && b.v && !b.o);
        assert_eq!(b.other_bits(), 16 | 64);
        assert_ne!(b, BiasParts::NONE.with_q(true).with_v(true));
        assert_eq!(b.bits(), sys::ATTN_BIAS_Q | sys::ATTN_BIAS_V | 16 | 64);

        let all = BiasParts::from_bits(-1);
        assert!(all.q && all.k && all.v && all.o);
        assert_eq!(all.other_bits(), !KNOWN_BITS);
        assert_eq!(all.bits(), -1);

        for bits in 0..=sys::ATTN_BIAS_ALL {
            let b = BiasParts::from_bits(bits);
            assert_eq!(b.other_bits(), 0);
            assert_eq!(b.bits(), bits);
        }
    }

    #[test]
    fn with_methods_build_every_set_of_parts() {
        assert_eq!(BiasParts::default(), BiasParts::NONE);
        assert_eq!(
            BiasParts::NONE
                .with_q(true)
                .with_k(true)
                .with_v(true)
                .with_o(true),
            BiasParts::ALL
        );
        assert_eq!(BiasParts::ALL.with_o(false), BiasParts::QKV);
        for bits in 0..=sys::ATTN_BIAS_ALL {
            let b = BiasParts::NONE
                .with_q(bits & sys::ATTN_BIAS_Q != 0)
                .with_k(bits & sys::ATTN_BIAS_K != 0)
                .with_v(bits & sys::ATTN_BIAS_V != 0)
                .with_o(bits & sys::ATTN_BIAS_O != 0);
            assert_eq!(b, BiasParts::from_bits(bits));
        }
    }
}
