# SPDX-License-Identifier: MIT
"""Incremental decoding: attn.KVCache with MultiheadAttention.decode_step
and attn.Memory with cross_step. Every step is checked against what the
same layer's forward pass over the whole sequence gives (is_causal=True,
the window and padding as masks) and, where the library's own forward
could share a mistake with the step, against the float64 numpy reference
written from the formulas (conftest.mha_reference). Tolerance: the
suite's 1e-5 absolute / 1e-4 relative."""

import copy
import gc
import inspect
import os
import pickle
import re
import threading
import typing

import numpy as np
import pytest

import attn
from conftest import ATOL, RTOL, causal_mask, mha_reference

E, H = 16, 4


def _layer(seed, **kwargs):
    """A layer whose biases are random too (torch's initialisation leaves
    them at zero, which would hide a bias applied twice or not at all)."""
    embed_dim = kwargs.pop("embed_dim", E)
    layer = attn.MultiheadAttention(embed_dim, kwargs.pop("num_heads", H),
                                    seed=seed, **kwargs)
    rng = np.random.default_rng(seed + 1000)
    for name in layer.weight_names():
        if "bias" in name:
            shape = layer.get_weight(name).shape
            layer.set_weight(name, rng.uniform(-0.5, 0.5, shape))
    return layer


def _x(seed, *shape):
    return np.random.default_rng(seed).standard_normal(shape).astype(
        np.float32)


def _close(actual, expected):
    np.testing.assert_allclose(actual, expected, atol=ATOL, rtol=RTOL)


def _decode(layer, cache, x, chunks, **kwargs):
    """x [B, L, E] through decode_step in chunks of the given sizes;
    the outputs concatenated along the sequence."""
    outs, pos = [], 0
    for n in chunks:
        outs.append(layer.decode_step(x[:, pos:pos + n], cache, **kwargs)[0])
        pos += n
    assert pos == x.shape[1]
    return np.concatenate(outs, axis=1)


# ------------------------------------------------- steps against forward


@pytest.mark.parametrize("chunks", [[1] * 7, [3, 1, 2, 1], [7]])
def test_steps_equal_the_rows_of_a_causal_forward(chunks):
    layer = _layer(1)
    x = _x(2, 2, 7, E)
    full, full_w = layer(x, x, x, is_causal=True)
    cache = attn.KVCache(layer, 2, 8)
    pos = 0
    for n in chunks:
        out, w = layer.decode_step(x[:, pos:pos + n], cache,
                                   need_weights=True)
        _close(out, full[:, pos:pos + n])
        # Column j is token j; the columns past the tokens held are zero.
        assert w.shape == (2, n, 8)
        _close(w[:, :, :7], full_w[:, pos:pos + n])
        assert not w[:, :, pos + n:].any()
        pos += n
        assert list(cache.lengths()) == [pos, pos]
    assert list(cache.first()) == [0, 0]
    ref, _ = mha_reference(layer, x, x, x,
                           np.broadcast_to(causal_mask(7), (2, 7, 7)))
    cache.reset()
    _close(_decode(layer, cache, x, chunks), ref)


def test_per_head_weights_of_a_step():
    layer = _layer(3)
    x = _x(4, 1, 5, E)
    _, full_w = layer(x, x, x, is_causal=True, average_attn_weights=False)
    cache = attn.KVCache(layer, 1, 6)
    layer.decode_step(x[:, :3], cache)
    _, w = layer.decode_step(x[:, 3:], cache, need_weights=True,
                             average_attn_weights=False)
    assert w.shape == (1, H, 2, 6)
    _close(w[..., :5], full_w[:, :, 3:])
    assert not w[..., 5:].any()


