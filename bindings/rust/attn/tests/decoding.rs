// SPDX-License-Identifier: MIT
//! KvCache, Memory and the steps: a sequence decoded token by token gives
//! what one causal forward over the whole sequence gives.

mod common;

use attn::{
    Alibi, Causal, DecodeMask, KvCache, Layer, Mask, Memory, Options, QkNorm, Rope, RopePairing,
    Scratch, Status, Weight, WeightsMode,
};
use common::{assert_close, assert_close_f32, rand_vec, random_layer, reference, RefMask};

const E: usize = 16;
const H: usize = 4;

#[test]
fn decode_steps_equal_a_causal_forward() {
    let layer = random_layer(E, H, 0, 0, 21);
    let (b, l) = (2, 6);
    let x = rand_vec(b * l * E, 8);
    let mut full = vec![0.0; x.len()];
    let m = Mask::new().causal(Causal::TopLeft);
    layer
        .self_forward(b, l, &x, Some(&m), None, &mut full)
        .unwrap();

    let mut cache = KvCache::new(&layer, b, 8).unwrap();
    let mut scratch = Scratch::new();
    // Steps of 1, 2 and 3 new tokens.
    let mut pos = 0;
    for n in [1usize, 2, 3] {
        let mut xs = Vec::new();
        for row in 0..b {
            xs.extend_from_slice(&x[(row * l + pos) * E..(row * l + pos + n) * E]);
        }
        let mut out = vec![0.0; b * n * E];
        let mut w = vec![0.0; b * n * 8];
        let mut opts = Options::new()
            .attn_weights(&mut w, WeightsMode::Average)
            .scratch(&mut scratch);
        layer
            .decode_step(&mut cache, n, &xs, None, Some(&mut opts), &mut out)
            .unwrap();
        for row in 0..b {
            let want = &full[(row * l + pos) * E..(row * l + pos + n) * E];
            assert_close_f32("step", &out[row * n * E..(row + 1) * n * E], want);
            for i in 0..n {
                let r = &w[(row * n + i) * 8..(row * n + i + 1) * 8];
                let s: f32 = r.iter().sum();
                assert!((s - 1.0).abs() < 1e-5, "weights of a query sum to 1");
                assert!(
                    r[pos + i + 1..].iter().all(|&p| p == 0.0),
                    "no weight past the token"
                );
            }
        }
        pos += n;
    }
    assert_eq!(cache.lengths().unwrap(), vec![6, 6]);
}

/// Decodes x [2, 6, E] in steps of 1, 2 and 3 tokens with rows starting at
/// positions `start` and checks each step against a causal forward over
/// the whole sequence at the same positions (itself checked against a
/// reference in tests/features.rs). `plain` builds the same layer without
/// rotary embeddings: given the same weights, its forward must differ, so
/// the steps are seen to rotate (a step that rotated its query at the
/// wrong position, or cached its key unrotated, would then differ from
/// the forward: rotary embeddings and ALiBi depend on the distance
/// between positions, not on `start` itself).
fn steps_match_forward_with_positions(layer: &Layer, plain: attn::LayerBuilder, start: &[i64]) {
    let e = layer.config().embed_dim;
    let (b, l) = (2, 6);
    let x = rand_vec(b * l * e, 31);
    let mut full = vec![0.0; x.len()];
    let m = Mask::new().causal(Causal::TopLeft);
    let mut opts = Options::new().start_positions(start);
    layer
        .self_forward(b, l, &x, Some(&m), Some(&mut opts), &mut full)
        .unwrap();

    let mut unrotated = plain.build().unwrap();
    for w in [
        Weight::InProj,
        Weight::InProjBias,
        Weight::Out,
        Weight::OutBias,
        Weight::Sinks,
    ] {
        if let Ok(v) = layer.weight(w) {
            unrotated.set_weight(w, &v).unwrap();
        }
    }
    let mut y = vec![0.0; x.len()];
    unrotated
        .self_forward(b, l, &x, Some(&m), None, &mut y)
        .unwrap();
    let differs = full.iter().zip(&y).any(|(a, b)| (a - b).abs() > 1e-3);
    assert!(differs, "the rotary embeddings do not change the output");

    let mut cache = KvCache::new(layer, b, 8).unwrap();
    let mut pos = 0;
    for n in [1usize, 2, 3] {
        let mut xs = Vec::new();
        for row in 0..b {
            xs.extend_from_slice(&x[(row * l + pos) * e..(row * l + pos + n) * e]);
        }
        let mut out = vec![0.0; b * n * e];
        let mut opts = Options::new().start_positions(start);
        layer
            .decode_step(&mut cache, n, &xs, None, Some(&mut opts), &mut out)
            .unwrap();
        for row in 0..b {
            let want = &full[(row * l + pos) * e..(row * l + pos + n) * e];
            assert_close_f32("step", &out[row * n * e..(row + 1) * n * e], want);
        }
        pos += n;
    }
}

