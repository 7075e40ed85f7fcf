// SPDX-License-Identifier: MIT
//! Masks: causal modes, key lengths, key padding, additive bias, window.

use crate::error::{elements, expect_len, to_i64, Error, Result, Status};
use attn_sys as sys;
use attn_sys::Versioned;
use std::ptr;

/// Causal mode (`ATTN_CAUSAL_*`).
///
/// The library may add causal modes: match with a wildcard arm.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Causal {
    /// No causal mask.
    None,
    /// Query i sees keys j <= i (torch's `is_causal`).
    TopLeft,
    /// Query i sees keys j <= i + (n - Lq), n the row's key count: the last
    /// query sees every key (queries that continue a sequence).
    BottomRight,
}

impl Causal {
    /// The C value, `ATTN_CAUSAL_*`. Use this rather than `as i32`, which
    /// stops compiling if an enum gains a variant with data.
    pub const fn raw(self) -> i32 {
        match self {
            Causal::None => sys::ATTN_CAUSAL_NONE,
            Causal::TopLeft => sys::ATTN_CAUSAL_TOP_LEFT,
            Causal::BottomRight => sys::ATTN_CAUSAL_BOTTOM_RIGHT,
        }
    }
}

/// What a query that sees no key gives (`ATTN_EMPTY_ROW_*`).
///
/// The library may add ways to fill such rows: match with a wildcard arm.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum EmptyRows {
    /// Zero attention output and weights (default).
    Zero,
    /// NaN, as torch.
    Nan,
}

impl EmptyRows {
    /// The C value, `ATTN_EMPTY_ROW_*`. Use this rather than `as i32`,
    /// which stops compiling if an enum gains a variant with data.
    pub const fn raw(self) -> i32 {
        match self {
            EmptyRows::Zero => sys::ATTN_EMPTY_ROW_ZERO,
            EmptyRows::Nan => sys::ATTN_EMPTY_ROW_NAN,
        }
    }
}

/// How an additive bias is laid out; all but [`BiasShape::Strided`] must
/// have exactly the elements of their shape.
///
/// More layouts may be added: match with a wildcard arm. A strided layout
/// is made with [`BiasShape::strided`] and read with a pattern that ends in
/// `..` (the variant may gain strides).
///
/// ```
/// use attn::BiasShape;
/// // One [H, Lq, Lk] block shared by every batch row (Lq = 3, Lk = 5).
/// let shape = BiasShape::strided(0, 3 * 5, 5);
/// if let BiasShape::Strided { head, query, .. } = shape {
///     assert_eq!((head, query), (15, 5));
/// }
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum BiasShape {
    /// `[Lq, Lk]`, the same for every batch row and head.
    Shared,
    /// `[B, Lq, Lk]`, the same for every head.
    PerBatch,
    /// `[B, H, Lq, Lk]`.
    PerHead,
    /// Element `[b, h, i, j]` at `b*batch + h*head + i*query + j`; a zero
    /// stride broadcasts. The slice must reach the last element used. Made
    /// with [`BiasShape::strided`].
    #[non_exhaustive]
    Strided {
        /// Elements from one batch row to the next.
        batch: usize,
        /// Elements from one head to the next.
        head: usize,
        /// Elements from one query to the next.
        query: usize,
    },
}

impl BiasShape {
    /// [`BiasShape::Strided`]: element `[b, h, i, j]` at
    /// `b*batch + h*head + i*query + j` (a zero stride broadcasts).
    pub const fn strided(batch: usize, head: usize, query: usize) -> BiasShape {
        BiasShape::Strided { batch, head, query }
    }
}

/// A mask for [`Layer::forward`](crate::Layer::forward) and
/// [`Layer::cross_step`](crate::Layer::cross_step). Every part is optional
/// and they combine: a key is hidden from a query when any part hides it,
/// and the bias is then added to the scores of the keys still visible.
///
/// ```
/// let lengths = [3i64, 5];
/// let mask = attn::Mask::new().causal(attn::Causal::TopLeft).key_lengths(&lengths);
/// ```
#[derive(Debug, Clone, Copy)]
pub struct Mask<'a> {
    causal: Causal,
    empty_rows: EmptyRows,
    key_lengths: Option<&'a [i64]>,
    key_padding: Option<&'a [u8]>,
    bias: Option<(&'a [f32], BiasShape)>,
    window: usize,
}

impl<'a> Default for Mask<'a> {
    fn default() -> Self {
        Mask::new()
    }
}

