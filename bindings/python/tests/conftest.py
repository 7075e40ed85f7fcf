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


def pytest_report_header(config):
    return "attn package: %s; libattn %s: %s" % (
        attn.__file__, attn.library_version, attn.library_path)
