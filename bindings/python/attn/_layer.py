# SPDX-License-Identifier: MIT
"""attn.MultiheadAttention: a libattn layer behind torch's interface."""

import ctypes
import os
import threading
import weakref
from contextlib import contextmanager
from typing import Any, Dict, List, Mapping, Optional, Tuple, Union

import numpy as np
import numpy.typing as npt

from . import _decode, _features, _lib, _mask
from ._convert import as_float32
from ._decode import KVCache, Memory
from ._lib import C, check

_F32 = np.dtype(np.float32)

#: What calls accept as tensors: numpy arrays, torch tensors (any device,
#: with or without grad), nested lists.
ArrayLike = Union[npt.ArrayLike, Any]
#: What calls return: float32 numpy arrays.
Float32Array = npt.NDArray[np.float32]
#: A path as open() takes it.
PathLike = Union[str, "os.PathLike[str]"]

_EMPTY_ROWS = {"zero": _lib.EMPTY_ROW_ZERO, "nan": _lib.EMPTY_ROW_NAN}
_NAMING = {"torch": _lib.NAMES_TORCH, "hf": _lib.NAMES_HF,
           "hf_o_proj": _lib.NAMES_HF_O_PROJ}

# torch's state_dict names -> weight ids of the C API.
_WEIGHT_IDS = {
    "in_proj_weight": _lib.W_IN_PROJ,
    "q_proj_weight": _lib.W_Q,
    "k_proj_weight": _lib.W_K,
    "v_proj_weight": _lib.W_V,
    "in_proj_bias": _lib.B_IN_PROJ,
    "out_proj.weight": _lib.W_OUT,
    "out_proj.bias": _lib.B_OUT,
}
_WEIGHT_IDS.update(_features.FEATURE_WEIGHTS)


class _ReadWriteLock:
    """Many forward calls at once, or one weight change alone: the C layer
    is read-only during forward and must not change under it."""

    def __init__(self):
        self._cond = threading.Condition(threading.Lock())
        self._readers = 0
        self._writing = False

    @contextmanager
    def reading(self):
        with self._cond:
            while self._writing:
                self._cond.wait()
            self._readers += 1
        try:
            yield
        finally:
            with self._cond:
                self._readers -= 1
                if not self._readers:
                    self._cond.notify_all()

    @contextmanager
    def writing(self):
        with self._cond:
            while self._writing or self._readers:
                self._cond.wait()
            self._writing = True
        try:
            yield
        finally:
            with self._cond:
                self._writing = False
                self._cond.notify_all()


def _empty_rows_code(value):
    try:
        return _EMPTY_ROWS[value]
    except (KeyError, TypeError):
        raise ValueError(
            "empty_rows must be 'zero' or 'nan', not %r" % (value,)) from None


