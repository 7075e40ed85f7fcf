"""Bad input and races the binding must survive: closing a layer while
other threads use its weights, integers that do not fit the C types,
data that would be converted with a loss, strings with NUL characters."""

import threading

import numpy as np
import pytest

import attn
from attn import _lib


def _close_during(monkeypatch, layer, action):
    """Runs action() while another thread closes the layer just as the
    library's attn_layer_weight_count is entered; returns whether close()
    finished while that call was still running (it must not: the call
    would use freed memory)."""
    real = _lib.C.attn_layer_weight_count
    closed = threading.Event()
    overlapped = []

    def spy(handle, which, count):
        if not overlapped:
            closer = threading.Thread(
                target=lambda: (layer.close(), closed.set()))
            closer.start()
            overlapped.append(closed.wait(0.5))
            if overlapped[0]:  # freed under us: do not touch it
                return 0
        return real(handle, which, count)

    monkeypatch.setattr(_lib.C, "attn_layer_weight_count", spy)
    try:
        action()
    except ValueError:  # "closed": acceptable once close() won
        pass
    closed.wait(5)
    return overlapped[0]


@pytest.mark.parametrize("action", ["get", "set", "load_state_dict"])
def test_close_waits_for_weight_calls(monkeypatch, action):
    layer = attn.MultiheadAttention(8, 2, seed=0)
    bias = np.ones(8, np.float32)
    run = {"get": lambda: layer.get_weight("out_proj.bias"),
           "set": lambda: layer.set_weight("out_proj.bias", bias),
           "load_state_dict": lambda: layer.load_state_dict(
               {"out_proj.bias": bias}, strict=False)}[action]
    assert not _close_during(monkeypatch, layer, run)
    with pytest.raises(ValueError, match="closed"):
        layer.get_weight("out_proj.bias")


def test_close_races_with_weight_calls():
    # No crash and no other error when close() races with weight calls.
    for _ in range(20):
        layer = attn.MultiheadAttention(16, 4, seed=1)
        sd = layer.state_dict()
        errors = []

        def use():
            try:
                for _ in range(50):
                    layer.get_weight("in_proj_weight")
                    layer.set_weight("out_proj.bias", sd["out_proj.bias"])
                    layer.load_state_dict(sd)
            except ValueError as e:
                if "closed" not in str(e):
                    errors.append(e)
            except Exception as e:  # reported below
                errors.append(e)
        threads = [threading.Thread(target=use) for _ in range(3)]
        for t in threads:
            t.start()
        layer.close()
        for t in threads:
            t.join()
        assert not errors, errors


@pytest.mark.parametrize("value", [2**64 + 8, 2**63, -2**63 - 1])
def test_sizes_that_do_not_fit_int64(value):
    with pytest.raises(OverflowError, match="embed_dim"):
        attn.MultiheadAttention(value, 2)


def test_positions_that_do_not_fit_int64():
    """Unsigned positions and starts above int64's range are refused
    before they reach the library, as the integer rows of decoding steps
    are, rather than wrapped to negative positions."""
    layer = attn.MultiheadAttention(8, 2, seed=0, rope=attn.RotaryEmbedding())
    x = np.random.default_rng(0).standard_normal((1, 3, 8)).astype(np.float32)
    # Unsigned values that fit are still taken as they are.
    np.testing.assert_array_equal(
        layer(x, x, x, positions=np.arange(3, dtype=np.uint64)[None],
              start=np.uint64(0))[0],
        layer(x, x, x)[0])
    # So are integers that fit in an object array.
    np.testing.assert_array_equal(
        layer(x, x, x, positions=np.array([[0, 1, 2]], dtype=object),
              start=np.array([0], dtype=object))[0],
        layer(x, x, x)[0])
    big = np.uint64(2**63)
    for kw, message in (
            (dict(start=big), "^start does not fit"),
            (dict(start=2**63), "^start does not fit"),
            (dict(start=2**64), "^start does not fit"),
            (dict(start=-2**63 - 1), "^start does not fit"),
            (dict(positions=[[0, 1, 2**70]]), "^positions does not"),
            (dict(start=np.array([big])), "^start does not fit"),
            (dict(positions=np.array([[0, 1, big]], np.uint64)),
             "^positions does not"),
            (dict(key_positions=np.array([[0, 1, 2**64 - 1]], np.uint64)),
             "^key_positions does not")):
        with pytest.raises(OverflowError, match=message):
            layer(x, x, x, **kw)
    cache = attn.KVCache(layer, 1, 4)
    with pytest.raises(OverflowError, match="^start does not fit"):
        layer.decode_step(x, cache, start=[big])
    assert list(cache.lengths()) == [0]


