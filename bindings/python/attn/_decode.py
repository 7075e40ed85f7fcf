# SPDX-License-Identifier: MIT
"""Incremental decoding: attn.KVCache (a self-attention layer's keys and
values of the tokens seen so far), attn.Memory (a cross-attention layer's
projected encoder output) and the steps that use them,
MultiheadAttention.decode_step and MultiheadAttention.cross_step.

Each object owns one C object (attn_kv_cache, attn_memory), freed by
close(), on leaving a ``with`` block or when the object is collected. It
keeps a reference to its layer, so the layer outlives it, and every call
checks that the layer given is that very object.
"""

import ctypes
import threading
import weakref
from typing import Any, Optional, Tuple, Union

import numpy as np

from . import _features, _lib, _mask
from ._convert import as_float32, as_int64, to_numpy
from ._lib import C, check

_F32 = np.dtype(np.float32)
_I64 = np.dtype(np.int64)


def _create(obj, layer, cfg, size, create, destroy):
    """Makes obj own a new C object of layer (a cache or a memory, created
    from cfg by size and create, freed by destroy when obj is closed or
    collected): sets obj._handle, _finalizer, _layer and nbytes."""
    from ._layer import MultiheadAttention

    if not isinstance(layer, MultiheadAttention):
        raise TypeError("layer must be an attn.MultiheadAttention, not %r"
                        % (layer,))
    handle = ctypes.c_void_p()
    nbytes = ctypes.c_size_t()
    with layer._lock.reading():
        lh = layer._live_handle()
        check(size(lh, ctypes.byref(cfg), ctypes.byref(nbytes)))
        check(create(lh, ctypes.byref(cfg), ctypes.byref(handle)))
    obj._handle = handle.value
    obj._finalizer = weakref.finalize(obj, destroy, obj._handle)
    obj._layer = layer
    obj.nbytes = int(nbytes.value)


def _check_owner(layer, obj, cls, name):
    """Refuses a closed layer, an obj that is not a live cls, or one made
    for another layer (AttnError ERR_MISMATCH), before C is called."""
    layer._live_handle()
    if not isinstance(obj, cls):
        raise TypeError("%s must be an attn.%s, not %r"
                        % (name, cls.__name__, obj))
    if obj.layer is not layer:
        raise _lib.AttnError(
            _lib.ERR_MISMATCH,
            "this %s was made for another layer" % cls.__name__,
            _lib.status_string(_lib.ERR_MISMATCH))
    obj._live_handle()


def _rows(value, batch, name, scalar=True):
    """value ([batch] integers, or with scalar one integer for every row)
    as a C-contiguous int64 array of batch elements."""
    return as_int64(value, (batch,), name, scalar, " (one per batch row)")


def _flags(value, shape, name):
    """A boolean (or integer, nonzero = set) array as C-contiguous bytes of
    0 / 1."""
    a = to_numpy(value)
    if a.dtype != np.bool_ and a.dtype.kind not in "iu":
        raise TypeError("%s must be boolean (True = hidden), not %s"
                        % (name, a.dtype))
    if a.shape != shape:
        raise ValueError("%s must have shape %s, not %s"
                         % (name, shape, tuple(a.shape)))
    return _mask.flag_bytes(a)


