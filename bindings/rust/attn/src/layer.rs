// SPDX-License-Identifier: MIT
//! Layers: configuration, weights, weight files and the forward pass.

use crate::error::{check, expect_len, to_i64, Error, Result, Status};
use crate::features::{self, Alibi, BiasParts, QkNorm, Rope, RopeConfig};
use crate::mask::Mask;
use crate::options::{self, Options};
use attn_sys as sys;
use attn_sys::Versioned;
use std::ffi::CString;
use std::path::Path;
use std::ptr::{self, NonNull};

/// A layer's weights, in torch.nn.MultiheadAttention's layout: matrices
/// `[out_features, in_features]` row-major, applied as `y = x W^T + b`.
/// KV = num_kv_heads * head_dim (= E without grouped-query attention).
///
/// The library may add weight kinds: match with a wildcard arm.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Weight {
    /// Packed `in_proj_weight [E + 2 KV, E]` (only when kdim = vdim = E).
    InProj,
    /// Packed `in_proj_bias [E + 2 KV]`.
    InProjBias,
    /// `q_proj_weight [E, E]`.
    Q,
    /// `k_proj_weight [KV, kdim]`.
    K,
    /// `v_proj_weight [KV, vdim]`.
    V,
    /// `out_proj.weight [E, E]`.
    Out,
    /// `out_proj.bias [E]`.
    OutBias,
    /// Query part of in_proj_bias `[E]`.
    QBias,
    /// Key part of in_proj_bias `[KV]`.
    KBias,
    /// Value part of in_proj_bias `[KV]`.
    VBias,
    /// QK-norm weights of the queries (`q_norm.weight`): `[head_dim]` with
    /// [`QkNorm::Head`], `[E]` with [`QkNorm::All`]. Only for a layer with
    /// QK-norm; ones until set.
    QNorm,
    /// QK-norm weights of the keys (`k_norm.weight`): `[head_dim]` with
    /// [`QkNorm::Head`], `[KV]` with [`QkNorm::All`]. Only for a layer with
    /// QK-norm; ones until set.
    KNorm,
    /// Sink logits `[num_heads]` (`sinks`). Only for a layer with sinks;
    /// zeros until set.
    Sinks,
}

impl Weight {
    /// The C value, `ATTN_W_*` / `ATTN_B_*` (`attn_weight_id`). Use this
    /// rather than `as i32`, which stops compiling if an enum gains a
    /// variant with data.
    pub const fn raw(self) -> sys::attn_weight_id {
        match self {
            Weight::InProj => sys::ATTN_W_IN_PROJ,
            Weight::InProjBias => sys::ATTN_B_IN_PROJ,
            Weight::Q => sys::ATTN_W_Q,
            Weight::K => sys::ATTN_W_K,
            Weight::V => sys::ATTN_W_V,
            Weight::Out => sys::ATTN_W_OUT,
            Weight::OutBias => sys::ATTN_B_OUT,
            Weight::QBias => sys::ATTN_B_Q,
            Weight::KBias => sys::ATTN_B_K,
            Weight::VBias => sys::ATTN_B_V,
            Weight::QNorm => sys::ATTN_W_Q_NORM,
            Weight::KNorm => sys::ATTN_W_K_NORM,
            Weight::Sinks => sys::ATTN_W_SINKS,
        }
    }
}

/// Tensor names used when saving a weight file (`ATTN_NAMES_*`).
///
/// The library may add namings: match with a wildcard arm.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Naming {
    /// torch's state_dict names (`in_proj_weight`, `out_proj.weight`, ...).
    Torch,
    /// Hugging Face names with `out_proj` (BART, Whisper).
    HuggingFace,
    /// Hugging Face names with `o_proj` (Llama, Mistral).
    HuggingFaceOProj,
}

impl Naming {
    /// The C value, `ATTN_NAMES_*`. Use this rather than `as i32`, which
    /// stops compiling if an enum gains a variant with data.
    pub const fn raw(self) -> i32 {
        match self {
            Naming::Torch => sys::ATTN_NAMES_TORCH,
            Naming::HuggingFace => sys::ATTN_NAMES_HF,
            Naming::HuggingFaceOProj => sys::ATTN_NAMES_HF_O_PROJ,
        }
    }
}

