// SPDX-License-Identifier: MIT
//! Incremental decoding: key/value caches, cross-attention memories and the
//! steps that use them.

use crate::error::{check, expect_len, to_i64, Error, Result, Status};
use crate::layer::Layer;
use crate::mask::{DecodeMask, Mask};
use crate::options::{self, Options};
use attn_sys as sys;
use attn_sys::Versioned;
use std::ptr::{self, NonNull};

/// A self-attention key/value cache: for each of `batch` rows, the keys and
/// values of up to `capacity` tokens. It borrows the layer it was made for,
/// so the layer outlives it and its weights cannot change under it.
#[derive(Debug)]
pub struct KvCache<'l> {
    ptr: NonNull<sys::attn_kv_cache>,
    layer: &'l Layer,
    batch: usize,
    capacity: usize,
}

// SAFETY: a cache is used by one thread at a time: everything that changes
// it takes &mut self; the rest only reads it.
unsafe impl Send for KvCache<'_> {}
unsafe impl Sync for KvCache<'_> {}

impl<'l> KvCache<'l> {
    /// An empty cache of `batch` rows of `capacity` tokens for `layer`
    /// (kdim = vdim = E).
    pub fn new(layer: &'l Layer, batch: usize, capacity: usize) -> Result<KvCache<'l>> {
        KvCache::with_window(layer, batch, capacity, 0)
    }

    /// As [`new`](Self::new), with a sliding window of `window` tokens
    /// (0 = none): a full row then drops what no later query can see.
    pub fn with_window(
        layer: &'l Layer,
        batch: usize,
        capacity: usize,
        window: usize,
    ) -> Result<KvCache<'l>> {
        let mut cfg = sys::attn_cache_config::init_default().map_err(Error::from_library)?;
        cfg.batch = to_i64(batch, "batch")?;
        cfg.capacity = to_i64(capacity, "capacity")?;
        cfg.window = to_i64(window, "window")?;
        let mut out = ptr::null_mut();
        // SAFETY: the layer is alive; cfg is initialised; out is valid.
        check(unsafe { sys::attn_kv_cache_create(layer.as_ptr(), &cfg, &mut out) })?;
        let ptr = NonNull::new(out).expect("attn_kv_cache_create returned NULL");
        Ok(KvCache {
            ptr,
            layer,
            batch,
            capacity,
        })
    }

    /// Number of rows.
    pub fn batch(&self) -> usize {
        self.batch
    }

    /// Tokens each row can hold.
    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// The layer this cache belongs to.
    pub fn layer(&self) -> &'l Layer {
        self.layer
    }

    /// Each row's length (tokens appended, less those truncated).
    pub fn lengths(&self) -> Result<Vec<i64>> {
        Ok(self.lengths_and_first()?.0)
    }

    /// Each row's length and the position of its oldest token still held
    /// (0 unless a sliding window dropped tokens).
    pub fn lengths_and_first(&self) -> Result<(Vec<i64>, Vec<i64>)> {
        let mut lengths = vec![0; self.batch];
        let mut first = vec![0; self.batch];
        // SAFETY: both vectors hold batch elements.
        check(unsafe {
            sys::attn_kv_cache_lengths(
                self.ptr.as_ptr(),
                to_i64(self.batch, "batch")?,
                lengths.as_mut_ptr(),
                first.as_mut_ptr(),
            )
        })?;
        Ok((lengths, first))
    }

    /// Rolls rows back: row b keeps its first `lengths[b]` tokens.
    pub fn truncate(&mut self, lengths: &[i64]) -> Result<()> {
        expect_len(lengths.len(), &[self.batch], "lengths", "[batch]")?;
        // SAFETY: lengths holds batch elements.
        check(unsafe {
            sys::attn_kv_cache_truncate(
                self.ptr.as_ptr(),
                to_i64(self.batch, "batch")?,
                lengths.as_ptr(),
            )
        })
    }

    /// Reorders rows for beam search: row b becomes what row `src_rows[b]`
    /// was.
    pub fn reorder(&mut self, src_rows: &[i64]) -> Result<()> {
        expect_len(src_rows.len(), &[self.batch], "src_rows", "[batch]")?;
        // SAFETY: src_rows holds batch elements.
        check(unsafe {
            sys::attn_kv_cache_reorder(
                self.ptr.as_ptr(),
                to_i64(self.batch, "batch")?,
                src_rows.as_ptr(),
            )
        })
    }

    /// Empties every row, keeping the memory.
    pub fn reset(&mut self) -> Result<()> {
        // SAFETY: owned pointer.
        check(unsafe { sys::attn_kv_cache_reset(self.ptr.as_ptr()) })
    }
}