class MultiheadAttention(_lib.OwnsCObject):
    """Multi-head attention computed by libattn, with the constructor, call
    signature and weight layout of ``torch.nn.MultiheadAttention``.

    Positional arguments follow torch's meaning (``bias``, ``kdim``, ``vdim``,
    ``batch_first``); note that ``batch_first`` defaults to True here.
    Keyword-only extras:

    - ``dropout``: accepted for torch compatibility and ignored; the layer
      always computes what torch computes in eval mode.
    - ``add_bias_kv`` / ``add_zero_attn``: only False is supported.
    - ``scale``: score scale, default 1/sqrt(head_dim).
    - ``num_kv_heads``: grouped-query attention (K/V projections with
      num_kv_heads * head_dim outputs); default num_heads.
    - ``num_threads``: threads per forward call, 0 (default) = every
      thread of the call's runtime (the CPUs the process may use).
    - ``empty_rows``: what a query with no visible key produces: "zero"
      (default: zero attention weights, so the output row is out_proj's bias)
      or "nan" (torch's NaN row). Can be overridden per call.
    - ``seed``: seed of the weight initialisation (torch's scheme: xavier
      in_proj, zero biases), random when None.

    Decoder attention features (keyword-only, all off by default; see
    include/attn/attn.h for the formulas):

    - ``rope``: an ``attn.RotaryEmbedding`` (or a dict of its arguments):
      rotary position embeddings of q and k;
    - ``bias_parts``: which projections have a bias, a string of "q", "k",
      "v", "o" (Qwen2: "qkv"); replaces ``bias`` when given;
    - ``qk_norm``: "head" (Qwen3, Gemma 3) or "all" (OLMo 2) RMSNorm of q
      and k, with ``qk_norm_eps`` (default 1e-6) and
      ``qk_norm_unit_offset`` (Gemma's 1 + w);
    - ``alibi``: "causal" or "symmetric", with ``alibi_slopes`` (default:
      the standard geometric slopes; slopes without ``alibi`` are an
      AttnError, ERR_BAD_OPTION);
    - ``softcap``: logit soft-capping, cap * tanh(s / cap) (Gemma 2);
    - ``sinks``: one learned sink logit per head (gpt-oss).

    Their weights are "q_norm.weight", "k_norm.weight" and "sinks" (and
    "q_proj.bias" etc. for a part of the q/k/v biases); forward takes
    ``positions``, ``key_positions`` and ``start``.

    Weights are set at construction; replace them with ``from_torch``,
    ``load_state_dict``, ``set_weight`` or ``load_safetensors``.

    Thread safety: any number of threads may call the layer at once (the
    library runs without the GIL). Weight changes wait for running calls
    and block new ones until done.
    """

    _copy_hint = ("; make another with the same arguments and "
                  "load_state_dict(layer.state_dict())")

    def __init__(self, embed_dim: int, num_heads: int, bias: bool = True,
                 kdim: Optional[int] = None, vdim: Optional[int] = None,
                 batch_first: bool = True, *, dropout: float = 0.0,
                 add_bias_kv: bool = False, add_zero_attn: bool = False,
                 scale: Optional[float] = None,
                 num_kv_heads: Optional[int] = None, num_threads: int = 0,
                 empty_rows: str = "zero", seed: Optional[int] = None,
                 bias_parts: Optional[str] = None, rope: Any = None,
                 qk_norm: Optional[str] = None,
                 qk_norm_eps: Optional[float] = None,
                 qk_norm_unit_offset: bool = False,
                 alibi: Optional[str] = None,
                 alibi_slopes: Optional[ArrayLike] = None,
                 softcap: Optional[float] = None, sinks: bool = False
                 ) -> None:
        self._handle = None
        if add_bias_kv or add_zero_attn:
            raise ValueError(
                "add_bias_kv and add_zero_attn are not supported by libattn")
        self._empty_rows = _empty_rows_code(empty_rows)
        cfg = _lib.new_config()
        cfg.embed_dim = _int(embed_dim, "embed_dim")
        cfg.num_heads = _int(num_heads, "num_heads")
        cfg.kdim = 0 if kdim is None else _int(kdim, "kdim")
        cfg.vdim = 0 if vdim is None else _int(vdim, "vdim")
        cfg.bias = 1 if bias else 0
        cfg.num_threads = _int(num_threads, "num_threads", 32)
        cfg.scale = 0.0 if scale is None else float(scale)
        cfg.num_kv_heads = 0 if num_kv_heads is None else _int(
            num_kv_heads, "num_kv_heads")
        keep = []
        _features.apply(cfg, keep, cfg.num_heads, bias_parts=bias_parts,
                        rope=rope, qk_norm=qk_norm, qk_norm_eps=qk_norm_eps,
                        qk_norm_unit_offset=qk_norm_unit_offset, alibi=alibi,
                        alibi_slopes=alibi_slopes, softcap=softcap,
                        sinks=sinks)
        handle = ctypes.c_void_p()
        check(C.attn_layer_create(ctypes.byref(cfg), ctypes.byref(handle)))
        self._handle = handle.value
        self._finalizer = weakref.finalize(
            self, C.attn_layer_destroy, self._handle)
        self._lock = _ReadWriteLock()
        self.batch_first = bool(batch_first)
        self.dropout = float(dropout)

        got = _lib.new_config()
        check(C.attn_layer_get_config(self._handle, ctypes.byref(got)))
        self.embed_dim = int(got.embed_dim)
        self.num_heads = int(got.num_heads)
        self.kdim = int(got.kdim)
        self.vdim = int(got.vdim)
        self.head_dim = self.embed_dim // self.num_heads
        self.num_kv_heads = int(got.num_kv_heads)
        self.scale = float(got.scale)
        self.num_threads = int(got.num_threads)
        self.bias = bool(got.bias)
        self._features = _read_features(got)
        self._qkv_same_embed_dim = (self.kdim == self.embed_dim
                                    and self.vdim == self.embed_dim)
        if seed is None:
            seed = int.from_bytes(os.urandom(8), "little")
        if seed is not _LEAVE_UNSET:
            self.init_weights(seed)

    def __repr__(self) -> str:
        extra = ""
        if not self._qkv_same_embed_dim:
            extra = ", kdim=%d, vdim=%d" % (self.kdim, self.vdim)
        if self.num_kv_heads != self.num_heads:
            extra += ", num_kv_heads=%d" % self.num_kv_heads
        return "MultiheadAttention(embed_dim=%d, num_heads=%d, bias=%s%s, " \
               "batch_first=%s)" % (self.embed_dim, self.num_heads,
                                    self.bias, extra, self.batch_first)

    @property
    def empty_rows(self) -> str:
        """Default for query rows with no visible key: "zero" or "nan"."""
        return "nan" if self._empty_rows == _lib.EMPTY_ROW_NAN else "zero"

    @empty_rows.setter
    def empty_rows(self, value: str) -> None:
        self._empty_rows = _empty_rows_code(value)

    def _empty_rows_of(self, empty_rows):
        """The library's code for a call's ``empty_rows``: the layer's
        setting when None."""
        return (self._empty_rows if empty_rows is None
                else _empty_rows_code(empty_rows))

    # ------------------------------------------------------------- weights

    def weight_names(self) -> List[str]:
        """Names of this layer's tensors in torch's state_dict (plus, for
        the decoder features, Hugging Face's: q_proj.bias, k_proj.bias and
        v_proj.bias when the layer has only some of them, q_norm.weight,
        k_norm.weight, sinks)."""
        names = (["in_proj_weight"] if self._qkv_same_embed_dim
                 else ["q_proj_weight", "k_proj_weight", "v_proj_weight"])
        parts = self._features["bias_parts"]
        qkv = parts & (_lib.BIAS_Q | _lib.BIAS_K | _lib.BIAS_V)
        if qkv == _lib.BIAS_Q | _lib.BIAS_K | _lib.BIAS_V:
            names.append("in_proj_bias")
        else:
            names += [n for n, bit in (("q_proj.bias", _lib.BIAS_Q),
                                       ("k_proj.bias", _lib.BIAS_K),
                                       ("v_proj.bias", _lib.BIAS_V))
                      if parts & bit]
        names.append("out_proj.weight")
        if parts & _lib.BIAS_O:
            names.append("out_proj.bias")
        if self._features["qk_norm"]:
            names += ["q_norm.weight", "k_norm.weight"]
        if self._features["sinks"]:
            names.append("sinks")
        return names

    def _weight_shape(self, name):
        E, KV = self.embed_dim, self.num_kv_heads * self.head_dim
        return {
            "in_proj_weight": (E + 2 * KV, E),
            "q_proj_weight": (E, E),
            "k_proj_weight": (KV, self.kdim),
            "v_proj_weight": (KV, self.vdim),
            "in_proj_bias": (E + 2 * KV,),
            "out_proj.weight": (E, E),
            "out_proj.bias": (E,),
            "q_proj.bias": (E,),
            "k_proj.bias": (KV,),
            "v_proj.bias": (KV,),
            "q_norm.weight": (E if self._features["qk_norm"] == "all"
                              else self.head_dim,),
            "k_norm.weight": (KV if self._features["qk_norm"] == "all"
                              else self.head_dim,),
            "sinks": (self.num_heads,),
        }[name]

    def _weight_id(self, name):
        try:
            return _WEIGHT_IDS[name]
        except KeyError:
            raise KeyError(
                "unknown weight %r; torch's names are %s"
                % (name, ", ".join(sorted(_WEIGHT_IDS)))) from None

    def _checked_shape(self, name, which):
        """Shape of weight `name`, after the library confirmed that this
        layer's layout has it."""
        count = ctypes.c_int64()
        with self._lock.reading():  # close() must not free the layer now
            check(C.attn_layer_weight_count(self._live_handle(), which,
                                            ctypes.byref(count)))
        return self._weight_shape(name)

    def _prepared(self, name, value):
        """(weight id, float32 data) for set_weight, checked against this
        layer's layout and shape."""
        which = self._weight_id(name)
        data = as_float32(value)
        shape = self._checked_shape(name, which)
        if data.shape != shape:
            raise ValueError("%s must have shape %s, not %s"
                             % (name, shape, tuple(data.shape)))
        return which, data

    def _store(self, prepared):
        """Copies prepared weights into the layer as one change: forward
        calls see either none or all of them."""
        with self._lock.writing():
            handle = self._live_handle()
            for which, data in prepared:
                check(C.attn_layer_set_weight(handle, which,
                                              data.ctypes.data, data.size))

    def set_weight(self, name: str, value: ArrayLike) -> None:
        """Copies one tensor, by its torch state_dict name
        ("in_proj_weight", "out_proj.bias", ...), into the layer.
        The packed in_proj tensors are only in the layout torch uses when
        kdim == vdim == embed_dim; q/k/v_proj_weight can be set in either."""
        self._store([self._prepared(name, value)])

    def get_weight(self, name: str) -> Float32Array:
        """A copy of one tensor of the layer, by its torch name."""
        which = self._weight_id(name)
        out = np.empty(self._checked_shape(name, which), dtype=_F32)
        with self._lock.reading():
            check(C.attn_layer_get_weight(self._live_handle(), which,
                                          out.ctypes.data, out.size))
        return out

    def state_dict(self) -> Dict[str, Float32Array]:
        """The layer's tensors under the names torch's state_dict uses for
        the same configuration (copies, float32)."""
        with self._lock.reading():  # one consistent set of weights
            return {name: self.get_weight(name)
                    for name in self.weight_names()}

    def load_state_dict(self, state_dict: Mapping[str, ArrayLike],
                        strict: bool = True) -> None:
        """Sets the tensors found in a torch-style state_dict (numpy arrays,
        torch tensors or nested lists). With strict, every tensor of the
        layer must be given and no unknown name may appear. All tensors are
        checked before any is set, and forward calls running on other
        threads see either the old or the new weights, never a mixture."""
        names = set(state_dict)
        unknown = sorted(names - set(_WEIGHT_IDS))
        if strict and unknown:
            raise KeyError("unexpected tensors in state_dict: %s"
                           % ", ".join(unknown))
        separate = {"q_proj_weight", "k_proj_weight", "v_proj_weight"}
        if "in_proj_weight" in names and names & separate:
            raise ValueError(
                "state_dict has both in_proj_weight and %s: give one layout"
                % ", ".join(sorted(names & separate)))
        if strict:
            needed = set(self.weight_names())
            if self._qkv_same_embed_dim and names & separate:
                needed = (needed - {"in_proj_weight"}) | separate
            missing = sorted(needed - names)
            if missing:
                raise KeyError("missing tensors in state_dict: %s"
                               % ", ".join(missing))
        given = [name for name in _WEIGHT_IDS if name in names]
        prepared = [self._prepared(name, state_dict[name]) for name in given]
        for (_, data), name in zip(prepared, given):
            if not np.isfinite(data).all():
                raise _lib.AttnError(
                    _lib.ERR_NOT_FINITE,
                    "%s contains NaN or infinity; no weight was changed"
                    % name, _lib.status_string(_lib.ERR_NOT_FINITE))
        self._store(prepared)

    def init_weights(self, seed: int = 0) -> None:
        """Re-initialises every weight as torch does (xavier-uniform in_proj,
        zero biases) from a generator seeded with ``seed``; the same seed
        gives the same weights everywhere."""
        with self._lock.writing():
            check(C.attn_layer_init_weights(self._live_handle(),
                                            int(seed) & (2**64 - 1)))

    @classmethod
    def from_torch(cls, module: Any, *, batch_first: Optional[bool] = None,
                   num_threads: int = 0, empty_rows: str = "zero"
                   ) -> "MultiheadAttention":
        """A layer with the configuration and a copy of the weights of a
        ``torch.nn.MultiheadAttention`` (packed or separate projections,
        with or without bias). ``batch_first`` defaults to the module's;
        ``num_threads`` and ``empty_rows`` are the constructor's."""
        if getattr(module, "bias_k", None) is not None or getattr(
                module, "add_zero_attn", False):
            raise ValueError(
                "modules with add_bias_kv or add_zero_attn are not supported")
        if batch_first is None:
            batch_first = getattr(module, "batch_first", False)
        sd = module.state_dict()
        layer = cls(module.embed_dim, module.num_heads,
                    bias="out_proj.bias" in sd, kdim=module.kdim,
                    vdim=module.vdim, batch_first=batch_first,
                    num_threads=num_threads, empty_rows=empty_rows,
                    seed=_LEAVE_UNSET)  # type: ignore[arg-type]
        layer.load_state_dict({k: v for k, v in sd.items()
                               if k in _WEIGHT_IDS})
        return layer

    # ------------------------------------------------------- weight files

    def load_safetensors(self, path: PathLike, prefix: str = "") -> None:
        """Sets the layer's weights from the safetensors file at ``path``:
        the tensors named ``prefix`` + torch's state_dict names or Hugging
        Face's (q_proj.weight, ..., out_proj or o_proj), detected from the
        file. F32, F16 and BF16 tensors are accepted. The file is checked
        completely before anything changes: on error the layer keeps its
        weights. Raises AttnError (ERR_IO, ERR_FILE_FORMAT,
        ERR_TENSOR_MISSING, ERR_TENSOR_SHAPE, ...) with the library's
        message."""
        _need_safetensors()
        with self._lock.writing():
            check(C.attn_layer_load_safetensors(
                self._live_handle(), _path(path), _prefix(prefix)))

    def load_safetensors_bytes(self, data: Union[bytes, bytearray,
                                                 memoryview, np.ndarray],
                               prefix: str = "") -> None:
        """As load_safetensors, from the bytes of a whole safetensors file
        (bytes, bytearray, memoryview or a uint8 array; not copied)."""
        _need_safetensors()
        buf = np.frombuffer(data, dtype=np.uint8)
        # Empty data still has an address: the library then says the file
        # is too short, as for an empty file.
        ptr = buf.ctypes.data if buf.size else ctypes.addressof(_NO_BYTES)
        with self._lock.writing():
            check(C.attn_layer_load_safetensors_mem(
                self._live_handle(), ptr, buf.size, _prefix(prefix)))

    def save_safetensors(self, path: PathLike, prefix: str = "",
                         naming: str = "torch") -> None:
        """Writes the layer's weights as F32 tensors to a safetensors file,
        named ``prefix`` + the names of ``naming``: "torch" (the names of
        torch's state_dict, so torch.nn.MultiheadAttention can load them),
        "hf" (q_proj.weight, k_proj.weight, v_proj.weight, out_proj.weight
        and their .bias) or "hf_o_proj" (the same with o_proj). The file is
        replaced atomically."""
        _need_safetensors()
        try:
            code = _NAMING[naming]
        except (KeyError, TypeError):
            raise ValueError("naming must be 'torch', 'hf' or 'hf_o_proj', "
                             "not %r" % (naming,)) from None
        with self._lock.reading():
            check(C.attn_layer_save_safetensors(
                self._live_handle(), _path(path), _prefix(prefix),
                code))

    # ------------------------------------------------------------- forward

    def __call__(self, query: ArrayLike, key: ArrayLike, value: ArrayLike,
                 key_padding_mask: Optional[ArrayLike] = None,
                 need_weights: bool = True,
                 attn_mask: Optional[ArrayLike] = None,
                 average_attn_weights: bool = True, is_causal: bool = False,
                 *, empty_rows: Optional[str] = None, num_threads: int = 0,
                 positions: Optional[ArrayLike] = None,
                 key_positions: Optional[ArrayLike] = None,
                 start: Optional[Union[int, ArrayLike]] = None,
                 core: str = "auto"
                 ) -> Tuple[Float32Array, Optional[Float32Array]]:
        return self.forward(query, key, value, key_padding_mask,
                            need_weights, attn_mask, average_attn_weights,
                            is_causal, empty_rows=empty_rows,
                            num_threads=num_threads, positions=positions,
                            key_positions=key_positions, start=start,
                            core=core)

    def forward(self, query: ArrayLike, key: ArrayLike, value: ArrayLike,
                key_padding_mask: Optional[ArrayLike] = None,
                need_weights: bool = True,
                attn_mask: Optional[ArrayLike] = None,
                average_attn_weights: bool = True, is_causal: bool = False,
                *, empty_rows: Optional[str] = None, num_threads: int = 0,
                positions: Optional[ArrayLike] = None,
                key_positions: Optional[ArrayLike] = None,
                start: Optional[Union[int, ArrayLike]] = None,
                core: str = "auto"
                ) -> Tuple[Float32Array, Optional[Float32Array]]:
        return self._forward(query, key, value, key_padding_mask,
                             need_weights, attn_mask, average_attn_weights,
                             is_causal, empty_rows, num_threads, positions,
                             key_positions, start, core)

    __call__.__doc__ = forward.__doc__ = """Attention of ``query`` over
        ``key`` and ``value``, as torch's MultiheadAttention.forward in eval
        mode; ``layer(q, k, v, ...)`` and ``layer.forward(q, k, v, ...)`` are
        the same call. Returns ``(output, weights)``.

        query:    [B, L, E] (batch_first, the default), [L, B, E] with
                  batch_first=False (each input then costs a transposed
                  copy and the output is a transposed view), or unbatched
                  [L, E].
        key:      [B, S, kdim] (or as query's layout).
        value:    [B, S, vdim]. Passing the very same array as query, key
                  and value projects Q, K and V in one matrix product.
        key_padding_mask: [B, S] (unbatched: [S]). Boolean or integer:
                  True / nonzero hides that key from every query. Float:
                  added to the scores of that key.
        need_weights: also return the attention probabilities.
        attn_mask: [L, S], [B*num_heads, L, S] (unbatched:
                  [num_heads, L, S]) or [B or 1, num_heads or 1, L, S].
                  Boolean: True means query i may not attend to key j.
                  Float: added to the scores (-inf hides a key; NaN and
                  +inf are refused).
        average_attn_weights: weights averaged over heads [B, L, S]
                  (default) or per head [B, num_heads, L, S].
        is_causal: query i sees only keys j <= i (top-left aligned);
                  combined with attn_mask, both apply.
        empty_rows: what a query with no visible key produces, overriding
                  the layer's setting: "zero" (zero weights, output row =
                  out_proj's bias) or "nan" (torch's NaN row); None = the
                  layer's ``empty_rows``.
        num_threads: library threads for this call; 0 = the layer's
                  ``num_threads``.
        core:     attention core (attn_options.core): "auto" (default,
                  the library chooses), "blas" (cblas_sgemm, any CPU) or
                  "packed" (AVX2/FMA micro-kernels; AttnError with status
                  ERR_UNSUPPORTED where the CPU lacks them or the layer
                  has ALiBi, soft-capping or sinks). ``attn.core_available``
                  says which can run. Results of the cores agree within
                  float rounding, not bit for bit.

        Returns numpy float32 arrays: output [B, L, E] (in the input's
        layout) and weights, or None unless need_weights.

        For a layer with rotary embeddings or ALiBi: ``positions`` [B, Lq]
        (integers, as Hugging Face's position_ids), ``key_positions``
        [B, Lk] and ``start`` (an integer or [B]) give the tokens'
        positions as attn_positions does; default 0, 1, 2, ...

        C-contiguous float32 inputs (and masks) are passed to the library
        without a copy; other floating-point data (float64 or float16
        arrays, lists of numbers, torch tensors, transposed views) is
        converted once, while integer, boolean and complex arrays raise
        TypeError rather than being converted silently. Raises ValueError
        for shapes that do not fit, TypeError for wrong argument types and
        AttnError with the library's message for anything the library
        refuses.
        """

    def _forward(self, query, key, value, key_padding_mask, need_weights,
                 attn_mask, average_attn_weights, is_causal, empty_rows,
                 num_threads, positions, key_positions, start, core="auto"):
        self._live_handle()
        core_code = _lib.core_code(core)
        same_kv = key is value
        same_qkv = same_kv and query is key
        q = as_float32(query)
        k = q if key is query else as_float32(key)
        v = k if same_kv else (q if value is query else as_float32(value))

        if q.ndim == 2:
            unbatched = True
            if k.ndim != 2 or v.ndim != 2:
                raise ValueError(
                    "for unbatched (2-D) query, key and value must be 2-D too;"
                    " got %d-D and %d-D" % (k.ndim, v.ndim))
            q, k, v = _add_batch(q, k, v)
        elif q.ndim == 3:
            unbatched = False
            if k.ndim != 3 or v.ndim != 3:
                raise ValueError(
                    "for batched (3-D) query, key and value must be 3-D too;"
                    " got %d-D and %d-D" % (k.ndim, v.ndim))
            if not self.batch_first:
                q, k, v = _to_batch_first(q, k, v)
        else:
            raise ValueError("query must be 2-D (L, E) or 3-D, not %d-D"
                             % q.ndim)

        B, Lq, E = q.shape
        Lk = k.shape[1]
        if E != self.embed_dim:
            raise ValueError("query has width %d, but embed_dim is %d"
                             % (E, self.embed_dim))
        if k.shape[0] != B or v.shape[0] != B:
            raise ValueError(
                "query, key and value have batch sizes %d, %d and %d"
                % (B, k.shape[0], v.shape[0]))
        _check_key_value(self, k, v)
        if Lq == 0 or Lk == 0 or B == 0:
            raise ValueError("batch %d and lengths %d, %d must be positive"
                             % (B, Lq, Lk))

        mask, keep = _mask.build(key_padding_mask, attn_mask, bool(is_causal),
                                 self._empty_rows_of(empty_rows), B,
                                 self.num_heads, Lq, Lk, unbatched)

        out = np.empty((B, Lq, E), dtype=_F32)
        opts = _call_options(num_threads, core_code)
        weights = _decode.weights_buffer(opts, need_weights,
                                         average_attn_weights, B,
                                         self.num_heads, Lq, Lk)
        keep_positions = []
        _features.positions(opts, keep_positions, B, Lq, Lk, unbatched,
                            positions, key_positions, start)

        qp = q.ctypes.data
        kp = qp if same_qkv else k.ctypes.data
        vp = kp if same_kv else v.ctypes.data
        with self._lock.reading():
            check(C.attn_forward(
                self._live_handle(), B, Lq, Lk, qp, kp, vp,
                ctypes.byref(mask) if mask is not None else None,
                ctypes.byref(opts), out.ctypes.data))
        del keep, keep_positions

        if unbatched:
            out = out[0]
            if weights is not None:
                weights = weights[0]
        elif not self.batch_first:
            out = out.transpose(1, 0, 2)
        return out, weights

    # ------------------------------------------------ incremental decoding

    def decode_step(self, x: ArrayLike, cache: KVCache, *,
                    new_lengths: Optional[ArrayLike] = None,
                    new_padding: Optional[ArrayLike] = None,
                    need_weights: bool = False,
                    average_attn_weights: bool = True,
                    empty_rows: Optional[str] = None, num_threads: int = 0,
                    start: Optional[Union[int, ArrayLike]] = None,
                    core: str = "auto"
                    ) -> Tuple[Float32Array, Optional[Float32Array]]:
        """One self-attention decoding step with a key/value cache
        (``attn.KVCache(layer, batch, capacity)``): the keys and values of
        each row's new tokens are appended to the cache, and each new token
        attends to its row's earlier tokens and to itself (causal among the
        new tokens, within the cache's window if it has one). Decoding a
        sequence in steps of any sizes gives, to float rounding, the rows of
        ``layer(x, x, x, is_causal=True)`` over the whole sequence.
        Returns ``(output, weights)``.

        x:        [batch, n, embed_dim], each row's next n tokens (always
                  batch first, whatever ``batch_first`` says); batch must
                  be the cache's.
        new_lengths: an integer or [batch] integers in [0, n]: row b takes
                  only its first new_lengths[b] tokens; its other output
                  (and weight) rows are zero. A row given 0 is unchanged.
                  None = n for every row.
        new_padding: [batch, n] boolean (or integer), True = that new
                  token is padding: it takes a position in its row, but no
                  query of this or any later step attends to it (torch's
                  key_padding_mask over the whole sequence).
        need_weights: also return the attention probabilities, [batch,
                  n, capacity] averaged over heads (average_attn_weights,
                  default) or [batch, num_heads, n, capacity] per head:
                  column j is the row's j-th token held, at position
                  ``cache.first()[b] + j``; columns past the tokens held
                  are zero. Steps with weights run the general attention
                  core, without the streaming decoding kernel.
        empty_rows: what a query that sees no key (every token it could
                  see is padding) produces: "zero" or "nan"; None = the
                  layer's ``empty_rows``.
        num_threads: library threads for this step; 0 = the layer's.
        start:    for a layer with rotary embeddings or ALiBi, an integer
                  or [batch] positions added to each row's token positions
                  (a row that begins mid-sequence: pass the same start at
                  every step). Token positions are otherwise their
                  positions in the cache row.
        core:     attention core as in forward: "auto" (default), "blas"
                  or "packed".

        Inputs are converted as forward converts them. Raises ValueError
        for shapes that do not fit or a closed cache, TypeError for wrong
        types, AttnError with the library's message for anything it
        refuses: ERR_CAPACITY when a row has no room for its new tokens,
        ERR_MISMATCH for a cache made for another layer, ERR_BAD_MASK for
        new lengths outside [0, n], ERR_NOT_FINITE, ... A failed step
        changes nothing: the cache keeps what it held.
        """
        return _decode.decode_step(self, x, cache, new_lengths, new_padding,
                                   need_weights, average_attn_weights,
                                   empty_rows, num_threads, start, core)

    def cross_step(self, query: ArrayLike, memory: Memory, *,
                   key_padding_mask: Optional[ArrayLike] = None,
                   attn_mask: Optional[ArrayLike] = None,
                   is_causal: bool = False, need_weights: bool = False,
                   average_attn_weights: bool = True,
                   empty_rows: Optional[str] = None, num_threads: int = 0,
                   core: str = "auto"
                   ) -> Tuple[Float32Array, Optional[Float32Array]]:
        """Cross-attention of ``query`` [batch, n, embed_dim] (any number
        n of decoder tokens per row, batch first) over a memory
        (``attn.Memory``, filled by its ``set``): what
        ``layer(query, key, value, ...)`` gives with the key, value and
        masks of the memory's last set, without projecting them again.
        Returns ``(output, weights)``.

        key_padding_mask, attn_mask, is_causal: as forward's, with L = n
                  and S = ``memory.len_k``; they apply on top of the
                  memory's own lengths and padding.
        need_weights: also return the attention probabilities, [batch, n,
                  S] averaged (average_attn_weights, default) or [batch,
                  num_heads, n, S] per head.
        empty_rows, num_threads, core: as forward's.

        Raises ValueError for shapes that do not fit, a closed memory or
        one never set, TypeError for wrong types, AttnError for anything
        the library refuses (ERR_MISMATCH for a memory made for another
        layer). Cross steps only read the memory: several threads may run
        them on one memory at once.
        """
        return _decode.cross_step(self, query, memory, key_padding_mask,
                                  attn_mask, is_causal, need_weights,
                                  average_attn_weights, empty_rows,
                                  num_threads, core)


