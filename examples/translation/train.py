#!/usr/bin/env python3
# SPDX-License-Identifier: MIT
"""Trains the toy translation model whose attention scripts/demo.sh shows.

Two made-up languages with the same words in a different order: the source
("English") puts adjectives before their noun, the target ("French") after
it, so "the big black dog sees a cat" becomes "le chien grand noir voit un
chat". Every source word has exactly one translation, so the right
alignment is known for every sentence, and it is not the diagonal.

The model is as small as a model that reorders can be, and everything in it
is either a table lookup or a libattn layer, so that the C demo can run it
with the library alone:

    w = source word embeddings                                   [L, E]
    x = w + source position embeddings                           [L, E]
    h = x + self_attn(x, x, x)        encoder self-attention, 4 heads
    c = cross_attn(slots, h, w)       cross-attention, 1 head: queries are
                                      learned vectors, one per target
                                      position; keys h; values w
    target word i = argmax(generator(c[i]))

The translation has as many words as the source. The values are the bare
source words, so the cross-attention can only produce target word i by
attending to the source word that lands at position i; the encoder's
self-attention has to work out where each source word lands (a noun moves
left past its adjectives, the adjectives move right) and put that into the
keys. Training takes about half a minute on
one CPU core with Debian's python3-torch:

    /usr/bin/python3 examples/translation/train.py

and rewrites, next to this script,

    attention.safetensors  the two attention layers, under the prefixes
                           "encoder.self_attn." and "decoder.cross_attn."
                           (torch's state_dict names, float32)
    embeddings.txt         sizes, vocabularies, embeddings, the target
                           position queries and the generator, as text

Seeds are fixed and torch runs on one thread, so the same machine and torch
version write the same files again.
"""

import argparse
import json
import os
import random
import struct
import sys

import torch
from torch import nn

HERE = os.path.dirname(os.path.abspath(__file__))

DETERMINERS = {"the": "le", "a": "un"}
ADJECTIVES = {"big": "grand", "small": "petit", "black": "noir",
              "red": "rouge", "old": "vieux", "happy": "content"}
NOUNS = {"cat": "chat", "dog": "chien", "bird": "oiseau", "fish": "poisson",
         "mouse": "souris", "horse": "cheval"}
TRANSITIVE = {"sees": "voit", "eats": "mange", "likes": "aime",
              "chases": "chasse"}
INTRANSITIVE = {"sleeps": "dort", "runs": "court"}
DICTIONARY = {**DETERMINERS, **ADJECTIVES, **NOUNS, **TRANSITIVE,
              **INTRANSITIVE}

MAX_ADJECTIVES = 2
MAX_LEN = 2 * (2 + MAX_ADJECTIVES) + 1  # NP verb NP
EMBED = 32
# Heads of the encoder self-attention. The cross-attention has one head:
# with several, the heads share the work (one finds the word, another its
# neighbour) and no single table shows the alignment; with one, its table
# is the alignment.
HEADS = 4
CROSS_HEADS = 1


def noun_phrase(rng):
    """(source words, target words, alignment): alignment[i] is the source
    position (within the phrase) of target word i."""
    n_adj = rng.randint(0, MAX_ADJECTIVES)
    det = rng.choice(sorted(DETERMINERS))
    adjs = rng.sample(sorted(ADJECTIVES), n_adj)
    noun = rng.choice(sorted(NOUNS))
    src = [det] + adjs + [noun]
    # Target order: determiner, noun, then the adjectives in source order.
    order = [0, n_adj + 1] + list(range(1, n_adj + 1))
    return src, [DICTIONARY[src[j]] for j in order], order


def sentence(rng):
    src, tgt, align = noun_phrase(rng)
    if rng.random() < 0.25:
        verb = rng.choice(sorted(INTRANSITIVE))
        return src + [verb], tgt + [DICTIONARY[verb]], align + [len(src)]
    verb = rng.choice(sorted(TRANSITIVE))
    obj_src, obj_tgt, obj_align = noun_phrase(rng)
    base = len(src) + 1
    return (src + [verb] + obj_src, tgt + [DICTIONARY[verb]] + obj_tgt,
            align + [len(src)] + [base + j for j in obj_align])


class ToyTranslator(nn.Module):
    def __init__(self, src_vocab, tgt_vocab):
        super().__init__()
        self.src_embed = nn.Embedding(len(src_vocab), EMBED)
        self.src_pos = nn.Embedding(MAX_LEN, EMBED)
        self.tgt_pos = nn.Embedding(MAX_LEN, EMBED)
        self.self_attn = nn.MultiheadAttention(EMBED, HEADS,
                                               batch_first=True)
        self.cross_attn = nn.MultiheadAttention(EMBED, CROSS_HEADS,
                                                batch_first=True)
        self.generator = nn.Linear(EMBED, len(tgt_vocab))

    def forward(self, src, padding):
        """src [B, L] word ids, padding [B, L] True past each sentence's
        end. Returns logits [B, L, target vocab] and the cross-attention
        weights per head [B, H, L, L]."""
        positions = torch.arange(src.shape[1])
        x = self.src_embed(src) + self.src_pos(positions)
        h = x + self.self_attn(x, x, x, key_padding_mask=padding,
                               need_weights=False)[0]
        slots = self.tgt_pos(positions).expand(src.shape[0], -1, -1)
        # Keys from the encoder, values from the words alone: the layer
        # can only bring a word to target position i by attending to it.
        words = self.src_embed(src)
        c, w = self.cross_attn(slots, h, words, key_padding_mask=padding,
                               average_attn_weights=False)
        return self.generator(c), w


