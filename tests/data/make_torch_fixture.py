#!/usr/bin/python3
"""Writes the torch parity fixture of tests/test_safetensors.c.

    /usr/bin/python3 tests/data/make_torch_fixture.py

torch_mha.safetensors holds the weights of five torch.nn.MultiheadAttention
modules as a model file would, each under its own prefix and naming scheme;
torch_mha_expected.h holds the inputs and the outputs torch computes for
them. The C test loads each layer from the file by prefix, runs the same
inputs and compares.

The safetensors file is written with struct and json only, so that the test
does not depend on the writer it is meant to check (the safetensors package
is not needed). Biases are set to random values: torch starts them at zero,
which would hide a bias loaded into the wrong place. Weights stored as F16
or BF16 are rounded first and the expected output uses the rounded weights,
so only the conversion on load is under test. Outputs are computed in
float64 from the float32 weights.
"""
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


def forward(m, q, k, v):
    m64 = m.double()
    with torch.no_grad():
        out = m64(q.double(), k.double(), v.double(), need_weights=False)[0]
    m.float()
    return out.float()


cases = []  # (C name, prefix, config dict, inputs, output)

# 1. torch names, packed in_proj_weight, bias on, self-attention.
m = mha(8, 2)
add_torch("decoder.layers.0.self_attn.", m)
x = rand(2, 3, 8)
cases.append(("self_attn", "decoder.layers.0.self_attn.",
              dict(E=8, H=2, kdim=0, vdim=0, bias=1),
              (x, x, x), forward(m, x, x, x)))

# 2. torch names with kdim/vdim != embed_dim: q/k/v_proj_weight and the
# packed in_proj_bias, cross-attention.
m = mha(8, 4, kdim=6, vdim=5)
add_torch("decoder.layers.0.cross_attn.", m)
q, k, v = rand(2, 3, 8), rand(2, 4, 6), rand(2, 4, 5)
cases.append(("cross_attn", "decoder.layers.0.cross_attn.",
              dict(E=8, H=4, kdim=6, vdim=5, bias=1),
              (q, k, v), forward(m, q, k, v)))

# 3. torch names, bias off, stored as F16.
m = mha(8, 2, bias=False)
round_to(m, torch.float16)
add_torch("encoder.layers.0.self_attn.", m, "F16")
x = rand(2, 3, 8)
cases.append(("f16_nobias", "encoder.layers.0.self_attn.",
              dict(E=8, H=2, kdim=0, vdim=0, bias=0),
              (x, x, x), forward(m, x, x, x)))

# 4. Hugging Face names with o_proj (Llama style), stored as BF16.
m = mha(8, 2)
round_to(m, torch.bfloat16)
add_hf("model.layers.0.self_attn.", m, "o_proj", "BF16")
x = rand(2, 3, 8)
cases.append(("hf_bf16", "model.layers.0.self_attn.",
              dict(E=8, H=2, kdim=0, vdim=0, bias=1),
              (x, x, x), forward(m, x, x, x)))

# 5. Hugging Face names with out_proj (BART style), F32, cross-attention
# over an encoder memory.
m = mha(8, 4)
add_hf("model.decoder.layers.0.encoder_attn.", m, "out_proj", "F32")
q, mem = rand(2, 3, 8), rand(2, 4, 8)
cases.append(("hf_cross", "model.decoder.layers.0.encoder_attn.",
              dict(E=8, H=4, kdim=0, vdim=0, bias=1),
              (q, mem, mem), forward(m, q, mem, mem)))

# Another model part the loader must skip.
tensors.append(("decoder.embed_tokens.weight", "F32", rand(5, 8)))

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


def c_array(name, t):
    vals = ["%.9gf" % v for v in t.flatten().tolist()]
    lines = []
    for i in range(0, len(vals), 4):
        lines.append("    " + ", ".join(vals[i:i + 4]) + ",")
    return "static const float %s[%d] = {\n%s\n};\n" % (
        name, len(vals), "\n".join(lines))


out = ["/* Generated by make_torch_fixture.py (torch %s): inputs and\n"
       " * torch's outputs for the layers in torch_mha.safetensors. Do not\n"
       " * edit. */" % torch.__version__,
       "#ifndef ATTN_TEST_TORCH_MHA_EXPECTED_H",
       "#define ATTN_TEST_TORCH_MHA_EXPECTED_H",
       "",
       "#include <stdint.h>",
       ""]
table = []
for cname, prefix, cfg, (q, k, v), y in cases:
    b, lq, _ = q.shape
    lk = k.shape[1]
    out.append(c_array(cname + "_query", q))
    kname = vname = cname + "_query"
    if k is not q:
        kname = vname = cname + "_key"
        out.append(c_array(kname, k))
    if v is not k:
        vname = cname + "_value"
        out.append(c_array(vname, v))
    out.append(c_array(cname + "_out", y))
    table.append(
        '    {"%s", "%s",\n     %d, %d, %d, %d, %d, %d, %d, %d,\n'
        '     %s_query, %s, %s, %s_out},'
        % (cname, prefix, cfg["E"], cfg["H"], cfg["kdim"], cfg["vdim"],
           cfg["bias"], b, lq, lk, cname, kname, vname, cname))
out.append("""typedef struct {
  const char *name, *prefix;
  int64_t embed_dim, num_heads, kdim, vdim;
  int32_t bias;
  int64_t batch, len_q, len_k;
  const float *query, *key, *value, *out;
} torch_case;
""")
out.append("static const torch_case torch_cases[] = {")
out.extend(table)
out.append("};")
out.append("")
out.append("#endif")
with open(os.path.join(HERE, "torch_mha_expected.h"), "w") as f:
    f.write("\n".join(out) + "\n")
print("wrote %d tensors, %d bytes of data" % (len(tensors), offset))
