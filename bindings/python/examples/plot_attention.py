# SPDX-License-Identifier: MIT
"""Pictures of what each head attends to, for a toy translation pair
(cross-attention) and a toy sentence (self-attention).

The weights are built by hand rather than trained, so that every head has a
job one can read off the picture. Each word's 64-wide embedding has four
16-wide parts, one per head (head h's query and key projections only look
at part h):

- part 0, meaning: one random unit vector per concept; a word and its
  translation share it, and "it" carries the cat's;
- part 1, position: a one-hot vector of the word's position;
- part 2, word class: a one-hot vector of determiner / adjective / noun /
  verb / preposition / pronoun / conjunction;
- part 3: unused, so head 3's scores are all equal.

Head 0 thus aligns words by meaning, head 1 by position (in the sentence:
the previous word, through a shifted query projection), head 2 by word
class, and head 3 spreads its attention evenly.

    ATTN_LIBRARY=build/libattn.so python3 plot_attention.py [--out DIR]

writes attention_cross.png and attention_self.png into DIR (default: the
current directory) and prints each query's most attended key per head.
"""

import argparse
import os

import numpy as np

import attn

PART = 16
HEADS = 4
EMBED = PART * HEADS
SHARPNESS = 4.0  # gain of the query/key projections: higher = crisper

CLASSES = ["det", "adj", "noun", "verb", "prep", "pron", "conj"]


def embed(words, rng, concepts):
    """[L, EMBED] embeddings of (word, concept, class) triples."""
    x = np.zeros((len(words), EMBED), np.float32)
    for i, (_, concept, word_class) in enumerate(words):
        if concept not in concepts:
            v = rng.standard_normal(PART)
            concepts[concept] = v / np.linalg.norm(v)
        x[i, 0:PART] = concepts[concept]
        x[i, PART + i] = 1.0
        x[i, 2 * PART + CLASSES.index(word_class)] = 1.0
    return x


def toy_layer(previous_word_head):
    """The hand-made layer described above. With previous_word_head, head
    1's query for position p looks for key position p - 1."""
    layer = attn.MultiheadAttention(EMBED, HEADS, seed=0)
    eye = np.eye(PART, dtype=np.float32)
    w_q = np.zeros((EMBED, EMBED), np.float32)
    w_k = np.zeros((EMBED, EMBED), np.float32)
    for h in range(3):
        block = slice(h * PART, (h + 1) * PART)
        w_q[block, block] = SHARPNESS * eye
        w_k[block, block] = SHARPNESS * eye
    if previous_word_head:
        shift = np.eye(PART, k=1, dtype=np.float32)  # one-hot p -> p - 1
        w_q[PART:2 * PART, PART:2 * PART] = SHARPNESS * shift
    identity = np.eye(EMBED, dtype=np.float32)
    layer.load_state_dict({
        "in_proj_weight": np.concatenate([w_q, w_k, identity]),
        "in_proj_bias": np.zeros(3 * EMBED, np.float32),
        "out_proj.weight": identity,
        "out_proj.bias": np.zeros(EMBED, np.float32),
    })
    return layer


HEAD_NAMES = ["head 0: meaning", "head 1: position", "head 2: word class",
              "head 3: even spread"]


def report(title, weights, tokens_q, tokens_k, head_names):
    print(title)
    for h, name in enumerate(head_names):
        best = weights[h].argmax(axis=1)
        pairs = ", ".join("%s->%s" % (tokens_q[i], tokens_k[j])
                          for i, j in enumerate(best))
        print("  %-22s %s" % (name, pairs))


def cross_attention(out_dir, rng, concepts):
    english = [("the", "the", "det"), ("black", "black", "adj"),
               ("cat", "cat", "noun"), ("sleeps", "sleep", "verb"),
               ("on", "on", "prep"), ("the", "the", "det"),
               ("red", "red", "adj"), ("sofa", "sofa", "noun")]
    french = [("le", "the", "det"), ("chat", "cat", "noun"),
              ("noir", "black", "adj"), ("dort", "sleep", "verb"),
              ("sur", "on", "prep"), ("le", "the", "det"),
              ("canapé", "sofa", "noun"), ("rouge", "red", "adj")]
    memory = embed(english, rng, concepts)[None]   # encoder side: keys
    decoder = embed(french, rng, concepts)[None]   # decoder side: queries
    layer = toy_layer(previous_word_head=False)
    _, weights = layer(decoder, memory, memory, average_attn_weights=False)
    tokens_q = [w for w, _, _ in french]
    tokens_k = [w for w, _, _ in english]
    path = os.path.join(out_dir, "attention_cross.png")
    attn.plot_attention(
        weights[0], tokens_q, tokens_k, path, head_names=HEAD_NAMES, ncols=2,
        title="Cross-attention: French decoder queries over the English "
              "source", dpi=80)
    report("cross-attention (French query -> English key)", weights[0],
           tokens_q, tokens_k, HEAD_NAMES)
    return path


def self_attention(out_dir, rng, concepts):
    sentence = [("the", "the", "det"), ("cat", "cat", "noun"),
                ("sat", "sit", "verb"), ("on", "on", "prep"),
                ("the", "the", "det"), ("mat", "mat", "noun"),
                ("because", "because", "conj"), ("it", "it", "pron"),
                ("was", "be", "verb"), ("tired", "tired", "adj")]
    # "it" refers to the cat: it carries the meaning vector of "cat".
    concepts["it"] = concepts.setdefault("cat", _unit(rng))
    x = embed(sentence, rng, concepts)[None]
    layer = toy_layer(previous_word_head=True)
    _, weights = layer(x, x, x, is_causal=True, average_attn_weights=False)
    tokens = [w for w, _, _ in sentence]
    names = ["head 0: meaning", "head 1: previous word",
             "head 2: word class", "head 3: even spread"]
    path = os.path.join(out_dir, "attention_self.png")
    attn.plot_attention(
        weights[0], tokens, tokens, path, head_names=names, ncols=2,
        title="Causal self-attention over a sentence", dpi=80)
    report("self-attention (causal)", weights[0], tokens, tokens, names)
    return path


def _unit(rng):
    return _normalised(rng.standard_normal(PART))


def _normalised(v):
    return v / np.linalg.norm(v)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=".", help="directory for the PNGs")
    args = parser.parse_args()
    os.makedirs(args.out, exist_ok=True)
    rng = np.random.default_rng(2024)
    concepts = {}
    for path in (cross_attention(args.out, rng, concepts),
                 self_attention(args.out, rng, concepts)):
        print("wrote", path)


if __name__ == "__main__":
    main()
