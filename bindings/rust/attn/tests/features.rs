// SPDX-License-Identifier: MIT
//! The decoder attention features (rotary embeddings, ALiBi, soft-capping,
//! sinks, QK-norm, grouped-query attention, per-projection biases) against
//! the double-precision reference of tests/common, written from attn.h's
//! definitions.
//!
//! Tolerance: common::ATOL + RTOL (1e-5 absolute + 1e-4 relative), as the
//! other parity tests. The library works in f32 (unit roundoff 6e-8) over
//! sums of at most 32 terms of values below 1 in magnitude, a softmax and
//! two projections, which stays near 1e-6; rotation angles are at most a
//! few dozen radians, so an f32 frequency table (relative error 6e-8)
//! moves them by well under 1e-5. A feature ignored, misapplied or given
//! the wrong weight changes outputs by orders of magnitude more (each test
//! also checks that the feature changes the output).

mod common;

use attn::{Alibi, BiasParts, Causal, Layer, Mask, Options, QkNorm, Rope, RopePairing, Weight};
use common::{assert_close, rand_vec, reference, RefFeatures, RefLayer, RefMask, RefRope};

/// A layer's sizes and features, as the reference sees them.
#[derive(Clone)]
struct Spec {
    e: usize,
    h: usize,
    kvh: usize,
    features: RefFeatures,
}

impl Spec {
    fn new(e: usize, h: usize, kvh: usize) -> Spec {
        Spec {
            e,
            h,
            kvh,
            features: RefFeatures::default(),
        }
    }
    fn hd(&self) -> usize {
        self.e / self.h
    }
    fn kv(&self) -> usize {
        self.kvh * self.hd()
    }
}

/// The standard ALiBi slopes of attn.h for h heads.
fn standard_slopes(h: usize) -> Vec<f64> {
    let mut n = 1;
    while n * 2 <= h {
        n *= 2;
    }
    (0..h)
        .map(|i| {
            if i < n {
                2f64.powf(-8.0 * (i + 1) as f64 / n as f64)
            } else {
                2f64.powf(-4.0 * (2 * (i - n) + 1) as f64 / n as f64)
            }
        })
        .collect()
}

/// Sets seeded random values into weight `w` (when the layer has it) and
/// returns them in f64; zeros of length `n` when it has not.
fn set(layer: &mut Layer, w: Weight, n: usize, seed: u64, shift: f32) -> Vec<f64> {
    match layer.weight_count(w) {
        Ok(count) => {
            assert_eq!(count, n, "{:?} count", w);
            let v: Vec<f32> = rand_vec(n, seed).iter().map(|x| x * 0.5 + shift).collect();
            layer.set_weight(w, &v).unwrap();
            v.iter().map(|&x| x as f64).collect()
        }
        Err(_) => vec![0.0; n],
    }
}

/// Sets seeded random values into every weight the layer has and returns
/// the layer as the reference sees it: those values, the scale attn.h
/// defines and the spec's features.
fn random_weights(layer: &mut Layer, s: &Spec, seed: u64) -> RefLayer {
    let (e, kv, hd) = (s.e, s.kv(), s.hd());
    let (qn, kn) = if s.features.qk_norm == 2 {
        (e, kv)
    } else {
        (hd, hd)
    };
    // Norm weights around 1 (around 0 with the unit offset), sink logits
    // around 1: values a model could have, far from the defaults.
    let norm_shift = if s.features.unit_offset { 0.0 } else { 1.0 };
    RefLayer {
        embed_dim: e,
        num_heads: s.h,
        num_kv_heads: s.kvh,
        kdim: e,
        vdim: e,
        scale: 1.0 / (hd as f64).sqrt(),
        q: set(layer, Weight::Q, e * e, seed, 0.0),
        k: set(layer, Weight::K, kv * e, seed + 1, 0.0),
        v: set(layer, Weight::V, kv * e, seed + 2, 0.0),
        out: set(layer, Weight::Out, e * e, seed + 3, 0.0),
        q_bias: set(layer, Weight::QBias, e, seed + 4, 0.0),
        k_bias: set(layer, Weight::KBias, kv, seed + 5, 0.0),
        v_bias: set(layer, Weight::VBias, kv, seed + 6, 0.0),
        out_bias: set(layer, Weight::OutBias, e, seed + 7, 0.0),
        q_norm: set(layer, Weight::QNorm, qn, seed + 8, norm_shift),
        k_norm: set(layer, Weight::KNorm, kn, seed + 9, norm_shift),
        sinks: set(layer, Weight::Sinks, s.h, seed + 10, 1.0),
        features: s.features.clone(),
    }
}

