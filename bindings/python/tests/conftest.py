# SPDX-License-Identifier: MIT
"""Shared helpers of the Python binding's tests.

The tests import the installed ``attn`` package (CI installs it into a
throwaway virtual environment first). When it is not importable, as when
running from a checkout, the package next to this directory is used.
ATTN_LIBRARY must point at libattn.so unless the library is installed.

With ATTN_REQUIRE_TORCH=1 (set by CI) a missing torch is an error rather
than a reason to skip the parity tests.
"""

import json
import math
import os
import struct
import sys

import numpy as np
import pytest

try:
    import attn  # noqa: F401
except ImportError as e:
    if "libattn" in str(e):
        raise
    sys.path.insert(0, os.path.join(os.path.dirname(__file__), os.pardir))
    import attn  # noqa: F401

try:
    import torch
except ImportError:
    if os.environ.get("ATTN_REQUIRE_TORCH") == "1":
        raise
    torch = None

# The tolerance the parity suite promises.
ATOL = 1e-5
RTOL = 1e-4


def require_torch():
    if torch is None:
        pytest.skip("torch is not installed")
    return torch


@pytest.fixture
def torch_module():
    return require_torch()


def random_torch_mha(embed_dim, num_heads, bias=True, kdim=None, vdim=None,
                     batch_first=True, seed=0):
    """A torch MultiheadAttention in eval mode whose every parameter,
    biases included, is random (torch initialises biases to zero, which
    would hide bias bugs)."""
    t = require_torch()
    gen = t.Generator().manual_seed(seed)
    m = t.nn.MultiheadAttention(embed_dim, num_heads, bias=bias, kdim=kdim,
                                vdim=vdim, batch_first=batch_first)
    with t.no_grad():
        for p in m.parameters():
            bound = 1.0 / max(1, p.shape[-1]) ** 0.5
            p.copy_((t.rand(p.shape, generator=gen) * 2 - 1) * bound * 1.7)
    return m.eval()


def write_safetensors(path, tensors, metadata=None):
    """Writes a safetensors file from name -> array (float32, float16 or
    float64 numpy arrays or torch tensors): an 8-byte little-endian header
    length, the JSON header, then each tensor's little-endian bytes."""
    dtypes = {np.dtype("<f4"): "F32", np.dtype("<f2"): "F16",
              np.dtype("<f8"): "F64"}
    header = {}
    blobs = []
    offset = 0
    for name, value in tensors.items():
        if hasattr(value, "detach"):
            value = value.detach().cpu().numpy()
        a = np.ascontiguousarray(value)
        a = a.astype(a.dtype.newbyteorder("<"), copy=False)
        raw = a.tobytes()
        header[name] = {"dtype": dtypes[a.dtype], "shape": list(a.shape),
                        "data_offsets": [offset, offset + len(raw)]}
        blobs.append(raw)
        offset += len(raw)
    if metadata is not None:
        header["__metadata__"] = metadata
    text = json.dumps(header, separators=(",", ":")).encode("utf-8")
    text += b" " * (-len(text) % 8)  # data start aligned to 8 bytes
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(text)))
        f.write(text)
        for raw in blobs:
            f.write(raw)


def read_safetensors(path):
    """name -> numpy array of a safetensors file (F32/F16/F64 tensors),
    plus the metadata dict under the key None."""
    dtypes = {"F32": "<f4", "F16": "<f2", "F64": "<f8"}
    with open(path, "rb") as f:
        data = f.read()
    (n,) = struct.unpack_from("<Q", data, 0)
    header = json.loads(data[8:8 + n].decode("utf-8"))
    base = 8 + n
    out = {None: header.pop("__metadata__", None)}
    for name, entry in header.items():
        start, end = entry["data_offsets"]
        out[name] = np.frombuffer(
            data[base + start:base + end],
            dtype=dtypes[entry["dtype"]]).reshape(entry["shape"])
    return out


def causal_mask(L, window=0):
    """Boolean [L, L], True = hidden: later keys, and with a window the
    keys window or more positions back."""
    i = np.arange(L)[:, None]
    j = np.arange(L)[None, :]
    hidden = j > i
    if window:
        hidden |= i - j >= window
    return hidden