class KVCache(_lib.OwnsCObject):
    """A self-attention key/value cache (attn_kv_cache) for one layer: for
    each of ``batch`` rows, the projected keys and values of up to
    ``capacity`` tokens, their padding flags and the row's length.

    ``KVCache(layer, batch, capacity, *, window=0)``: the layer must be a
    self-attention layer (kdim == vdim == embed_dim). ``window`` > 0 is a
    sliding window of that many tokens: each query sees its own token and
    the window - 1 before it, and a full row drops the tokens no later
    query can see, so it goes on for ever as long as a step brings at most
    capacity - window + 1 tokens. Without a window a full row is an
    AttnError with status ERR_CAPACITY.

    Tokens of a row are numbered 0, 1, 2, ... in the order they were
    appended (the positions of rotary embeddings and ALiBi); a step's token
    at position p attends to positions 0 .. p of its row, as a causal
    forward over the whole sequence does.

    Use it with ``layer.decode_step(x, cache)``. The cache holds keys and
    values projected with the layer's weights at the time of each step:
    changing the weights does not update what it holds (reset() it).

    Free it with close() or a ``with`` block; otherwise it is freed when
    collected. A closed cache raises ValueError. One call at a time uses a
    cache: calls from several threads on one cache wait for each other.
    """

    _copy_hint = "; make another with KVCache(layer, batch, capacity)"

    def __init__(self, layer: Any, batch: int, capacity: int, *,
                 window: int = 0) -> None:
        from ._layer import _int

        cfg = _lib.new_cache_config()
        cfg.batch = _int(batch, "batch")
        cfg.capacity = _int(capacity, "capacity")
        cfg.window = _int(window, "window")
        _create(self, layer, cfg, C.attn_kv_cache_size,
                C.attn_kv_cache_create, C.attn_kv_cache_destroy)
        self._lock = threading.Lock()
        self.batch = int(cfg.batch)
        self.capacity = int(cfg.capacity)
        self.window = int(cfg.window)

    @property
    def layer(self) -> Any:
        """The MultiheadAttention this cache was made for."""
        return self._layer

    def _exclusive(self):
        return self._lock  # one call at a time uses a cache

    def __repr__(self) -> str:
        state = "closed" if self._handle is None else "%d bytes" % self.nbytes
        return "KVCache(batch=%d, capacity=%d, window=%d, %s)" % (
            self.batch, self.capacity, self.window, state)

    def _read_lengths(self):
        lengths = np.empty(self.batch, dtype=_I64)
        first = np.empty(self.batch, dtype=_I64)
        with self._lock:
            check(C.attn_kv_cache_lengths(self._live_handle(), self.batch,
                                          lengths.ctypes.data,
                                          first.ctypes.data))
        return lengths, first

    def lengths(self) -> np.ndarray:
        """Each row's length, int64 [batch]: tokens appended, less those
        truncated (tokens a sliding window dropped still count)."""
        return self._read_lengths()[0]

    def first(self) -> np.ndarray:
        """Position of each row's oldest token still held, int64 [batch]:
        0 unless a sliding window dropped tokens. Column j of a step's
        attention weights is the token at position first()[b] + j."""
        return self._read_lengths()[1]

    def truncate(self, lengths: Union[int, Any]) -> None:
        """Rolls rows back: row b keeps its first ``lengths[b]`` tokens (an
        integer: the same for every row), each at most the row's length;
        the next step continues as if the later tokens had never been
        appended. With a window a row can only go back as far as the tokens
        it still holds allow. AttnError (ERR_BAD_SIZE) otherwise, and the
        cache is unchanged."""
        a = _rows(lengths, self.batch, "lengths")
        with self._lock:
            check(C.attn_kv_cache_truncate(self._live_handle(), self.batch,
                                           a.ctypes.data))

    def reorder(self, src_rows: Any) -> None:
        """Reorders rows for beam search: afterwards row b holds what row
        ``src_rows[b]`` held (tokens, padding and length), for every b at
        once; repeats are allowed. An index outside [0, batch) is an
        AttnError (ERR_BAD_SIZE) and changes nothing."""
        a = _rows(src_rows, self.batch, "src_rows", scalar=False)
        with self._lock:
            check(C.attn_kv_cache_reorder(self._live_handle(), self.batch,
                                          a.ctypes.data))

    def reset(self) -> None:
        """Empties every row (length 0), keeping the memory."""
        with self._lock:
            check(C.attn_kv_cache_reset(self._live_handle()))