/// A layer's effective configuration (defaults resolved), as the library
/// reports it after building ([`Layer::config`]).
///
/// Read its fields; it is never built by hand. The library may report more
/// settings, so this struct may gain fields: it cannot be written as a
/// struct literal or destructured without `..` outside this crate. Values
/// of a newer libattn that this crate does not know are kept, not
/// replaced: [`QkNorm::Unknown`], [`Alibi::Unknown`],
/// [`RopePairing::Unknown`](crate::RopePairing::Unknown),
/// [`BiasParts::other_bits`].
///
/// It is `Clone` but not `Copy`, so that it may later hold owned data (it
/// already does: a rope frequency table).
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct LayerConfig {
    /// Model width E.
    pub embed_dim: usize,
    /// Query heads H.
    pub num_heads: usize,
    /// Width of key inputs.
    pub kdim: usize,
    /// Width of value inputs.
    pub vdim: usize,
    /// Whether any projection has a bias.
    pub bias: bool,
    /// Default threads of the layer's calls (0 = the runtime's).
    pub num_threads: usize,
    /// Score scale.
    pub scale: f64,
    /// Key/value heads (= num_heads without grouped-query attention).
    pub num_kv_heads: usize,
    /// Which projections have a bias.
    pub bias_parts: BiasParts,
    /// The QK-norm mode.
    pub qk_norm: QkNorm,
    /// The QK-norm's epsilon, resolved: 1e-6 unless one was set.
    pub qk_norm_eps: f64,
    /// Whether the QK-norm multiplies by 1 + w.
    pub qk_norm_unit_offset: bool,
    /// The ALiBi form.
    pub alibi: Alibi,
    /// Logit soft-capping (0 = none).
    pub softcap: f64,
    /// Whether each head has a sink logit.
    pub sinks: bool,
    /// The rotary embeddings' settings (pairing, rotated dimensions of each
    /// head, frequencies), `None` without rotary embeddings.
    pub rope: Option<RopeConfig>,
}

impl LayerConfig {
    /// The configuration the library reported in `cfg`. Never fails: a
    /// mode, form or pairing this crate does not know becomes its enum's
    /// `Unknown` variant, unknown bias bits are kept in the
    /// [`BiasParts`], and sizes are taken as they are.
    ///
    /// # Safety
    /// `cfg.rope` must be NULL or point at a valid `attn_rope_config`, whose
    /// `inv_freq` is NULL or points at `rotary_dim / 2` floats (as a
    /// read-back of a live layer does).
    pub(crate) unsafe fn from_raw(cfg: &sys::attn_config) -> LayerConfig {
        LayerConfig {
            embed_dim: cfg.embed_dim as usize,
            num_heads: cfg.num_heads as usize,
            kdim: cfg.kdim as usize,
            vdim: cfg.vdim as usize,
            bias: cfg.bias != 0,
            num_threads: cfg.num_threads as usize,
            scale: cfg.scale,
            num_kv_heads: cfg.num_kv_heads as usize,
            bias_parts: BiasParts::from_bits(cfg.bias_parts),
            qk_norm: QkNorm::from_raw(cfg.qk_norm),
            qk_norm_eps: cfg.qk_norm_eps,
            qk_norm_unit_offset: cfg.qk_norm_unit_offset != 0,
            alibi: Alibi::from_raw(cfg.alibi),
            softcap: cfg.softcap,
            sinks: cfg.sinks != 0,
            // SAFETY: the caller's promise.
            rope: cfg
                .rope
                .as_ref()
                .map(|r| RopeConfig::from_raw(r, cfg.embed_dim / cfg.num_heads.max(1))),
        }
    }
}

/// Builds a [`Layer`]. Starts from the library's defaults (one head, bias
/// on, kdim = vdim = embed_dim, scale 1/sqrt(head_dim), none of the decoder
/// features).
///
/// Setters only record values; [`build`](Self::build) checks them all, so
/// a bad one (an odd rotary_dim, a negative soft-cap, ...) is an [`Error`]
/// from `build`, never a panic. The builder owns everything it is given
/// (the [`Rope`], ALiBi slopes): the library copies those into the layer,
/// so nothing the layer uses is borrowed from the caller.
///
/// A Llama-style layer (grouped-query attention with rotary embeddings):
///
/// ```
/// use attn::{BiasParts, Layer, Rope};
/// let layer = Layer::builder(64)
///     .num_heads(8)
///     .num_kv_heads(2)
///     .bias_parts(BiasParts::NONE)
///     .rope(Rope::new().theta(500000.0))
///     .build()?;
/// assert_eq!(layer.config().rope.as_ref().map(|r| r.rotary_dim), Some(8));
/// # Ok::<(), attn::Error>(())
/// ```
#[derive(Debug, Clone)]
pub struct LayerBuilder {
    /// The C config; its pointer fields stay NULL here and are set only on
    /// the copy made by `build`.
    raw: sys::attn_config,
    /// Set by [`bias_parts`](Self::bias_parts); applied by `build`, so that
    /// it wins over [`bias`](Self::bias) whatever the order of the calls.
    bias_parts: Option<BiasParts>,
    rope: Option<Rope>,
    alibi_slopes: Option<Vec<f32>>,
}

