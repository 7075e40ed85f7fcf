#!/usr/bin/python3
# SPDX-License-Identifier: MIT
"""Writes the torch parity fixture that the C, Python, Rust and Go tests
all check the library against.

    /usr/bin/python3 tests/data/make_torch_fixture.py

Needs torch and numpy (Debian 12: python3-torch, python3-numpy); the
files it writes are committed, so the tests themselves need neither.

torch_mha.safetensors holds the weights of the torch.nn.MultiheadAttention
modules of every case, as a model file would, each under its own prefix
and naming scheme. torch_mha_expected.txt holds, per case, the layer's
shape, the inputs, the mask and what torch computes: the output and the
attention weights, per head and averaged over heads. Each test loads the
layer from the safetensors file by prefix, runs the same inputs under the
same mask and compares.

The cases: self-attention, cross-attention, kdim/vdim != embed_dim, F16
and BF16 weights, torch and Hugging Face names, and the masks torch
offers: key padding (key_padding_mask, True = ignore the key), causal
(attn_mask = triu(ones(Lq, Lk), diagonal=1), True = masked: query i sees
keys j <= i, the library's ATTN_CAUSAL_TOP_LEFT; torch 1.13 has no
is_causal argument), both together, and causal with Lq != Lk. No query
row is left without a visible key (torch gives NaN there, the library
zeros by default).

How the expected values are computed: each module is copied and
converted to float64 (module.double()), the float32 inputs are converted
to float64, and the module runs in eval mode with need_weights=True,
once with average_attn_weights=False (per head) and once with True
(averaged). Gradients stay enabled during these calls so that torch takes
its reference path (F.multi_head_attention_forward) rather than its fused
fast path. The float64 results are written with 9 significant digits.
Inputs are float32 values, written with 9 significant digits, which
reads back to the same float32.

The safetensors file is written with struct and json only, so that the
tests do not depend on the writer they are meant to check (the
safetensors package is not needed). Biases are set to random values:
torch starts them at zero, which would hide a bias loaded into the wrong
place. Weights stored as F16 or BF16 are rounded first and the expected
values use the rounded weights, so only the conversion on load is under
test.

torch_mha_expected.txt is plain text that every language reads without a
parser library. Lines starting with '#' and empty lines are comments.
Every other line is a key followed by its values, separated by spaces. A
line "case NAME" starts a case; the lines after it, up to the next case,
are its fields:

    prefix P              tensor name prefix in torch_mha.safetensors
    embed_dim, num_heads, kdim, vdim, bias (0/1), batch (B), len_q (Lq),
    len_k (Lk)            integers; kdim and vdim are the real widths
    causal C              0 none, 1 top-left (ATTN_CAUSAL_TOP_LEFT)
    query                 [B, Lq, embed_dim] floats
    key                   [B, Lk, kdim]; absent: the query (self-attention)
    value                 [B, Lk, vdim]; absent: the key
    key_padding           [B, Lk] 0/1, 1 = ignore the key; absent: none
    out                   [B, Lq, embed_dim]
    weights_per_head      [B, num_heads, Lq, Lk]
    weights_average       [B, Lq, Lk]

Arrays are row-major, all on their key's line.
"""
import copy
import json
import os
import struct

import numpy as np
import torch

HERE = os.path.dirname(os.path.abspath(__file__))
torch.manual_seed(20240611)


def mha(embed_dim, num_heads, bias=True, kdim=None, vdim=None):
    m = torch.nn.MultiheadAttention(embed_dim, num_heads, bias=bias,
                                    kdim=kdim, vdim=vdim, batch_first=True)
    with torch.no_grad():
        for name, p in m.named_parameters():
            if name.endswith("bias"):
                p.uniform_(-0.5, 0.5)
    return m.eval()


def round_to(m, dtype):
    with torch.no_grad():
        for p in m.parameters():
            p.copy_(p.to(dtype).float())


def rand(*shape):
    return torch.rand(*shape) * 2 - 1


tensors = []  # (name, dtype string, float32 tensor)


def add_torch(prefix, m, dtype="F32"):
    for name, p in m.state_dict().items():
        tensors.append((prefix + name, dtype, p.detach().clone()))


