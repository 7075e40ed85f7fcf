# SPDX-License-Identifier: MIT
"""The caller's choice of attention core (``core=``, attn_options.core):
each core against the float64 numpy reference written from the documented
semantics (conftest.mha_reference), the same bits on 1 and 2 threads, and
the refusals (an unknown name, the packed core where it cannot run)
raising before or with the library's status and leaving nothing
half-done."""

import inspect

import numpy as np
import pytest

import attn
from attn import _lib
from conftest import ATOL, RTOL, causal_mask, mha_reference


def _cores():
    return [c for c in ("auto", "blas", "packed") if attn.core_available(c)]


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
    hidden = causal_mask(Lq) if causal else np.zeros((Lq, Lk), bool)
    want, want_w = mha_reference(layer, q, k, k,
                                 np.broadcast_to(hidden, (B, Lq, Lk)))
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