def batch(rng, size, src_ids, tgt_ids):
    pairs = [sentence(rng) for _ in range(size)]
    length = max(len(s) for s, _, _ in pairs)
    src = torch.zeros(size, length, dtype=torch.long)
    tgt = torch.full((size, length), -100, dtype=torch.long)  # ignored
    padding = torch.ones(size, length, dtype=torch.bool)
    for b, (s, t, _) in enumerate(pairs):
        src[b, :len(s)] = torch.tensor([src_ids[w] for w in s])
        tgt[b, :len(t)] = torch.tensor([tgt_ids[w] for w in t])
        padding[b, :len(s)] = False
    return src, tgt, padding, pairs


def write_safetensors(path, tensors):
    """Minimal safetensors writer: 8-byte header length, JSON header, then
    the float32 little-endian data of each tensor in order."""
    header, blobs, offset = {}, [], 0
    for name, value in tensors.items():
        raw = value.detach().contiguous().float().numpy().astype("<f4")
        raw = raw.tobytes()
        header[name] = {"dtype": "F32", "shape": list(value.shape),
                        "data_offsets": [offset, offset + len(raw)]}
        blobs.append(raw)
        offset += len(raw)
    header["__metadata__"] = {"format": "pt"}
    text = json.dumps(header, separators=(",", ":"), sort_keys=True)
    text = text.encode() + b" " * (-len(text) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(text)) + text + b"".join(blobs))


def write_embeddings(path, model, src_vocab, tgt_vocab):
    def row(values):
        return " ".join("%.9g" % v for v in values.tolist())

    with open(path, "w") as f:
        f.write("# SPDX-License-Identifier: MIT\n"
                "# libattn toy translation model (examples/translation/"
                "train.py): embeddings\n# and vocabularies for "
                "examples/attention_demo.c. Sections: a name, a count,\n"
                "# then that many lines.\n")
        f.write("dim %d\n" % EMBED)
        f.write("encoder_heads %d\n" % HEADS)
        f.write("cross_heads %d\n" % CROSS_HEADS)
        f.write("source_words %d\n" % len(src_vocab))
        for i, word in enumerate(src_vocab):
            f.write("%s %s\n" % (word, row(model.src_embed.weight[i])))
        f.write("source_positions %d\n" % MAX_LEN)
        for i in range(MAX_LEN):
            f.write("%s\n" % row(model.src_pos.weight[i]))
        f.write("target_positions %d\n" % MAX_LEN)
        for i in range(MAX_LEN):
            f.write("%s\n" % row(model.tgt_pos.weight[i]))
        f.write("target_words %d\n" % len(tgt_vocab))
        gen = model.generator
        for i, word in enumerate(tgt_vocab):
            f.write("%s %.9g %s\n" % (word, gen.bias[i].item(),
                                      row(gen.weight[i])))


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--steps", type=int, default=2000)
    ap.add_argument("--out", default=HERE,
                    help="directory for the two files (default: here)")
    args = ap.parse_args()

    torch.manual_seed(0)
    torch.set_num_threads(1)
    torch.use_deterministic_algorithms(True)
    rng = random.Random(0)

    src_vocab = sorted(DICTIONARY)
    tgt_vocab = sorted(set(DICTIONARY.values()))
    src_ids = {w: i for i, w in enumerate(src_vocab)}
    tgt_ids = {w: i for i, w in enumerate(tgt_vocab)}

    model = ToyTranslator(src_vocab, tgt_vocab)
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=3e-3,
                                                total_steps=args.steps)
    loss_fn = nn.CrossEntropyLoss(ignore_index=-100)
    for step in range(args.steps):
        src, tgt, padding, _ = batch(rng, 64, src_ids, tgt_ids)
        logits, _ = model(src, padding)
        loss = loss_fn(logits.reshape(-1, logits.shape[-1]), tgt.reshape(-1))
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
        if step % 250 == 0 or step == args.steps - 1:
            print("step %5d  loss %.4f" % (step, loss.item()), flush=True)

    # Held-out check: translations and alignments on fresh sentences.
    model.eval()
    test_rng = random.Random(12345)
    words_ok = words = aligned = 0
    head_ok = [0] * CROSS_HEADS
    mass = 0.0
    with torch.no_grad():
        src, tgt, padding, pairs = batch(test_rng, 1000, src_ids, tgt_ids)
        logits, w = model(src, padding)
        pred = logits.argmax(-1)
        avg = w.mean(1)
        for b, (s, t, align) in enumerate(pairs):
            n = len(s)
            words += n
            words_ok += int((pred[b, :n] == tgt[b, :n]).sum())
            aligned += sum(int(avg[b, i, :n].argmax()) == align[i]
                           for i in range(n))
            for h in range(CROSS_HEADS):
                head_ok[h] += sum(int(w[b, h, i, :n].argmax()) == align[i]
                                  for i in range(n))
            mass += sum(float(avg[b, i, align[i]]) for i in range(n))
    print("held-out: %.2f%% of words translated right, %.2f%% aligned to "
          "their source word" % (100 * words_ok / words,
                                  100 * aligned / words))
    print("per head aligned: %s; mean weight on the aligned word %.3f"
          % (["%.1f%%" % (100 * k / words) for k in head_ok], mass / words))

    os.makedirs(args.out, exist_ok=True)
    tensors = {}
    for prefix, layer in (("encoder.self_attn.", model.self_attn),
                          ("decoder.cross_attn.", model.cross_attn)):
        for name, value in layer.state_dict().items():
            tensors[prefix + name] = value
    write_safetensors(os.path.join(args.out, "attention.safetensors"),
                      tensors)
    write_embeddings(os.path.join(args.out, "embeddings.txt"), model,
                     src_vocab, tgt_vocab)
    print("wrote attention.safetensors and embeddings.txt to", args.out)
    return 0 if words_ok == words and aligned == words else 1


if __name__ == "__main__":
    sys.exit(main())