impl<'a> Mask<'a> {
    /// No masking.
    pub fn new() -> Mask<'a> {
        Mask {
            causal: Causal::None,
            empty_rows: EmptyRows::Zero,
            key_lengths: None,
            key_padding: None,
            bias: None,
            window: 0,
        }
    }

    /// Causal masking.
    pub fn causal(mut self, mode: Causal) -> Mask<'a> {
        self.causal = mode;
        self
    }

    /// `[B]` valid keys per batch row: keys `j >= lengths[b]` are hidden.
    pub fn key_lengths(mut self, lengths: &'a [i64]) -> Mask<'a> {
        self.key_lengths = Some(lengths);
        self
    }

    /// `[B, Lk]` bytes, nonzero = hide that key (torch's key_padding_mask).
    pub fn key_padding(mut self, padding: &'a [u8]) -> Mask<'a> {
        self.key_padding = Some(padding);
        self
    }

    /// Additive bias on the scaled scores (finite or -inf, never NaN).
    pub fn bias(mut self, bias: &'a [f32], shape: BiasShape) -> Mask<'a> {
        self.bias = Some((bias, shape));
        self
    }

    /// Sliding window: the query at position p sees keys with p - j < w
    /// (0 = none).
    pub fn window(mut self, w: usize) -> Mask<'a> {
        self.window = w;
        self
    }

    /// What a query with no visible key gives.
    pub fn empty_rows(mut self, e: EmptyRows) -> Mask<'a> {
        self.empty_rows = e;
        self
    }

    /// The C descriptor for a call of these sizes, after checking every
    /// slice's length against them.
    pub(crate) fn raw(
        &self,
        batch: usize,
        heads: usize,
        len_q: usize,
        len_k: usize,
    ) -> Result<sys::attn_mask> {
        let mut m = sys::attn_mask::init_default().map_err(Error::from_library)?;
        m.causal = self.causal.raw();
        m.empty_rows = self.empty_rows.raw();
        if let Some(l) = self.key_lengths {
            expect_len(l.len(), &[batch], "key_lengths", "[batch]")?;
            m.key_lengths = l.as_ptr();
        }
        if let Some(p) = self.key_padding {
            expect_len(p.len(), &[batch, len_k], "key_padding", "[batch, len_k]")?;
            m.key_padding = p.as_ptr();
        }
        if let Some((b, shape)) = self.bias {
            let (sb, sh, sq) = match shape {
                BiasShape::Shared => {
                    expect_len(b.len(), &[len_q, len_k], "bias", "[len_q, len_k]")?;
                    (0, 0, len_k)
                }
                BiasShape::PerBatch => {
                    expect_len(
                        b.len(),
                        &[batch, len_q, len_k],
                        "bias",
                        "[batch, len_q, len_k]",
                    )?;
                    (elements(&[len_q, len_k], "bias")?, 0, len_k)
                }
                BiasShape::PerHead => {
                    let dims = [batch, heads, len_q, len_k];
                    expect_len(b.len(), &dims, "bias", "[batch, heads, len_q, len_k]")?;
                    (
                        elements(&dims[1..], "bias")?,
                        elements(&dims[2..], "bias")?,
                        len_k,
                    )
                }
                BiasShape::Strided {
                    batch: sb,
                    head: sh,
                    query: sq,
                } => {
                    check_strided(b.len(), [batch, heads, len_q, len_k], [sb, sh, sq])?;
                    (sb, sh, sq)
                }
            };
            m.bias = b.as_ptr();
            m.bias_stride_b = to_i64(sb, "bias stride")?;
            m.bias_stride_h = to_i64(sh, "bias stride")?;
            m.bias_stride_q = to_i64(sq, "bias stride")?;
        } else {
            m.bias = ptr::null();
        }
        m.window = to_i64(self.window, "window")?;
        Ok(m)
    }
}

/// A strided bias must reach its last element: (B-1)*sb + (H-1)*sh +
/// (Lq-1)*sq + Lk elements.
fn check_strided(len: usize, dims: [usize; 4], strides: [usize; 3]) -> Result<()> {
    if dims.contains(&0) {
        return Ok(()); // the library refuses the sizes themselves
    }
    let overflow = || Error::new(Status::OVERFLOW, "the bias strides overflow");
    let mut need = dims[3];
    for i in 0..3 {
        let term = (dims[i] - 1).checked_mul(strides[i]).ok_or_else(overflow)?;
        need = need.checked_add(term).ok_or_else(overflow)?;
    }
    if len < need {
        return Err(Error::new(
            Status::BAD_SIZE,
            format!(
                "bias has {} elements, but its strides {:?} reach element {}",
                len,
                strides,
                need - 1
            ),
        ));
    }
    Ok(())
}

/// Per-step mask of [`Layer::decode_step`](crate::Layer::decode_step).
#[derive(Debug, Clone, Copy)]
pub struct DecodeMask<'a> {
    new_lengths: Option<&'a [i64]>,
    new_padding: Option<&'a [u8]>,
    empty_rows: EmptyRows,
}

impl<'a> Default for DecodeMask<'a> {
    fn default() -> Self {
        DecodeMask::new()
    }
}

impl<'a> DecodeMask<'a> {
    /// Every new token of every row, no padding.
    pub fn new() -> DecodeMask<'a> {
        DecodeMask {
            new_lengths: None,
            new_padding: None,
            empty_rows: EmptyRows::Zero,
        }
    }

    /// `[B]` new tokens of each row, each in `[0, n_new]`.
    pub fn new_lengths(mut self, lengths: &'a [i64]) -> DecodeMask<'a> {
        self.new_lengths = Some(lengths);
        self
    }

    /// `[B, n_new]` bytes, nonzero = that new token is padding, hidden from
    /// every query of this and later steps.
    pub fn new_padding(mut self, padding: &'a [u8]) -> DecodeMask<'a> {
        self.new_padding = Some(padding);
        self
    }

    /// What a query with no visible key gives.
    pub fn empty_rows(mut self, e: EmptyRows) -> DecodeMask<'a> {
        self.empty_rows = e;
        self
    }

    pub(crate) fn raw(&self, batch: usize, n_new: usize) -> Result<sys::attn_decode_mask> {
        let mut m = sys::attn_decode_mask::init_default().map_err(Error::from_library)?;
        if let Some(l) = self.new_lengths {
            expect_len(l.len(), &[batch], "new_lengths", "[batch]")?;
            m.new_lengths = l.as_ptr();
        }
        if let Some(p) = self.new_padding {
            expect_len(p.len(), &[batch, n_new], "new_padding", "[batch, n_new]")?;
            m.new_padding = p.as_ptr();
        }
        m.empty_rows = self.empty_rows.raw();
        Ok(m)
    }
}
