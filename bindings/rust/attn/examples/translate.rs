// SPDX-License-Identifier: MIT
//! Cross-attention of a short French target over an English source,
//! printing what each target word attends to.
//!
//!     cargo run --example translate
//!
//! Toy embeddings: each word is a fixed pseudo-random vector of its meaning
//! (a French word shares its English translation's vector) plus a little
//! noise of its own. The layer's projections are identities scaled by a
//! gain, so the scores are plain dot products of meanings and each target
//! word should attend to its translation: the table shows it.

use attn::{Layer, Options, Weight, WeightsMode};

const E: usize = 32;
const HEADS: usize = 4;

/// A deterministic vector in [-1, 1) from a string (FNV-1a seeding a
/// linear congruential generator).
fn vector(text: &str) -> Vec<f32> {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in text.bytes() {
        h = (h ^ b as u64).wrapping_mul(0x0000_0100_0000_01b3);
    }
    (0..E)
        .map(|_| {
            h = h
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            ((h >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
        })
        .collect()
}

/// Meaning vector plus 0.2 x the word's own vector.
fn embed(words: &[(&str, &str)]) -> Vec<f32> {
    let mut x = Vec::with_capacity(words.len() * E);
    for (word, meaning) in words {
        let (m, own) = (vector(meaning), vector(word));
        x.extend(m.iter().zip(&own).map(|(a, b)| a + 0.2 * b));
    }
    x
}

fn identity(gain: f32) -> Vec<f32> {
    let mut w = vec![0.0; E * E];
    for i in 0..E {
        w[i * E + i] = gain;
    }
    w
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let source = [
        ("the", "the"),
        ("black", "black"),
        ("cat", "cat"),
        ("sleeps", "sleep"),
        ("here", "here"),
    ];
    let target = [
        ("le", "the"),
        ("chat", "cat"),
        ("noir", "black"),
        ("dort", "sleep"),
    ];

    let mut layer = Layer::builder(E).num_heads(HEADS).build()?;
    // W_q = W_k = 1.5 I (a sharper softmax), W_v = W_out = I, biases zero.
    let mut in_proj = identity(1.5);
    in_proj.extend(identity(1.5));
    in_proj.extend(identity(1.0));
    layer.set_weight(Weight::InProj, &in_proj)?;
    layer.set_weight(Weight::InProjBias, &[0.0; 3 * E])?;
    layer.set_weight(Weight::Out, &identity(1.0))?;
    layer.set_weight(Weight::OutBias, &[0.0; E])?;

    let (tgt, src) = (embed(&target), embed(&source));
    let (lq, lk) = (target.len(), source.len());
    let mut out = vec![0.0; lq * E];
    let mut weights = vec![0.0; lq * lk];
    let mut opts = Options::new().attn_weights(&mut weights, WeightsMode::Average);
    layer.forward(1, lq, lk, &tgt, &src, &src, None, Some(&mut opts), &mut out)?;

    println!(
        "libattn {}: cross-attention, averaged over {} heads",
        attn::library_version(),
        HEADS
    );
    print!("{:>8}", "");
    for (w, _) in &source {
        print!(" {:>7}", w);
    }
    println!();
    for (i, (w, _)) in target.iter().enumerate() {
        let row = &weights[i * lk..(i + 1) * lk];
        print!("{:>8}", w);
        for p in row {
            print!(" {:>7.3}", p);
        }
        let best = (0..lk).fold(0, |b, j| if row[j] > row[b] { j } else { b });
        println!("   -> {}", source[best].0);
    }
    Ok(())
}
