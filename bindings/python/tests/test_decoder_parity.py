"""Parity of the decoder attention features with PyTorch: Llama-, Qwen2-,
Qwen3-, Gemma-2-, gpt-oss- and BLOOM-style attention blocks written from
the published formulas in float64 torch (conftest.decoder_reference, which
the checkpoint tests share), their weights written to
safetensors files under Hugging Face's names and loaded by the library.
Tolerance: the suite's 1e-5 absolute / 1e-4 relative."""

import math

import numpy as np
import pytest

import attn
from conftest import (ATOL, RTOL, causal_mask, decoder_reference,
                      require_torch, write_safetensors)

PREFIX = "model.layers.0.self_attn."


def _tensors(spec, seed):
    """Random weights of a block, float32 numpy, under Hugging Face's
    names."""
    rng = np.random.default_rng(seed)
    E, H, Hkv = spec["E"], spec["H"], spec.get("Hkv", spec["H"])
    hd = E // H
    KV = Hkv * hd
    g = math.sqrt(3.0 / E)

    def u(shape, lo, hi):
        return rng.uniform(lo, hi, shape).astype(np.float32)

    t = {"q_proj.weight": u((E, E), -g, g), "k_proj.weight": u((KV, E), -g, g),
         "v_proj.weight": u((KV, E), -g, g), "o_proj.weight": u((E, E), -g, g)}
    for part, n in (("q", E), ("k", KV), ("v", KV), ("o", E)):
        if part in spec.get("bias", ""):
            t[part + "_proj.bias"] = u((n,), -0.5, 0.5)
    if spec.get("qk_norm"):
        t["q_norm.weight"] = u((hd,), 0.5, 1.5)
        t["k_norm.weight"] = u((hd,), 0.5, 1.5)
    if spec.get("sinks"):
        t["sinks"] = u((H,), -0.5, 2.0)
    return t


def _llama3_inv_freq(hd, theta=500000.0, factor=8.0, low=1.0, high=4.0,
                     original=8192):
    """Llama 3's scaled frequencies (rope_type "llama3")."""
    inv = theta ** (-np.arange(0, hd, 2) / hd)
    wave = 2 * math.pi / inv
    smooth = (original / wave - low) / (high - low)
    scaled = np.where(wave > original / low, inv / factor, inv)
    mid = (wave <= original / low) & (wave >= original / high)
    blend = (1 - smooth) * inv / factor + smooth * inv
    return np.where(mid, blend, scaled)


SPECS = {
    "llama": dict(E=64, H=4, Hkv=2, rope=True),
    "llama3_scaled": dict(E=64, H=4, Hkv=1, rope=True,
                          inv_freq=_llama3_inv_freq(16)),
    "gptj_partial": dict(E=48, H=3, rope=True, pairing="adjacent", rot=8,
                         theta=500.0),
    "qwen2": dict(E=64, H=4, Hkv=2, rope=True, theta=1e6, bias="qkv"),
    "qwen3": dict(E=64, H=4, Hkv=2, rope=True, qk_norm=True),
    "gemma2": dict(E=64, H=4, Hkv=2, rope=True, softcap=2.0, scale=0.3,
                   window=5),
    "gpt_oss": dict(E=64, H=4, Hkv=2, rope=True, sinks=True, bias="qkvo",
                    inv_freq=0.7 * 150000.0 ** (-np.arange(0, 16, 2) / 16),
                    attention_factor=1.2, window=7),
    "bloom": dict(E=48, H=6, alibi=True, bias="qkvo"),
}


def _layer(spec):
    kw = {}
    if spec.get("rope"):
        kw["rope"] = attn.RotaryEmbedding(
            theta=spec.get("theta", 10000.0), rotary_dim=spec.get("rot"),
            pairing=spec.get("pairing", "halves"),
            inv_freq=(np.asarray(spec["inv_freq"], dtype=np.float32)
                      if "inv_freq" in spec else None),
            attention_factor=spec.get("attention_factor", 1.0))
    if spec.get("qk_norm"):
        kw.update(qk_norm="head", qk_norm_eps=1e-6)
    if spec.get("softcap"):
        kw["softcap"] = spec["softcap"]
    if spec.get("sinks"):
        kw["sinks"] = True
    if spec.get("alibi"):
        kw["alibi"] = "causal"
    return attn.MultiheadAttention(
        spec["E"], spec["H"], num_kv_heads=spec.get("Hkv"),
        bias_parts=spec.get("bias", ""), scale=spec.get("scale"), **kw)


@pytest.mark.parametrize("name", sorted(SPECS))
def test_block_from_safetensors(name, tmp_path):
    require_torch()
    spec = SPECS[name]
    t = _tensors(spec, seed=len(name))
    if "inv_freq" in spec:  # the library gets the table in float32
        spec = dict(spec, inv_freq=np.asarray(spec["inv_freq"],
                                              dtype=np.float32))
    path = str(tmp_path / "block.safetensors")
    write_safetensors(path, {PREFIX + k: v for k, v in t.items()},
                      {"format": "pt"})
    layer = _layer(spec)
    layer.load_safetensors(path, prefix=PREFIX)

    rng = np.random.default_rng(7)
    B, L = 2, 23
    x = rng.uniform(-1, 1, (B, L, spec["E"])).astype(np.float32)
    window = spec.get("window", 0)
    mask = causal_mask(L, window) if window else None
    pos = np.broadcast_to(np.arange(L), (B, L))
    out, _ = layer(x, x, x, need_weights=False, is_causal=True,
                   attn_mask=mask)
    want = decoder_reference(spec, t, x, pos, window)
    np.testing.assert_allclose(out, want, rtol=RTOL, atol=ATOL)

    # Continued sequences: row b starts at position start[b].
    start = np.array([3, 1000])
    out, _ = layer(x, x, x, need_weights=False, is_causal=True,
                   attn_mask=mask, start=start)
    want = decoder_reference(spec, t, x, pos + start[:, None], window)
    np.testing.assert_allclose(out, want, rtol=RTOL, atol=ATOL)

    # Explicit positions, as Hugging Face's position_ids.
    ids = np.stack([np.arange(L) * 2 + 1, np.arange(L) + 40])
    out, _ = layer(x, x, x, need_weights=False, is_causal=True,
                   attn_mask=mask, positions=ids)
    want = decoder_reference(spec, t, x, ids, window)
    np.testing.assert_allclose(out, want, rtol=RTOL, atol=ATOL)