// SAFETY: the only non-Send/Sync parts are raw's pointer fields
// (alibi_slopes, rope), which stay NULL in the builder: build() sets them on
// a copy of its own, pointing at the builder's owned data, for one call.
unsafe impl Send for LayerBuilder {}
unsafe impl Sync for LayerBuilder {}

fn saturating_i64(x: usize) -> i64 {
    i64::try_from(x).unwrap_or(i64::MAX)
}

impl LayerBuilder {
    /// A layer of width `embed_dim`.
    pub fn new(embed_dim: usize) -> LayerBuilder {
        let mut raw = sys::attn_config::init_default()
            .expect("attn_config_init_sized refused attn-sys's attn_config");
        raw.embed_dim = saturating_i64(embed_dim);
        LayerBuilder {
            raw,
            bias_parts: None,
            rope: None,
            alibi_slopes: None,
        }
    }

    /// Number of heads; must divide embed_dim.
    pub fn num_heads(mut self, n: usize) -> Self {
        self.raw.num_heads = saturating_i64(n);
        self
    }

    /// Width of key inputs (0 = embed_dim).
    pub fn kdim(mut self, n: usize) -> Self {
        self.raw.kdim = saturating_i64(n);
        self
    }

    /// Width of value inputs (0 = embed_dim).
    pub fn vdim(mut self, n: usize) -> Self {
        self.raw.vdim = saturating_i64(n);
        self
    }

    /// Whether the projections have biases (torch's bias=True). Ignored
    /// when [`bias_parts`](Self::bias_parts) is given, before or after.
    pub fn bias(mut self, on: bool) -> Self {
        self.raw.bias = on as i32;
        self
    }

    /// Default threads of this layer's calls (0 = every thread of the
    /// call's runtime).
    pub fn num_threads(mut self, n: usize) -> Self {
        self.raw.num_threads = i32::try_from(n).unwrap_or(i32::MAX);
        self
    }

    /// Score scale (0 = 1/sqrt(head_dim)).
    pub fn scale(mut self, s: f64) -> Self {
        self.raw.scale = s;
        self
    }

    /// Key/value heads for grouped-query attention (0 = num_heads).
    pub fn num_kv_heads(mut self, n: usize) -> Self {
        self.raw.num_kv_heads = saturating_i64(n);
        self
    }

    /// Exactly these projections have a bias (Qwen2: [`BiasParts::QKV`]);
    /// [`BiasParts::NONE`] = no bias. Overrides [`bias`](Self::bias),
    /// whichever of the two is called first.
    pub fn bias_parts(mut self, parts: BiasParts) -> Self {
        self.bias_parts = Some(parts);
        self
    }

    /// QK-norm of the queries and keys (default [`QkNorm::None`]); its
    /// weights are [`Weight::QNorm`] and [`Weight::KNorm`].
    pub fn qk_norm(mut self, mode: QkNorm) -> Self {
        self.raw.qk_norm = mode.raw();
        self
    }

    /// Epsilon of the QK-norm: finite and not negative, 0 = 1e-6 (the
    /// default). Checked by [`build`](Self::build)
    /// ([`Status::BAD_OPTION`]).
    pub fn qk_norm_eps(mut self, eps: f64) -> Self {
        self.raw.qk_norm_eps = eps;
        self
    }

    /// Whether the QK-norm multiplies by `1 + w` instead of `w` (Gemma 3's
    /// stored weights). Default false.
    pub fn qk_norm_unit_offset(mut self, on: bool) -> Self {
        self.raw.qk_norm_unit_offset = on as i32;
        self
    }

    /// ALiBi form (default [`Alibi::None`]). Without
    /// [`alibi_slopes`](Self::alibi_slopes) the heads take the standard
    /// geometric slopes (Press et al., as BLOOM computes them).
    pub fn alibi(mut self, form: Alibi) -> Self {
        self.raw.alibi = form.raw();
        self
    }

