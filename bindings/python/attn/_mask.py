# SPDX-License-Identifier: MIT
"""Turning torch-style mask arguments into one attn_mask descriptor.

torch.nn.MultiheadAttention takes two masks, each boolean or float:

- key_padding_mask [B, S] (unbatched: [S]): True hides key j from every
  query of batch row b; a float mask is added to the scores of key j.
- attn_mask [L, S] or [B*num_heads, L, S] (unbatched: [num_heads, L, S]):
  True hides key j from query i; a float mask is added to the scores. Byte
  (uint8) masks count as boolean, as in torch.

The C library has a boolean key-padding array and one additive float bias
addressed through (batch, head, query) strides, so:

- a boolean key_padding_mask goes straight to attn_mask.key_padding (a
  C-contiguous bool array is passed without a copy);
- a float attn_mask goes to attn_mask.bias; a 3-D [B*H, L, S] mask is viewed
  as [B, H, L, S] and described by its strides, so any float32 array whose
  rows are contiguous is passed without a copy;
- a boolean attn_mask is converted once into a float32 bias of 0 / -inf,
  except a 2-D mask that is exactly torch's causal mask
  (``triu(ones(L, S), 1)``), which becomes the library's causal mode and no
  bias at all;
- a float key_padding_mask is a bias with strides (S, 0, 0), passed without
  a copy, unless there is also an attn_mask: then the two are added into one
  [B, H or 1, L, S] bias (torch 2's rule; torch 1.13 cannot combine a float
  key_padding_mask with a float attn_mask).
"""

import numpy as np

from . import _lib
from ._convert import to_numpy as _to_numpy

_F32 = np.dtype(np.float32)


def flag_bytes(a):
    """A boolean or integer array (nonzero = set) as C-contiguous bytes,
    nonzero where it is set, in the array's logical (C) order whatever its
    strides."""
    if a.dtype != np.bool_ and a.dtype != np.uint8:
        a = a != 0
    return np.ascontiguousarray(a).view(np.uint8)


def _is_bool_like(a):
    return a.dtype == np.bool_ or np.issubdtype(a.dtype, np.integer)