/// The reference's output [b, lq, E] for query [b, lq, E] over key = value
/// [b, lk, E], with positions qpos [b, lq] and kpos [b, lk], causal
/// (top-left, by index) or not.
#[allow(clippy::too_many_arguments)]
fn expected(
    w: &RefLayer,
    b: usize,
    lq: usize,
    lk: usize,
    query: &[f32],
    kv_in: &[f32],
    qpos: &[i64],
    kpos: &[i64],
    causal: bool,
) -> Vec<f64> {
    let mask = RefMask {
        causal: causal as u8,
        ..RefMask::default()
    };
    w.forward(b, lq, lk, query, kv_in, kv_in, &mask, Some((qpos, kpos)))
        .0
}

/// Positions start[b] + i.
fn ranges(start: &[i64], l: usize) -> Vec<i64> {
    start
        .iter()
        .flat_map(|&s| (0..l as i64).map(move |i| s + i))
        .collect()
}

/// The largest difference between two outputs.
fn max_diff(a: &[f32], b: &[f64]) -> f64 {
    a.iter()
        .zip(b)
        .map(|(&x, &y)| (x as f64 - y).abs())
        .fold(0.0, f64::max)
}

/// Builds the layer, sets random weights, runs a causal self-attention
/// forward over seeded input with `opts`' positions and compares with the
/// reference at positions `pos`; also checks that the reference without
/// the feature (`plain`) is far from the output, so the feature is seen.
fn check_self(
    builder: attn::LayerBuilder,
    s: &Spec,
    plain: &Spec,
    start: Option<&[i64]>,
    seed: u64,
) {
    let mut layer = builder.build().unwrap();
    let w = random_weights(&mut layer, s, seed);
    let (b, l, e) = (2, 6, s.e);
    let x = rand_vec(b * l * e, seed + 50);
    let mut out = vec![0.0f32; x.len()];
    let mask = Mask::new().causal(Causal::TopLeft);
    let zeros = [0i64; 2];
    let st = start.unwrap_or(&zeros);
    let mut opts = Options::new();
    if let Some(st) = start {
        opts = opts.start_positions(st);
    }
    layer
        .self_forward(b, l, &x, Some(&mask), Some(&mut opts), &mut out)
        .unwrap();
    let pos = ranges(st, l);
    let want = expected(&w, b, l, l, &x, &x, &pos, &pos, true);
    assert_close("forward", &out, &want);
    let w_plain = RefLayer {
        features: plain.features.clone(),
        ..w
    };
    let without = expected(&w_plain, b, l, l, &x, &x, &pos, &pos, true);
    assert!(
        max_diff(&out, &without) > 1e-3,
        "the feature does not change the output"
    );
}

const E: usize = 32;
const H: usize = 4;
const KVH: usize = 2;

#[test]
fn rope_halves_full_dim_with_grouped_query_attention() {
    let mut s = Spec::new(E, H, KVH);
    let plain = s.clone();
    s.features.rope = Some(RefRope::new(false, 8, 10000.0, 1.0, 1.0));
    let builder = Layer::builder(E)
        .num_heads(H)
        .num_kv_heads(KVH)
        .rope(Rope::new());
    check_self(builder, &s, &plain, Some(&[0, 9]), 1);
}

#[test]
fn rope_adjacent_partial_dim() {
    let mut s = Spec::new(E, H, KVH);
    let plain = s.clone();
    s.features.rope = Some(RefRope::new(true, 4, 500.0, 1.0, 1.0));
    let builder = Layer::builder(E).num_heads(H).num_kv_heads(KVH).rope(
        Rope::new()
            .pairing(RopePairing::Adjacent)
            .rotary_dim(4)
            .theta(500.0),
    );
    check_self(builder, &s, &plain, Some(&[3, 17]), 2);
}

#[test]
fn rope_halves_partial_dim_with_scaling() {
    let mut s = Spec::new(E, H, H);
    let plain = s.clone();
    s.features.rope = Some(RefRope::new(false, 6, 1000.0, 2.5, 1.25));
    let builder = Layer::builder(E).num_heads(H).rope(
        Rope::new()
            .rotary_dim(6)
            .theta(1000.0)
            .linear_factor(2.5)
            .attention_factor(1.25),
    );
    check_self(builder, &s, &plain, None, 3);
}