def mha_reference(layer, q, k, v, hidden):
    """Multi-head attention in float64 numpy from the layer's weights:
    q [B, L, E], k [B, S, kdim], v [B, S, vdim], hidden [B, L, S] (True =
    masked). Returns (output [B, L, E], per-head weights [B, H, L, S]); a
    query that sees no key gets zero weights."""
    sd = {n: w.astype(np.float64) for n, w in layer.state_dict().items()}
    Eq, Hq, Hkv = layer.embed_dim, layer.num_heads, layer.num_kv_heads
    hd = Eq // Hq
    KV = Hkv * hd
    if "in_proj_weight" in sd:
        wq, wk, wv = np.split(sd["in_proj_weight"], [Eq, Eq + KV])
    else:
        wq, wk, wv = (sd["q_proj_weight"], sd["k_proj_weight"],
                      sd["v_proj_weight"])
    bq, bk, bv = np.split(sd["in_proj_bias"], [Eq, Eq + KV])
    q, k, v = (a.astype(np.float64) for a in (q, k, v))
    B, L, _ = q.shape
    S = k.shape[1]
    Q = (q @ wq.T + bq).reshape(B, L, Hq, hd).transpose(0, 2, 1, 3)
    K = (k @ wk.T + bk).reshape(B, S, Hkv, hd).transpose(0, 2, 1, 3)
    V = (v @ wv.T + bv).reshape(B, S, Hkv, hd).transpose(0, 2, 1, 3)
    K = np.repeat(K, Hq // Hkv, axis=1)
    V = np.repeat(V, Hq // Hkv, axis=1)
    s = Q @ K.transpose(0, 1, 3, 2) * layer.scale
    s = np.where(hidden[:, None], -np.inf, s)
    m = s.max(-1, keepdims=True)
    m = np.where(np.isfinite(m), m, 0.0)
    p = np.exp(s - m)
    total = p.sum(-1, keepdims=True)
    p = np.divide(p, total, out=np.zeros_like(p), where=total > 0)
    ctx = (p @ V).transpose(0, 2, 1, 3).reshape(B, L, Eq)
    out = ctx @ sd["out_proj.weight"].T + sd["out_proj.bias"]
    return out, p


def _inv_freq(spec, hd):
    rot = spec.get("rot", hd)
    if "inv_freq" in spec:
        return np.asarray(spec["inv_freq"], dtype=np.float64)
    return spec.get("theta", 10000.0) ** (-np.arange(0, rot, 2) / rot)


def decoder_reference(spec, t, x, pos, window=0):
    """A decoder block's attention output for x [B, L, E] at positions
    pos [B, L], causal, in float64 torch, written from the models'
    published formulas (not from the library). t: Hugging Face's tensor
    names ("q_proj.weight", ..., "o_proj.weight", optional biases,
    "q_norm.weight", "k_norm.weight", "sinks") to numpy arrays. spec: E, H,
    Hkv (default H), and optionally rope (rotate_half pairing of dimension
    k with k + rot/2, or pairing="adjacent"), theta (default 10000), rot
    (rotated dimensions, default head_dim), inv_freq (the frequency table,
    replacing theta), attention_factor, qk_norm, scale, softcap, alibi,
    sinks; window > 0 adds a sliding window to the causal mask."""
    torch = require_torch()
    W = {k: torch.from_numpy(v.astype(np.float64)) for k, v in t.items()}
    E, H, Hkv = spec["E"], spec["H"], spec.get("Hkv", spec["H"])
    hd = E // H
    B, L, _ = x.shape
    xs = torch.from_numpy(x.astype(np.float64))

    def proj(name):
        y = xs @ W[name + "_proj.weight"].T
        if name + "_proj.bias" in W:
            y = y + W[name + "_proj.bias"]
        return y

    q = proj("q").view(B, L, H, hd).transpose(1, 2)
    k = proj("k").view(B, L, Hkv, hd).transpose(1, 2)
    v = proj("v").view(B, L, Hkv, hd).transpose(1, 2)
    if spec.get("qk_norm"):  # Qwen3: RMSNorm of each head, before RoPE
        def rms(a, w):
            return a * torch.rsqrt(a.pow(2).mean(-1, keepdim=True) + 1e-6) * w
        q = rms(q, W["q_norm.weight"])
        k = rms(k, W["k_norm.weight"])
    if spec.get("rope"):
        inv = torch.from_numpy(_inv_freq(spec, hd))
        rot = 2 * inv.numel()
        ang = torch.from_numpy(pos.astype(np.float64))[..., None] * inv
        f = spec.get("attention_factor", 1.0)
        cos, sin = (torch.cos(ang) * f)[:, None], (torch.sin(ang) * f)[:, None]

        def rope(a):
            r, rest = a[..., :rot], a[..., rot:]
            if spec.get("pairing") == "adjacent":  # GPT-J: (2i, 2i + 1)
                a1, a2 = r[..., 0::2], r[..., 1::2]
                o = torch.stack((a1 * cos - a2 * sin, a2 * cos + a1 * sin), -1)
                r = o.flatten(-2)
            else:  # rotate_half
                c2, s2 = torch.cat((cos, cos), -1), torch.cat((sin, sin), -1)
                half = torch.cat((-r[..., rot // 2:], r[..., :rot // 2]), -1)
                r = r * c2 + half * s2
            return torch.cat((r, rest), -1)
        q, k = rope(q), rope(k)
    k = k.repeat_interleave(H // Hkv, dim=1)
    v = v.repeat_interleave(H // Hkv, dim=1)
    scale = spec.get("scale", 1.0 / math.sqrt(hd))
    s = q @ k.transpose(-1, -2) * scale
    if spec.get("softcap"):  # Gemma 2
        s = spec["softcap"] * torch.tanh(s / spec["softcap"])
    if spec.get("alibi"):  # BLOOM: slope * key position, per head
        slopes = torch.from_numpy(_bloom_slopes(H))
        s = s + slopes[None, :, None, None] * torch.from_numpy(
            pos.astype(np.float64))[:, None, None, :]
    s = s.masked_fill(torch.from_numpy(causal_mask(L, window)),
                      float("-inf"))
    if spec.get("sinks"):  # gpt-oss: one more logit per head, then dropped
        sink = W["sinks"].view(1, H, 1, 1).expand(B, H, L, 1)
        p = torch.softmax(torch.cat((s, sink), -1), -1)[..., :-1]
    else:
        p = torch.softmax(s, -1)
    o = (p @ v).transpose(1, 2).reshape(B, L, E) @ W["o_proj.weight"].T
    if "o_proj.bias" in W:
        o = o + W["o_proj.bias"]
    return o.numpy()


def _bloom_slopes(H):
    """BLOOM's build_alibi_tensor slopes."""
    n = 2 ** math.floor(math.log2(H))
    base = 2 ** (-(2 ** -(math.log2(n) - 3)))
    slopes = [base ** (i + 1) for i in range(n)]
    if n != H:
        extra = 2 ** (-(2 ** -(math.log2(2 * n) - 3)))
        slopes += [extra ** (2 * i + 1) for i in range(H - n)]
    return np.asarray(slopes)


def pytest_report_header(config):
    return "attn package: %s; libattn %s: %s" % (
        attn.__file__, attn.library_version, attn.library_path)
