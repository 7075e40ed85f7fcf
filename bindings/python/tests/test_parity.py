# SPDX-License-Identifier: MIT
"""Randomized parity with torch.nn.MultiheadAttention.

Every case draws, from a fixed seed: self- or cross-attention, kdim/vdim
(equal to embed_dim or not), bias on or off, 1-16 heads, batch 1-3,
lengths 1-512, a key_padding_mask (none, bool, float), an attn_mask (none,
bool or uint8 2-D, bool 3-D, float 2-D, float 3-D), is_causal,
need_weights with and without averaging, and the input layout (batch first,
sequence first, unbatched). Some cases force query rows with no visible key.

The torch result comes from the module itself in eval mode. Where torch
1.13 cannot express an argument (is_causal, a float key_padding_mask next
to an attn_mask) the reference gets the equivalent merged attn_mask.

Rows that torch turns into NaN (nothing to attend to) are checked against
the documented behaviour: with empty_rows="nan" the NaN pattern must equal
torch's; with the default "zero" those heads contribute zero context, so a
row empty in every head is exactly out_proj's bias, compared with a direct
float64 reference that zeroes empty rows.
"""

import numpy as np
import pytest

import attn
from conftest import ATOL, RTOL, random_torch_mha, require_torch

N_CASES = 400
MAX_SCORES = 3_000_000  # B * H * Lq * Lk per case, to keep the suite fast


def _length(rng):
    r = rng.random()
    if r < 0.65:
        return int(rng.integers(1, 17))
    if r < 0.88:
        return int(rng.integers(17, 129))
    return int(rng.integers(129, 513))