#[test]
fn rope_frequency_table() {
    let table = [0.9f32, 0.3, 0.05, 0.0];
    let mut s = Spec::new(E, H, KVH);
    let plain = s.clone();
    s.features.rope = Some(RefRope {
        adjacent: true,
        rotary_dim: 8,
        inv_freq: table.iter().map(|&f| f as f64).collect(),
        factor: 1.0,
    });
    // rotary_dim unset and 0 both mean the whole head.
    for rotary_dim in [None, Some(0)] {
        let mut rope = Rope::new()
            .pairing(RopePairing::Adjacent)
            .theta(3.0) // ignored when a table is given
            .inv_freq(&table);
        if let Some(d) = rotary_dim {
            rope = rope.rotary_dim(d);
        }
        let builder = Layer::builder(E).num_heads(H).num_kv_heads(KVH).rope(rope);
        check_self(builder, &s, &plain, Some(&[1, 30]), 4);
    }
}

#[test]
fn rope_with_query_and_key_positions_in_cross_attention() {
    let mut s = Spec::new(E, H, KVH);
    s.features.rope = Some(RefRope::new(false, 8, 10000.0, 1.0, 1.0));
    let mut layer = Layer::builder(E)
        .num_heads(H)
        .num_kv_heads(KVH)
        .rope(Rope::new())
        .build()
        .unwrap();
    let w = random_weights(&mut layer, &s, 5);
    let (b, lq, lk) = (2, 3, 5);
    let q = rand_vec(b * lq * E, 60);
    let kv = rand_vec(b * lk * E, 61);
    // Left-padded rows and a key set that is not contiguous.
    let qpos = [0i64, 0, 1, 7, 8, 9];
    let kpos = [0i64, 0, 0, 1, 2, 40, 3, 5, 6, 2];
    let mut out = vec![0.0f32; b * lq * E];
    let mut opts = Options::new().query_positions(&qpos).key_positions(&kpos);
    layer
        .forward(b, lq, lk, &q, &kv, &kv, None, Some(&mut opts), &mut out)
        .unwrap();
    let want = expected(&w, b, lq, lk, &q, &kv, &qpos, &kpos, false);
    assert_close("forward with positions", &out, &want);

    // Only query positions, len_q = len_k: the keys take the same ones.
    let x = rand_vec(b * lk * E, 62);
    let mut out = vec![0.0f32; b * lk * E];
    let mut opts = Options::new().query_positions(&kpos);
    layer
        .self_forward(b, lk, &x, None, Some(&mut opts), &mut out)
        .unwrap();
    let want = expected(&w, b, lk, lk, &x, &x, &kpos, &kpos, false);
    assert_close("self forward with positions", &out, &want);
}

#[test]
fn alibi_causal_standard_slopes_for_six_heads() {
    // Six heads: four from the power of two and two from the remainder.
    let (e, h) = (24, 6);
    let mut s = Spec::new(e, h, h);
    let plain = s.clone();
    s.features.alibi = 1;
    s.features.slopes = standard_slopes(h);
    let builder = Layer::builder(e).num_heads(h).alibi(Alibi::Causal);
    check_self(builder, &s, &plain, Some(&[2, 11]), 6);
}

#[test]
fn alibi_symmetric_caller_slopes_with_positions() {
    let slopes = [0.5f32, 0.25, 1.5, 0.1];
    let mut s = Spec::new(E, H, KVH);
    s.features.alibi = 2;
    s.features.slopes = slopes.iter().map(|&v| v as f64).collect();
    let mut layer = Layer::builder(E)
        .num_heads(H)
        .num_kv_heads(KVH)
        .alibi(Alibi::Symmetric)
        .alibi_slopes(&slopes)
        .build()
        .unwrap();
    let w = random_weights(&mut layer, &s, 7);
    let (b, l) = (2, 5);
    let x = rand_vec(b * l * E, 70);
    let pos = [4i64, 0, 2, 9, 1, 0, 1, 2, 3, 4];
    let mut out = vec![0.0f32; x.len()];
    let mut opts = Options::new().query_positions(&pos);
    layer
        .self_forward(b, l, &x, None, Some(&mut opts), &mut out)
        .unwrap();
    let want = expected(&w, b, l, l, &x, &x, &pos, &pos, false);
    assert_close("symmetric alibi", &out, &want);
}