impl Drop for KvCache<'_> {
    fn drop(&mut self) {
        // SAFETY: owned, destroyed once.
        unsafe { sys::attn_kv_cache_destroy(self.ptr.as_ptr()) }
    }
}

/// A cross-attention memory: an encoder output's keys and values projected
/// once with a layer's weights, reused by every [`Layer::cross_step`].
#[derive(Debug)]
pub struct Memory<'l> {
    ptr: NonNull<sys::attn_memory>,
    layer: &'l Layer,
    batch: usize,
    capacity: usize,
    len_k: Option<usize>,
}

// SAFETY: set() takes &mut self; cross steps only read the memory, which
// the C API allows from several threads at once.
unsafe impl Send for Memory<'_> {}
unsafe impl Sync for Memory<'_> {}

impl<'l> Memory<'l> {
    /// An empty memory of `batch` rows of up to `capacity` source tokens.
    pub fn new(layer: &'l Layer, batch: usize, capacity: usize) -> Result<Memory<'l>> {
        let mut cfg = sys::attn_memory_config::init_default().map_err(Error::from_library)?;
        cfg.batch = to_i64(batch, "batch")?;
        cfg.capacity = to_i64(capacity, "capacity")?;
        let mut out = ptr::null_mut();
        // SAFETY: the layer is alive; cfg is initialised; out is valid.
        check(unsafe { sys::attn_memory_create(layer.as_ptr(), &cfg, &mut out) })?;
        let ptr = NonNull::new(out).expect("attn_memory_create returned NULL");
        Ok(Memory {
            ptr,
            layer,
            batch,
            capacity,
            len_k: None,
        })
    }

    /// Number of rows.
    pub fn batch(&self) -> usize {
        self.batch
    }

    /// Largest number of source tokens per row.
    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// Source tokens per row of the last successful [`set`](Self::set).
    pub fn len_k(&self) -> Option<usize> {
        self.len_k
    }

    /// The layer this memory belongs to.
    pub fn layer(&self) -> &'l Layer {
        self.layer
    }

    /// Projects `key [batch, len_k, kdim]` and `value [batch, len_k, vdim]`
    /// into the memory, replacing what it held. `key_lengths [batch]` and
    /// `key_padding [batch, len_k]` hide positions from every later step.
    /// Only the threads and runtime of `opts` are used.
    pub fn set(
        &mut self,
        len_k: usize,
        key: &[f32],
        value: &[f32],
        key_lengths: Option<&[i64]>,
        key_padding: Option<&[u8]>,
        opts: Option<&mut Options<'_>>,
    ) -> Result<()> {
        let c = self.layer.config();
        let b = self.batch;
        expect_len(
            key.len(),
            &[b, len_k, c.kdim],
            "key",
            "[batch, len_k, kdim]",
        )?;
        expect_len(
            value.len(),
            &[b, len_k, c.vdim],
            "value",
            "[batch, len_k, vdim]",
        )?;
        if let Some(l) = key_lengths {
            expect_len(l.len(), &[b], "key_lengths", "[batch]")?;
        }
        if let Some(p) = key_padding {
            expect_len(p.len(), &[b, len_k], "key_padding", "[batch, len_k]")?;
        }
        let opts = options::prepare(opts, |_| Ok(0))?;
        // SAFETY: every slice has the length the sizes give.
        check(unsafe {
            sys::attn_memory_set(
                self.layer.as_ptr(),
                self.ptr.as_ptr(),
                to_i64(b, "batch")?,
                to_i64(len_k, "len_k")?,
                key.as_ptr(),
                value.as_ptr(),
                key_lengths.map_or(ptr::null(), |l| l.as_ptr()),
                key_padding.map_or(ptr::null(), |p| p.as_ptr()),
                &opts,
            )
        })?;
        self.len_k = Some(len_k);
        Ok(())
    }
}

impl Drop for Memory<'_> {
    fn drop(&mut self) {
        // SAFETY: owned, destroyed once.
        unsafe { sys::attn_memory_destroy(self.ptr.as_ptr()) }
    }
}

