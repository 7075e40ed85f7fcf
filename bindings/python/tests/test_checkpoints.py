# SPDX-License-Identifier: MIT
"""The README's table of checkpoints, run: each conversion snippet under
"Loading checkpoints" in README.md is extracted as it is printed there and
executed against a small random model of that kind, and its output is
compared with a PyTorch implementation of that model's attention written
from the model's definition (here; for Llama-style attention with its
rotary embeddings, conftest.decoder_reference in float64). A file the
snippet's layer saves with Hugging Face names must load back through the C
loader with the same result, which is the path C programs take."""

import math
import os
import re

import numpy as np
import pytest

import attn
from conftest import (ATOL, RTOL, decoder_reference, random_torch_mha,
                      require_torch, write_safetensors)

README = os.path.join(os.path.dirname(os.path.abspath(__file__)), os.pardir,
                      os.pardir, os.pardir, "README.md")


def _snippets():
    """name -> code of each block marked <!-- checkpoint: name -->."""
    with open(README, encoding="utf-8") as f:
        text = f.read()
    found = re.findall(r"<!-- checkpoint: (\w+) -->\n```python\n(.*?)```",
                       text, flags=re.S)
    return dict(found)


SNIPPETS = _snippets()


def test_readme_has_every_checkpoint():
    assert sorted(SNIPPETS) == ["bert", "gpt2", "llama", "torch"]


def _run(name, **env):
    scope = {"attn": attn, "np": np, **env}
    exec(compile(SNIPPETS[name], "README.md:" + name, "exec"), scope)
    return scope


def _params(t, gen, *shape):
    return (t.rand(shape, generator=gen) * 2 - 1) * (0.6 / math.sqrt(
        shape[-1]))


