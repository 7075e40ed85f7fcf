# SPDX-License-Identifier: MIT
"""Several Python threads on one layer: the library runs without the GIL
(ctypes releases it for the call), so calls overlap; results must equal
the single-threaded ones, and weight changes must wait for running calls."""

import threading

import numpy as np

import attn


def _inputs(n, seed):
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        L = int(rng.integers(1, 96))
        S = int(rng.integers(1, 96))
        q = rng.standard_normal((2, L, 32)).astype(np.float32)
        kv = rng.standard_normal((2, S, 32)).astype(np.float32)
        kpm = rng.random((2, S)) < 0.2
        out.append((q, kv, kpm))
    return out


def _run_all(layer, work):
    return [layer(q, kv, kv, key_padding_mask=kpm,
                  average_attn_weights=bool(i % 2))
            for i, (q, kv, kpm) in enumerate(work)]


def test_concurrent_forward_on_one_layer_matches_serial():
    layer = attn.MultiheadAttention(32, 4, seed=11, num_threads=1)
    work = _inputs(24, seed=12)
    expected = _run_all(layer, work)
    results = {}
    errors = []
    start = threading.Barrier(6)

    def worker(t):
        try:
            start.wait()
            for rep in range(3):
                for i in range(t, len(work), 6):
                    q, kv, kpm = work[i]
                    results[(rep, i)] = layer(
                        q, kv, kv, key_padding_mask=kpm,
                        average_attn_weights=bool(i % 2))
        except Exception as e:  # reported below, not lost in the thread
            errors.append(e)

    threads = [threading.Thread(target=worker, args=(t,)) for t in range(6)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    assert not errors, errors
    assert len(results) == 3 * len(work)
    for (rep, i), (out, w) in results.items():
        np.testing.assert_array_equal(out, expected[i][0])
        np.testing.assert_array_equal(w, expected[i][1])


def test_library_threads_inside_python_threads():
    # Each call may also use the library's own threads.
    layer = attn.MultiheadAttention(32, 8, seed=13, num_threads=2)
    x = np.random.default_rng(14).standard_normal((3, 200, 32)).astype(
        np.float32)
    expected = layer(x, x, x, is_causal=True)[0]
    outs = [None] * 4

    def worker(t):
        outs[t] = layer(x, x, x, is_causal=True)[0]
    threads = [threading.Thread(target=worker, args=(t,)) for t in range(4)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    for out in outs:
        np.testing.assert_array_equal(out, expected)


def test_forward_releases_the_gil():
    # While one thread is inside a long forward call, this thread keeps
    # running Python code: it could hardly tick at all if the call held
    # the GIL (at most once per switch interval, around the call). A busy
    # host can starve this thread for a while too, so the experiment is
    # repeated: one call that this thread ticked through often enough
    # shows the GIL was released, which a call holding it never allows.
    import time
    layer = attn.MultiheadAttention(64, 4, seed=15, num_threads=1)
    x = np.random.default_rng(16).standard_normal((4, 700, 64)).astype(
        np.float32)
    seen = []
    for _ in range(5):
        span = []
        ticks = []

        def long_call():
            for _ in range(2):
                t0 = time.perf_counter()
                layer(x, x, x, need_weights=False)
                span.append((t0, time.perf_counter()))

        th = threading.Thread(target=long_call)
        th.start()
        while th.is_alive():
            ticks.append(time.perf_counter())
            time.sleep(0.0005)
        th.join()
        t0, t1 = max(span, key=lambda s: s[1] - s[0])
        seen.append((sum(t0 < t < t1 for t in ticks), round(t1 - t0, 4)))
        if seen[-1][0] >= 10:
            return
    raise AssertionError("ticks during the call, call seconds: %r" % seen)


def test_weight_changes_wait_for_running_calls():
    layer = attn.MultiheadAttention(16, 2, seed=17, num_threads=1)
    a = layer.state_dict()
    b = attn.MultiheadAttention(16, 2, seed=18).state_dict()
    x = np.random.default_rng(19).standard_normal((2, 64, 16)).astype(
        np.float32)
    out_a = layer(x, x, x)[0]
    layer.load_state_dict(b)
    out_b = layer(x, x, x)[0]
    errors = []
    stop = threading.Event()

    def reader():
        try:
            while not stop.is_set():
                out = layer(x, x, x)[0]
                # Always one whole set of weights, never a mixture.
                assert (np.array_equal(out, out_a)
                        or np.array_equal(out, out_b))
        except Exception as e:
            errors.append(e)

    readers = [threading.Thread(target=reader) for _ in range(3)]
    for th in readers:
        th.start()
    for i in range(20):
        layer.load_state_dict(a if i % 2 else b)
    stop.set()
    for th in readers:
        th.join()
    assert not errors, errors