def add_hf(prefix, m, out_name, dtype):
    """Hugging Face names: the packed in-projection split into q/k/v."""
    sd = m.state_dict()
    e = m.embed_dim
    w = sd["in_proj_weight"]
    b = sd["in_proj_bias"]
    for i, part in enumerate("qkv"):
        tensors.append((f"{prefix}{part}_proj.weight", dtype,
                        w[i * e:(i + 1) * e].clone()))
        tensors.append((f"{prefix}{part}_proj.bias", dtype,
                        b[i * e:(i + 1) * e].clone()))
    tensors.append((f"{prefix}{out_name}.weight", dtype,
                    sd["out_proj.weight"].clone()))
    tensors.append((f"{prefix}{out_name}.bias", dtype,
                    sd["out_proj.bias"].clone()))


cases = []


def add_case(name, prefix, m, q, k, v, padding=None, causal=False):
    """Runs m in float64 as the docstring says and records the case."""
    m64 = copy.deepcopy(m).double()
    q64 = q.double()
    k64 = q64 if k is q else k.double()
    v64 = k64 if v is k else v.double()
    lq, lk = q.shape[1], k.shape[1]
    kpm = None if padding is None else torch.tensor(padding, dtype=torch.bool)
    am = None
    if causal:
        am = torch.ones(lq, lk, dtype=torch.bool).triu(diagonal=1)
    assert torch.is_grad_enabled()
    results = {}
    for avg in (False, True):
        out, w = m64(q64, k64, v64, key_padding_mask=kpm, attn_mask=am,
                     need_weights=True, average_attn_weights=avg)
        results[avg] = (out.detach(), w.detach())
    out = results[False][0]
    assert torch.equal(out, results[True][0])
    for t in (out, results[False][1], results[True][1]):
        assert torch.isfinite(t).all(), name + ": a query sees no key"
    cases.append(dict(
        name=name, prefix=prefix, embed_dim=m.embed_dim,
        num_heads=m.num_heads, kdim=k.shape[2], vdim=v.shape[2],
        bias=int(m.in_proj_bias is not None), batch=q.shape[0], len_q=lq,
        len_k=lk, causal=int(causal), query=q,
        key=None if k is q else k, value=None if v is k else v,
        key_padding=padding, out=out, weights_per_head=results[False][1],
        weights_average=results[True][1]))


# 1. torch names, packed in_proj_weight, bias on, self-attention.
m = mha(8, 2)
add_torch("decoder.layers.0.self_attn.", m)
x = rand(2, 3, 8)
add_case("self_attn", "decoder.layers.0.self_attn.", m, x, x, x)

# 2. torch names with kdim/vdim != embed_dim: q/k/v_proj_weight and the
# packed in_proj_bias, cross-attention.
m = mha(8, 4, kdim=6, vdim=5)
add_torch("decoder.layers.0.cross_attn.", m)
q, k, v = rand(2, 3, 8), rand(2, 4, 6), rand(2, 4, 5)
add_case("cross_attn", "decoder.layers.0.cross_attn.", m, q, k, v)

# 3. torch names, bias off, stored as F16.
m = mha(8, 2, bias=False)
round_to(m, torch.float16)
add_torch("encoder.layers.0.self_attn.", m, "F16")
x = rand(2, 3, 8)
add_case("f16_nobias", "encoder.layers.0.self_attn.", m, x, x, x)

# 4. Hugging Face names with o_proj (Llama style), stored as BF16.
m = mha(8, 2)
round_to(m, torch.bfloat16)
add_hf("model.layers.0.self_attn.", m, "o_proj", "BF16")
x = rand(2, 3, 8)
add_case("hf_bf16", "model.layers.0.self_attn.", m, x, x, x)

# 5. Hugging Face names with out_proj (BART style), F32, cross-attention
# over an encoder memory (key and value the same array).
m = mha(8, 4)
add_hf("model.decoder.layers.0.encoder_attn.", m, "out_proj", "F32")
q, mem = rand(2, 3, 8), rand(2, 4, 8)
add_case("hf_cross", "model.decoder.layers.0.encoder_attn.", m, q, mem, mem)

# Another model part the loader must skip.
tensors.append(("decoder.embed_tokens.weight", "F32", rand(5, 8)))