@pytest.mark.parametrize("num_kv_heads", [1, 2])
def test_grouped_query_layers(num_kv_heads):
    layer = _layer(5, num_kv_heads=num_kv_heads)
    x = _x(6, 3, 6, E)
    full, _ = layer(x, x, x, is_causal=True)
    ref, _ = mha_reference(layer, x, x, x,
                           np.broadcast_to(causal_mask(6), (3, 6, 6)))
    _close(full, ref)
    with attn.KVCache(layer, 3, 6) as cache:
        out = _decode(layer, cache, x, [2, 1, 3])
    _close(out, full)
    _close(out, ref)
    # A cache of a grouped layer holds only its key/value heads.
    plain = attn.KVCache(_layer(5), 3, 6)
    assert attn.KVCache(layer, 3, 6).nbytes < plain.nbytes


@pytest.mark.parametrize("features", [
    dict(rope=attn.RotaryEmbedding(theta=100.0)),
    dict(rope=dict(rotary_dim=4, pairing="adjacent"), num_kv_heads=2,
         qk_norm="head"),
    dict(alibi="causal", softcap=3.0),
    dict(sinks=True),
])
def test_decoder_feature_layers(features):
    layer = _layer(7, embed_dim=32, **features)
    if "sinks" in features:
        layer.set_weight("sinks", [0.5, -1.0, 2.0, 0.0])
    x = _x(8, 2, 6, 32)
    full, _ = layer(x, x, x, is_causal=True)
    cache = attn.KVCache(layer, 2, 6)
    _close(_decode(layer, cache, x, [1, 3, 2]), full)
    # Rows that begin mid-sequence: the same start at every step. (Rotary
    # embeddings and ALiBi depend on distances only, so the output is the
    # same; the start must still reach the library as a start, which
    # refuses explicit positions in steps.)
    start = np.array([0, 9])
    shifted, _ = layer(x, x, x, is_causal=True, start=start)
    cache.reset()
    _close(_decode(layer, cache, x, [2, 1, 1, 2], start=start), shifted)
    cache.truncate(5)  # room for one more token
    if "sinks" not in features:  # a layer with positions checks them
        with pytest.raises(attn.AttnError) as e:
            layer.decode_step(x[:, 5:], cache, start=-1)
        assert e.value.status == attn.ERR_BAD_OPTION
    with pytest.raises(ValueError, match="start"):
        layer.decode_step(x[:, 5:], cache, start=[1, 2, 3])
    assert list(cache.lengths()) == [5, 5]
    _close(layer.decode_step(x[:, 5:], cache, start=start)[0],
           shifted[:, 5:])


# ------------------------------------------------- cache operations


def test_truncate_then_redecode_equals_straight_decoding():
    layer = _layer(9)
    x, alt = _x(10, 2, 6, E), _x(11, 2, 6, E)
    cache = attn.KVCache(layer, 2, 6)
    _decode(layer, cache, x[:, :5], [5])
    cache.truncate([3, 3])
    assert list(cache.lengths()) == [3, 3]
    seq = np.concatenate([x[:, :3], alt[:, 3:]], axis=1)
    want, _ = layer(seq, seq, seq, is_causal=True)
    _close(_decode(layer, cache, alt[:, 3:], [1, 2]), want[:, 3:])
    # An integer truncates every row; rows may differ.
    cache.truncate(2)
    assert list(cache.lengths()) == [2, 2]
    cache.truncate(np.array([2, 0], dtype=np.int32))
    assert list(cache.lengths()) == [2, 0]


def test_reorder_equals_decoding_the_reordered_rows():
    layer = _layer(12)
    x = _x(13, 3, 4, E)
    nxt = _x(14, 3, 1, E)
    cache = attn.KVCache(layer, 3, 6)
    _decode(layer, cache, x, [2, 2])
    src = [2, 0, 0]
    cache.reorder(src)
    out, _ = layer.decode_step(nxt, cache)
    seq = np.concatenate([x[src], nxt], axis=1)
    want, _ = layer(seq, seq, seq, is_causal=True)
    _close(out, want[:, 4:])
    # Lengths move with the rows.
    cache.truncate([5, 3, 1])
    cache.reorder(np.array([1, 2, 0]))
    assert list(cache.lengths()) == [3, 1, 5]