    /// The ALiBi slope of each head: exactly num_heads finite values
    /// (checked by [`build`](Self::build): [`Status::BAD_SIZE`] for another
    /// count, [`Status::NOT_FINITE`] for NaN or infinity). Copied here.
    ///
    /// Only with an ALiBi form ([`alibi`](Self::alibi), set before or
    /// after): slopes without one make `build` fail with
    /// [`Status::BAD_OPTION`] (the library's "alibi_slopes given but alibi
    /// is ATTN_ALIBI_NONE"), whatever their count, rather than build a
    /// layer without the bias they ask for.
    pub fn alibi_slopes(mut self, slopes: &[f32]) -> Self {
        self.alibi_slopes = Some(slopes.to_vec());
        self
    }

    /// Logit soft-capping: when > 0 every scaled score s becomes
    /// `softcap * tanh(s / softcap)` before ALiBi, the mask and the softmax
    /// (Gemma 2). 0 (default) = none; negative, infinite or NaN is
    /// [`Status::BAD_OPTION`] from [`build`](Self::build).
    pub fn softcap(mut self, softcap: f64) -> Self {
        self.raw.softcap = softcap;
        self
    }

    /// Rotary position embeddings (default none); see [`Rope`] for what
    /// `build` checks.
    pub fn rope(mut self, rope: Rope) -> Self {
        self.rope = Some(rope);
        self
    }

    /// Whether each head has a learned sink logit ([`Weight::Sinks`], zeros
    /// until set) in the softmax's denominator (gpt-oss). A query that sees
    /// no key then gives zeros, whatever [`EmptyRows`](crate::EmptyRows)
    /// says. Default false.
    pub fn sinks(mut self, on: bool) -> Self {
        self.raw.sinks = on as i32;
        self
    }

    /// The C config to create the layer from, pointer fields still NULL:
    /// `raw` with the bias parts applied. The library reads bias_parts 0 as
    /// "as `bias` says", so no parts at all also turn `bias` off.
    fn resolved_raw(&self) -> sys::attn_config {
        let mut raw = self.raw;
        if let Some(parts) = self.bias_parts {
            raw.bias_parts = parts.bits();
            raw.bias = (raw.bias_parts != 0) as i32;
        }
        raw
    }

    /// head_dim when embed_dim and num_heads agree, else `None` (the
    /// library then refuses the sizes).
    fn head_dim(&self) -> Option<usize> {
        let (e, h) = (self.raw.embed_dim, self.raw.num_heads);
        if e > 0 && h > 0 && e % h == 0 {
            usize::try_from(e / h).ok()
        } else {
            None
        }
    }

    /// Creates the layer; its weights still have to be set (the QK-norm
    /// weights start at ones, the sinks at zeros).
    ///
    /// Errors: the library's, with its message naming the field:
    /// [`Status::BAD_SIZE`] (embed_dim not divisible by num_heads,
    /// num_heads not by num_kv_heads, rotary_dim odd or above head_dim, and
    /// from this crate: ALiBi slopes or a frequency table of the wrong
    /// length), [`Status::BAD_OPTION`] (soft-cap, QK-norm epsilon, theta,
    /// linear or attention factor out of range, ALiBi slopes without an
    /// ALiBi form), [`Status::NOT_FINITE`] (a slope or frequency not
    /// finite, a frequency negative).
    pub fn build(&self) -> Result<Layer> {
        let mut raw = self.resolved_raw();
        if let Some(s) = &self.alibi_slopes {
            // The library reads num_heads slopes only with an ALiBi form;
            // without one it refuses them unread (BAD_OPTION), whatever
            // their count.
            if raw.alibi != sys::ATTN_ALIBI_NONE {
                let h = usize::try_from(raw.num_heads).unwrap_or(usize::MAX);
                expect_len(s.len(), &[h], "alibi_slopes", "[num_heads]")?;
            }
            raw.alibi_slopes = s.as_ptr();
        }
        let rope = match &self.rope {
            Some(r) => Some(r.raw(self.head_dim())?),
            None => None,
        };
        raw.rope = features::rope_ptr(&rope);
        let mut out = ptr::null_mut();
        // SAFETY: raw was initialised by the library; the slopes (num_heads
        // values, checked above, when an ALiBi form has the library read
        // them) and the rope struct and its table (length checked by
        // Rope::raw) outlive the call, which copies them; out is valid.
        check(unsafe { sys::attn_layer_create(&raw, &mut out) })?;
        let ptr = NonNull::new(out).expect("attn_layer_create returned NULL");
        let mut cfg = sys::attn_config::init_default().map_err(Error::from_library)?;
        // SAFETY: the layer is alive; cfg has its struct_size set.
        let st = unsafe { sys::attn_layer_get_config(ptr.as_ptr(), &mut cfg) };
        if st != sys::ATTN_OK {
            let err = Error::from_library(st);
            // SAFETY: owned, never used again.
            unsafe { sys::attn_layer_destroy(ptr.as_ptr()) };
            return Err(err);
        }
        // SAFETY: a read-back points rope at the layer's own copy, valid
        // while the layer lives (it is only read during the conversion).
        let config = unsafe { LayerConfig::from_raw(&cfg) };
        Ok(Layer { ptr, config })
    }
}