def _strides_in_elements(a):
    """Element strides of a float32 array, or None if the C bias cannot
    address it as is (negative or unaligned strides, non-contiguous rows)."""
    strides = []
    for n, s in zip(a.shape, a.strides):
        if n == 1:
            strides.append(0)
            continue
        if s < 0 or s % _F32.itemsize:
            return None
        strides.append(s // _F32.itemsize)
    if strides[-1] not in (0, 1) or (a.shape[-1] > 1 and strides[-1] != 1):
        return None
    return strides


def _float_bias(a):
    """float32 array with the same values, copied only when needed."""
    if a.dtype == _F32:
        return a
    return a.astype(_F32)


def _as_4d(attn_mask, batch, heads, len_q, len_k, unbatched):
    """attn_mask viewed as [B or 1, H or 1, L, S], checking torch's shapes."""
    m = attn_mask
    if m.ndim == 2:
        if m.shape != (len_q, len_k):
            raise ValueError(
                "the 2-D attn_mask has shape %s, but should be (L, S) = %s"
                % (tuple(m.shape), (len_q, len_k)))
        return m[None, None]
    if m.ndim == 3:
        want = (batch * heads, len_q, len_k)
        if m.shape != want:
            raise ValueError(
                "the 3-D attn_mask has shape %s, but should be %s = %s"
                % (tuple(m.shape),
                   "(num_heads, L, S)" if unbatched else
                   "(batch * num_heads, L, S)", want))
        return m.reshape(batch, heads, len_q, len_k)
    if m.ndim == 4 and not unbatched:
        ok = (m.shape[0] in (1, batch) and m.shape[1] in (1, heads)
              and m.shape[2:] == (len_q, len_k))
        if not ok:
            raise ValueError(
                "the 4-D attn_mask has shape %s, but should be (B or 1, "
                "num_heads or 1, L, S) with B = %d, num_heads = %d, L = %d, "
                "S = %d" % (tuple(m.shape), batch, heads, len_q, len_k))
        return m
    raise ValueError(
        "attn_mask must have 2 or 3 dimensions (or 4 for batched input), "
        "not %d" % m.ndim)


def _is_torch_causal(m):
    """True when the boolean [L, S] mask hides exactly the keys j > i."""
    len_q, len_k = m.shape
    rows = np.arange(len_q)[:, None]
    cols = np.arange(len_k)[None, :]
    return bool(np.array_equal(m != 0, cols > rows))


def build(key_padding_mask, attn_mask, is_causal, empty_rows, batch, heads,
          len_q, len_k, unbatched):
    """The attn_mask struct for one call and the arrays it points into.

    Returns (mask, keep): the caller must keep ``keep`` alive until the C
    call returns. ``mask`` is None when nothing is masked and empty rows use
    the library's default.
    """
    mask = _lib.new_mask()
    keep = []
    used = False
    if is_causal:
        mask.causal = _lib.CAUSAL_TOP_LEFT
        used = True
    if empty_rows != _lib.EMPTY_ROW_ZERO:
        mask.empty_rows = empty_rows
        used = True

    padding_bias = None  # float key_padding_mask, [B, S]
    if key_padding_mask is not None:
        kpm = _to_numpy(key_padding_mask)
        if unbatched:
            if kpm.ndim != 1:
                raise ValueError(
                    "for unbatched input key_padding_mask must have shape "
                    "(S,) = (%d,), not %s" % (len_k, tuple(kpm.shape)))
            kpm = kpm[None]
        if kpm.shape != (batch, len_k):
            raise ValueError(
                "key_padding_mask has shape %s, but should be (B, S) = %s"
                % (tuple(kpm.shape), (batch, len_k)))
        if _is_bool_like(kpm):
            padding = flag_bytes(kpm)
            keep.append(padding)
            mask.key_padding = padding.ctypes.data
        elif np.issubdtype(kpm.dtype, np.floating):
            padding_bias = np.ascontiguousarray(_float_bias(kpm))
        else:
            raise TypeError(
                "key_padding_mask must be boolean or floating point, not %s"
                % kpm.dtype)
        used = True

    bias4 = None  # [B|1, H|1, L, S] float32 view
    if attn_mask is not None:
        m = _to_numpy(attn_mask)
        if _is_bool_like(m):
            if (m.ndim == 2 and m.shape == (len_q, len_k)
                    and _is_torch_causal(m)):
                mask.causal = _lib.CAUSAL_TOP_LEFT
            else:
                m4 = _as_4d(m, batch, heads, len_q, len_k, unbatched)
                bias4 = np.where(m4 != 0, np.float32(-np.inf), np.float32(0))
        elif np.issubdtype(m.dtype, np.floating):
            bias4 = _as_4d(_float_bias(m), batch, heads, len_q, len_k,
                           unbatched)
        else:
            raise TypeError(
                "attn_mask must be boolean, uint8 or floating point, not %s"
                % m.dtype)
        used = True

    if padding_bias is not None:
        if bias4 is None:
            keep.append(padding_bias)
            mask.bias = padding_bias.ctypes.data
            mask.bias_stride_b = len_k if batch > 1 else 0
            return mask, keep
        bias4 = bias4 + padding_bias[:, None, None, :]

    if bias4 is not None:
        strides = _strides_in_elements(bias4)
        if strides is None or (strides[2] and strides[2] < len_k):
            bias4 = np.ascontiguousarray(bias4)
            strides = _strides_in_elements(bias4)
        keep.append(bias4)
        mask.bias = bias4.ctypes.data
        mask.bias_stride_b, mask.bias_stride_h, mask.bias_stride_q = (
            strides[:3])
    return (mask if used else None), keep