def test_reset_starts_every_row_again():
    layer = _layer(15)
    x = _x(16, 2, 4, E)
    cache = attn.KVCache(layer, 2, 4)
    _decode(layer, cache, _x(17, 2, 4, E), [4])
    cache.reset()
    assert list(cache.lengths()) == [0, 0]
    want, _ = layer(x, x, x, is_causal=True)
    _close(_decode(layer, cache, x, [1, 3]), want)


def test_sliding_window():
    W, L = 3, 11
    layer = _layer(18)
    x = _x(19, 2, L, E)
    hidden = causal_mask(L, W)
    ref, ref_w = mha_reference(layer, x, x, x,
                               np.broadcast_to(hidden, (2, L, L)))
    full, _ = layer(x, x, x, attn_mask=hidden)
    _close(full, ref)
    # Capacity 4 with a window of 3: a step brings at most 2 tokens, and
    # the cache drops what no later query sees.
    cache = attn.KVCache(layer, 2, 4, window=W)
    assert cache.window == W
    outs, pos = [], 0
    for n in [1, 2, 1, 2, 2, 1]:
        outs.append(layer.decode_step(x[:, pos:pos + n], cache)[0])
        pos += n
    out, w = layer.decode_step(x[:, pos:], cache, need_weights=True,
                               average_attn_weights=False)
    outs.append(out)
    _close(np.concatenate(outs, axis=1), ref)
    assert list(cache.lengths()) == [L, L]
    first = cache.first()
    assert (first > 0).all()
    # Weight column j is the token at position first + j.
    for b in range(2):
        held = L - first[b]
        _close(w[b, :, :, :held], ref_w[b, :, pos:, first[b]:])
        assert not w[b, :, :, held:].any()
    # Tokens that were dropped cannot be rolled back to.
    with pytest.raises(attn.AttnError) as e:
        cache.truncate(1)
    assert e.value.status == attn.ERR_BAD_SIZE
    assert list(cache.lengths()) == [L, L]


def test_new_lengths_and_padding():
    layer = _layer(20)
    x = _x(21, 2, 3, E)
    cache = attn.KVCache(layer, 2, 5)
    pad = np.array([[0, 1, 0], [0, 0, 0]], bool)
    out, _ = layer.decode_step(x, cache, new_lengths=[3, 1], new_padding=pad)
    assert list(cache.lengths()) == [3, 1]
    assert not out[1, 1:].any()  # rows past new_lengths are zero
    want0, _ = layer(x[:1], x[:1], x[:1], key_padding_mask=pad[:1],
                     is_causal=True)
    _close(out[:1], want0)
    want1, _ = layer(x[1:, :1], x[1:, :1], x[1:, :1], is_causal=True)
    _close(out[1:, :1], want1)
    # The padded token stays hidden from later steps.
    nxt = _x(22, 2, 1, E)
    out, _ = layer.decode_step(nxt, cache)
    seq0 = np.concatenate([x[:1], nxt[:1]], axis=1)
    want0, _ = layer(seq0, seq0, seq0, is_causal=True,
                     key_padding_mask=np.array([[0, 1, 0, 0]], bool))
    _close(out[0], want0[0, 3:])
    seq1 = np.concatenate([x[1:, :1], nxt[1:]], axis=1)
    want1, _ = layer(seq1, seq1, seq1, is_causal=True)
    _close(out[1], want1[0, 1:])


def test_a_query_that_sees_only_padding():
    layer = _layer(23)
    bias = layer.get_weight("out_proj.bias")
    x = _x(24, 2, 1, E)
    pad = np.array([[1], [0]], bool)
    cache = attn.KVCache(layer, 2, 4)
    out, _ = layer.decode_step(x, cache, new_padding=pad)
    np.testing.assert_array_equal(out[0, 0], bias)
    assert not np.allclose(out[1, 0], bias)
    cache.reset()
    out, _ = layer.decode_step(x, cache, new_padding=pad, empty_rows="nan")
    assert np.isnan(out[0]).all() and not np.isnan(out[1]).any()


# ------------------------------------------------- cross steps