#[test]
fn softcap() {
    let mut s = Spec::new(E, H, KVH);
    let plain = s.clone();
    s.features.softcap = 0.2;
    let builder = Layer::builder(E)
        .num_heads(H)
        .num_kv_heads(KVH)
        .softcap(0.2);
    check_self(builder, &s, &plain, None, 8);
}

#[test]
fn sinks() {
    let mut s = Spec::new(E, H, KVH);
    let mut plain = s.clone();
    s.features.sinks = true;
    plain.features.sinks = false;
    let builder = Layer::builder(E).num_heads(H).num_kv_heads(KVH).sinks(true);
    check_self(builder, &s, &plain, None, 9);
}

#[test]
fn qk_norm_per_head() {
    let mut s = Spec::new(E, H, KVH);
    let plain = s.clone();
    s.features.qk_norm = 1;
    let builder = Layer::builder(E)
        .num_heads(H)
        .num_kv_heads(KVH)
        .qk_norm(QkNorm::Head);
    check_self(builder, &s, &plain, None, 10);
}

#[test]
fn qk_norm_whole_with_unit_offset_and_eps() {
    let mut s = Spec::new(E, H, KVH);
    let plain = s.clone();
    s.features.qk_norm = 2;
    s.features.unit_offset = true;
    s.features.eps = 0.05;
    let builder = Layer::builder(E)
        .num_heads(H)
        .num_kv_heads(KVH)
        .qk_norm(QkNorm::All)
        .qk_norm_eps(0.05)
        .qk_norm_unit_offset(true);
    check_self(builder, &s, &plain, None, 11);
}

#[test]
fn every_feature_at_once_with_qkv_biases() {
    let mut s = Spec::new(E, H, KVH);
    s.features.rope = Some(RefRope::new(false, 6, 10000.0, 1.0, 1.0));
    s.features.qk_norm = 1;
    s.features.softcap = 0.5;
    s.features.sinks = true;
    s.features.alibi = 1;
    s.features.slopes = standard_slopes(H);
    let plain = Spec::new(E, H, KVH);
    let builder = Layer::builder(E)
        .num_heads(H)
        .num_kv_heads(KVH)
        .bias_parts(BiasParts::QKV)
        .rope(Rope::new().rotary_dim(6))
        .qk_norm(QkNorm::Head)
        .softcap(0.5)
        .sinks(true)
        .alibi(Alibi::Causal);
    check_self(builder.clone(), &s, &plain, Some(&[5, 0]), 12);

    // The output projection has no bias: the weight does not exist.
    let layer = builder.build().unwrap();
    assert_eq!(
        layer.weight_count(Weight::OutBias).unwrap_err().status(),
        attn::Status::WEIGHT_LAYOUT
    );
    let c = layer.config();
    assert_eq!(c.bias_parts, BiasParts::QKV);
    assert!(c.bias && c.sinks);
    assert_eq!(c.qk_norm, QkNorm::Head);
    assert_eq!(c.alibi, Alibi::Causal);
    assert_eq!(c.softcap, 0.5);
    assert_eq!(c.num_kv_heads, KVH);
    let r = c.rope.as_ref().expect("rope");
    assert_eq!((r.pairing, r.rotary_dim), (RopePairing::Halves, 6));
}

#[test]
fn config_reads_back_defaults() {
    let layer = Layer::builder(E).num_heads(H).build().unwrap();
    let c = layer.config();
    assert_eq!(c.bias_parts, BiasParts::ALL);
    assert_eq!(c.qk_norm, QkNorm::None);
    assert_eq!(c.alibi, Alibi::None);
    assert_eq!(c.rope, None);
    assert!(!c.sinks);
    assert_eq!(c.num_kv_heads, H);
    let layer = Layer::builder(E)
        .num_heads(H)
        .rope(Rope::new().pairing(RopePairing::Adjacent))
        .build()
        .unwrap();
    let r = layer.config().rope.as_ref().expect("rope");
    assert_eq!((r.pairing, r.rotary_dim), (RopePairing::Adjacent, E / H));
    assert_eq!(
        (r.theta, r.linear_factor, r.attention_factor),
        (10000.0, 1.0, 1.0)
    );
    assert_eq!(r.inv_freq, None);
}