/// A multi-head attention layer (torch.nn.MultiheadAttention's computation
/// and weight layout).
///
/// Once its weights are set, a layer is read-only: forward calls take
/// `&self` and may run from many threads at once (it is `Send + Sync`).
/// Changing weights takes `&mut self`, so it can never overlap a call.
#[derive(Debug)]
pub struct Layer {
    ptr: NonNull<sys::attn_layer>,
    config: LayerConfig,
}

// SAFETY: the C layer serves concurrent read-only calls (attn.h, "Thread
// safety"); every call that changes it takes &mut self.
unsafe impl Send for Layer {}
unsafe impl Sync for Layer {}

impl Drop for Layer {
    fn drop(&mut self) {
        // SAFETY: owned; caches and memories borrow the layer, so none is
        // alive now.
        unsafe { sys::attn_layer_destroy(self.ptr.as_ptr()) }
    }
}

fn c_string(s: &str, what: &str) -> Result<CString> {
    CString::new(s)
        .map_err(|_| Error::new(Status::BAD_OPTION, format!("{} contains a NUL byte", what)))
}

#[cfg(unix)]
fn path_c_string(path: &Path) -> Result<CString> {
    use std::os::unix::ffi::OsStrExt;
    CString::new(path.as_os_str().as_bytes()).map_err(|_| {
        Error::new(
            Status::IO,
            format!("path {} contains a NUL byte", path.display()),
        )
    })
}

#[cfg(not(unix))]
fn path_c_string(path: &Path) -> Result<CString> {
    let s = path.to_str().ok_or_else(|| {
        Error::new(
            Status::IO,
            format!("path {} is not valid UTF-8", path.display()),
        )
    })?;
    c_string(s, "path").map_err(|e| Error::new(Status::IO, e.message().to_string()))
}

impl Layer {
    /// A builder for a layer of width `embed_dim`.
    pub fn builder(embed_dim: usize) -> LayerBuilder {
        LayerBuilder::new(embed_dim)
    }

    /// The effective configuration.
    pub fn config(&self) -> &LayerConfig {
        &self.config
    }

    pub(crate) fn as_ptr(&self) -> *mut sys::attn_layer {
        self.ptr.as_ptr()
    }

    /// Number of floats of weight `w` for this layer.
    pub fn weight_count(&self, w: Weight) -> Result<usize> {
        let mut n = 0i64;
        // SAFETY: the layer is alive; n is valid.
        check(unsafe { sys::attn_layer_weight_count(self.as_ptr(), w.raw(), &mut n) })?;
        Ok(n as usize)
    }

    /// Copies `data` into weight `w` (exactly [`weight_count`](Self::weight_count)
    /// finite floats).
    pub fn set_weight(&mut self, w: Weight, data: &[f32]) -> Result<()> {
        let n = to_i64(data.len(), "weight length")?;
        // SAFETY: data holds n floats; &mut self excludes concurrent calls.
        check(unsafe { sys::attn_layer_set_weight(self.as_ptr(), w.raw(), data.as_ptr(), n) })
    }

    /// Copies weight `w` into `out` (exactly its count; zeros if never set).
    pub fn weight_into(&self, w: Weight, out: &mut [f32]) -> Result<()> {
        let n = to_i64(out.len(), "weight length")?;
        // SAFETY: out holds n floats.
        check(unsafe { sys::attn_layer_get_weight(self.as_ptr(), w.raw(), out.as_mut_ptr(), n) })
    }

    /// Weight `w` as a new vector.
    pub fn weight(&self, w: Weight) -> Result<Vec<f32>> {
        let mut v = vec![0.0; self.weight_count(w)?];
        self.weight_into(w, &mut v)?;
        Ok(v)
    }

    /// Initialises every weight as torch does (xavier-uniform in_proj,
    /// uniform out_proj, zero biases) from a generator seeded with `seed`.
    pub fn init_weights(&mut self, seed: u64) -> Result<()> {
        // SAFETY: &mut self excludes concurrent calls.
        check(unsafe { sys::attn_layer_init_weights(self.as_ptr(), seed) })
    }