impl Layer {
    /// One self-attention decoding step: `x [batch, n_new, E]` holds each
    /// row's next tokens; their keys and values are appended to `cache` and
    /// `out [batch, n_new, E]` receives the output, each new token attending
    /// to its row's earlier tokens and itself. Attention weights (see
    /// [`Options`]) are `[batch, H, n_new, capacity]` or `[batch, n_new,
    /// capacity]`, column j the row's j-th held token.
    ///
    /// With rotary embeddings or ALiBi each new token is at its position in
    /// its cache row (plus the [`Options::start_positions`] of its row, when
    /// given); its key is cached rotated. Such a layer refuses query or key
    /// positions in `opts` ([`Status::BAD_OPTION`], from the library), as
    /// it does a position beyond [`attn_sys::ATTN_MAX_POSITION`]; other
    /// layers ignore positions.
    pub fn decode_step(
        &self,
        cache: &mut KvCache<'_>,
        n_new: usize,
        x: &[f32],
        mask: Option<&DecodeMask<'_>>,
        opts: Option<&mut Options<'_>>,
        out: &mut [f32],
    ) -> Result<()> {
        let e = self.config().embed_dim;
        let (b, cap, h) = (cache.batch, cache.capacity, self.config().num_heads);
        expect_len(x.len(), &[b, n_new, e], "x", "[batch, n_new, embed_dim]")?;
        expect_len(
            out.len(),
            &[b, n_new, e],
            "out",
            "[batch, n_new, embed_dim]",
        )?;
        let raw_mask = match mask {
            Some(m) => Some(m.raw(b, n_new)?),
            None => None,
        };
        if let Some(o) = &opts {
            o.check_weights(
                &[b, h, n_new, cap],
                &[b, n_new, cap],
                "[batch, heads, n_new, capacity] or [batch, n_new, capacity]",
            )?;
        }
        let pos = match &opts {
            Some(o) => o.raw_positions(b, n_new, n_new, true)?,
            None => None,
        };
        let n = to_i64(n_new, "n_new")?;
        let mut opts = options::prepare(opts, |raw| {
            let mut bytes = 0usize;
            // SAFETY: raw is valid; bytes is valid.
            check(unsafe {
                sys::attn_decode_scratch_size(self.as_ptr(), cache.ptr.as_ptr(), n, raw, &mut bytes)
            })?;
            Ok(bytes)
        })?;
        if let Some(p) = &pos {
            // Points at the local, which outlives the call below.
            opts.positions = p;
        }
        // SAFETY: slices checked against the cache's batch; &mut cache
        // gives this call the cache alone.
        check(unsafe {
            sys::attn_decode_step(
                self.as_ptr(),
                cache.ptr.as_ptr(),
                to_i64(b, "batch")?,
                n,
                x.as_ptr(),
                raw_mask.as_ref().map_or(ptr::null(), |m| m as *const _),
                &opts,
                out.as_mut_ptr(),
            )
        })
    }

    /// Cross-attention step: `query [batch, n, E]` attends to `mem`; `out
    /// [batch, n, E]` receives what [`forward`](Self::forward) would give
    /// with the key and value of the memory's last `set`. `mask` applies on
    /// top of the memory's own lengths and padding with len_q = n and len_k
    /// = the memory's. Attention weights are `[batch, H, n, len_k]` or
    /// `[batch, n, len_k]`.
    pub fn cross_step(
        &self,
        mem: &Memory<'_>,
        n: usize,
        query: &[f32],
        mask: Option<&Mask<'_>>,
        opts: Option<&mut Options<'_>>,
        out: &mut [f32],
    ) -> Result<()> {
        let c = self.config();
        let b = mem.batch;
        let len_k = mem.len_k.ok_or_else(|| {
            Error::new(Status::BAD_SIZE, "the memory was never set (Memory::set)")
        })?;
        expect_len(
            query.len(),
            &[b, n, c.embed_dim],
            "query",
            "[batch, n, embed_dim]",
        )?;
        expect_len(
            out.len(),
            &[b, n, c.embed_dim],
            "out",
            "[batch, n, embed_dim]",
        )?;
        let raw_mask = match mask {
            Some(m) => Some(m.raw(b, c.num_heads, n, len_k)?),
            None => None,
        };
        if let Some(o) = &opts {
            o.check_weights(
                &[b, c.num_heads, n, len_k],
                &[b, n, len_k],
                "[batch, heads, n, len_k] or [batch, n, len_k]",
            )?;
        }
        let n64 = to_i64(n, "n")?;
        let opts = options::prepare(opts, |raw| {
            let mut bytes = 0usize;
            // SAFETY: raw is valid; bytes is valid.
            check(unsafe {
                sys::attn_cross_scratch_size(self.as_ptr(), mem.ptr.as_ptr(), n64, raw, &mut bytes)
            })?;
            Ok(bytes)
        })?;
        // SAFETY: slices checked; the memory is only read.
        check(unsafe {
            sys::attn_cross_step(
                self.as_ptr(),
                mem.ptr.as_ptr(),
                to_i64(b, "batch")?,
                n64,
                query.as_ptr(),
                raw_mask.as_ref().map_or(ptr::null(), |m| m as *const _),
                &opts,
                out.as_mut_ptr(),
            )
        })
    }
}