def _heads(t, y, n):
    """[B, L, n*d] -> [B, n, L, d]"""
    b, l, e = y.shape
    return y.reshape(b, l, n, e // n).transpose(1, 2)


def _attend(t, q, k, v, mask):
    """softmax(q k^T / sqrt(d) + mask) v, heads merged: [B, L, H*d]."""
    s = q @ k.transpose(-1, -2) / math.sqrt(q.shape[-1]) + mask
    o = t.softmax(s, dim=-1) @ v
    b, h, l, d = o.shape
    return o.transpose(1, 2).reshape(b, l, h * d)


def _causal(t, n):
    return t.triu(t.full((n, n), float("-inf")), diagonal=1)


def _check_c_path(layer, x, out, tmp_path, heads, rope=None, **kwargs):
    """Saved with Hugging Face names and loaded by the C loader into a new
    layer of the same configuration (``rope`` its rotary embeddings), the
    converted weights give the same output."""
    path = tmp_path / "converted.safetensors"
    layer.save_safetensors(path, naming="hf")
    again = attn.MultiheadAttention(layer.embed_dim, heads, bias=layer.bias,
                                    num_kv_heads=layer.num_kv_heads,
                                    rope=rope, seed=1)
    again.load_safetensors(path)
    np.testing.assert_array_equal(again(x, x, x, **kwargs)[0], out)


def test_torch_multihead_attention(tmp_path):
    t = require_torch()
    mha = random_torch_mha(16, 4, seed=31)
    prefix = "decoder.layers.0.self_attn."
    path = tmp_path / "model.safetensors"
    write_safetensors(path, {prefix + k: v
                             for k, v in mha.state_dict().items()})
    x = np.random.default_rng(32).standard_normal((2, 7, 16)).astype(
        np.float32)
    s = _run("torch", mha=mha, path=str(path), x=x)
    with t.no_grad():
        ref_out, ref_w = mha(*(t.from_numpy(x),) * 3)
    np.testing.assert_allclose(s["out"], ref_out.numpy(), atol=ATOL,
                               rtol=RTOL)
    np.testing.assert_allclose(s["weights"], ref_w.numpy(), atol=ATOL,
                               rtol=RTOL)
    np.testing.assert_allclose(s["layer"](x, x, x)[0], ref_out.numpy(),
                               atol=ATOL, rtol=RTOL)


# Llama-style configs, with the theta and linear factor each must give:
# Llama 3 (its rope_theta, no rope_scaling), Llama 2 with linear position
# interpolation (no rope_theta: Hugging Face's default, 10000), and biases on
# every projection (attention_bias) with an explicit "default" scaling.
LLAMA_CONFIGS = {
    "llama3": ({"rope_theta": 500000.0}, 500000.0, 1.0),
    "linear": ({"rope_scaling": {"type": "linear", "factor": 4.0}},
               10000.0, 4.0),
    "biases": ({"rope_theta": 1000.0, "attention_bias": True,
                "rope_scaling": {"rope_type": "default"}}, 1000.0, 1.0),
}


@pytest.mark.parametrize("name", sorted(LLAMA_CONFIGS))
def test_llama_style_attention(tmp_path, name):
    t = require_torch()
    e, h, kv = 64, 4, 2
    d = e // h
    extra, theta, factor = LLAMA_CONFIGS[name]
    config = {"hidden_size": e, "num_attention_heads": h,
              "num_key_value_heads": kv, **extra}
    gen = t.Generator().manual_seed(41)
    prefix = "model.layers.0.self_attn."
    sd = {prefix + "q_proj.weight": _params(t, gen, h * d, e),
          prefix + "k_proj.weight": _params(t, gen, kv * d, e),
          prefix + "v_proj.weight": _params(t, gen, kv * d, e),
          prefix + "o_proj.weight": _params(t, gen, e, h * d)}
    if config.get("attention_bias"):
        for part, n in (("q", h * d), ("k", kv * d), ("v", kv * d), ("o", e)):
            sd[prefix + part + "_proj.bias"] = _params(t, gen, n)
    path = tmp_path / "model-00001-of-00001.safetensors"
    write_safetensors(path, {**sd, "model.embed_tokens.weight":
                             t.zeros(5, e)})
    L = 16
    x = np.random.default_rng(42).standard_normal((2, L, e)).astype(
        np.float32)

    # Reference: the model's attention in float64 from its formulas
    # (conftest.decoder_reference): grouped K/V heads repeated for their
    # queries as repeat_kv does, q and k rotated at positions 0 .. L-1 with
    # Hugging Face's rotate_half pairing (dimension k with k + d/2) and
    # inv_freq[k] = theta^(-2k/d), divided by the factor of linear scaling.
    inv_freq = theta ** (-np.arange(0, d, 2) / d) / factor
    spec = dict(E=e, H=h, Hkv=kv, rope=True, inv_freq=inv_freq)
    weights = {k[len(prefix):]: v.numpy() for k, v in sd.items()}
    ref = decoder_reference(spec, weights, x,
                            np.broadcast_to(np.arange(L), (2, L)))

    s = _run("llama", config=config, path=str(path), x=x)
    # Tolerance: float32 library against the float64 reference. The outputs
    # are at most 0.4 and each comes from a few chained sums of 64 float32
    # products, so rounding leaves errors of about 1e-7 (measured: 8e-8);
    # the suite's 1e-5 absolute / 1e-4 relative is over 100 times that, yet
    # far below what a wrong rotation changes (no rotation, theta 10000
    # instead of 500000, adjacent pairs or the linear factor ignored each
    # move some output by 6e-3 to 1.4e-2).
    np.testing.assert_allclose(s["out"], ref, atol=ATOL, rtol=RTOL)
    _check_c_path(s["layer"], x, s["out"], tmp_path, h, rope=s["rope"],
                  is_causal=True)


@pytest.mark.parametrize("scaling", [
    {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0,
     "high_freq_factor": 4.0, "original_max_position_embeddings": 8192},
    {"rope_type": "yarn", "factor": 4.0}])
def test_llama_snippet_refuses_scaling_it_does_not_apply(scaling):
    """Frequency tables the snippet does not compute stop it rather than
    give a layer that rotates by the wrong angles."""
    config = {"hidden_size": 64, "num_attention_heads": 4,
              "num_key_value_heads": 2, "rope_scaling": scaling}
    with pytest.raises(NotImplementedError, match=scaling["rope_type"]):
        _run("llama", config=config, path=None, x=None)


@pytest.mark.parametrize("extra, what", [
    ({"head_dim": 32}, "head_dim"),
    ({"sliding_window": 4096}, "sliding_window")])
def test_llama_snippet_refuses_what_the_layer_cannot_hold(extra, what):
    """A head size other than hidden_size / heads, and a sliding window
    over a whole forward call, stop the snippet rather than load a layer
    that computes something else."""
    config = {"hidden_size": 64, "num_attention_heads": 4,
              "num_key_value_heads": 2, **extra}
    with pytest.raises(NotImplementedError, match=what):
        _run("llama", config=config, path=None, x=None)


def test_llama_snippet_takes_a_window_that_is_off(tmp_path):
    """Qwen2's configs carry a sliding_window with use_sliding_window
    false: the snippet goes on, builds the layer and stops only at loading
    the file, absent here (the library's ERR_IO naming it)."""
    config = {"hidden_size": 64, "num_attention_heads": 4,
              "num_key_value_heads": 2, "head_dim": 16,
              "sliding_window": 4096, "use_sliding_window": False}
    path = tmp_path / "absent.safetensors"
    with pytest.raises(attn.AttnError,
                       match="cannot open weight file .*absent") as e:
        _run("llama", config=config, path=str(path), x=None)
    assert type(e.value) is attn.AttnError
    assert e.value.status == attn.ERR_IO


def test_bert_style_attention(tmp_path):
    t = require_torch()
    config = {"hidden_size": 24, "num_attention_heads": 3}
    e, h = 24, 3
    gen = t.Generator().manual_seed(51)
    p = "encoder.layer.0.attention."
    sd = {}
    for name in ("self.query", "self.key", "self.value", "output.dense"):
        sd[p + name + ".weight"] = _params(t, gen, e, e)
        sd[p + name + ".bias"] = _params(t, gen, e)
    x = np.random.default_rng(52).standard_normal((2, 6, e)).astype(
        np.float32)
    attention_mask = np.array([[1, 1, 1, 1, 1, 1], [1, 1, 1, 1, 0, 0]])

    # Reference: BertSelfAttention then BertSelfOutput's dense layer; the
    # padding mask is added to the scores as the model's large negative
    # number.
    def linear(y, name):
        return y @ sd[p + name + ".weight"].T + sd[p + name + ".bias"]

    xt = t.from_numpy(x)
    q, k, v = (_heads(t, linear(xt, n), h)
               for n in ("self.query", "self.key", "self.value"))
    extended = (1.0 - t.from_numpy(attention_mask).float()[:, None, None, :]
                ) * t.finfo(t.float32).min
    ref = linear(_attend(t, q, k, v, extended), "output.dense")

    s = _run("bert", config=config, sd=sd, x=x,
             attention_mask=attention_mask)
    np.testing.assert_allclose(s["out"], ref.numpy(), atol=ATOL, rtol=RTOL)
    _check_c_path(s["layer"], x, s["out"], tmp_path, h,
                  key_padding_mask=attention_mask == 0)


def test_gpt2_attention(tmp_path):
    t = require_torch()
    config = {"n_embd": 32, "n_head": 4}
    e, h = 32, 4
    gen = t.Generator().manual_seed(61)
    p = "h.0.attn."
    # Conv1D weights are [in, out]: y = x @ W + b.
    sd = {p + "c_attn.weight": _params(t, gen, 3 * e, e).T.contiguous(),
          p + "c_attn.bias": _params(t, gen, 3 * e),
          p + "c_proj.weight": _params(t, gen, e, e).T.contiguous(),
          p + "c_proj.bias": _params(t, gen, e)}
    x = np.random.default_rng(62).standard_normal((2, 8, e)).astype(
        np.float32)

    # Reference: GPT2Attention: one Conv1D, split into Q, K, V, causal
    # attention, then the c_proj Conv1D.
    xt = t.from_numpy(x)
    qkv = xt @ sd[p + "c_attn.weight"] + sd[p + "c_attn.bias"]
    q, k, v = (_heads(t, part, h) for part in qkv.split(e, dim=2))
    ref = (_attend(t, q, k, v, _causal(t, 8)) @ sd[p + "c_proj.weight"]
           + sd[p + "c_proj.bias"])

    s = _run("gpt2", config=config, sd=sd, x=x)
    np.testing.assert_allclose(s["out"], ref.numpy(), atol=ATOL, rtol=RTOL)
    _check_c_path(s["layer"], x, s["out"], tmp_path, h, is_causal=True)


@pytest.mark.parametrize("name", ["bert", "gpt2"])
def test_conversions_refuse_a_wrong_head_count_early(name):
    """A config that does not fit the checkpoint fails with the library's
    message, not with wrong numbers."""
    require_torch()
    config = {"hidden_size": 24, "num_attention_heads": 5, "n_embd": 24,
              "n_head": 5}
    with pytest.raises(attn.AttnError, match="not divisible"):
        _run(name, config=config, sd={}, x=None, attention_mask=None)