def _make_case(index, rng):
    c = {"index": index}
    c["heads"] = int(rng.integers(1, 17))
    head_dim = int(rng.choice([1, 2, 3, 4, 8]))
    while c["heads"] * head_dim > 64:
        head_dim = max(1, head_dim // 2)
    c["embed_dim"] = c["heads"] * head_dim
    c["cross"] = bool(rng.random() < 0.55)
    c["kdim"] = c["vdim"] = None
    if c["cross"] and rng.random() < 0.5:
        c["kdim"] = int(rng.integers(1, 41))
        c["vdim"] = int(rng.choice([c["kdim"], int(rng.integers(1, 41))]))
    c["bias"] = bool(rng.random() < 0.75)
    c["batch"] = int(rng.integers(1, 4))
    c["len_q"] = _length(rng)
    c["len_k"] = _length(rng) if c["cross"] else c["len_q"]
    while c["batch"] * c["heads"] * c["len_q"] * c["len_k"] > MAX_SCORES:
        if c["batch"] > 1:
            c["batch"] -= 1
        elif c["heads"] > 1:
            c["heads"] = max(1, c["heads"] // 2)
            c["embed_dim"] = c["heads"] * head_dim
        else:
            break
    c["layout"] = str(rng.choice(["batch_first"] * 8 + ["seq_first",
                                                          "unbatched"]))
    if c["layout"] == "unbatched":
        c["batch"] = 1
    c["kpm"] = str(rng.choice(["none", "none", "bool", "bool", "float"]))
    c["mask"] = str(rng.choice(["none", "none", "bool2d", "uint8_2d",
                                "bool3d", "float2d", "float3d"]))
    c["is_causal"] = bool(rng.random() < 0.25)
    c["need_weights"] = bool(rng.random() < 0.75)
    c["average"] = bool(rng.random() < 0.5)
    c["hide"] = float(rng.choice([0.1, 0.3, 0.6]))
    masked = c["kpm"] != "none" or c["mask"] != "none"
    c["force_empty"] = bool(masked and rng.random() < 0.3)
    c["self_same_object"] = bool(not c["cross"] and rng.random() < 0.7)
    return c


def _case_id(c):
    kind = "cross" if c["cross"] else "self"
    dims = ""
    if c["kdim"] is not None:
        dims = "-k%dv%d" % (c["kdim"], c["vdim"])
    parts = ["%03d" % c["index"], kind + dims,
             "E%dH%d" % (c["embed_dim"], c["heads"]),
             "B%dL%dx%d" % (c["batch"], c["len_q"], c["len_k"]),
             c["layout"], "bias" if c["bias"] else "nobias"]
    if c["kpm"] != "none":
        parts.append("kpm_" + c["kpm"])
    if c["mask"] != "none":
        parts.append("mask_" + c["mask"])
    if c["is_causal"]:
        parts.append("causal")
    if c["force_empty"]:
        parts.append("empty")
    if c["need_weights"]:
        parts.append("w_avg" if c["average"] else "w_heads")
    return "-".join(parts)


def _all_cases():
    rng = np.random.default_rng(0x5EED1)
    return [_make_case(i, rng) for i in range(N_CASES)]


CASES = _all_cases()


def _inputs(c, rng):
    """Batch-first float32 inputs and numpy masks of a case."""
    B, Lq, Lk, E, H = (c["batch"], c["len_q"], c["len_k"], c["embed_dim"],
                       c["heads"])
    kdim = c["kdim"] or E
    vdim = c["vdim"] or E
    q = rng.standard_normal((B, Lq, E)).astype(np.float32)
    if c["cross"]:
        k = rng.standard_normal((B, Lk, kdim)).astype(np.float32)
        v = (k if c["kdim"] == c["vdim"] and rng.random() < 0.5 else
             rng.standard_normal((B, Lk, vdim)).astype(np.float32))
    elif c["self_same_object"]:
        k = v = q
    else:
        k, v = q.copy(), q.copy()

    kpm = None
    if c["kpm"] == "bool":
        kpm = rng.random((B, Lk)) < c["hide"]
        if c["force_empty"]:
            kpm[rng.integers(0, B)] = True
    elif c["kpm"] == "float":
        kpm = rng.standard_normal((B, Lk)).astype(np.float32)
        kpm[rng.random((B, Lk)) < c["hide"] / 2] = -np.inf
        if c["force_empty"]:
            kpm[rng.integers(0, B)] = -np.inf

    mask = None
    if c["mask"] in ("bool2d", "uint8_2d", "float2d"):
        shape = (Lq, Lk)
    else:
        shape = (B * H, Lq, Lk)
    if c["mask"] in ("bool2d", "uint8_2d", "bool3d"):
        mask = rng.random(shape) < c["hide"]
        if c["force_empty"]:
            mask[..., rng.integers(0, Lq), :] = True
        if c["mask"] == "uint8_2d":
            mask = mask.astype(np.uint8)
    elif c["mask"] in ("float2d", "float3d"):
        mask = (rng.standard_normal(shape) * 2).astype(np.float32)
        mask[rng.random(shape) < c["hide"] / 2] = -np.inf
        if c["force_empty"]:
            mask[..., rng.integers(0, Lq), :] = -np.inf
    return q, k, v, kpm, mask


def _float_mask(t, mask, B, H, Lq, Lk):
    """Any attn_mask as a float [B*H, Lq, Lk] tensor of additive bias."""
    m = t.from_numpy(np.asarray(mask))
    if m.dtype in (t.bool, t.uint8):
        m = t.zeros(m.shape).masked_fill(m.bool(), float("-inf"))
    return m.expand(B * H, Lq, Lk) if m.dim() == 2 else m


def _torch_masks(t, c, kpm, mask):
    """The masks to hand torch 1.13 for the same meaning."""
    B, H, Lq, Lk = c["batch"], c["heads"], c["len_q"], c["len_k"]
    tk = None if kpm is None else t.from_numpy(kpm)
    tm = None if mask is None else t.from_numpy(mask)
    if c["is_causal"]:
        causal = t.ones(Lq, Lk, dtype=t.bool).triu(1)
        if tm is None:
            tm = causal
        elif tm.dtype in (t.bool, t.uint8):
            tm = tm.bool() | causal
        else:
            tm = tm.masked_fill(causal, float("-inf"))
    if tk is not None and tk.is_floating_point() and tm is not None:
        merged = _float_mask(t, tm.numpy(), B, H, Lq, Lk).reshape(B, H, Lq, Lk)
        merged = merged + tk[:, None, None, :]
        tm, tk = merged.reshape(B * H, Lq, Lk), None
    if c["layout"] == "unbatched" and tk is not None:
        tk = tk[0]
    return tk, tm


def _direct_reference(module, q, k, v, float_bias, need_avg):
    """Float64 attention in which a query row with no visible key gets zero
    weights (the library's default): outputs [B, Lq, E] and per-head or
    averaged weights. float_bias is [B, H, Lq, Lk] or None."""
    t = require_torch()
    sd = {n: p.detach().double() for n, p in module.state_dict().items()}
    E, H = module.embed_dim, module.num_heads
    hd = E // H
    if "in_proj_weight" in sd:
        wq, wk, wv = sd["in_proj_weight"].chunk(3)
    else:
        wq, wk, wv = (sd["q_proj_weight"], sd["k_proj_weight"],
                      sd["v_proj_weight"])
    bq = bk = bv = None
    if "in_proj_bias" in sd:
        bq, bk, bv = sd["in_proj_bias"].chunk(3)
    lin = t.nn.functional.linear
    qd, kd, vd = (t.from_numpy(np.asarray(x, dtype=np.float64))
                  for x in (q, k, v))
    B, Lq, _ = qd.shape
    Lk = kd.shape[1]
    qp = lin(qd, wq, bq).view(B, Lq, H, hd).transpose(1, 2)
    kp = lin(kd, wk, bk).view(B, Lk, H, hd).transpose(1, 2)
    vp = lin(vd, wv, bv).view(B, Lk, H, hd).transpose(1, 2)
    scores = qp @ kp.transpose(-1, -2) / hd ** 0.5
    if float_bias is not None:
        scores = scores + float_bias.double()
    p = t.softmax(scores, dim=-1).nan_to_num(0.0)
    ctx = (p @ vp).transpose(1, 2).reshape(B, Lq, E)
    out = lin(ctx, sd["out_proj.weight"], sd.get("out_proj.bias"))
    w = p.mean(dim=1) if need_avg else p
    return out.numpy(), w.numpy()


def _close(actual, expected, what):
    np.testing.assert_allclose(actual, expected, atol=ATOL, rtol=RTOL,
                               err_msg=what)


def _same_nan_and_close(actual, expected, what):
    nan_a, nan_e = np.isnan(actual), np.isnan(expected)
    assert np.array_equal(nan_a, nan_e), (
        "%s: NaN pattern differs from torch (%d vs %d NaN)"
        % (what, nan_a.sum(), nan_e.sum()))
    _close(np.where(nan_a, 0, actual), np.where(nan_e, 0, expected), what)


@pytest.mark.filterwarnings("ignore:Byte tensor for attn_mask")
@pytest.mark.parametrize("case", CASES, ids=[_case_id(c) for c in CASES])
def test_matches_torch(case):
    t = require_torch()
    c = case
    rng = np.random.default_rng(1000 + c["index"])
    batch_first = c["layout"] != "seq_first"
    module = random_torch_mha(c["embed_dim"], c["heads"], bias=c["bias"],
                              kdim=c["kdim"], vdim=c["vdim"],
                              batch_first=batch_first, seed=c["index"])
    layer = attn.MultiheadAttention.from_torch(module, num_threads=2)
    q, k, v, kpm, mask = _inputs(c, rng)

    # Arrange the inputs in the case's layout, keeping object identity so
    # that self-attention takes the fused paths on both sides.
    def arrange(x):
        if c["layout"] == "unbatched":
            return x[0]
        if c["layout"] == "seq_first":
            return np.ascontiguousarray(x.transpose(1, 0, 2))
        return x
    aq = arrange(q)
    ak = aq if k is q else arrange(k)
    av = ak if v is k else arrange(v)
    tq = t.from_numpy(aq)
    tk_in = tq if ak is aq else t.from_numpy(ak)
    tv_in = tk_in if av is ak else t.from_numpy(av)
    if tk_in is tq and (not c["bias"] or c["kpm"] == "float"):
        # torch 1.13's fast path (taken for one tensor as q, k and v)
        # crashes without biases and reads a float key_padding_mask as
        # boolean, unlike its documented (and slow-path) addition: give it
        # equal copies instead, which takes the documented path.
        tk_in = tv_in = tq.clone()
    our_kpm = kpm[0] if (kpm is not None and c["layout"] == "unbatched") \
        else kpm

    t_kpm, t_mask = _torch_masks(t, c, kpm, mask)
    with t.no_grad():
        ref_out, ref_w = module(tq, tk_in, tv_in, key_padding_mask=t_kpm,
                                need_weights=c["need_weights"],
                                attn_mask=t_mask,
                                average_attn_weights=c["average"])
    ref_out = ref_out.numpy()
    ref_w = None if ref_w is None else ref_w.numpy()
    torch_has_nan = bool(np.isnan(ref_out).any())

    kwargs = dict(key_padding_mask=our_kpm, need_weights=c["need_weights"],
                  attn_mask=mask, average_attn_weights=c["average"],
                  is_causal=c["is_causal"])

    out, w = layer(aq, ak, av, empty_rows="nan", **kwargs)
    assert out.shape == ref_out.shape and out.dtype == np.float32
    _same_nan_and_close(out, ref_out, "output (empty_rows='nan')")
    if c["need_weights"]:
        assert w.shape == ref_w.shape
        _same_nan_and_close(w, ref_w, "weights (empty_rows='nan')")
    else:
        assert w is None

    out0, w0 = layer(aq, ak, av, **kwargs)  # default: empty_rows="zero"
    assert not np.isnan(out0).any()
    if not torch_has_nan:
        # Another empty_rows mode: equal up to float rounding.
        np.testing.assert_allclose(out0, out, rtol=1e-5, atol=1e-6)
        if c["need_weights"]:
            np.testing.assert_allclose(w0, w, rtol=1e-5, atol=1e-6)
        return

    # Rows torch leaves NaN: compare with the zeroing float64 reference.
    B, H, Lq, Lk = c["batch"], c["heads"], c["len_q"], c["len_k"]
    bias = None
    if t_mask is not None:
        bias = _float_mask(t, t_mask.numpy(), B, H, Lq, Lk).reshape(
            B, H, Lq, Lk)
    if t_kpm is not None:
        kb = t_kpm.reshape(B, Lk)
        if kb.dtype == t.bool:
            kb = t.zeros(B, Lk).masked_fill(kb, float("-inf"))
        kb = kb[:, None, None, :]
        bias = kb if bias is None else bias + kb
    exp_out, exp_w = _direct_reference(module, q, k, v, bias, c["average"])
    _close(_batch_first(out0, c["layout"]), exp_out,
           "output (empty_rows='zero')")
    if c["need_weights"]:
        w0b = w0[None] if c["layout"] == "unbatched" else w0
        _close(w0b, exp_w, "weights (empty_rows='zero')")

    # A row that no head can attend from is exactly out_proj's bias.
    if bias is not None:
        hidden = np.isneginf(bias.expand(B, H, Lq, Lk).numpy())
        empty_everywhere = hidden.all(axis=(1, 3))  # [B, Lq]
        expected_row = (module.out_proj.bias.detach().numpy()
                        if c["bias"] else np.zeros(c["embed_dim"], np.float32))
        rows = _batch_first(out0, c["layout"])
        for b, i in zip(*np.nonzero(empty_everywhere)):
            np.testing.assert_array_equal(rows[b, i], expected_row)


def _batch_first(x, layout):
    """An output in the case's layout as [B, L, E]."""
    if layout == "unbatched":
        return x[None]
    if layout == "seq_first":
        return x.transpose(1, 0, 2)
    return x


def test_case_space_is_covered():
    """The seeded cases reach every corner the suite claims to cover."""
    def seen(pred):
        return any(pred(c) for c in CASES)
    assert seen(lambda c: c["cross"]) and seen(lambda c: not c["cross"])
    assert seen(lambda c: c["kdim"] is not None and c["kdim"] != c["vdim"])
    assert seen(lambda c: c["bias"]) and seen(lambda c: not c["bias"])
    assert seen(lambda c: c["heads"] == 1) and seen(lambda c: c["heads"] == 16)
    assert seen(lambda c: c["len_q"] == 1 or c["len_k"] == 1)
    assert seen(lambda c: max(c["len_q"], c["len_k"]) > 400)
    for kpm in ("none", "bool", "float"):
        for mask in ("none", "bool2d", "uint8_2d", "bool3d", "float2d",
                     "float3d"):
            assert seen(lambda c: c["kpm"] == kpm and c["mask"] == mask), (
                kpm, mask)
    assert seen(lambda c: c["is_causal"] and c["mask"] != "none")
    assert seen(lambda c: c["is_causal"] and c["kpm"] != "none")
    assert seen(lambda c: c["force_empty"] and c["need_weights"])
    assert seen(lambda c: c["need_weights"] and c["average"])
    assert seen(lambda c: c["need_weights"] and not c["average"])
    for layout in ("batch_first", "seq_first", "unbatched"):
        assert seen(lambda c: c["layout"] == layout)