#[test]
fn decode_steps_with_rotary_embeddings_equal_a_forward_with_positions() {
    let plain = Layer::builder(32).num_heads(4).num_kv_heads(2);
    let mut layer = plain
        .clone()
        .rope(Rope::new().theta(500.0))
        .build()
        .unwrap();
    layer.init_weights(5).unwrap();
    steps_match_forward_with_positions(&layer, plain, &[0, 7]);

    // Adjacent pairs over part of each head, with ALiBi, soft-capping and
    // sinks, which also take their positions from the cache.
    let plain = Layer::builder(32)
        .num_heads(4)
        .alibi(Alibi::Causal)
        .softcap(0.7)
        .sinks(true);
    let mut layer = plain
        .clone()
        .rope(
            Rope::new()
                .pairing(RopePairing::Adjacent)
                .rotary_dim(4)
                .theta(100.0),
        )
        .build()
        .unwrap();
    layer.init_weights(6).unwrap();
    layer.set_weight(Weight::Sinks, &rand_vec(4, 9)).unwrap();
    steps_match_forward_with_positions(&layer, plain, &[3, 12]);
}

/// Layers without rotary embeddings or ALiBi ignore positions, in steps as
/// in forward calls: query and key positions in a step change nothing, in
/// its output or in what it caches for the next step.
#[test]
fn steps_of_layers_without_positions_ignore_query_and_key_positions() {
    let mut scored = Layer::builder(E)
        .num_heads(H)
        .qk_norm(QkNorm::Head)
        .softcap(0.5)
        .sinks(true)
        .build()
        .unwrap();
    scored.init_weights(25).unwrap();
    scored.set_weight(Weight::Sinks, &rand_vec(H, 26)).unwrap();
    let b = 2;
    for layer in [random_layer(E, H, 0, 0, 24), scored] {
        let mut with = KvCache::new(&layer, b, 8).unwrap();
        let mut without = KvCache::new(&layer, b, 8).unwrap();
        for (i, n) in [1usize, 2].into_iter().enumerate() {
            let x = rand_vec(b * n * E, 40 + i as u64);
            let qpos: Vec<i64> = (0..(b * n) as i64).map(|p| 40 + 3 * p).collect();
            let kpos: Vec<i64> = qpos.iter().rev().cloned().collect();
            let mut got = vec![0.0f32; x.len()];
            let mut opts = Options::new().query_positions(&qpos).key_positions(&kpos);
            layer
                .decode_step(&mut with, n, &x, None, Some(&mut opts), &mut got)
                .unwrap();
            let mut want = vec![0.0f32; x.len()];
            layer
                .decode_step(&mut without, n, &x, None, None, &mut want)
                .unwrap();
            assert_eq!(got, want, "step {} of {:?}", i, layer.config());
        }
        assert_eq!(with.lengths().unwrap(), vec![3, 3]);
    }
}