@pytest.mark.parametrize("num_kv_heads", [None, 2])
def test_cross_steps_equal_forward_with_the_memory(num_kv_heads):
    layer = _layer(25, kdim=12, vdim=10, num_kv_heads=num_kv_heads)
    B, S = 2, 5
    k, v = _x(26, B, S, 12), _x(27, B, S, 10)
    pad = np.array([[0, 0, 1, 0, 0], [1, 0, 0, 0, 0]], bool)
    lengths = np.array([4, 5])
    hidden = pad | (np.arange(S)[None] >= lengths[:, None])
    mem = attn.Memory(layer, B, 8)
    assert mem.len_k is None
    mem.set(k, v, pad, key_lengths=lengths)
    assert mem.len_k == S
    for seed, n in ((30, 1), (31, 3)):
        q = _x(seed, B, n, E)
        out, w = layer.cross_step(q, mem, need_weights=True,
                                  average_attn_weights=False)
        want, want_w = layer(q, k, v, key_padding_mask=hidden,
                             average_attn_weights=False)
        _close(out, want)
        _close(w, want_w)
        ref, ref_w = mha_reference(layer, q, k, v, np.broadcast_to(
            hidden[:, None], (B, n, S)))
        _close(out, ref)
        _close(w, ref_w)
    # Step masks apply on top of the memory's own.
    q = _x(32, B, 3, E)
    extra = np.array([[0, 1, 0, 0, 0], [0, 0, 0, 0, 1]], bool)
    out, w = layer.cross_step(q, mem, key_padding_mask=extra, is_causal=True,
                              need_weights=True)
    want, want_w = layer(q, k, v, key_padding_mask=hidden | extra,
                         is_causal=True)
    _close(out, want)
    _close(w, want_w)
    # Setting again replaces everything.
    k2 = _x(33, B, 2, 12)
    mem.set(k2, k2[..., :10])
    want, _ = layer(q, k2, k2[..., :10])
    _close(layer.cross_step(q, mem)[0], want)