    /// Loads every weight from a safetensors file, tensors named `prefix` +
    /// torch's or Hugging Face's names (F32, F16 or BF16). On error the
    /// layer is unchanged.
    pub fn load_safetensors(&mut self, path: impl AsRef<Path>, prefix: &str) -> Result<()> {
        let path = path_c_string(path.as_ref())?;
        let prefix = c_string(prefix, "prefix")?;
        // SAFETY: both strings are NUL-terminated and outlive the call.
        check(unsafe {
            sys::attn_layer_load_safetensors(self.as_ptr(), path.as_ptr(), prefix.as_ptr())
        })
    }

    /// As [`load_safetensors`](Self::load_safetensors), from the bytes of a
    /// whole file.
    pub fn load_safetensors_bytes(&mut self, data: &[u8], prefix: &str) -> Result<()> {
        let prefix = c_string(prefix, "prefix")?;
        // SAFETY: data holds data.len() bytes and is only read.
        check(unsafe {
            sys::attn_layer_load_safetensors_mem(
                self.as_ptr(),
                data.as_ptr().cast(),
                data.len(),
                prefix.as_ptr(),
            )
        })
    }

    /// Saves every weight to a safetensors file (written to a temporary
    /// file and renamed, so `path` is never left half-written).
    pub fn save_safetensors(
        &self,
        path: impl AsRef<Path>,
        prefix: &str,
        naming: Naming,
    ) -> Result<()> {
        let path = path_c_string(path.as_ref())?;
        let prefix = c_string(prefix, "prefix")?;
        // SAFETY: both strings are NUL-terminated and outlive the call.
        check(unsafe {
            sys::attn_layer_save_safetensors(
                self.as_ptr(),
                path.as_ptr(),
                prefix.as_ptr(),
                naming.raw(),
            )
        })
    }

    /// Bytes of scratch a forward call of these sizes and options needs.
    pub fn forward_scratch_size(
        &self,
        batch: usize,
        len_q: usize,
        len_k: usize,
        opts: Option<&mut Options<'_>>,
    ) -> Result<usize> {
        let raw = match opts {
            Some(o) => o.raw()?,
            None => sys::attn_options::init_default().map_err(Error::from_library)?,
        };
        self.raw_forward_scratch(batch, len_q, len_k, &raw)
    }

    fn raw_forward_scratch(
        &self,
        batch: usize,
        len_q: usize,
        len_k: usize,
        raw: &sys::attn_options,
    ) -> Result<usize> {
        let mut bytes = 0usize;
        // SAFETY: raw is a valid options struct; bytes is valid.
        check(unsafe {
            sys::attn_forward_scratch_size(
                self.as_ptr(),
                to_i64(batch, "batch")?,
                to_i64(len_q, "len_q")?,
                to_i64(len_k, "len_k")?,
                raw,
                &mut bytes,
            )
        })?;
        Ok(bytes)
    }

    /// Attention of queries over keys and values (cross-attention in
    /// general): `query [batch, len_q, E]`, `key [batch, len_k, kdim]`,
    /// `value [batch, len_k, vdim]` -> `out [batch, len_q, E]`.
    ///
    /// Every slice's length is checked against the sizes first; a wrong one
    /// is an [`Error`] with [`Status::BAD_SIZE`] and nothing is called. With
    /// attention weights (see [`Options`]) they are `[batch, H, len_q,
    /// len_k]` or `[batch, len_q, len_k]`. On any error `out` and the
    /// weights are unchanged.
    ///
    /// A layer with rotary embeddings or ALiBi takes its tokens' positions
    /// from `opts` ([`Options::start_positions`],
    /// [`Options::query_positions`], [`Options::key_positions`]; default 0,
    /// 1, 2, ... in each row); their lengths are checked here
    /// ([`Status::BAD_SIZE`]) and their values by the library
    /// ([`Status::BAD_OPTION`]: negative or beyond
    /// [`attn_sys::ATTN_MAX_POSITION`]).
    #[allow(clippy::too_many_arguments)]
    pub fn forward(
        &self,
        batch: usize,
        len_q: usize,
        len_k: usize,
        query: &[f32],
        key: &[f32],
        value: &[f32],
        mask: Option<&Mask<'_>>,
        opts: Option<&mut Options<'_>>,
        out: &mut [f32],
    ) -> Result<()> {
        let c = &self.config;
        expect_len(
            query.len(),
            &[batch, len_q, c.embed_dim],
            "query",
            "[batch, len_q, embed_dim]",
        )?;
        expect_len(
            key.len(),
            &[batch, len_k, c.kdim],
            "key",
            "[batch, len_k, kdim]",
        )?;
        expect_len(
            value.len(),
            &[batch, len_k, c.vdim],
            "value",
            "[batch, len_k, vdim]",
        )?;
        let (b, lq, lk) = (
            to_i64(batch, "batch")?,
            to_i64(len_q, "len_q")?,
            to_i64(len_k, "len_k")?,
        );
        let shape = "[batch, len_q, embed_dim]";
        self.forward_call(batch, len_q, len_k, mask, opts, out, shape, |m, o, y| {
            // SAFETY: every slice has the length the sizes give; the mask's
            // slices were checked too and outlive the call.
            unsafe {
                sys::attn_forward(
                    self.as_ptr(),
                    b,
                    lq,
                    lk,
                    query.as_ptr(),
                    key.as_ptr(),
                    value.as_ptr(),
                    m,
                    o,
                    y,
                )
            }
        })
    }