#[test]
fn truncate_reorder_reset() {
    let layer = random_layer(E, H, 0, 0, 22);
    let b = 3;
    let mut cache = KvCache::new(&layer, b, 4).unwrap();
    let step = |cache: &mut KvCache<'_>, seed: u64| {
        let x = rand_vec(b * E, seed);
        let mut out = vec![0.0; b * E];
        layer
            .decode_step(cache, 1, &x, None, None, &mut out)
            .unwrap();
        out
    };
    step(&mut cache, 1);
    step(&mut cache, 2);
    let third = step(&mut cache, 3);
    assert_eq!(cache.lengths().unwrap(), vec![3, 3, 3]);

    // Rolling back to 2 tokens and taking the same step again gives the
    // same output.
    cache.truncate(&[2, 2, 2]).unwrap();
    assert_eq!(cache.lengths().unwrap(), vec![2, 2, 2]);
    assert_eq!(step(&mut cache, 3), third);

    // Beam reorder: every row becomes row 1; the next step then gives row
    // 1's output in every row for equal inputs.
    cache.truncate(&[2, 1, 0]).unwrap();
    cache.reorder(&[1, 1, 1]).unwrap();
    assert_eq!(cache.lengths().unwrap(), vec![1, 1, 1]);
    let x1 = rand_vec(E, 9);
    let xs: Vec<f32> = x1.iter().cycle().take(b * E).cloned().collect();
    let mut out = vec![0.0; b * E];
    layer
        .decode_step(&mut cache, 1, &xs, None, None, &mut out)
        .unwrap();
    assert_eq!(out[..E], out[E..2 * E]);
    assert_eq!(out[..E], out[2 * E..]);

    cache.reset().unwrap();
    assert_eq!(cache.lengths().unwrap(), vec![0, 0, 0]);

    // A full row is an error that changes nothing.
    for s in 0..4 {
        step(&mut cache, 10 + s);
    }
    let x = rand_vec(b * E, 99);
    let mut out = vec![7.0; b * E];
    let err = layer
        .decode_step(&mut cache, 1, &x, None, None, &mut out)
        .unwrap_err();
    assert_eq!(err.status(), Status::CAPACITY);
    assert!(out.iter().all(|&v| v == 7.0));
    assert_eq!(cache.lengths().unwrap(), vec![4, 4, 4]);
}

#[test]
fn decode_mask_lengths_and_padding() {
    let layer = random_layer(E, H, 0, 0, 23);
    let b = 2;
    let mut cache = KvCache::new(&layer, b, 6).unwrap();
    let x = rand_vec(b * 3 * E, 4);
    let lengths = [3i64, 1];
    let pad = [0u8, 1, 0, 0, 0, 0];
    let m = DecodeMask::new().new_lengths(&lengths).new_padding(&pad);
    let mut out = vec![1.0; b * 3 * E];
    layer
        .decode_step(&mut cache, 3, &x, Some(&m), None, &mut out)
        .unwrap();
    assert_eq!(cache.lengths().unwrap(), vec![3, 1]);
    assert!(
        out[(3 + 1) * E..].iter().all(|&v| v == 0.0),
        "rows past new_lengths are zero"
    );

    // Row 0's padded token 1 is invisible: same as a forward whose key 1 is
    // hidden by key padding.
    let rm = RefMask {
        causal: 1,
        padding: Some(vec![0, 1, 0]),
        ..Default::default()
    };
    let (want, _) = reference(&layer, 1, 3, 3, &x[..3 * E], &x[..3 * E], &x[..3 * E], &rm);
    assert_close("padded step", &out[..3 * E], &want);
}

#[test]
fn cross_step_with_memory_padding_and_weights() {
    let layer = random_layer(E, H, 12, 10, 24);
    let (b, lk, n) = (2, 5, 2);
    let k = rand_vec(b * lk * 12, 1);
    let v = rand_vec(b * lk * 10, 2);
    let q = rand_vec(b * n * E, 3);
    let lengths = [4i64, 5];
    let pad = [0u8, 0, 1, 0, 0, 1, 0, 0, 0, 0];
    let mut mem = Memory::new(&layer, b, 8).unwrap();
    assert_eq!(mem.len_k(), None);
    mem.set(lk, &k, &v, Some(&lengths), Some(&pad), None)
        .unwrap();
    assert_eq!(mem.len_k(), Some(lk));

    let rm = RefMask {
        key_lengths: Some(lengths.to_vec()),
        padding: Some(pad.to_vec()),
        ..Default::default()
    };
    let (want, probs) = reference(&layer, b, n, lk, &q, &k, &v, &rm);
    let mut out = vec![0.0; b * n * E];
    let mut w = vec![0.0; b * H * n * lk];
    let mut opts = Options::new().attn_weights(&mut w, WeightsMode::PerHead);
    layer
        .cross_step(&mem, n, &q, None, Some(&mut opts), &mut out)
        .unwrap();
    assert_close("cross step", &out, &want);
    assert_close("cross step weights", &w, &probs);

    // Several threads may step on one memory at once.
    std::thread::scope(|s| {
        for _ in 0..3 {
            s.spawn(|| {
                let mut o = vec![0.0; b * n * E];
                layer.cross_step(&mem, n, &q, None, None, &mut o).unwrap();
                assert_close("threaded cross step", &o, &want);
            });
        }
    });
}
