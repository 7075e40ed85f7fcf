"""The attention features of today's decoder layers, for
attn.MultiheadAttention: rotary position embeddings, ALiBi, logit
soft-capping, attention sinks, QK-norm and per-projection biases (the
constructor's keyword arguments), and token positions (forward's)."""

import ctypes

import numpy as np

from . import _lib
from ._convert import as_int64, to_numpy

_PAIRING = {"halves": _lib.ROPE_HALVES, "adjacent": _lib.ROPE_ADJACENT}
_QK_NORM = {None: _lib.QK_NORM_NONE, "head": _lib.QK_NORM_HEAD,
            "all": _lib.QK_NORM_ALL}
_ALIBI = {None: _lib.ALIBI_NONE, "causal": _lib.ALIBI_CAUSAL,
          "symmetric": _lib.ALIBI_SYMMETRIC}
_BIAS_BITS = {"q": _lib.BIAS_Q, "k": _lib.BIAS_K, "v": _lib.BIAS_V,
              "o": _lib.BIAS_O}

# Weight names of the features, by weight id (Hugging Face's names).
FEATURE_WEIGHTS = {
    "q_proj.bias": _lib.B_Q,
    "k_proj.bias": _lib.B_K,
    "v_proj.bias": _lib.B_V,
    "q_norm.weight": _lib.W_Q_NORM,
    "k_norm.weight": _lib.W_K_NORM,
    "sinks": _lib.W_SINKS,
}


class RotaryEmbedding:
    """Rotary position embeddings of a layer (attn_rope_config).

    - ``theta``: base of the frequencies (default 10000);
    - ``rotary_dim``: dimensions of each head that rotate, even, at most
      head_dim (default: all);
    - ``pairing``: "halves" (Hugging Face's rotate_half, default) or
      "adjacent" (GPT-J, GGUF);
    - ``linear_factor``: linear position scaling (default 1);
    - ``inv_freq``: the rotary_dim/2 inverse frequencies themselves, which
      replace theta and linear_factor (Llama 3, YaRN: see attn.h);
    - ``attention_factor``: factor on the rotated q and k (YaRN's attention
      scaling; default 1).
    """

    def __init__(self, theta=10000.0, rotary_dim=None, pairing="halves",
                 linear_factor=1.0, inv_freq=None, attention_factor=1.0):
        if pairing not in _PAIRING:
            raise ValueError("pairing must be 'halves' or 'adjacent', not %r"
                             % (pairing,))
        self.theta = float(theta)
        self.rotary_dim = rotary_dim
        self.pairing = pairing
        self.linear_factor = float(linear_factor)
        self.inv_freq = (None if inv_freq is None
                         else np.ascontiguousarray(inv_freq, dtype=np.float32))
        self.attention_factor = float(attention_factor)

    def __repr__(self):
        return ("RotaryEmbedding(theta=%g, rotary_dim=%r, pairing=%r)"
                % (self.theta, self.rotary_dim, self.pairing))

    def _struct(self, keep):
        r = _lib.new_rope_config()
        r.pairing = _PAIRING[self.pairing]
        r.rotary_dim = 0 if self.rotary_dim is None else int(self.rotary_dim)
        r.theta = self.theta
        r.linear_factor = self.linear_factor
        r.attention_factor = self.attention_factor
        if self.inv_freq is not None:
            keep.append(self.inv_freq)
            r.inv_freq = self.inv_freq.ctypes.data
        keep.append(r)
        return ctypes.addressof(r)


def _choice(table, value, name):
    try:
        return table[value]
    except (KeyError, TypeError):
        raise ValueError("%s must be one of %s, not %r"
                         % (name, ", ".join(repr(k) for k in table), value)
                         ) from None


def apply(cfg, keep, num_heads, bias_parts=None, rope=None, qk_norm=None,
          qk_norm_eps=None, qk_norm_unit_offset=False, alibi=None,
          alibi_slopes=None, softcap=None, sinks=False):
    """Sets the feature fields of a Config; objects the struct points at
    are appended to keep (alive until attn_layer_create has copied them)."""
    wanted = (bias_parts is not None or rope is not None or qk_norm
              or alibi or alibi_slopes is not None or softcap or sinks)
    if wanted and not _lib.has_features():
        raise NotImplementedError(
            "the loaded libattn (%s, %s) has no decoder attention features"
            % (_lib.version, _lib.path))
    if bias_parts is not None:
        if not isinstance(bias_parts, str) or set(bias_parts) - set("qkvo"):
            raise ValueError("bias_parts must be a string of 'q', 'k', 'v' "
                             "and 'o' (e.g. 'qkv'), not %r" % (bias_parts,))
        bits = 0
        for c in bias_parts:
            bits |= _BIAS_BITS[c]
        cfg.bias_parts = bits
        cfg.bias = 1 if bits else 0
    if rope is not None:
        if isinstance(rope, dict):
            rope = RotaryEmbedding(**rope)
        if not isinstance(rope, RotaryEmbedding):
            raise TypeError("rope must be an attn.RotaryEmbedding or a dict "
                            "of its arguments, not %r" % (rope,))
        cfg.rope = rope._struct(keep)
    cfg.qk_norm = _choice(_QK_NORM, qk_norm, "qk_norm")
    cfg.qk_norm_eps = 0.0 if qk_norm_eps is None else float(qk_norm_eps)
    cfg.qk_norm_unit_offset = 1 if qk_norm_unit_offset else 0
    cfg.alibi = _choice(_ALIBI, alibi, "alibi")
    if alibi_slopes is not None:
        slopes = np.ascontiguousarray(alibi_slopes, dtype=np.float32)
        # Without ALiBi the library refuses any table (ERR_BAD_OPTION)
        # before reading it: that, not the table's shape, is the mistake.
        if alibi is not None and slopes.shape != (num_heads,):
            raise ValueError("alibi_slopes must have shape (%d,), not %s"
                             % (num_heads, slopes.shape))
        keep.append(slopes)
        cfg.alibi_slopes = slopes.ctypes.data
    cfg.softcap = 0.0 if softcap is None else float(softcap)
    cfg.sinks = 1 if sinks else 0


def positions(opts, keep, B, Lq, Lk, unbatched, positions=None,
              key_positions=None, start=None):
    """Points opts at an attn_positions for forward's arguments (nothing
    when all are None)."""
    if positions is None and key_positions is None and start is None:
        return
    if not _lib.has_features():
        raise NotImplementedError("the loaded libattn has no positions")
    p = _lib.new_positions()
    if start is not None:
        s = as_int64(start, (B,), "start", broadcast=True)
        keep.append(s)
        p.start = s.ctypes.data
    for value, L, field, name in ((positions, Lq, "q_positions", "positions"),
                                  (key_positions, Lk, "k_positions",
                                   "key_positions")):
        if value is None:
            continue
        a = to_numpy(value)
        if unbatched and a.ndim == 1:
            a = a[None]
        a = as_int64(a, (B, L), name)
        keep.append(a)
        setattr(p, field, a.ctypes.data)
    keep.append(p)
    opts.positions = ctypes.addressof(p)
