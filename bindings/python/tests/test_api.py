# SPDX-License-Identifier: MIT
"""The package's own contract: loading, struct mirrors, errors, weights,
input conversion, layouts and mask handling beyond what torch expresses."""

import ctypes
import inspect
import os
import platform
import subprocess
import sys
import typing

import numpy as np
import pytest

import attn
from attn import _lib, _layer
from conftest import ATOL, RTOL, random_torch_mha, require_torch


# ---------------------------------------------------------------- loading


def test_version_and_struct_sizes_agree():
    assert _lib.version_number // 10000 == _lib.EXPECTED_MAJOR
    assert attn.library_version == "%d.%d.%d" % (
        _lib.version_number // 10000, _lib.version_number // 100 % 100,
        _lib.version_number % 100)
    # Each init writes exactly the bytes of our mirror, and records them.
    for struct, init in ((_lib.Config, _lib.C.attn_config_init_sized),
                         (_lib.Mask, _lib.C.attn_mask_init_sized),
                         (_lib.Options, _lib.C.attn_options_init_sized)):
        n = ctypes.sizeof(struct)
        buf = ctypes.create_string_buffer(b"\xa5" * (n + 32), n + 32)
        assert init(buf, n) == _lib.OK
        assert buf.raw[n:] == b"\xa5" * 32
        assert struct.from_buffer_copy(buf.raw[:n]).struct_size == n
    assert _lib.new_config().struct_size == ctypes.sizeof(_lib.Config)
    assert _lib.new_config().num_heads == 1 and _lib.new_config().bias == 1


def _import_in_subprocess(env_changes):
    env = dict(os.environ)
    env.update(env_changes)
    for k, v in env_changes.items():
        if v is None:
            del env[k]
    code = "import attn, sys; sys.stdout.write(attn.library_path)"
    pkg_parent = os.path.dirname(os.path.dirname(attn.__file__))
    env["PYTHONPATH"] = pkg_parent + os.pathsep + env.get("PYTHONPATH", "")
    return subprocess.run([sys.executable, "-c", code], env=env,
                          capture_output=True, text=True)


def test_attn_library_that_does_not_exist_is_a_clear_import_error(tmp_path):
    r = _import_in_subprocess({"ATTN_LIBRARY": str(tmp_path / "nope.so")})
    assert r.returncode != 0
    assert "ATTN_LIBRARY" in r.stderr and "nope.so" in r.stderr


def test_system_lookup_is_used_without_attn_library():
    lib_dir = os.path.dirname(os.path.realpath(_lib.path))
    if not os.path.exists(os.path.join(lib_dir, "libattn.so.0")):
        pytest.skip("no libattn.so.0 next to the library in use")
    r = _import_in_subprocess({
        "ATTN_LIBRARY": None,
        "LD_LIBRARY_PATH": lib_dir + os.pathsep +
        os.environ.get("LD_LIBRARY_PATH", "")})
    assert r.returncode == 0, r.stderr
    assert r.stdout.endswith("libattn.so.0")


# ----------------------------------------------------------------- errors


def test_library_errors_carry_the_library_message():
    with pytest.raises(attn.AttnError) as e:
        attn.MultiheadAttention(510, 8)
    assert str(e.value) == "embed_dim 510 is not divisible by num_heads 8"
    assert e.value.status == attn.ERR_BAD_SIZE
    assert e.value.status_name == attn.status_string(attn.ERR_BAD_SIZE)


def test_non_finite_input_is_reported_by_the_library():
    layer = attn.MultiheadAttention(8, 2, seed=1)
    x = np.zeros((1, 3, 8), np.float32)
    x[0, 1, 2] = np.nan
    with pytest.raises(attn.AttnError) as e:
        layer(x, x, x)
    assert e.value.status == attn.ERR_NOT_FINITE
    assert "query" in str(e.value)


def test_nan_in_a_float_mask_is_reported():
    layer = attn.MultiheadAttention(8, 2, seed=1)
    x = np.ones((1, 3, 8), np.float32)
    m = np.zeros((3, 3), np.float32)
    m[1, 1] = np.nan
    with pytest.raises(attn.AttnError) as e:
        layer(x, x, x, attn_mask=m)
    assert e.value.status == attn.ERR_NOT_FINITE