class Memory(_lib.OwnsCObject):
    """A cross-attention memory (attn_memory) for one layer: the keys and
    values of an encoder output, projected once with the layer's K/V
    weights, with per-row lengths and padding.

    ``Memory(layer, batch, capacity)``: up to ``capacity`` source positions
    per row. Fill it with ``set(key, value, ...)``, then call
    ``layer.cross_step(query, memory)`` as often as needed. A layer with
    rotary embeddings or ALiBi cannot have one (AttnError, ERR_BAD_OPTION):
    a memory has no positions.

    Free it with close() or a ``with`` block; otherwise it is freed when
    collected. A closed memory raises ValueError. Any number of threads may
    run cross steps on one memory at once; set() waits for them.
    """

    _copy_hint = ("; make another with Memory(layer, batch, capacity) and "
                  "set() it")

    def __init__(self, layer: Any, batch: int, capacity: int) -> None:
        from ._layer import _int, _ReadWriteLock

        cfg = _lib.new_memory_config()
        cfg.batch = _int(batch, "batch")
        cfg.capacity = _int(capacity, "capacity")
        _create(self, layer, cfg, C.attn_memory_size, C.attn_memory_create,
                C.attn_memory_destroy)
        self._lock = _ReadWriteLock()
        self._len_k = None
        self.batch = int(cfg.batch)
        self.capacity = int(cfg.capacity)

    @property
    def layer(self) -> Any:
        """The MultiheadAttention this memory was made for."""
        return self._layer

    @property
    def len_k(self) -> Optional[int]:
        """Source positions per row given to the last successful set(), or
        None before the first."""
        return self._len_k

    def __repr__(self) -> str:
        state = "closed" if self._handle is None else "%d bytes" % self.nbytes
        return "Memory(batch=%d, capacity=%d, len_k=%r, %s)" % (
            self.batch, self.capacity, self._len_k, state)

    def set(self, key: Any, value: Any,
            key_padding_mask: Optional[Any] = None, *,
            key_lengths: Optional[Any] = None, num_threads: int = 0,
            core: str = "auto") -> None:
        """Projects ``key`` [batch, S, kdim] and ``value`` [batch, S, vdim]
        with the layer's K/V weights into the memory, replacing what it
        held (S at most the capacity). Passing the same array as key and
        value projects both in one product when kdim == vdim.

        key_padding_mask: [batch, S] boolean (or integer), True / nonzero
                  hides that source position from every later cross step.
        key_lengths: an integer or [batch] integers in [0, S]: row b only
                  has its first key_lengths[b] positions.
        num_threads: library threads for the projection; 0 = the layer's.
        core:     checked as forward checks it ("packed" where it cannot
                  run is an AttnError here too).

        Inputs are converted as forward converts them. Raises ValueError
        for shapes that do not fit, TypeError for wrong types, AttnError
        with the library's message for anything it refuses (ERR_CAPACITY
        for S > capacity, ERR_NOT_FINITE, ...); the memory is then
        unchanged.
        """
        from ._layer import _call_options, _check_key_value

        layer = self._layer
        core_code = _lib.core_code(core)
        same = key is value
        k = as_float32(key)
        v = k if same else as_float32(value)
        if k.ndim != 3 or v.ndim != 3:
            raise ValueError("key and value must be 3-D [batch, S, width]; "
                             "got %d-D and %d-D" % (k.ndim, v.ndim))
        B, S = k.shape[0], k.shape[1]
        if B != self.batch or v.shape[0] != self.batch:
            raise ValueError(
                "key and value have batch sizes %d and %d, but the memory "
                "has %d rows" % (B, v.shape[0], self.batch))
        _check_key_value(layer, k, v)
        if S == 0:
            raise ValueError("key and value must hold at least one position")
        pad = None
        if key_padding_mask is not None:
            pad = _flags(key_padding_mask, (B, S), "key_padding_mask")
        lengths = None
        if key_lengths is not None:
            lengths = _rows(key_lengths, B, "key_lengths")
        opts = _call_options(num_threads, core_code)
        kp = k.ctypes.data
        vp = kp if same else v.ctypes.data
        with layer._lock.reading(), self._lock.writing():
            check(C.attn_memory_set(
                layer._live_handle(), self._live_handle(), B, S, kp, vp,
                None if lengths is None else lengths.ctypes.data,
                None if pad is None else pad.ctypes.data,
                ctypes.byref(opts)))
            self._len_k = S


