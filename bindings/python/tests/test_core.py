# SPDX-License-Identifier: MIT
"""The caller's choice of attention core (``core=``, attn_options.core):
each core against a float64 numpy reference written here from the
documented semantics, the same bits on 1 and 2 threads, and the refusals
(an unknown name, the packed core where it cannot run) raising before or
with the library's status and leaving nothing half-done."""

import inspect

import numpy as np
import pytest

import attn
from attn import _lib
from conftest import ATOL, RTOL


def _cores():
    return [c for c in ("auto", "blas", "packed") if attn.core_available(c)]


def _reference(layer, q, k, v, causal):
    """Multi-head attention in float64 from the layer's own weights, and
    the per-head probabilities."""
    sd = {n: w.astype(np.float64) for n, w in layer.state_dict().items()}
    E, H = layer.embed_dim, layer.num_heads
    d = E // H
    w_in, b_in = sd["in_proj_weight"], sd["in_proj_bias"]
    Q = q @ w_in[:E].T + b_in[:E]
    K = k @ w_in[E:2 * E].T + b_in[E:2 * E]
    V = v @ w_in[2 * E:].T + b_in[2 * E:]
    B, Lq, _ = q.shape
    Lk = k.shape[1]
    ctx = np.zeros((B, Lq, E))
    probs = np.zeros((B, H, Lq, Lk))
    for h in range(H):
        s = slice(h * d, (h + 1) * d)
        scores = Q[:, :, s] @ K[:, :, s].transpose(0, 2, 1) / np.sqrt(d)
        if causal:
            hide = np.triu(np.ones((Lq, Lk), bool), 1)
            scores = np.where(hide, -np.inf, scores)
        p = np.exp(scores - scores.max(-1, keepdims=True))
        p /= p.sum(-1, keepdims=True)
        probs[:, h] = p
        ctx[:, :, s] = p @ V[:, :, s]
    out = ctx @ sd["out_proj.weight"].T + sd["out_proj.bias"]
    return out, probs


def test_core_names_and_availability():
    assert attn.core_available("auto") and attn.core_available("blas")
    assert isinstance(attn.core_available("packed"), bool)
    assert _lib.CORE_AUTO == 0 and _lib.CORE_BLAS == 1
    assert _lib.CORE_PACKED == 2 and attn.ERR_UNSUPPORTED == 20
    with pytest.raises(ValueError, match="core must be one of"):
        attn.core_available("fast")
    params = inspect.signature(attn.MultiheadAttention.forward).parameters
    assert params["core"].kind is inspect.Parameter.KEYWORD_ONLY
    assert params["core"].default == "auto"
    assert "core" in inspect.getdoc(attn.MultiheadAttention.forward)


@pytest.mark.parametrize("core", ["auto", "blas", "packed"])
@pytest.mark.parametrize("shape", [(2, 37, 37, True), (1, 3, 50, False),
                                   (2, 20, 45, False)])
def test_each_core_matches_the_reference(core, shape):
    B, Lq, Lk, causal = shape
    layer = attn.MultiheadAttention(32, 4, seed=3)
    rng = np.random.default_rng(Lq * 100 + Lk)
    q = rng.uniform(-1, 1, (B, Lq, 32)).astype(np.float32)
    k = q if Lq == Lk else rng.uniform(-1, 1, (B, Lk, 32)).astype(np.float32)
    if not attn.core_available(core):
        # Where this CPU or ATTN_SIMD rules the core out: refused, named.
        with pytest.raises(attn.AttnError) as e:
            layer(q, k, k, core=core)
        assert e.value.status == attn.ERR_UNSUPPORTED
        return
    want, want_w = _reference(layer, q.astype(np.float64),
                              k.astype(np.float64), k.astype(np.float64),
                              causal)
    got = []
    for threads in (1, 2):
        out, w = layer(q, k, k, need_weights=True, is_causal=causal,
                       average_attn_weights=False, num_threads=threads,
                       core=core)
        np.testing.assert_allclose(out, want, rtol=RTOL, atol=ATOL)
        np.testing.assert_allclose(w, want_w, rtol=RTOL, atol=ATOL)
        got.append((out, w))
    assert np.array_equal(got[0][0], got[1][0])
    assert np.array_equal(got[0][1], got[1][1])


def test_unknown_core_is_refused_before_the_call():
    layer = attn.MultiheadAttention(8, 2, seed=0)
    x = np.ones((1, 4, 8), np.float32)
    for bad in ("BLAS", "", 1, None):
        with pytest.raises(ValueError, match="core must be one of"):
            layer(x, x, x, core=bad)


def test_packed_core_where_it_cannot_run():
    x = np.ones((1, 12, 16), np.float32)
    capped = attn.MultiheadAttention(16, 2, seed=0, softcap=20.0)
    out, _ = capped(x, x, x, core="blas")  # the portable core runs it
    assert np.isfinite(out).all()
    with pytest.raises(attn.AttnError) as e:
        capped(x, x, x, core="packed")
    assert e.value.status == attn.ERR_UNSUPPORTED
    assert "ATTN_CORE_PACKED" in str(e.value)
    if not attn.core_available("packed"):
        plain = attn.MultiheadAttention(16, 2, seed=0)
        with pytest.raises(attn.AttnError) as e:
            plain(x, x, x, core="packed")
        assert e.value.status == attn.ERR_UNSUPPORTED
        assert "AVX2" in str(e.value)