/// Every setting of a `Rope` comes back in the layer's config, the
/// frequency table included (copied from the layer's own).
#[test]
fn config_reads_back_every_rope_setting() {
    let table = [0.5f32, 0.125];
    let layer = Layer::builder(E)
        .num_heads(H)
        .rope(
            Rope::new()
                .rotary_dim(4)
                .theta(500.0)
                .linear_factor(2.0)
                .attention_factor(1.25)
                .inv_freq(&table),
        )
        .build()
        .unwrap();
    let r = layer.config().rope.clone().expect("rope");
    assert_eq!((r.pairing, r.rotary_dim), (RopePairing::Halves, 4));
    assert_eq!(
        (r.theta, r.linear_factor, r.attention_factor),
        (500.0, 2.0, 1.25)
    );
    assert_eq!(r.inv_freq.as_deref(), Some(&table[..]));
    // The copy outlives the layer.
    drop(layer);
    assert_eq!(r.inv_freq, Some(table.to_vec()));
}

/// An explicit `bias_parts` wins over `bias` whichever is called first,
/// `BiasParts::NONE` included (the library reads no parts as "as bias
/// says", which the builder must not let `bias(true)` turn into all four).
#[test]
fn bias_parts_override_bias_in_either_order() {
    let b = || Layer::builder(E).num_heads(H);
    let cases = [
        (b().bias_parts(BiasParts::NONE).bias(true), BiasParts::NONE),
        (b().bias(true).bias_parts(BiasParts::NONE), BiasParts::NONE),
        (b().bias_parts(BiasParts::QKV).bias(false), BiasParts::QKV),
        (b().bias(false).bias_parts(BiasParts::QKV), BiasParts::QKV),
        (
            b().bias_parts(BiasParts::NONE.with_o(true)).bias(true),
            BiasParts::NONE.with_o(true),
        ),
    ];
    for (builder, parts) in cases {
        let layer = builder.build().unwrap();
        let c = layer.config();
        assert_eq!(c.bias_parts, parts, "{:?}", builder);
        assert_eq!(c.bias, parts != BiasParts::NONE);
        assert_eq!(layer.weight_count(Weight::QBias).is_ok(), parts.q);
        assert_eq!(layer.weight_count(Weight::OutBias).is_ok(), parts.o);
    }
    // Without bias_parts, bias decides for all four.
    let c = b().bias(false).build().unwrap().config().clone();
    assert_eq!((c.bias, c.bias_parts), (false, BiasParts::NONE));
}

/// Every set of bias parts against the reference, which reads the layer's
/// own biases and takes zeros for a projection without one.
#[test]
fn every_set_of_bias_parts_against_the_reference() {
    let (b, lq, lk) = (2, 3, 4);
    let q = rand_vec(b * lq * E, 80);
    let kv = rand_vec(b * lk * E, 81);
    let biases = [Weight::QBias, Weight::KBias, Weight::VBias, Weight::OutBias];
    for bits in 0..16u64 {
        let on = |i: u64| bits & (1 << i) != 0;
        let parts = BiasParts::NONE
            .with_q(on(0))
            .with_k(on(1))
            .with_v(on(2))
            .with_o(on(3));
        let mut layer = Layer::builder(E)
            .num_heads(H)
            .num_kv_heads(KVH)
            .bias_parts(parts)
            .build()
            .unwrap();
        layer.init_weights(bits).unwrap();
        // Nonzero biases (init_weights leaves them at zero), so that each
        // one the layer has moves the output.
        for (i, &w) in biases.iter().enumerate() {
            assert_eq!(layer.weight_count(w).is_ok(), on(i as u64), "{:?}", w);
            if let Ok(n) = layer.weight_count(w) {
                let v = rand_vec(n, 200 + 4 * bits + i as u64);
                layer.set_weight(w, &v).unwrap();
            }
        }
        let mut out = vec![0.0f32; b * lq * E];
        layer
            .forward(b, lq, lk, &q, &kv, &kv, None, None, &mut out)
            .unwrap();
        let (want, _) = reference(&layer, b, lq, lk, &q, &kv, &kv, &RefMask::default());
        assert_close(&format!("bias parts {:?}", parts), &out, &want);
    }
}