def weights_buffer(opts, need_weights, average, batch, heads, rows, cols):
    """With need_weights, a new float32 array for a call's attention
    weights ([batch, rows, cols] averaged over heads, or [batch, heads,
    rows, cols]), which opts then points at; None otherwise."""
    if not need_weights:
        return None
    if average:
        weights = np.empty((batch, rows, cols), dtype=_F32)
    else:
        weights = np.empty((batch, heads, rows, cols), dtype=_F32)
    opts.attn_weights = weights.ctypes.data
    opts.weights_mode = (_lib.WEIGHTS_AVERAGE if average
                         else _lib.WEIGHTS_PER_HEAD)
    return weights


def _step_input(layer, x, batch, name):
    """x as a C-contiguous float32 [batch, n, E] array."""
    a = as_float32(x)
    if a.ndim != 3:
        raise ValueError("%s must be 3-D [batch, n, embed_dim], not %d-D"
                         % (name, a.ndim))
    if a.shape[0] != batch:
        raise ValueError("%s has batch size %d, but the %s has %d rows"
                         % (name, a.shape[0],
                            "cache" if name == "x" else "memory", batch))
    if a.shape[2] != layer.embed_dim:
        raise ValueError("%s has width %d, but embed_dim is %d"
                         % (name, a.shape[2], layer.embed_dim))
    if a.shape[1] == 0:
        raise ValueError("%s must hold at least one token per row" % name)
    return a


def decode_step(layer, x, cache, new_lengths, new_padding, need_weights,
                average_attn_weights, empty_rows, num_threads, start, core
                ) -> Tuple[np.ndarray, Optional[np.ndarray]]:
    from ._layer import _call_options

    _check_owner(layer, cache, KVCache, "cache")
    core_code = _lib.core_code(core)
    B = cache.batch
    a = _step_input(layer, x, B, "x")
    n = a.shape[1]

    mask = _lib.new_decode_mask()
    mask.empty_rows = layer._empty_rows_of(empty_rows)
    keep = []
    if new_lengths is not None:
        lengths = _rows(new_lengths, B, "new_lengths")
        keep.append(lengths)
        mask.new_lengths = lengths.ctypes.data
    if new_padding is not None:
        pad = _flags(new_padding, (B, n), "new_padding")
        keep.append(pad)
        mask.new_padding = pad.ctypes.data

    out = np.empty((B, n, layer.embed_dim), dtype=_F32)
    opts = _call_options(num_threads, core_code)
    weights = weights_buffer(opts, need_weights, average_attn_weights, B,
                             layer.num_heads, n, cache.capacity)
    _features.positions(opts, keep, B, n, n, False, start=start)

    with layer._lock.reading(), cache._lock:
        check(C.attn_decode_step(
            layer._live_handle(), cache._live_handle(), B, n, a.ctypes.data,
            ctypes.byref(mask), ctypes.byref(opts), out.ctypes.data))
    del keep
    return out, weights


def cross_step(layer, query, memory, key_padding_mask, attn_mask, is_causal,
               need_weights, average_attn_weights, empty_rows, num_threads,
               core) -> Tuple[np.ndarray, Optional[np.ndarray]]:
    from ._layer import _call_options

    _check_owner(layer, memory, Memory, "memory")
    core_code = _lib.core_code(core)
    B = memory.batch
    q = _step_input(layer, query, B, "query")
    n = q.shape[1]
    rows = layer._empty_rows_of(empty_rows)
    out = np.empty((B, n, layer.embed_dim), dtype=_F32)
    opts = _call_options(num_threads, core_code)

    with layer._lock.reading(), memory._lock.reading():
        memory._live_handle()
        S = memory.len_k
        if S is None:
            raise ValueError("the memory was never set (Memory.set)")
        mask, keep = _mask.build(key_padding_mask, attn_mask, bool(is_causal),
                                 rows, B, layer.num_heads, n, S, False)
        weights = weights_buffer(opts, need_weights, average_attn_weights,
                                 B, layer.num_heads, n, S)
        check(C.attn_cross_step(
            layer._live_handle(), memory._live_handle(), B, n, q.ctypes.data,
            ctypes.byref(mask) if mask is not None else None,
            ctypes.byref(opts), out.ctypes.data))
        del keep
    return out, weights