    /// Self-attention over `x [batch, len, E]` into `out [batch, len, E]`
    /// (needs kdim = vdim = E); otherwise as [`forward`](Self::forward).
    pub fn self_forward(
        &self,
        batch: usize,
        len: usize,
        x: &[f32],
        mask: Option<&Mask<'_>>,
        opts: Option<&mut Options<'_>>,
        out: &mut [f32],
    ) -> Result<()> {
        let c = &self.config;
        expect_len(
            x.len(),
            &[batch, len, c.embed_dim],
            "x",
            "[batch, len, embed_dim]",
        )?;
        let (b, n) = (to_i64(batch, "batch")?, to_i64(len, "len")?);
        let shape = "[batch, len, embed_dim]";
        self.forward_call(batch, len, len, mask, opts, out, shape, |m, o, y| {
            // SAFETY: as in forward.
            unsafe { sys::attn_self_forward(self.as_ptr(), b, n, x.as_ptr(), m, o, y) }
        })
    }

    /// What forward and self_forward share: `out` checked against
    /// `[batch, len_q, E]` (`shape` names it in the error), the mask and
    /// options turned into their C forms, and `call` made with them and
    /// out's pointer.
    #[allow(clippy::too_many_arguments)]
    fn forward_call(
        &self,
        batch: usize,
        len_q: usize,
        len_k: usize,
        mask: Option<&Mask<'_>>,
        opts: Option<&mut Options<'_>>,
        out: &mut [f32],
        shape: &str,
        call: impl FnOnce(*const sys::attn_mask, &sys::attn_options, *mut f32) -> sys::attn_status,
    ) -> Result<()> {
        let c = &self.config;
        expect_len(out.len(), &[batch, len_q, c.embed_dim], "out", shape)?;
        let raw_mask = match mask {
            Some(m) => Some(m.raw(batch, c.num_heads, len_q, len_k)?),
            None => None,
        };
        let pos = match &opts {
            Some(o) => o.raw_positions(batch, len_q, len_k, false)?,
            None => None,
        };
        let mut opts = self.call_options(opts, batch, len_q, len_k)?;
        if let Some(p) = &pos {
            // Points at the local, which outlives the call below.
            opts.positions = p;
        }
        let m = raw_mask.as_ref().map_or(ptr::null(), |m| m as *const _);
        check(call(m, &opts, out.as_mut_ptr()))
    }