def test_cross_steps_from_several_threads():
    layer = _layer(34)
    kv = _x(35, 2, 6, E)
    q = _x(36, 2, 2, E)
    mem = attn.Memory(layer, 2, 6)
    mem.set(kv, kv)  # one array: one fused K/V product
    want, _ = layer(q, kv, kv)
    results = []

    def run():
        for _ in range(20):
            results.append(layer.cross_step(q, mem, num_threads=1)[0])

    threads = [threading.Thread(target=run) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(results) == 80
    for r in results:
        _close(r, want)


def test_positional_layers_have_no_memory():
    for kw in (dict(rope=attn.RotaryEmbedding()), dict(alibi="causal")):
        with pytest.raises(attn.AttnError) as e:
            attn.Memory(_layer(37, **kw), 1, 4)
        assert e.value.status == attn.ERR_BAD_OPTION


# ------------------------------------------------- errors


def test_bad_steps_raise_and_leave_the_cache_as_it_was():
    layer = _layer(40)
    other = _layer(40)  # the same weights, another layer object
    x = _x(41, 2, 5, E)
    full, _ = layer(x, x, x, is_causal=True)
    cache = attn.KVCache(layer, 2, 4)
    layer.decode_step(x[:, :3], cache)
    ok = x[:, 3:4]
    bad = [
        (ValueError, "3-D", dict(x=ok[:, 0])),
        (ValueError, "batch size 1", dict(x=ok[:1])),
        (ValueError, "embed_dim", dict(x=np.zeros((2, 1, E + 1)))),
        (ValueError, "at least one", dict(x=np.zeros((2, 0, E)))),
        (TypeError, "dtype int64", dict(x=np.zeros((2, 1, E), np.int64))),
        (TypeError, "complex", dict(x=ok.astype(np.complex64))),
        (ValueError, "new_lengths", dict(new_lengths=[1, 1, 1])),
        (TypeError, "new_lengths", dict(new_lengths=[1.0, 1.0])),
        (ValueError, "new_padding", dict(new_padding=np.zeros((2, 2), bool))),
        (TypeError, "new_padding", dict(new_padding=np.zeros((2, 1)))),
        (ValueError, "empty_rows", dict(empty_rows="ones")),
        (ValueError, "core", dict(core="fast")),
        (TypeError, "num_threads", dict(num_threads=1.5)),
        (TypeError, "KVCache", dict(cache=attn.Memory(layer, 2, 4))),
    ]
    for exc, message, kw in bad:
        args = dict(x=ok, cache=cache)
        args.update(kw)
        with pytest.raises(exc, match=message):
            layer.decode_step(args.pop("x"), args.pop("cache"), **args)
    library = [
        (attn.ERR_BAD_MASK, dict(new_lengths=[2, 0])),
        (attn.ERR_BAD_OPTION, dict(num_threads=-1)),
        (attn.ERR_CAPACITY, dict(x=x[:, 3:5])),
        (attn.ERR_NOT_FINITE, dict(x=np.full((2, 1, E), np.nan))),
    ]
    for status, kw in library:
        args = dict(x=ok)
        args.update(kw)
        with pytest.raises(attn.AttnError) as e:
            layer.decode_step(args.pop("x"), cache, **args)
        assert e.value.status == status, kw
        assert str(e.value)  # the library's detail message
    with pytest.raises(attn.AttnError) as e:
        other.decode_step(ok, cache)
    assert e.value.status == attn.ERR_MISMATCH
    # Nothing above changed the cache: the next step is the fourth token.
    assert list(cache.lengths()) == [3, 3]
    out, _ = layer.decode_step(ok.astype(np.float64), cache)
    _close(out, full[:, 3:4])
    # A full row refuses the next token without changing anything.
    with pytest.raises(attn.AttnError) as e:
        layer.decode_step(x[:, 4:], cache)
    assert e.value.status == attn.ERR_CAPACITY
    assert list(cache.lengths()) == [4, 4]
    # Non-contiguous input is converted.
    cache.truncate(3)
    strided = np.asfortranarray(ok)
    _close(layer.decode_step(strided, cache)[0], full[:, 3:4])


def test_bad_cache_operations_change_nothing():
    layer = _layer(42)
    x = _x(43, 2, 4, E)
    full, _ = layer(x, x, x, is_causal=True)
    cache = attn.KVCache(layer, 2, 4)
    layer.decode_step(x[:, :3], cache)
    with pytest.raises(ValueError, match="lengths"):
        cache.truncate([1, 1, 1])
    with pytest.raises(TypeError, match="lengths"):
        cache.truncate([1.5, 1.0])
    with pytest.raises(ValueError, match="src_rows"):
        cache.reorder(0)
    with pytest.raises(TypeError, match="src_rows"):
        cache.reorder(["a", "b"])
    for call, arg in ((cache.truncate, [4, 3]), (cache.truncate, [-1, 0]),
                      (cache.reorder, [0, 2]), (cache.reorder, [-1, 0])):
        with pytest.raises(attn.AttnError) as e:
            call(arg)
        assert e.value.status == attn.ERR_BAD_SIZE, (call, arg)
    assert list(cache.lengths()) == [3, 3]
    _close(layer.decode_step(x[:, 3:], cache)[0], full[:, 3:])


def test_bad_caches_and_memories_are_refused():
    layer = _layer(44)
    for kw, status in ((dict(batch=1, capacity=0), attn.ERR_BAD_SIZE),
                       (dict(batch=0, capacity=4), attn.ERR_BAD_SIZE),
                       (dict(batch=1, capacity=4, window=-1),
                        attn.ERR_BAD_SIZE)):
        with pytest.raises(attn.AttnError) as e:
            attn.KVCache(layer, **kw)
        assert e.value.status == status, kw
    with pytest.raises(attn.AttnError) as e:
        attn.Memory(layer, 1, 0)
    assert e.value.status == attn.ERR_BAD_SIZE
    with pytest.raises(TypeError):
        attn.KVCache(layer, 2.0, 4)
    with pytest.raises(TypeError, match="MultiheadAttention"):
        attn.KVCache("layer", 1, 4)
    with pytest.raises(TypeError, match="MultiheadAttention"):
        attn.Memory(None, 1, 4)
    # A cache is for self-attention: kdim == vdim == embed_dim.
    with pytest.raises(attn.AttnError):
        attn.KVCache(_layer(45, kdim=8), 1, 4)


def test_bad_memories_and_cross_steps():
    layer = _layer(46, kdim=12, vdim=10)
    k, v = _x(47, 2, 3, 12), _x(48, 2, 3, 10)
    q = _x(49, 2, 1, E)
    mem = attn.Memory(layer, 2, 4)
    with pytest.raises(ValueError, match="never set"):
        layer.cross_step(q, mem)
    mem.set(k, v)
    want, _ = layer(q, k, v)
    bad = [
        (ValueError, "3-D", (k[0], v[0])),
        (ValueError, "batch", (k[:1], v[:1])),
        (ValueError, "length", (k, v[:, :2])),
        (ValueError, "kdim", (v, v)),
        (ValueError, "vdim", (k, k)),
        (ValueError, "at least one", (k[:, :0], v[:, :0])),
        (TypeError, "dtype", (k.astype(np.int32), v)),
    ]
    for exc, message, args in bad:
        with pytest.raises(exc, match=message):
            mem.set(*args)
    with pytest.raises(ValueError, match="key_padding_mask"):
        mem.set(k, v, np.zeros((2, 2), bool))
    with pytest.raises(TypeError, match="key_padding_mask"):
        mem.set(k, v, np.zeros((2, 3), np.float32))
    with pytest.raises(ValueError, match="key_lengths"):
        mem.set(k, v, key_lengths=[1, 2, 3])
    for args, kw, status in (
            ((_x(50, 2, 5, 12), _x(51, 2, 5, 10)), {}, attn.ERR_CAPACITY),
            ((np.full_like(k, np.inf), v), {}, attn.ERR_NOT_FINITE),
            ((k, v), dict(key_lengths=[4, 1]), attn.ERR_BAD_MASK)):
        with pytest.raises(attn.AttnError) as e:
            mem.set(*args, **kw)
        assert e.value.status == status
    # The memory still holds what the last good set gave it.
    assert mem.len_k == 3
    _close(layer.cross_step(q, mem)[0], want)

    for exc, message, args, kw in (
            (ValueError, "3-D", (q[0], mem), {}),
            (ValueError, "batch size 1", (q[:1], mem), {}),
            (ValueError, "embed_dim", (k[:, :1], mem), {}),
            (ValueError, "key_padding_mask", (q, mem),
             dict(key_padding_mask=np.zeros((2, 4), bool))),
            (ValueError, "attn_mask", (q, mem),
             dict(attn_mask=np.zeros((2, 2), bool))),
            (TypeError, "Memory", (q, attn.KVCache(_layer(52), 2, 4)), {})):
        with pytest.raises(exc, match=message):
            layer.cross_step(*args, **kw)
    twin = _layer(46, kdim=12, vdim=10)
    with pytest.raises(attn.AttnError) as e:
        twin.cross_step(q, mem)
    assert e.value.status == attn.ERR_MISMATCH
    with pytest.raises(attn.AttnError) as e:
        layer.cross_step(q, mem, attn_mask=np.full((1, 3), np.nan,
                                                   np.float32))
    assert e.value.status == attn.ERR_NOT_FINITE


# ------------------------------------------------- lifetime


def test_close_and_with_blocks():
    layer = _layer(53)
    x = _x(54, 1, 2, E)
    with attn.KVCache(layer, 1, 4) as cache, \
            attn.Memory(layer, 1, 4) as mem:
        layer.decode_step(x, cache)
        mem.set(x, x)
        assert not cache.closed and not mem.closed
    assert cache.closed and mem.closed
    for call in (cache.lengths, cache.first, cache.reset,
                 lambda: cache.truncate(0), lambda: cache.reorder([0]),
                 lambda: layer.decode_step(x, cache),
                 lambda: mem.set(x, x), lambda: layer.cross_step(x, mem)):
        with pytest.raises(ValueError, match="closed"):
            call()
    cache.close()  # twice is fine
    mem.close()
    assert "closed" in repr(cache) and "closed" in repr(mem)


def test_copies_and_pickles_are_refused():
    # A copy would share the C object: closing one would leave the other
    # pointing at freed memory.
    layer = _layer(59)
    cache = attn.KVCache(layer, 1, 4)
    mem = attn.Memory(layer, 1, 4)
    for obj, hint in ((layer, "load_state_dict"), (cache, "KVCache\\("),
                      (mem, "Memory\\(")):
        for copier in (copy.copy, copy.deepcopy, pickle.dumps):
            with pytest.raises(TypeError, match="cannot be copied.*" + hint):
                copier(obj)
    x = _x(60, 1, 2, E)
    out, _ = layer.decode_step(x, cache)  # all still usable
    want, _ = layer(x, x, x, is_causal=True)
    _close(out, want)


def test_unsigned_lengths_too_large_are_refused():
    layer = _layer(61)
    cache = attn.KVCache(layer, 2, 4)
    layer.decode_step(_x(62, 2, 2, E), cache)
    for bad in (np.uint64(2**63), np.array([1, 2**63], dtype=np.uint64)):
        with pytest.raises(OverflowError, match="lengths"):
            cache.truncate(bad)
    assert list(cache.lengths()) == [2, 2]


def test_objects_are_freed_and_keep_their_layer_alive():
    cache = attn.KVCache(_layer(55), 1, 4)
    mem = attn.Memory(cache.layer, 1, 4)
    gc.collect()
    x = _x(56, 1, 2, E)
    out, _ = cache.layer.decode_step(x, cache)  # the layer is still there
    want, _ = cache.layer(x, x, x, is_causal=True)
    _close(out, want)
    finalizers = [cache._finalizer, mem._finalizer]
    del cache, mem, out
    gc.collect()
    assert not any(f.alive for f in finalizers)


def test_a_closed_layer_refuses_steps():
    layer = _layer(57)
    cache = attn.KVCache(layer, 1, 4)
    mem = attn.Memory(layer, 1, 4)
    x = _x(58, 1, 1, E)
    mem.set(x, x)
    layer.close()
    with pytest.raises(ValueError, match="closed"):
        layer.decode_step(x, cache)
    with pytest.raises(ValueError, match="closed"):
        layer.cross_step(x, mem)
    with pytest.raises(ValueError, match="closed"):
        attn.KVCache(layer, 1, 4)
    assert list(cache.lengths()) == [0]
    cache.close()
    mem.close()


# ------------------------------------------------- API surface and README


@pytest.mark.parametrize("method", ["decode_step", "cross_step"])
def test_steps_have_real_signatures(method):
    fn = getattr(attn.MultiheadAttention, method)
    params = inspect.signature(fn).parameters
    assert not any(p.kind in (p.VAR_KEYWORD, p.VAR_POSITIONAL)
                   for p in params.values())
    assert all(p.kind is p.KEYWORD_ONLY for p in list(params.values())[3:])
    hints = typing.get_type_hints(fn)
    assert "return" in hints
    assert "Returns" in inspect.getdoc(fn)
    for cls in (attn.KVCache, attn.Memory):
        assert typing.get_type_hints(cls.__init__), cls


README = os.path.join(os.path.dirname(os.path.abspath(__file__)), os.pardir,
                      "README.md")


def test_the_readme_example_runs():
    with open(README, encoding="utf-8") as f:
        text = f.read()
    section = text.split("## Incremental decoding", 1)[1]
    code = re.search(r"```python\n(.*?)```", section, re.S).group(1)
    scope = {}
    exec(compile(code, "README.md: incremental decoding", "exec"), scope)
    # What the example leaves behind: the cache rolled back and reordered,
    # both steps' outputs of the documented shapes.
    assert scope["cache"].closed and scope["memory"].closed
    assert scope["y"].shape == (2, 1, 64) and scope["w"].shape == (2, 1, 7)
    assert not scope["w"][0, 0, 5:].any()  # the padded source positions