def test_error_messages_are_per_thread():
    import threading
    messages = []

    def fail():
        try:
            attn.MultiheadAttention(7, 3)
        except attn.AttnError as e:
            messages.append(str(e))
    threads = [threading.Thread(target=fail) for _ in range(4)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    assert messages == ["embed_dim 7 is not divisible by num_heads 3"] * 4


@pytest.mark.parametrize("bad, message", [
    (dict(query=np.zeros((1, 2, 9))), "embed_dim"),
    (dict(key=np.zeros((2, 2, 8))), "batch"),
    (dict(value=np.zeros((1, 3, 8))), "length"),
    (dict(query=np.zeros((2, 8))), "2-D"),
    (dict(query=np.zeros((1, 1, 2, 8))), "2-D"),
    (dict(key_padding_mask=np.zeros((1, 3), bool)), "key_padding_mask"),
    (dict(attn_mask=np.zeros((2, 3), bool)), "attn_mask"),
    (dict(attn_mask=np.zeros((3, 2, 2), np.float32)), "attn_mask"),
])
def test_shape_errors_are_value_errors(bad, message):
    layer = attn.MultiheadAttention(8, 2, seed=1)
    args = dict(query=np.zeros((1, 2, 8)), key=np.zeros((1, 2, 8)),
                value=np.zeros((1, 2, 8)))
    args.update(bad)
    with pytest.raises(ValueError, match=message):
        layer(**args)


def test_bad_option_values():
    with pytest.raises(ValueError, match="empty_rows"):
        attn.MultiheadAttention(8, 2, empty_rows="ones")
    with pytest.raises(ValueError, match="add_bias_kv"):
        attn.MultiheadAttention(8, 2, add_bias_kv=True)
    with pytest.raises(TypeError):
        attn.MultiheadAttention(8.0, 2)
    layer = attn.MultiheadAttention(8, 2, seed=0)
    x = np.zeros((1, 2, 8), np.float32)
    with pytest.raises(ValueError, match="empty_rows"):
        layer(x, x, x, empty_rows="maybe")
    with pytest.raises(attn.AttnError) as e:
        layer(x, x, x, num_threads=-1)
    assert e.value.status == attn.ERR_BAD_OPTION
    with pytest.raises(TypeError, match="attn_mask"):
        layer(x, x, x, attn_mask=np.zeros((2, 2), np.complex64))


def test_closed_layer():
    with attn.MultiheadAttention(8, 2, seed=0) as layer:
        x = np.zeros((1, 2, 8), np.float32)
        layer(x, x, x)
    with pytest.raises(ValueError, match="closed"):
        layer(x, x, x)
    layer.close()  # twice is fine


# ---------------------------------------------------------------- weights


def test_constructor_mirrors_torch_attributes():
    layer = attn.MultiheadAttention(12, 3, False, 5, 7)
    assert (layer.embed_dim, layer.num_heads, layer.kdim, layer.vdim) == (
        12, 3, 5, 7)
    assert layer.head_dim == 4 and not layer.bias and layer.batch_first
    assert not layer._qkv_same_embed_dim
    assert layer.scale == pytest.approx(0.5)
    assert layer.weight_names() == ["q_proj_weight", "k_proj_weight",
                                    "v_proj_weight", "out_proj.weight"]
    sd = layer.state_dict()
    assert {k: v.shape for k, v in sd.items()} == {
        "q_proj_weight": (12, 12), "k_proj_weight": (12, 5),
        "v_proj_weight": (12, 7), "out_proj.weight": (12, 12)}
    assert "kdim=5, vdim=7" in repr(layer)


def test_seeded_init_is_deterministic_and_torch_shaped():
    a = attn.MultiheadAttention(16, 4, seed=7).state_dict()
    b = attn.MultiheadAttention(16, 4, seed=7).state_dict()
    c = attn.MultiheadAttention(16, 4, seed=8).state_dict()
    for name in a:
        np.testing.assert_array_equal(a[name], b[name])
    assert not np.array_equal(a["in_proj_weight"], c["in_proj_weight"])
    assert not a["in_proj_bias"].any()  # torch's init: zero biases


def test_state_dict_round_trip_and_layouts():
    src = attn.MultiheadAttention(8, 2, seed=3)
    sd = src.state_dict()
    dst = attn.MultiheadAttention(8, 2, seed=4)
    dst.load_state_dict(sd)
    for name, value in dst.state_dict().items():
        np.testing.assert_array_equal(value, sd[name])
    # The packed layout also takes separate q/k/v matrices.
    wq, wk, wv = np.split(sd["in_proj_weight"] * 2, 3)
    dst.load_state_dict({"q_proj_weight": wq, "k_proj_weight": wk,
                         "v_proj_weight": wv, "in_proj_bias": sd[
                             "in_proj_bias"], "out_proj.weight": sd[
                             "out_proj.weight"], "out_proj.bias": sd[
                             "out_proj.bias"]})
    np.testing.assert_array_equal(dst.get_weight("in_proj_weight"),
                                  sd["in_proj_weight"] * 2)
    with pytest.raises(KeyError, match="missing"):
        dst.load_state_dict({"in_proj_weight": sd["in_proj_weight"]})
    with pytest.raises(KeyError, match="unexpected"):
        dst.load_state_dict(dict(sd, extra=np.zeros(1)))
    dst.load_state_dict({"out_proj.bias": np.ones(8)}, strict=False)
    np.testing.assert_array_equal(dst.get_weight("out_proj.bias"), 1)
    with pytest.raises(ValueError, match="shape"):
        dst.set_weight("out_proj.bias", np.ones(9))
    with pytest.raises(KeyError, match="unknown weight"):
        dst.set_weight("bias_k", np.ones(8))


def test_layout_errors_come_from_the_library():
    layer = attn.MultiheadAttention(8, 2, kdim=4, seed=0)
    with pytest.raises(attn.AttnError) as e:
        layer.set_weight("in_proj_weight", np.zeros((24, 8)))
    assert e.value.status == attn.ERR_WEIGHT_LAYOUT
    nobias = attn.MultiheadAttention(8, 2, bias=False, seed=0)
    with pytest.raises(attn.AttnError) as e:
        nobias.get_weight("out_proj.bias")
    assert e.value.status == attn.ERR_WEIGHT_LAYOUT


def test_non_finite_weights_are_refused():
    layer = attn.MultiheadAttention(8, 2, seed=0)
    before = layer.get_weight("out_proj.weight")
    bad = before.copy()
    bad[0, 0] = np.inf
    with pytest.raises(attn.AttnError) as e:
        layer.set_weight("out_proj.weight", bad)
    assert e.value.status == attn.ERR_NOT_FINITE
    np.testing.assert_array_equal(layer.get_weight("out_proj.weight"),
                                  before)


@pytest.mark.parametrize("kwargs", [
    dict(), dict(bias=False), dict(kdim=5, vdim=3), dict(kdim=8, vdim=8),
    dict(kdim=6, vdim=6, bias=False), dict(batch_first=False)])
def test_from_torch_copies_every_layout(kwargs):
    m = random_torch_mha(8, 2, seed=5, **kwargs)
    layer = attn.MultiheadAttention.from_torch(m)
    sd = m.state_dict()
    ours = layer.state_dict()
    assert set(ours) == set(sd)
    for name, value in sd.items():
        np.testing.assert_array_equal(ours[name], value.numpy())
    assert layer.batch_first == m.batch_first
    assert layer.bias == kwargs.get("bias", True)


def test_from_torch_refuses_what_the_library_cannot_do():
    t = require_torch()
    with pytest.raises(ValueError, match="add_bias_kv"):
        attn.MultiheadAttention.from_torch(
            t.nn.MultiheadAttention(8, 2, add_bias_kv=True))
    with pytest.raises(ValueError, match="add_zero_attn"):
        attn.MultiheadAttention.from_torch(
            t.nn.MultiheadAttention(8, 2, add_zero_attn=True))


def test_from_torch_takes_double_modules_and_constructor_options():
    require_torch()
    m = random_torch_mha(8, 4, seed=2).double()
    layer = attn.MultiheadAttention.from_torch(m, batch_first=False,
                                               empty_rows="nan")
    assert not layer.batch_first and layer.empty_rows == "nan"
    np.testing.assert_allclose(layer.get_weight("in_proj_weight"),
                               m.in_proj_weight.detach().numpy(), rtol=1e-7)


# --------------------------------------------------- conversion and no-copy


class _ForwardSpy:
    """Wraps attn_forward to record the pointers it receives."""

    def __init__(self, monkeypatch):
        self.calls = []
        real = _lib.C.attn_forward

        def spy(layer, B, Lq, Lk, q, k, v, mask, opts, out):
            m = ctypes.cast(mask, ctypes.POINTER(_lib.Mask)).contents \
                if mask is not None else None
            self.calls.append(dict(
                q=q, k=k, v=v,
                bias=m.bias if m else None,
                key_padding=m.key_padding if m else None,
                strides=(m.bias_stride_b, m.bias_stride_h, m.bias_stride_q)
                if m else None,
                causal=m.causal if m else None))
            return real(layer, B, Lq, Lk, q, k, v, mask, opts, out)
        monkeypatch.setattr(_lib.C, "attn_forward", spy)


def _ptr(a):
    return a.__array_interface__["data"][0]


def test_contiguous_float32_inputs_are_not_copied(monkeypatch):
    spy = _ForwardSpy(monkeypatch)
    layer = attn.MultiheadAttention(8, 2, kdim=4, vdim=6, seed=0)
    rng = np.random.default_rng(0)
    q = rng.standard_normal((2, 3, 8), dtype=np.float32)
    k = rng.standard_normal((2, 5, 4), dtype=np.float32)
    v = rng.standard_normal((2, 5, 6), dtype=np.float32)
    kpm = rng.random((2, 5)) < 0.3
    mask = rng.standard_normal((2 * 2, 3, 5)).astype(np.float32)
    layer(q, k, v, key_padding_mask=kpm, attn_mask=mask)
    call = spy.calls[-1]
    assert (call["q"], call["k"], call["v"]) == (_ptr(q), _ptr(k), _ptr(v))
    assert call["key_padding"] == _ptr(kpm)
    assert call["bias"] == _ptr(mask)
    assert call["strides"] == (2 * 15, 15, 5)


def test_self_attention_passes_one_pointer(monkeypatch):
    spy = _ForwardSpy(monkeypatch)
    layer = attn.MultiheadAttention(8, 2, seed=0)
    x = np.ones((1, 4, 8), np.float32)
    layer(x, x, x)
    assert spy.calls[-1]["q"] == spy.calls[-1]["k"] == spy.calls[-1]["v"]
    y = x.astype(np.float64)  # converted once, still one pointer
    layer(y, y, y)
    assert spy.calls[-1]["q"] == spy.calls[-1]["k"] == spy.calls[-1]["v"]
    assert spy.calls[-1]["q"] != _ptr(y)
    layer(x, x, x.copy())
    assert spy.calls[-1]["q"] == spy.calls[-1]["k"] != spy.calls[-1]["v"]


def test_other_inputs_are_converted_once():
    layer = attn.MultiheadAttention(8, 2, seed=0)
    base = np.random.default_rng(1).standard_normal((1, 4, 16))
    q64 = base[:, :, :8]  # float64 and not contiguous
    q32 = np.ascontiguousarray(q64, dtype=np.float32)
    out64, w64 = layer(q64, q64, q64)
    out32, w32 = layer(q32, q32, q32)
    np.testing.assert_array_equal(out64, out32)
    np.testing.assert_array_equal(w64, w32)
    out_list, _ = layer(q32.tolist(), q32.tolist(), q32.tolist())
    np.testing.assert_allclose(out_list, out32, atol=1e-6)


def test_strided_float_masks_are_passed_as_views(monkeypatch):
    spy = _ForwardSpy(monkeypatch)
    layer = attn.MultiheadAttention(8, 2, seed=0)
    x = np.ones((3, 4, 8), np.float32)
    big = np.random.default_rng(2).standard_normal((4, 10)).astype(np.float32)
    view = big[:, 2:6]  # rows of 4 floats 10 apart
    layer(x, x, x, attn_mask=view)
    call = spy.calls[-1]
    assert call["bias"] == _ptr(view) and call["strides"] == (0, 0, 10)
    # A 3-D mask broadcast over batch and head has zero strides.
    per_row = np.random.default_rng(3).standard_normal((4, 4)).astype(
        np.float32)
    broadcast = np.broadcast_to(per_row, (3 * 2, 4, 4))
    layer(x, x, x, attn_mask=broadcast)
    assert spy.calls[-1]["bias"] == _ptr(per_row)
    assert spy.calls[-1]["strides"] == (0, 0, 4)
    out_b, _ = layer(x, x, x, attn_mask=broadcast)
    out_2d, _ = layer(x, x, x, attn_mask=per_row)
    np.testing.assert_array_equal(out_b, out_2d)
    # A float key_padding_mask alone is a bias with strides (S, 0, 0).
    kpm = np.zeros((3, 4), np.float32)
    layer(x, x, x, key_padding_mask=kpm)
    assert spy.calls[-1]["bias"] == _ptr(kpm)
    assert spy.calls[-1]["strides"] == (4, 0, 0)


def test_boolean_causal_mask_becomes_the_causal_mode(monkeypatch):
    spy = _ForwardSpy(monkeypatch)
    layer = attn.MultiheadAttention(8, 2, seed=0)
    x = np.random.default_rng(4).standard_normal((2, 5, 8)).astype(np.float32)
    causal = np.triu(np.ones((5, 5), bool), 1)
    out_mask, w_mask = layer(x, x, x, attn_mask=causal)
    assert spy.calls[-1]["bias"] is None
    assert spy.calls[-1]["causal"] == _lib.CAUSAL_TOP_LEFT
    out_flag, w_flag = layer(x, x, x, is_causal=True)
    np.testing.assert_array_equal(out_mask, out_flag)
    np.testing.assert_array_equal(w_mask, w_flag)
    assert not np.triu(w_flag[0], 1).any()


def test_torch_tensors_are_accepted(monkeypatch):
    t = require_torch()
    spy = _ForwardSpy(monkeypatch)
    m = random_torch_mha(8, 2, seed=9)
    layer = attn.MultiheadAttention.from_torch(m)
    x = t.randn(2, 3, 8)
    with t.no_grad():
        ref, _ = m(x, x, x)
    out, _ = layer(x, x, x)
    np.testing.assert_allclose(out, ref.numpy(), atol=ATOL, rtol=RTOL)
    assert spy.calls[-1]["q"] == x.data_ptr()  # CPU float32: no copy
    # Tensors that require grad, other dtypes and torch masks work too.
    xg = x.double().requires_grad_()
    kpm = t.tensor([[False, True, False], [False, False, False]])
    out_g, _ = layer(xg, xg, xg, key_padding_mask=kpm,
                     attn_mask=t.zeros(3, 3))
    with t.no_grad():
        ref_g, _ = m(x, x.clone(), x.clone(), key_padding_mask=kpm)
    np.testing.assert_allclose(out_g, ref_g.numpy(), atol=ATOL, rtol=RTOL)
    layer.load_state_dict({k: v.requires_grad_() if v.is_floating_point()
                           else v for k, v in m.state_dict(
                               keep_vars=True).items()})


# ----------------------------------------------------------- extra masks


def test_four_dimensional_mask_equals_torch_3d():
    layer = attn.MultiheadAttention(8, 2, seed=0)
    rng = np.random.default_rng(5)
    x = rng.standard_normal((3, 4, 8)).astype(np.float32)
    m4 = rng.standard_normal((3, 2, 4, 4)).astype(np.float32)
    a, wa = layer(x, x, x, attn_mask=m4, average_attn_weights=False)
    b, wb = layer(x, x, x, attn_mask=m4.reshape(6, 4, 4),
                  average_attn_weights=False)
    np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(wa, wb)
    per_head = rng.standard_normal((1, 2, 4, 4)).astype(np.float32)
    c, _ = layer(x, x, x, attn_mask=per_head)
    d, _ = layer(x, x, x, attn_mask=np.broadcast_to(per_head, (3, 2, 4, 4))
                 .reshape(6, 4, 4))
    # The same bias through other strides: equal up to float rounding.
    np.testing.assert_allclose(c, d, rtol=1e-5, atol=1e-6)


def test_float_padding_plus_float_mask_adds_both():
    layer = attn.MultiheadAttention(8, 2, seed=0)
    rng = np.random.default_rng(6)
    x = rng.standard_normal((2, 3, 8)).astype(np.float32)
    kpm = rng.standard_normal((2, 3)).astype(np.float32)
    mask = rng.standard_normal((3, 3)).astype(np.float32)
    both, _ = layer(x, x, x, key_padding_mask=kpm, attn_mask=mask)
    merged = (mask[None, None] + kpm[:, None, None, :]).repeat(2, axis=1)
    ref, _ = layer(x, x, x, attn_mask=merged.reshape(4, 3, 3))
    np.testing.assert_allclose(both, ref, atol=1e-6)


def test_integer_key_padding_mask_counts_as_boolean():
    layer = attn.MultiheadAttention(8, 2, seed=0)
    x = np.random.default_rng(7).standard_normal((2, 3, 8)).astype(np.float32)
    as_bool = np.array([[False, True, False], [True, False, False]])
    a, _ = layer(x, x, x, key_padding_mask=as_bool)
    b, _ = layer(x, x, x, key_padding_mask=as_bool.astype(np.int64) * 5)
    c, _ = layer(x, x, x, key_padding_mask=as_bool.astype(np.uint8))
    # A Fortran-ordered (or transposed) integer mask: the same rows.
    d, _ = layer(x, x, x, key_padding_mask=np.asfortranarray(
        as_bool.astype(np.int64)))
    e, _ = layer(x, x, x, key_padding_mask=as_bool.T.astype(np.int32).T)
    np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(a, c)
    np.testing.assert_array_equal(a, d)
    np.testing.assert_array_equal(a, e)


def test_empty_rows_zero_and_nan():
    layer = attn.MultiheadAttention(8, 2, seed=0)
    layer.set_weight("out_proj.bias", np.arange(8, dtype=np.float32))
    x = np.random.default_rng(8).standard_normal((2, 3, 8)).astype(np.float32)
    kpm = np.array([[True, True, True], [False, True, False]])
    out, w = layer(x, x, x, key_padding_mask=kpm)
    np.testing.assert_array_equal(out[0], np.tile(np.arange(8), (3, 1)))
    assert not w[0].any() and np.isfinite(out).all()
    layer.empty_rows = "nan"
    out, w = layer(x, x, x, key_padding_mask=kpm)
    assert np.isnan(out[0]).all() and np.isnan(w[0]).all()
    assert np.isfinite(out[1]).all()
    out, _ = layer(x, x, x, key_padding_mask=kpm, empty_rows="zero")
    assert np.isfinite(out).all()


def test_unbatched_and_sequence_first_layouts():
    layer = attn.MultiheadAttention(8, 2, seed=0)
    rng = np.random.default_rng(9)
    x = rng.standard_normal((3, 5, 8)).astype(np.float32)
    ref, ref_w = layer(x, x, x, average_attn_weights=False)
    one, one_w = layer(x[1], x[1], x[1], average_attn_weights=False)
    # A row alone and inside a batch are not promised the same bits (the
    # blocks depend on the batch): float rounding apart, they agree.
    np.testing.assert_allclose(one, ref[1], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(one_w, ref_w[1], rtol=1e-5, atol=1e-6)
    assert one.shape == (5, 8) and one_w.shape == (2, 5, 5)
    seq = attn.MultiheadAttention(8, 2, batch_first=False)
    seq.load_state_dict(layer.state_dict())
    xs = np.ascontiguousarray(x.transpose(1, 0, 2))
    out, w = seq(xs, xs, xs, average_attn_weights=False)
    assert out.shape == (5, 3, 8) and w.shape == (3, 2, 5, 5)
    np.testing.assert_array_equal(out, ref.transpose(1, 0, 2))
    np.testing.assert_array_equal(w, ref_w)


def test_need_weights_false_returns_none():
    layer = attn.MultiheadAttention(8, 2, seed=0)
    x = np.ones((1, 2, 8), np.float32)
    out, w = layer(x, x, x, need_weights=False)
    assert w is None and out.shape == (1, 2, 8)


def test_scale_option_changes_the_scores():
    a = attn.MultiheadAttention(8, 2, seed=0)
    b = attn.MultiheadAttention(8, 2, seed=0, scale=1.0)
    assert a.scale == pytest.approx(0.5) and b.scale == 1.0
    x = np.random.default_rng(10).standard_normal((1, 4, 8)).astype(
        np.float32)
    assert not np.allclose(a(x, x, x)[1], b(x, x, x)[1])


def test_layer_objects_are_freed():
    import gc
    import weakref
    layer = attn.MultiheadAttention(8, 2, seed=0)
    finalizer = layer._finalizer
    ref = weakref.ref(layer)
    del layer
    gc.collect()
    assert ref() is None and not finalizer.alive


def test_as_float32_returns_the_same_object_when_possible():
    a = np.zeros((2, 3), np.float32)
    assert _layer.as_float32(a) is a
    assert _layer.as_float32(a.T) is not a
    assert _layer.as_float32(a.astype(np.float64)).dtype == np.float32


def test_load_state_dict_changes_nothing_on_bad_input():
    layer = attn.MultiheadAttention(8, 2, seed=0)
    before = layer.state_dict()
    bad = attn.MultiheadAttention(8, 2, seed=1).state_dict()
    bad["out_proj.bias"][3] = np.nan
    with pytest.raises(attn.AttnError, match="out_proj.bias"):
        layer.load_state_dict(bad)
    bad = attn.MultiheadAttention(8, 2, seed=1).state_dict()
    bad["out_proj.weight"] = bad["out_proj.weight"][:4]
    with pytest.raises(ValueError, match="shape"):
        layer.load_state_dict(bad)
    for name, value in layer.state_dict().items():
        np.testing.assert_array_equal(value, before[name])


# ----------------------------------------------------- signatures and typing


@pytest.mark.parametrize("method", ["__call__", "forward"])
def test_call_has_a_real_signature_and_docstring(method):
    fn = getattr(attn.MultiheadAttention, method)
    params = inspect.signature(fn).parameters
    assert not any(p.kind is p.VAR_KEYWORD or p.kind is p.VAR_POSITIONAL
                   for p in params.values())
    assert list(params)[:9] == [
        "self", "query", "key", "value", "key_padding_mask", "need_weights",
        "attn_mask", "average_attn_weights", "is_causal"]
    for name in ("empty_rows", "num_threads"):
        assert params[name].kind is inspect.Parameter.KEYWORD_ONLY
    doc = inspect.getdoc(getattr(attn.MultiheadAttention(4, 2, seed=0),
                                 method))
    assert "Call self as a function" not in doc
    for word in ("key_padding_mask", "attn_mask", "is_causal", "empty_rows",
                 "num_threads", "Returns"):
        assert word in doc, word
    hints = typing.get_type_hints(fn)
    assert "return" in hints and "query" in hints


def test_unknown_call_arguments_are_refused():
    layer = attn.MultiheadAttention(4, 2, seed=0)
    x = np.zeros((1, 3, 4), np.float32)
    with pytest.raises(TypeError):
        layer(x, x, x, empty_row="nan")  # misspelt: no **kwargs to hide it


def test_public_methods_are_annotated():
    for name in ("__init__", "from_torch", "load_state_dict", "state_dict",
                 "load_safetensors", "save_safetensors", "set_weight",
                 "get_weight"):
        fn = getattr(attn.MultiheadAttention, name)
        assert typing.get_type_hints(fn), name
        assert not any(p.kind is p.VAR_KEYWORD
                       for p in inspect.signature(fn).parameters.values())


def test_package_is_marked_typed():
    assert os.path.isfile(os.path.join(os.path.dirname(attn.__file__),
                                       "py.typed"))


def _rss_bytes():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


@pytest.mark.skipif(not os.path.exists("/proc/self/statm")
                    or platform.libc_ver()[0] != "glibc"
                    or "LD_PRELOAD" in os.environ,
                    reason="needs Linux /proc and glibc's own malloc (its "
                    "mmap threshold)")
def test_trim_gives_the_kept_scratch_back():
    """A large call leaves its scratch with the default runtime for the
    next one; attn.trim() unmaps it, and later calls give the same result.
    The projected Q, K and V alone are 48 MiB here, on either core: above
    glibc's largest mmap threshold (32 MiB), so the block has pages of its
    own, whatever the process allocated before."""
    layer = attn.MultiheadAttention(512, 8, seed=3)
    x = np.random.default_rng(5).standard_normal((2, 4096, 512),
                                                 dtype=np.float32)
    first = layer(x, x, x)[0]
    kept = _rss_bytes()
    attn.trim()
    assert kept - _rss_bytes() > 32 << 20
    attn.trim()  # nothing left: a no-op
    np.testing.assert_array_equal(layer(x, x, x)[0], first)