# 6. Key padding, self-attention: trailing and inner keys ignored.
m = mha(8, 2)
add_torch("decoder.layers.1.self_attn.", m)
x = rand(2, 4, 8)
add_case("self_padding", "decoder.layers.1.self_attn.", m, x, x, x,
         padding=[[0, 0, 0, 1], [0, 1, 1, 0]])

# 7. Key padding, cross-attention with kdim/vdim != embed_dim.
m = mha(8, 4, kdim=6, vdim=5)
add_torch("decoder.layers.1.cross_attn.", m)
q, k, v = rand(2, 3, 8), rand(2, 5, 6), rand(2, 5, 5)
add_case("cross_padding", "decoder.layers.1.cross_attn.", m, q, k, v,
         padding=[[0, 0, 0, 0, 1], [1, 0, 0, 1, 1]])

# 8. Causal self-attention (a decoder's self-attention over a prefix).
m = mha(8, 2)
add_torch("decoder.layers.2.self_attn.", m)
x = rand(2, 4, 8)
add_case("self_causal", "decoder.layers.2.self_attn.", m, x, x, x,
         causal=True)

# 9. Causal and key padding together, three heads of width 4, Hugging Face
# names.
m = mha(12, 3)
add_hf("model.layers.1.self_attn.", m, "o_proj", "F32")
x = rand(2, 5, 12)
add_case("causal_padding", "model.layers.1.self_attn.", m, x, x, x,
         padding=[[0, 1, 0, 0, 1], [0, 0, 1, 1, 0]], causal=True)

# 10. Causal with Lq != Lk (top-left: query i sees keys j <= i), kdim !=
# embed_dim.
m = mha(8, 2, kdim=6, vdim=6)
add_torch("decoder.layers.2.cross_attn.", m)
q, k, v = rand(2, 3, 8), rand(2, 5, 6), rand(2, 5, 6)
add_case("cross_causal", "decoder.layers.2.cross_attn.", m, q, k, v,
         causal=True)

# --- safetensors file -----------------------------------------------------
np_dtype = {"F32": np.dtype("<f4"), "F16": np.dtype("<f2")}
header = {"__metadata__": {"format": "pt"}}
blobs = []
offset = 0
for name, dtype, t in tensors:
    if dtype == "BF16":
        # The top 16 bits of each float32 (the values are already bf16).
        bits = t.contiguous().numpy().astype("<f4").view("<u4") >> 16
        data = bits.astype("<u2").tobytes()
    else:
        data = t.contiguous().numpy().astype(np_dtype[dtype]).tobytes()
    header[name] = {"dtype": dtype, "shape": list(t.shape),
                    "data_offsets": [offset, offset + len(data)]}
    blobs.append(data)
    offset += len(data)
text = json.dumps(header, separators=(",", ":")).encode()
text += b" " * (-(8 + len(text)) % 8)
with open(os.path.join(HERE, "torch_mha.safetensors"), "wb") as f:
    f.write(struct.pack("<Q", len(text)) + text + b"".join(blobs))

# --- expected values --------------------------------------------------------


def numbers(t):
    if isinstance(t, list):
        return " ".join(str(int(v)) for row in t for v in row)
    return " ".join("%.9g" % v for v in t.flatten().tolist())


lines = [
    "# libattn's torch parity fixture: inputs, masks and what",
    "# torch.nn.MultiheadAttention (torch %s, float64) computes for the"
    % torch.__version__,
    "# layers in torch_mha.safetensors. Written by make_torch_fixture.py,",
    "# whose docstring describes the format. Do not edit.",
]
for c in cases:
    lines.append("")
    lines.append("case " + c["name"])
    for key in ("prefix", "embed_dim", "num_heads", "kdim", "vdim", "bias",
                "batch", "len_q", "len_k", "causal"):
        lines.append("%s %s" % (key, c[key]))
    for key in ("query", "key", "value", "key_padding", "out",
                "weights_per_head", "weights_average"):
        if c[key] is not None:
            lines.append("%s %s" % (key, numbers(c[key])))
with open(os.path.join(HERE, "torch_mha_expected.txt"), "w") as f:
    f.write("\n".join(lines) + "\n")
print("wrote %d tensors (%d bytes of data) and %d cases"
      % (len(tensors), offset, len(cases)))
