"""The torch fixture that every language's tests share: weights in
tests/data/torch_mha.safetensors; inputs, masks and what
torch.nn.MultiheadAttention computed in float64 (outputs and attention
weights, per head and averaged) in tests/data/torch_mha_expected.txt, both
written by tests/data/make_torch_fixture.py (whose docstring gives the text
format). The C, Rust and Go tests check these same numbers.

Unlike test_parity.py, which compares with a live torch, this needs no
torch: the expected values are read from the file. Masks are given as a
torch user gives them: key_padding_mask (True = ignore the key), and causal
both as is_causal=True and as torch's attn_mask triu(ones(Lq, Lk), 1).
"""

import os

import numpy as np
import pytest

import attn
from attn import _lib
from conftest import ATOL, RTOL

pytestmark = pytest.mark.skipif(
    not _lib.has_safetensors(),
    reason="the loaded libattn has no safetensors functions")

DATA = os.path.join(os.path.dirname(os.path.abspath(__file__)), os.pardir,
                    os.pardir, os.pardir, "tests", "data")
WEIGHTS = os.path.join(DATA, "torch_mha.safetensors")
INTS = ("embed_dim", "num_heads", "kdim", "vdim", "bias", "batch", "len_q",
        "len_k", "causal")


def _read_cases():
    """name -> case dict; key/value absent stand for the query/key, as the
    format says (the same array object, so that the layer sees
    self-attention or a shared key/value the way a caller passes them)."""
    fields = {}
    with open(os.path.join(DATA, "torch_mha_expected.txt")) as f:
        for line in f:
            tokens = line.split()
            if not tokens or tokens[0].startswith("#"):
                continue
            if tokens[0] == "case":
                case = fields.setdefault(tokens[1], {})
                continue
            assert tokens[0] not in case, tokens[0]
            case[tokens[0]] = tokens[1:]
    return {name: _case(name, f) for name, f in fields.items()}


def _case(name, f):
    c = {"name": name, "prefix": f["prefix"][0]}
    c.update((k, int(f[k][0])) for k in INTS)
    B, Lq, Lk = c["batch"], c["len_q"], c["len_k"]
    E, H = c["embed_dim"], c["num_heads"]

    def array(key, shape, dtype):
        a = np.array([float(v) for v in f[key]], dtype=dtype)
        assert a.size == np.prod(shape), "%s: %s" % (name, key)
        return a.reshape(shape)

    c["query"] = array("query", (B, Lq, E), np.float32)
    c["key"] = (array("key", (B, Lk, c["kdim"]), np.float32) if "key" in f
                else c["query"])
    c["value"] = (array("value", (B, Lk, c["vdim"]), np.float32)
                  if "value" in f else c["key"])
    c["key_padding"] = (array("key_padding", (B, Lk), np.float64) != 0
                        if "key_padding" in f else None)
    c["out"] = array("out", (B, Lq, E), np.float64)
    c["weights_per_head"] = array("weights_per_head", (B, H, Lq, Lk),
                                  np.float64)
    c["weights_average"] = array("weights_average", (B, Lq, Lk), np.float64)
    return c


CASES = _read_cases()


def _layer(c):
    layer = attn.MultiheadAttention(c["embed_dim"], c["num_heads"],
                                    bias=bool(c["bias"]), kdim=c["kdim"],
                                    vdim=c["vdim"], seed=0)
    layer.load_safetensors(WEIGHTS, c["prefix"])
    return layer


def _run(layer, c, **kwargs):
    kwargs.setdefault("key_padding_mask", c["key_padding"])
    kwargs.setdefault("is_causal", bool(c["causal"]))
    return layer(c["query"], c["key"], c["value"], **kwargs)


def _close(got, want, what):
    np.testing.assert_allclose(got, want, rtol=RTOL, atol=ATOL,
                               err_msg=what)


def test_fixture_covers_padding_causal_and_other_widths():
    cases = CASES.values()
    assert len(CASES) >= 10
    assert sum(c["key"] is c["query"] for c in cases) >= 2
    assert sum(c["key"] is not c["query"] for c in cases) >= 2
    assert sum(c["kdim"] != c["embed_dim"] or c["vdim"] != c["embed_dim"]
               for c in cases) >= 2
    assert sum(c["key_padding"] is not None for c in cases) >= 2
    assert sum(bool(c["causal"]) for c in cases) >= 2
    assert sum(bool(c["causal"]) and c["len_q"] != c["len_k"]
               for c in cases) >= 1


@pytest.mark.parametrize("name", sorted(CASES))
def test_output_matches_torch(name):
    c = CASES[name]
    out, weights = _run(_layer(c), c, need_weights=False)
    assert weights is None
    _close(out, c["out"], name)


@pytest.mark.parametrize("name", sorted(CASES))
@pytest.mark.parametrize("average", [False, True])
def test_attention_weights_match_torch(name, average):
    c = CASES[name]
    out, weights = _run(_layer(c), c, need_weights=True,
                        average_attn_weights=average)
    _close(out, c["out"], name)
    want = c["weights_average"] if average else c["weights_per_head"]
    assert weights.shape == want.shape
    _close(weights, want, "%s weights (average=%s)" % (name, average))


@pytest.mark.parametrize(
    "name", sorted(n for n, c in CASES.items() if c["causal"]))
def test_causal_as_torch_attn_mask_matches_torch(name):
    """torch 1.13 callers express causality as a boolean attn_mask."""
    c = CASES[name]
    triu = np.triu(np.ones((c["len_q"], c["len_k"]), dtype=bool), k=1)
    out, weights = _run(_layer(c), c, is_causal=False, attn_mask=triu,
                        average_attn_weights=False)
    _close(out, c["out"], name)
    _close(weights, c["weights_per_head"], name + " weights")


@pytest.mark.parametrize(
    "name", sorted(n for n, c in CASES.items() if c["key_padding"] is not None))
def test_float_key_padding_matches_torch(name):
    """torch also takes the padding as floats added to the scores."""
    c = CASES[name]
    kpm = np.where(c["key_padding"], -np.inf, 0.0).astype(np.float32)
    out, _ = _run(_layer(c), c, key_padding_mask=kpm, need_weights=False)
    _close(out, c["out"], name)


@pytest.mark.parametrize("name", sorted(CASES))
def test_loaded_from_bytes_matches_torch(name):
    c = CASES[name]
    layer = attn.MultiheadAttention(c["embed_dim"], c["num_heads"],
                                    bias=bool(c["bias"]), kdim=c["kdim"],
                                    vdim=c["vdim"], seed=0)
    with open(WEIGHTS, "rb") as f:
        layer.load_safetensors_bytes(f.read(), c["prefix"])
    out, _ = _run(layer, c, need_weights=False)
    _close(out, c["out"], name)


@pytest.mark.parametrize("name", sorted(CASES))
def test_state_dict_round_trip_matches_torch(name):
    """The loaded weights in torch's layout, set on a fresh layer."""
    c = CASES[name]
    src = _layer(c)
    dst = attn.MultiheadAttention(c["embed_dim"], c["num_heads"],
                                  bias=bool(c["bias"]), kdim=c["kdim"],
                                  vdim=c["vdim"], seed=1)
    dst.load_state_dict(src.state_dict())
    out, weights = _run(dst, c, average_attn_weights=True)
    _close(out, c["out"], name)
    _close(weights, c["weights_average"], name + " weights")