@pytest.mark.parametrize("value", [2**32 + 2, 2**31, -2**31 - 1])
def test_thread_counts_that_do_not_fit_int32(value):
    with pytest.raises(OverflowError, match="num_threads %d" % value):
        attn.MultiheadAttention(8, 2, num_threads=value)
    layer = attn.MultiheadAttention(8, 2, seed=0)
    x = np.zeros((1, 2, 8), np.float32)
    with pytest.raises(OverflowError, match="num_threads"):
        layer(x, x, x, num_threads=value)


def test_largest_thread_count_is_clamped():
    layer = attn.MultiheadAttention(8, 2, seed=0, num_threads=2**31 - 1)
    x = np.random.default_rng(0).standard_normal((2, 3, 8)).astype(np.float32)
    out, _ = layer(x, x, x, num_threads=2**31 - 1)
    one, _ = layer(x, x, x, num_threads=1)
    np.testing.assert_array_equal(out, one)  # any thread count: same bits


@pytest.mark.parametrize("dtype", [np.complex64, np.int32, np.int64,
                                   np.uint8, np.bool_])
def test_inputs_that_are_not_floating_point_are_refused(dtype):
    layer = attn.MultiheadAttention(8, 2, seed=0)
    x = np.ones((1, 2, 8), dtype)
    with pytest.raises(TypeError, match="dtype"):
        layer(x, x, x)
    with pytest.raises(TypeError, match="dtype"):
        layer.set_weight("out_proj.bias", np.ones(8, dtype))


def test_python_numbers_are_still_accepted():
    layer = attn.MultiheadAttention(2, 1, seed=0)
    out, _ = layer([[1, 2], [3, 4]], [[1, 2], [3, 4]], [[1, 2], [3, 4]])
    assert out.shape == (2, 2) and out.dtype == np.float32
    layer.set_weight("out_proj.bias", [1, 2])
    np.testing.assert_array_equal(layer.get_weight("out_proj.bias"), [1, 2])


def test_nul_characters_are_refused(tmp_path):
    layer = attn.MultiheadAttention(8, 2, seed=0)
    path = tmp_path / "w.safetensors"
    with pytest.raises(ValueError, match="NUL"):
        layer.save_safetensors(path, prefix="enc\0oder.")
    with pytest.raises(ValueError, match="NUL"):
        layer.save_safetensors(str(path) + "\0.bak")
    layer.save_safetensors(path, prefix="enc.")
    with pytest.raises(ValueError, match="NUL"):
        layer.load_safetensors(path, prefix="enc.\0")
    with pytest.raises(ValueError, match="NUL"):
        layer.load_safetensors_bytes(path.read_bytes(), prefix="\0")


def test_empty_bytes_are_a_format_error(tmp_path):
    layer = attn.MultiheadAttention(8, 2, seed=0)
    empty = tmp_path / "empty.safetensors"
    empty.write_bytes(b"")
    for load in (lambda: layer.load_safetensors_bytes(b""),
                 lambda: layer.load_safetensors(empty)):
        with pytest.raises(attn.AttnError) as e:
            load()
        assert e.value.status == _lib.ERR_FILE_FORMAT
