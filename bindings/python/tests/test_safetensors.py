# SPDX-License-Identifier: MIT
"""Weight files: torch state_dict -> safetensors file written here in plain
Python -> the C loader -> the same outputs as torch; and the C writer's
files read back by Python and by the C loader."""

import numpy as np
import pytest

import attn
from attn import _lib
from conftest import (ATOL, RTOL, random_torch_mha, read_safetensors,
                      require_torch, write_safetensors)

pytestmark = pytest.mark.skipif(
    not _lib.has_safetensors(),
    reason="the loaded libattn has no safetensors functions")

LAYOUTS = [
    dict(),
    dict(bias=False),
    dict(kdim=5, vdim=7),
    dict(kdim=6, vdim=6, bias=False),
]


def _torch_outputs(m, q, k, v):
    t = require_torch()
    with t.no_grad():
        out, w = m(t.from_numpy(q), t.from_numpy(k), t.from_numpy(v),
                   average_attn_weights=False)
    return out.numpy(), w.numpy()


def _inputs(m, seed):
    rng = np.random.default_rng(seed)
    q = rng.standard_normal((2, 6, m.embed_dim)).astype(np.float32)
    k = rng.standard_normal((2, 9, m.kdim)).astype(np.float32)
    v = rng.standard_normal((2, 9, m.vdim)).astype(np.float32)
    return q, k, v


@pytest.mark.parametrize("layout", LAYOUTS, ids=str)
@pytest.mark.parametrize("prefix", ["", "decoder.layers.3.encoder_attn."])
def test_torch_state_dict_file_loads_in_c_with_torch_outputs(
        tmp_path, layout, prefix):
    m = random_torch_mha(16, 4, seed=21, **layout)
    path = tmp_path / "model.safetensors"
    tensors = {prefix + name: value for name, value in m.state_dict().items()}
    # Unrelated tensors of the same model are ignored by the loader.
    tensors["decoder.embed_tokens.weight"] = np.ones((3, 16), np.float32)
    write_safetensors(path, tensors, metadata={"format": "pt"})

    layer = attn.MultiheadAttention(16, 4, bias=layout.get("bias", True),
                                    kdim=layout.get("kdim"),
                                    vdim=layout.get("vdim"), seed=0)
    layer.load_safetensors(path, prefix=prefix)
    q, k, v = _inputs(m, 22)
    ref_out, ref_w = _torch_outputs(m, q, k, v)
    out, w = layer(q, k, v, average_attn_weights=False)
    np.testing.assert_allclose(out, ref_out, atol=ATOL, rtol=RTOL)
    np.testing.assert_allclose(w, ref_w, atol=ATOL, rtol=RTOL)

    # The same bytes through the in-memory loader.
    again = attn.MultiheadAttention(16, 4, bias=layout.get("bias", True),
                                    kdim=layout.get("kdim"),
                                    vdim=layout.get("vdim"), seed=1)
    again.load_safetensors_bytes(path.read_bytes(), prefix=prefix)
    np.testing.assert_array_equal(again(q, k, v)[0], layer(q, k, v)[0])


def test_half_precision_tensors_are_converted(tmp_path):
    m = random_torch_mha(8, 2, seed=23)
    half = {n: p.detach().numpy().astype(np.float16)
            for n, p in m.state_dict().items()}
    path = tmp_path / "half.safetensors"
    write_safetensors(path, half)
    layer = attn.MultiheadAttention(8, 2, seed=0)
    layer.load_safetensors(str(path))
    for name, value in layer.state_dict().items():
        np.testing.assert_array_equal(value, half[name].astype(np.float32))