# Constructor seed meaning "leave the weights unset": from_torch overwrites
# them at once.
_LEAVE_UNSET = object()


def _read_features(cfg):
    """The decoder features of a read-back Config, as plain values."""
    rope = None
    if cfg.rope:
        r = _lib.RopeConfig.from_address(cfg.rope)
        rope = {"theta": r.theta, "rotary_dim": int(r.rotary_dim),
                "pairing": ("adjacent" if r.pairing == _lib.ROPE_ADJACENT
                            else "halves")}
    # A library without the features leaves bias_parts 0: bias says all.
    parts = int(cfg.bias_parts) or (_lib.BIAS_ALL if cfg.bias else 0)
    return {
        "bias_parts": parts,
        "qk_norm": {_lib.QK_NORM_HEAD: "head", _lib.QK_NORM_ALL: "all"}.get(
            cfg.qk_norm),
        "alibi": {_lib.ALIBI_CAUSAL: "causal",
                  _lib.ALIBI_SYMMETRIC: "symmetric"}.get(cfg.alibi),
        "softcap": float(cfg.softcap) or None,
        "sinks": bool(cfg.sinks),
        "rope": rope,
    }


def _int(value, name, bits=64):
    """value as a C integer of `bits` bits, refused rather than wrapped."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise TypeError("%s must be an integer, not %r" % (name, value))
    value = int(value)
    if not -2 ** (bits - 1) <= value < 2 ** (bits - 1):
        raise OverflowError("%s %d does not fit the library's %d-bit "
                            "integer" % (name, value, bits))
    return value


def _check_key_value(layer, k, v):
    """Refuses 3-D key k and value v [batch, S, width] (batch sizes already
    checked) whose lengths differ or whose widths are not layer's kdim and
    vdim, for forward and Memory.set."""
    if k.shape[2] != layer.kdim:
        raise ValueError("key has width %d, but kdim is %d"
                         % (k.shape[2], layer.kdim))
    if v.shape[1] != k.shape[1]:
        raise ValueError("key has length %d but value has length %d"
                         % (k.shape[1], v.shape[1]))
    if v.shape[2] != layer.vdim:
        raise ValueError("value has width %d, but vdim is %d"
                         % (v.shape[2], layer.vdim))


def _call_options(num_threads, core_code):
    """The attn_options of one call (forward, a step, Memory.set) with its
    thread count, refused rather than wrapped when it does not fit a C int,
    and its core (the code from _lib.core_code)."""
    opts = _lib.new_options()
    opts.num_threads = _int(num_threads, "num_threads", 32)
    opts.core = core_code
    return opts


def _add_batch(q, k, v):
    """Unbatched [L, E] inputs as [1, L, E] views, keeping identities."""
    qb = q[None]
    kb = qb if k is q else k[None]
    vb = kb if v is k else (qb if v is q else v[None])
    return qb, kb, vb


def _to_batch_first(q, k, v):
    """[L, B, E] inputs as contiguous [B, L, E] copies, keeping
    identities so self-attention still takes the fused path."""
    qb = np.ascontiguousarray(q.transpose(1, 0, 2))
    kb = qb if k is q else np.ascontiguousarray(k.transpose(1, 0, 2))
    vb = kb if v is k else (qb if v is q else
                            np.ascontiguousarray(v.transpose(1, 0, 2)))
    return qb, kb, vb


_NO_BYTES = ctypes.c_char()


def _prefix(prefix):
    if prefix is None:
        return None
    if not isinstance(prefix, str):
        raise TypeError("prefix must be a str, not %r" % (prefix,))
    if "\0" in prefix:
        raise ValueError("prefix contains a NUL character")
    return prefix.encode("utf-8")


def _path(path):
    encoded = os.fsencode(path)
    if b"\0" in encoded:
        raise ValueError("path contains a NUL character")
    return encoded


def _need_safetensors():
    if not _lib.has_safetensors():
        raise NotImplementedError(
            "the loaded libattn (%s, %s) has no safetensors functions"
            % (_lib.version, _lib.path))
