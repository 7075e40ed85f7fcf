# SPDX-License-Identifier: MIT
"""attn.plot_attention and the example script that uses it."""

import os
import subprocess
import sys

import numpy as np
import pytest

import attn

pytest.importorskip("matplotlib")

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def _png_size(path):
    with open(path, "rb") as f:
        head = f.read(24)
    assert head[:8] == PNG_SIGNATURE
    return int.from_bytes(head[16:20], "big"), int.from_bytes(head[20:24],
                                                               "big")


def test_per_head_weights_from_a_layer(tmp_path):
    layer = attn.MultiheadAttention(16, 4, seed=0)
    x = np.random.default_rng(0).standard_normal((1, 5, 16)).astype(
        np.float32)
    _, w = layer(x, x, x, average_attn_weights=False, is_causal=True)
    tokens = ["a", "b", "c", "d", "e"]
    path = tmp_path / "heads.png"
    assert attn.plot_attention(w[0], tokens, tokens, path) == path
    width, height = _png_size(path)
    assert width > height > 100  # four panels side by side


def test_averaged_and_batched_shapes(tmp_path):
    w = np.full((3, 4), 0.25)
    attn.plot_attention(w, list("xyz"), list("abcd"), tmp_path / "avg.png",
                        title="averaged")
    attn.plot_attention(w[None, None], list("xyz"), list("abcd"),
                        tmp_path / "b1.png")
    assert _png_size(tmp_path / "avg.png")[0] > 0
    with pytest.raises(ValueError, match="weights"):
        attn.plot_attention(np.zeros((2, 2, 3, 4)), list("xyz"),
                            list("abcd"), tmp_path / "bad.png")


def test_long_sequences_and_empty_rows(tmp_path):
    w = np.random.default_rng(1).random((2, 40, 30))
    w[:, 3] = np.nan  # a query with nothing to attend to
    q = ["q%d" % i for i in range(40)]
    k = ["k%d" % i for i in range(30)]
    attn.plot_attention(w, q, k, tmp_path / "long.png",
                        head_names=["first", "second"])
    assert _png_size(tmp_path / "long.png")[1] > 300


def test_token_count_must_match(tmp_path):
    with pytest.raises(ValueError, match="tokens"):
        attn.plot_attention(np.zeros((2, 3)), ["a"], ["b", "c", "d"],
                            tmp_path / "x.png")
    with pytest.raises(ValueError, match="head names"):
        attn.plot_attention(np.zeros((2, 2, 3)), ["a", "b"], list("bcd"),
                            tmp_path / "x.png", head_names=["one"])


def test_example_script_writes_both_pictures(tmp_path):
    script = os.path.join(os.path.dirname(__file__), os.pardir, "examples",
                          "plot_attention.py")
    env = dict(os.environ)
    env["PYTHONPATH"] = (os.path.dirname(os.path.dirname(attn.__file__))
                         + os.pathsep + env.get("PYTHONPATH", ""))
    r = subprocess.run([sys.executable, script, "--out", str(tmp_path)],
                       env=env, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert "chat->cat" in r.stdout and "it->cat" in r.stdout
    for name in ("attention_cross.png", "attention_self.png"):
        assert _png_size(tmp_path / name)[0] > 300


def test_plot_attention_needs_no_prior_import(tmp_path):
    """attn.plot_attention and attn.plot work right after `import attn`,
    and importing attn alone does not load matplotlib."""
    code = (
        "import sys, numpy as np, attn\n"
        "assert 'matplotlib' not in sys.modules\n"
        "assert 'attn.plot' not in sys.modules\n"
        "p = attn.plot_attention(np.full((2, 3), 1 / 3), ['a', 'b'],\n"
        "                        ['x', 'y', 'z'], sys.argv[1])\n"
        "assert attn.plot.plot_attention is not None\n"
        "print(p)\n")
    env = dict(os.environ)
    env["PYTHONPATH"] = (os.path.dirname(os.path.dirname(attn.__file__))
                         + os.pathsep + env.get("PYTHONPATH", ""))
    out = tmp_path / "fresh.png"
    r = subprocess.run([sys.executable, "-c", code, str(out)], env=env,
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert _png_size(out)[0] > 0


def test_plot_attention_signature_is_explicit():
    import inspect

    params = inspect.signature(attn.plot_attention).parameters
    assert not any(p.kind is p.VAR_KEYWORD for p in params.values())
    assert {"title", "head_names", "ncols", "cmap", "annotate",
            "dpi"} <= set(params)
    assert "attn.plot.plot_attention" in attn.plot_attention.__doc__
    assert inspect.signature(attn.plot.plot_attention).parameters.keys() \
        == params.keys()


def test_translation_example_draws_the_alignment(tmp_path):
    """The trained toy translator of scripts/demo.sh, through the binding:
    every target word's largest weight is on the source word it
    translates, and the heatmap is written."""
    script = os.path.join(os.path.dirname(__file__), os.pardir, "examples",
                          "translation_attention.py")
    env = dict(os.environ)
    env["PYTHONPATH"] = (os.path.dirname(os.path.dirname(attn.__file__))
                         + os.pathsep + env.get("PYTHONPATH", ""))
    out = tmp_path / "translation.png"
    r = subprocess.run([sys.executable, script, "--out", str(out), "a",
                        "small", "old", "cat", "chases", "the", "red",
                        "mouse"], env=env, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    lines = dict(line.split(None, 1) for line in r.stdout.splitlines()
                 if line.split())
    assert lines["translation:"] == \
        "un chat petit vieux chasse le souris rouge"
    assert lines["alignment:"] == (
        "un<-a chat<-cat petit<-small vieux<-old chasse<-chases le<-the "
        "souris<-mouse rouge<-red")
    assert _png_size(out)[0] > 300