@pytest.mark.parametrize("layout", LAYOUTS, ids=str)
def test_c_writer_round_trip_torch_names(tmp_path, layout):
    t = require_torch()
    m = random_torch_mha(16, 4, seed=24, **layout)
    layer = attn.MultiheadAttention.from_torch(m)
    path = tmp_path / "saved.safetensors"
    layer.save_safetensors(path, prefix="attn.", naming="torch")
    saved = read_safetensors(path)
    metadata = saved.pop(None)
    assert metadata == {"format": "pt"}
    assert set(saved) == {"attn." + n for n in m.state_dict()}
    for name, value in m.state_dict().items():
        np.testing.assert_array_equal(saved["attn." + name], value.numpy())

    # torch loads the file's tensors back into a fresh module.
    fresh = t.nn.MultiheadAttention(16, 4, batch_first=True, **layout)
    fresh.load_state_dict({n[len("attn."):]: t.from_numpy(v.copy())
                           for n, v in saved.items()})
    q, k, v = _inputs(m, 25)
    out, _ = layer(q, k, v)
    ref, _ = _torch_outputs(fresh.eval(), q, k, v)
    np.testing.assert_allclose(out, ref, atol=ATOL, rtol=RTOL)


@pytest.mark.parametrize("naming, out_name", [("hf", "out_proj"),
                                              ("hf_o_proj", "o_proj")])
def test_c_writer_hugging_face_names(tmp_path, naming, out_name):
    m = random_torch_mha(8, 2, seed=26, kdim=3, vdim=5)
    layer = attn.MultiheadAttention.from_torch(m)
    path = tmp_path / "hf.safetensors"
    layer.save_safetensors(path, naming=naming)
    saved = read_safetensors(path)
    saved.pop(None)
    sd = {n: p.numpy() for n, p in m.state_dict().items()}
    bq, bk, bv = np.split(sd["in_proj_bias"], 3)
    expected = {
        "q_proj.weight": sd["q_proj_weight"], "q_proj.bias": bq,
        "k_proj.weight": sd["k_proj_weight"], "k_proj.bias": bk,
        "v_proj.weight": sd["v_proj_weight"], "v_proj.bias": bv,
        out_name + ".weight": sd["out_proj.weight"],
        out_name + ".bias": sd["out_proj.bias"],
    }
    assert set(saved) == set(expected)
    for name, value in expected.items():
        np.testing.assert_array_equal(saved[name], value)
    # ... and the loader recognises the naming.
    back = attn.MultiheadAttention(8, 2, kdim=3, vdim=5, seed=0)
    back.load_safetensors(path)
    for name, value in back.state_dict().items():
        np.testing.assert_array_equal(value, sd[name])


def test_loader_errors_keep_the_weights(tmp_path):
    m = random_torch_mha(8, 2, seed=27)
    layer = attn.MultiheadAttention(8, 2, seed=3)
    before = layer.state_dict()

    missing = dict(m.state_dict())
    del missing["out_proj.weight"]
    write_safetensors(tmp_path / "missing.safetensors", missing)
    with pytest.raises(attn.AttnError) as e:
        layer.load_safetensors(tmp_path / "missing.safetensors")
    assert e.value.status == attn.ERR_TENSOR_MISSING
    assert "out_proj.weight" in str(e.value)

    wrong = {n: p for n, p in m.state_dict().items()}
    wrong["out_proj.bias"] = np.zeros(5, np.float32)
    write_safetensors(tmp_path / "shape.safetensors", wrong)
    with pytest.raises(attn.AttnError) as e:
        layer.load_safetensors(tmp_path / "shape.safetensors")
    assert e.value.status == attn.ERR_TENSOR_SHAPE

    with pytest.raises(attn.AttnError) as e:
        layer.load_safetensors(tmp_path / "absent.safetensors")
    assert e.value.status == attn.ERR_IO

    (tmp_path / "junk.safetensors").write_bytes(b"\x05\0\0\0\0\0\0\0{\"a\"")
    with pytest.raises(attn.AttnError) as e:
        layer.load_safetensors(tmp_path / "junk.safetensors")
    assert e.value.status == attn.ERR_FILE_FORMAT

    with pytest.raises(attn.AttnError):
        layer.load_safetensors_bytes(b"")

    for name, value in layer.state_dict().items():
        np.testing.assert_array_equal(value, before[name])


def test_bad_naming_is_a_value_error(tmp_path):
    layer = attn.MultiheadAttention(8, 2, seed=0)
    with pytest.raises(ValueError, match="naming"):
        layer.save_safetensors(tmp_path / "x.safetensors", naming="keras")
