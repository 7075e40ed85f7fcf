# SPDX-License-Identifier: MIT
"""Pictures of attention: one labelled heatmap per head.

Uses matplotlib's object interface with the Agg canvas (no pyplot, no
display, no global figure state), so it works on servers and from several
threads.
"""

import math
from typing import Any, Optional, Sequence, Tuple

import numpy as np


def _heads(weights: Any) -> Tuple[np.ndarray, bool]:
    """weights as [H, Lq, Lk] plus whether they were one (averaged)
    matrix."""
    w = np.asarray(weights, dtype=np.float64)
    if w.ndim == 2:
        return w[None], True
    if w.ndim == 3:
        return w, False
    if w.ndim == 4 and w.shape[0] == 1:
        return w[0], False
    raise ValueError(
        "weights must be [Lq, Lk] (averaged), [H, Lq, Lk] (per head) or "
        "[1, H, Lq, Lk]; got shape %s (pick one batch row: weights[b])"
        % (w.shape,))


def plot_attention(weights: Any, tokens_q: Sequence[object],
                   tokens_k: Sequence[object], path: Any, *,
                   title: Optional[str] = None,
                   head_names: Optional[Sequence[str]] = None,
                   ncols: Optional[int] = None, cmap: str = "viridis",
                   annotate: Optional[bool] = None, dpi: int = 110) -> Any:
    """Saves a figure of attention weights to ``path``.

    weights:  one batch row of what the layer returns with need_weights:
              [Lq, Lk] (averaged over heads) or [H, Lq, Lk] (per head,
              average_attn_weights=False).
    tokens_q: Lq labels of the query positions (rows).
    tokens_k: Lk labels of the key positions (columns).
    title:    figure title; head_names: H panel titles (default "head h").
    ncols:    panels per row (default up to 4).
    annotate: write each weight in its cell (exact zeros, i.e. masked keys,
              are left plain); default when the matrices are at most
              12 x 12.

    All panels share one colour scale from 0 to the largest weight. Cells
    that are NaN (query rows with nothing to attend to under
    empty_rows="nan") are left blank. Returns ``path``.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    heads, averaged = _heads(weights)
    n_heads, len_q, len_k = heads.shape
    tokens_q = [str(t) for t in tokens_q]
    tokens_k = [str(t) for t in tokens_k]
    if len(tokens_q) != len_q or len(tokens_k) != len_k:
        raise ValueError(
            "weights are %d x %d, but there are %d query and %d key tokens"
            % (len_q, len_k, len(tokens_q), len(tokens_k)))
    if head_names is None:
        head_names = (["average over heads"] if averaged
                      else ["head %d" % h for h in range(n_heads)])
    elif len(head_names) != n_heads:
        raise ValueError("%d head names for %d heads"
                         % (len(head_names), n_heads))
    if annotate is None:
        annotate = len_q <= 12 and len_k <= 12

    ncols = min(n_heads, ncols or 4)
    nrows = math.ceil(n_heads / ncols)
    label_room = 0.09 * max(len(t) for t in tokens_q + tokens_k)
    cell = 0.42
    panel_w = len_k * cell + label_room + 0.5
    panel_h = len_q * cell + label_room + 0.6
    fig = Figure(figsize=(ncols * panel_w + 1.0,
                          nrows * panel_h + (0.5 if title else 0.1)),
                 dpi=dpi, layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(nrows, ncols, squeeze=False)
    finite = heads[np.isfinite(heads)]
    vmax = float(finite.max()) if finite.size and finite.max() > 0 else 1.0

    image = None
    for h, ax in enumerate(axes.flat):
        if h >= n_heads:
            ax.set_axis_off()
            continue
        data = np.ma.masked_invalid(heads[h])
        image = ax.imshow(data, cmap=cmap, vmin=0.0, vmax=vmax,
                          aspect="equal", interpolation="nearest")
        ax.set_title(head_names[h], fontsize=10)
        ax.set_xticks(range(len_k))
        ax.set_xticklabels(tokens_k, rotation=60, ha="right",
                           rotation_mode="anchor", fontsize=9)
        ax.set_yticks(range(len_q))
        ax.set_yticklabels(tokens_q, fontsize=9)
        ax.tick_params(length=0)
        if annotate:
            for i in range(len_q):
                for j in range(len_k):
                    value = heads[h, i, j]
                    if not np.isfinite(value) or value == 0.0:
                        continue  # masked: leave the cell plain
                    light = value < 0.6 * vmax
                    ax.text(j, i, "%.2f" % value, ha="center", va="center",
                            fontsize=6.5, color="white" if light else "black")
        if h % ncols == 0:
            ax.set_ylabel("query")
        if h >= (nrows - 1) * ncols:
            ax.set_xlabel("key")
    if title:
        fig.suptitle(title)
    fig.colorbar(image, ax=axes, shrink=0.8, label="attention weight")
    fig.savefig(path)
    return path