    /// The C options of a forward call, weights output checked and scratch
    /// sized.
    fn call_options(
        &self,
        opts: Option<&mut Options<'_>>,
        batch: usize,
        len_q: usize,
        len_k: usize,
    ) -> Result<sys::attn_options> {
        let h = self.config.num_heads;
        if let Some(o) = &opts {
            o.check_weights(
                &[batch, h, len_q, len_k],
                &[batch, len_q, len_k],
                "[batch, heads, len_q, len_k] or [batch, len_q, len_k]",
            )?;
        }
        options::prepare(opts, |raw| {
            self.raw_forward_scratch(batch, len_q, len_k, raw)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::features::{RopePairing, UnknownValue};

    /// A config as a newer libattn could report it: a QK-norm mode, an
    /// ALiBi form, a rope pairing and bias bits this crate does not know.
    #[test]
    fn config_from_a_newer_library_keeps_unknown_values() {
        let mut rope = sys::attn_rope_config::init_default().unwrap();
        rope.pairing = 2;
        rope.rotary_dim = 0;
        let mut cfg = sys::attn_config::init_default().unwrap();
        cfg.embed_dim = 64;
        cfg.num_heads = 4;
        cfg.kdim = 64;
        cfg.vdim = 64;
        cfg.num_kv_heads = 2;
        cfg.bias = 1;
        cfg.bias_parts = sys::ATTN_BIAS_K | 32;
        cfg.qk_norm = 3;
        cfg.alibi = i32::MIN;
        cfg.rope = &rope;
        // SAFETY: rope is a valid local that outlives the call.
        let c = unsafe { LayerConfig::from_raw(&cfg) };
        assert_eq!((c.embed_dim, c.num_heads, c.num_kv_heads), (64, 4, 2));
        assert_eq!(c.qk_norm, QkNorm::Unknown(UnknownValue::new(3)));
        assert_eq!(c.alibi, Alibi::Unknown(UnknownValue::new(i32::MIN)));
        let r = c.rope.as_ref().unwrap();
        assert_eq!(r.pairing, RopePairing::Unknown(UnknownValue::new(2)));
        assert_eq!((r.rotary_dim, r.inv_freq.as_ref()), (16, None));
        assert!(c.bias && !c.bias_parts.q && c.bias_parts.k);
        assert_eq!(c.bias_parts.other_bits(), 32);

        // The builder hands every one of them back unchanged.
        let b = LayerBuilder::new(64)
            .qk_norm(c.qk_norm)
            .alibi(c.alibi)
            .bias_parts(c.bias_parts);
        let raw = b.resolved_raw();
        assert_eq!(raw.qk_norm, 3);
        assert_eq!(raw.alibi, i32::MIN);
        assert_eq!((raw.bias_parts, raw.bias), (sys::ATTN_BIAS_K | 32, 1));
    }

    /// What this crate's own values read back as: no `Unknown` anywhere.
    #[test]
    fn config_of_known_values_has_no_unknown() {
        let mut cfg = sys::attn_config::init_default().unwrap();
        cfg.embed_dim = 8;
        cfg.bias_parts = sys::ATTN_BIAS_ALL;
        // SAFETY: rope is NULL.
        let c = unsafe { LayerConfig::from_raw(&cfg) };
        assert_eq!(c.bias_parts, BiasParts::ALL);
        assert_eq!(c.qk_norm, QkNorm::None);
        assert_eq!(c.alibi, Alibi::None);
        assert_eq!(c.rope, None);
    }

    /// An `Unknown` value read back from a newer libattn and given to a
    /// builder reaches the library unchanged: this one does not know it
    /// and refuses it with its own message, and nothing panics.
    #[test]
    fn unknown_values_given_to_a_builder_are_the_library_s_to_refuse() {
        let b = || LayerBuilder::new(8).num_heads(2);
        let cases = [
            (
                b().qk_norm(QkNorm::Unknown(UnknownValue::new(99))),
                "qk_norm",
            ),
            (b().alibi(Alibi::Unknown(UnknownValue::new(-5))), "alibi"),
            (
                b().rope(Rope::new().pairing(RopePairing::Unknown(UnknownValue::new(7)))),
                "pairing",
            ),
        ];
        for (builder, fragment) in cases {
            let err = builder
                .build()
                .expect_err("an unknown value should be refused");
            assert_eq!(err.status(), Status::BAD_OPTION, "{}", err);
            assert!(
                err.message().contains(fragment),
                "message {:?} lacks {:?}",
                err.message(),
                fragment
            );
        }
    }

    /// What the builder hands the library for bias and bias_parts, in
    /// either order of the calls: explicit parts always win.
    #[test]
    fn bias_parts_win_over_bias_in_either_order() {
        let b = || LayerBuilder::new(8);
        for (builder, parts, bias) in [
            (b(), 0, 1),
            (b().bias(false), 0, 0),
            (b().bias_parts(BiasParts::NONE).bias(true), 0, 0),
            (b().bias(true).bias_parts(BiasParts::NONE), 0, 0),
            (
                b().bias_parts(BiasParts::QKV).bias(false),
                sys::ATTN_BIAS_Q | sys::ATTN_BIAS_K | sys::ATTN_BIAS_V,
                1,
            ),
            (
                b().bias(false).bias_parts(BiasParts::QKV),
                sys::ATTN_BIAS_Q | sys::ATTN_BIAS_K | sys::ATTN_BIAS_V,
                1,
            ),
        ] {
            let raw = builder.resolved_raw();
            assert_eq!((raw.bias_parts, raw.bias), (parts, bias), "{:?}", builder);
        }
    }
}