def test_weight_names_and_round_trip(tmp_path):
    spec = SPECS["qwen2"]
    layer = _layer(spec)
    assert layer.weight_names() == [
        "in_proj_weight", "in_proj_bias", "out_proj.weight"]
    oss = _layer(SPECS["gpt_oss"])
    assert "sinks" in oss.weight_names()
    q3 = _layer(SPECS["qwen3"])
    assert q3.get_weight("q_norm.weight").shape == (16,)
    np.testing.assert_array_equal(q3.get_weight("q_norm.weight"), 1.0)
    sd = q3.state_dict()
    assert set(sd) == {"in_proj_weight", "out_proj.weight", "q_norm.weight",
                       "k_norm.weight"}
    q3.load_state_dict(sd)
    partial = attn.MultiheadAttention(32, 4, bias_parts="kv")
    assert partial.weight_names() == ["in_proj_weight", "k_proj.bias",
                                      "v_proj.bias", "out_proj.weight"]
    path = str(tmp_path / "p.safetensors")
    partial.save_safetensors(path, naming="hf_o_proj")
    other = attn.MultiheadAttention(32, 4, bias_parts="kv")
    other.load_safetensors(path)
    np.testing.assert_array_equal(other.get_weight("k_proj.bias"),
                                  partial.get_weight("k_proj.bias"))


def test_bad_feature_arguments():
    with pytest.raises(attn.AttnError) as e:
        attn.MultiheadAttention(32, 4, rope=attn.RotaryEmbedding(
            rotary_dim=5))
    assert e.value.status == attn.ERR_BAD_SIZE
    assert "rotary_dim" in str(e.value)
    with pytest.raises(attn.AttnError) as e:
        attn.MultiheadAttention(32, 4, softcap=-1.0)
    assert "softcap" in str(e.value)
    with pytest.raises(ValueError):
        attn.MultiheadAttention(32, 4, bias_parts="qx")
    with pytest.raises(ValueError):
        attn.MultiheadAttention(32, 4, alibi="sideways")
    with pytest.raises(ValueError):
        attn.MultiheadAttention(32, 4, alibi="causal", alibi_slopes=[1, 2])
    layer = attn.MultiheadAttention(32, 4, rope={"theta": 100.0})
    x = np.zeros((1, 3, 32), np.float32)
    with pytest.raises(attn.AttnError) as e:
        layer(x, x, x, positions=[[0, -1, 2]])
    assert e.value.status == attn.ERR_BAD_OPTION
    with pytest.raises(ValueError):
        layer(x, x, x, positions=[[0, 1]])
    with pytest.raises(TypeError):
        layer(x, x, x, positions=[[0.5, 1, 2]])


def test_alibi_slopes_without_alibi_are_a_bad_option(monkeypatch):
    """A slope table given without an ALiBi mode is refused by the library
    (ERR_BAD_OPTION), not ignored; whatever the table's shape, that is the
    mistake reported."""
    for slopes in ([0.5, 0.25, 0.125, 0.0625],
                   np.ones(4, np.float32), [1.0, 2.0], []):
        with pytest.raises(attn.AttnError, match="alibi_slopes given but "
                           "alibi is ATTN_ALIBI_NONE") as e:
            attn.MultiheadAttention(32, 4, alibi_slopes=slopes)
        assert e.value.status == attn.ERR_BAD_OPTION, slopes
    # With ALiBi on, the binding checks the table's shape itself.
    with pytest.raises(ValueError, match=r"alibi_slopes must have shape "
                       r"\(4,\), not \(2,\)"):
        attn.MultiheadAttention(32, 4, alibi="causal", alibi_slopes=[1, 2])
    # A library without the decoder features could only ignore the table.
    monkeypatch.setattr(attn._lib, "has_features", lambda: False)
    with pytest.raises(NotImplementedError, match="decoder attention"):
        attn.MultiheadAttention(32, 4, alibi_slopes=[0.5] * 4)


def test_from_torch_unchanged():
    """A plain torch module still converts exactly: the features stay
    off."""
    from conftest import random_torch_mha
    torch = require_torch()
    m = random_torch_mha(32, 4, seed=3)
    layer = attn.MultiheadAttention.from_torch(m)
    x = np.random.default_rng(1).uniform(-1, 1, (2, 5, 32)).astype(np.float32)
    out, _ = layer(x, x, x, need_weights=False)
    with torch.no_grad():
        want, _ = m(*(torch.from_numpy(x),) * 3, need_weights=False)
    np.testing.assert_allclose(out, want.numpy(), rtol=RTOL, atol=ATOL)
