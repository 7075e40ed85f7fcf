# SPDX-License-Identifier: MIT
"""The cross-attention of the trained toy translator, as a heatmap.

The same model as scripts/demo.sh (examples/translation: an encoder
self-attention and a one-head cross-attention, trained by
examples/translation/train.py), run through the Python binding: the two
layers come from attention.safetensors, the embeddings and the generator
from embeddings.txt. Prints the translation and the alignment (each target
word's most attended source word) and draws the cross-attention table.

    ATTN_LIBRARY=build/libattn.so python3 translation_attention.py \\
        [--model DIR] [--out FILE.png] [source words ...]

Without words it translates "the big black dog sees a small cat"; the
picture goes to attention_translation.png unless --out says otherwise.
"""

import argparse
import os
import sys
from typing import Dict, List, Tuple

import numpy as np

import attn

MODEL = os.path.join(os.path.dirname(os.path.abspath(__file__)), os.pardir,
                     os.pardir, os.pardir, "examples", "translation")


def read_model(path: str) -> Dict[str, object]:
    """The sections of embeddings.txt: sizes, then word -> vector tables and
    position tables (see examples/translation/train.py)."""
    with open(path) as f:
        lines = [line.split() for line in f
                 if line.strip() and not line.startswith("#")]
    model: Dict[str, object] = {}
    i = 0
    while i < len(lines):
        name, count = lines[i][0], int(lines[i][1])
        i += 1
        if name in ("dim", "encoder_heads", "cross_heads"):
            model[name] = count
            continue
        rows = lines[i:i + count]
        i += count
        if name == "source_words":
            model["source_words"] = [r[0] for r in rows]
            model["source_embed"] = np.array([r[1:] for r in rows], np.float32)
        elif name == "target_words":
            model["target_words"] = [r[0] for r in rows]
            model["generator_bias"] = np.array([r[1] for r in rows],
                                               np.float32)
            model["generator"] = np.array([r[2:] for r in rows], np.float32)
        else:  # source_positions, target_positions
            model[name] = np.array(rows, np.float32)
    return model


def translate(model_dir: str, words: List[str]
              ) -> Tuple[List[str], np.ndarray]:
    """(translation, cross-attention weights [heads, target, source])."""
    m = read_model(os.path.join(model_dir, "embeddings.txt"))
    weights = os.path.join(model_dir, "attention.safetensors")
    encoder = attn.MultiheadAttention(m["dim"], m["encoder_heads"], seed=0)
    encoder.load_safetensors(weights, prefix="encoder.self_attn.")
    cross = attn.MultiheadAttention(m["dim"], m["cross_heads"], seed=0)
    cross.load_safetensors(weights, prefix="decoder.cross_attn.")

    vocab = {w: i for i, w in enumerate(m["source_words"])}
    unknown = [w for w in words if w not in vocab]
    if unknown:
        raise SystemExit("unknown words %s; the source words are: %s"
                         % (unknown, " ".join(m["source_words"])))
    n = len(words)
    w = m["source_embed"][[vocab[t] for t in words]]
    x = w + m["source_positions"][:n]
    h = x + encoder(x, x, x, need_weights=False)[0]
    c, a = cross(m["target_positions"][:n], h, w,
                 average_attn_weights=False)
    logits = c @ m["generator"].T + m["generator_bias"]
    return [m["target_words"][k] for k in logits.argmax(-1)], a


def main(argv: List[str]) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default=MODEL,
                    help="directory of attention.safetensors and "
                         "embeddings.txt")
    ap.add_argument("--out", default="attention_translation.png")
    ap.add_argument("words", nargs="*")
    args = ap.parse_args(argv)
    words = " ".join(args.words).split() or \
        "the big black dog sees a small cat".split()

    target, weights = translate(args.model, words)
    print("source:      ", " ".join(words))
    print("translation: ", " ".join(target))
    alignment = weights.mean(0).argmax(-1)
    print("alignment:   ", " ".join("%s<-%s" % (t, words[j])
                                   for t, j in zip(target, alignment)))
    attn.plot_attention(
        weights, target, words, args.out,
        title="toy translator: cross-attention",
        head_names=["translation (rows) -> source (columns)"
                    if weights.shape[0] == 1 else "head %d" % h
                    for h in range(weights.shape[0])])
    print("wrote", args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
