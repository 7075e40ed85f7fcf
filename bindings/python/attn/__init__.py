# SPDX-License-Identifier: MIT
"""libattn for Python: multi-head self- and cross-attention layers that
compute what torch.nn.MultiheadAttention computes, in C, from numpy arrays.

    import attn
    layer = attn.MultiheadAttention(64, 8)            # batch_first=True
    out, weights = layer(x, x, x, is_causal=True)     # x: [B, L, 64]

    cache = attn.KVCache(layer, batch=B, capacity=1024)
    y, _ = layer.decode_step(x_next, cache)           # x_next: [B, 1, 64]

    layer = attn.MultiheadAttention.from_torch(torch_module)
    attn.plot_attention(weights[0], tokens, tokens, "attention.png")

The package is pure Python over ctypes; it loads libattn.so from the path in
ATTN_LIBRARY or through the system's library lookup.
"""

from typing import Any, Optional, Sequence

from ._lib import (  # noqa: F401  (re-exported)
    AttnError,
    ERR_BAD_MASK,
    ERR_BAD_OPTION,
    ERR_BAD_SIZE,
    ERR_CAPACITY,
    ERR_FILE_FORMAT,
    ERR_IO,
    ERR_MISMATCH,
    ERR_UNSUPPORTED,
    ERR_NO_MEMORY,
    ERR_NOT_FINITE,
    ERR_NULL_POINTER,
    ERR_OVERFLOW,
    ERR_SCRATCH_TOO_SMALL,
    ERR_STRUCT_SIZE,
    ERR_TENSOR_DTYPE,
    ERR_TENSOR_MISSING,
    ERR_TENSOR_SHAPE,
    ERR_WEIGHT_LAYOUT,
    ERR_WEIGHT_SIZE,
    ERR_WEIGHTS_NOT_SET,
    OK,
    core_available,
    status_string,
    trim,
)
from ._lib import version as library_version  # noqa: F401
from ._lib import path as library_path  # noqa: F401
from ._layer import MultiheadAttention  # noqa: F401
from ._features import RotaryEmbedding  # noqa: F401
from ._decode import KVCache, Memory  # noqa: F401

__version__ = "0.1.0"


def plot_attention(weights: Any, tokens_q: Sequence[object],
                   tokens_k: Sequence[object], path: Any, *,
                   title: Optional[str] = None,
                   head_names: Optional[Sequence[str]] = None,
                   ncols: Optional[int] = None, cmap: str = "viridis",
                   annotate: Optional[bool] = None, dpi: int = 110) -> Any:
    """Draws attention weights as labelled heatmaps, one panel per head,
    and saves the figure to ``path`` (PNG unless its name says otherwise).
    Needs matplotlib, which is imported on the first call; no pyplot state
    is used. The same function is ``attn.plot.plot_attention``.

    weights:    one batch row of what a layer returns with need_weights:
                [Lq, Lk] (averaged over heads), [H, Lq, Lk] (per head,
                average_attn_weights=False) or [1, H, Lq, Lk].
    tokens_q:   Lq labels of the query positions (rows).
    tokens_k:   Lk labels of the key positions (columns).
    path:       file name or binary file object for the image.
    title:      figure title.
    head_names: H panel titles (default "head h", or "average over heads").
    ncols:      panels per row (default up to 4).
    cmap:       matplotlib colour map name.
    annotate:   write each weight in its cell (exact zeros, i.e. masked
                keys, are left plain); default when the matrices are at
                most 12 x 12.
    dpi:        resolution of the saved image.

    All panels share one colour scale from 0 to the largest weight; NaN
    cells (query rows with nothing to attend to under empty_rows="nan") are
    left blank. Returns ``path``. Raises ValueError when the shapes and
    labels do not match.
    """
    from .plot import plot_attention as _plot

    return _plot(weights, tokens_q, tokens_k, path, title=title,
                 head_names=head_names, ncols=ncols, cmap=cmap,
                 annotate=annotate, dpi=dpi)


def __getattr__(name: str) -> Any:
    # attn.plot (the module) without an explicit `import attn.plot`, and
    # without importing matplotlib for programs that never draw.
    if name == "plot":
        import importlib

        return importlib.import_module(".plot", __name__)
    raise AttributeError("module %r has no attribute %r" % (__name__, name))


__all__ = [
    "AttnError",
    "OK",
    "ERR_NULL_POINTER",
    "ERR_STRUCT_SIZE",
    "ERR_BAD_SIZE",
    "ERR_OVERFLOW",
    "ERR_WEIGHT_SIZE",
    "ERR_WEIGHT_LAYOUT",
    "ERR_WEIGHTS_NOT_SET",
    "ERR_BAD_MASK",
    "ERR_BAD_OPTION",
    "ERR_NOT_FINITE",
    "ERR_NO_MEMORY",
    "ERR_SCRATCH_TOO_SMALL",
    "ERR_IO",
    "ERR_FILE_FORMAT",
    "ERR_TENSOR_MISSING",
    "ERR_TENSOR_DTYPE",
    "ERR_TENSOR_SHAPE",
    "ERR_CAPACITY",
    "ERR_MISMATCH",
    "ERR_UNSUPPORTED",
    "core_available",
    "trim",
    "MultiheadAttention",
    "RotaryEmbedding",
    "KVCache",
    "Memory",
    "plot_attention",
    "library_version",
    "library_path",
    "status_string",
]
