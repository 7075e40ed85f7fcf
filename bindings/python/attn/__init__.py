"""libattn for Python: multi-head self- and cross-attention layers that
compute what torch.nn.MultiheadAttention computes, in C, from numpy arrays.

    import attn
    layer = attn.MultiheadAttention(64, 8)            # batch_first=True
    out, weights = layer(x, x, x, is_causal=True)     # x: [B, L, 64]

    layer = attn.MultiheadAttention.from_torch(torch_module)
    attn.plot_attention(weights[0], tokens, tokens, "attention.png")

The package is pure Python over ctypes; it loads libattn.so from the path in
ATTN_LIBRARY or through the system's library lookup.
"""

from ._lib import (  # noqa: F401  (re-exported)
    AttnError,
    ERR_BAD_MASK,
    ERR_BAD_OPTION,
    ERR_BAD_SIZE,
    ERR_CAPACITY,
    ERR_FILE_FORMAT,
    ERR_IO,
    ERR_MISMATCH,
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
    status_string,
)
from ._lib import version as library_version  # noqa: F401
from ._lib import path as library_path  # noqa: F401
from ._layer import MultiheadAttention  # noqa: F401
from ._features import RotaryEmbedding  # noqa: F401

__version__ = "0.1.0"


def plot_attention(weights, tokens_q, tokens_k, path, **kwargs):
    """Draws each head's attention matrix as a labelled heatmap and saves
    it as an image (PNG unless the path says otherwise). See
    attn.plot.plot_attention; needs matplotlib."""
    from .plot import plot_attention as _plot

    return _plot(weights, tokens_q, tokens_k, path, **kwargs)


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
    "MultiheadAttention",
    "RotaryEmbedding",
    "plot_attention",
    "library_version",
    "library_path",
    "status_string",
]
