// SPDX-License-Identifier: MIT
//! The decoder attention features (rotary embeddings, ALiBi, soft-capping,
//! sinks, QK-norm, grouped-query attention, per-projection biases) against
//! a plain double-precision reference written from attn.h's definitions.
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
use common::{assert_close, rand_vec};

/// Rotary embeddings of the reference.
#[derive(Clone)]
struct RefRope {
    adjacent: bool,
    rotary_dim: usize,
    inv_freq: Vec<f64>,
    factor: f64,
}

impl RefRope {
    /// Frequencies from theta and the linear factor (attn.h).
    fn new(adjacent: bool, rotary_dim: usize, theta: f64, linear: f64, factor: f64) -> RefRope {
        let inv_freq = (0..rotary_dim / 2)
            .map(|k| theta.powf(-2.0 * k as f64 / rotary_dim as f64) / linear)
            .collect();
        RefRope {
            adjacent,
            rotary_dim,
            inv_freq,
            factor,
        }
    }

    /// Rotates one head vector at position p.
    fn apply(&self, x: &mut [f64], p: i64) {
        let half = self.rotary_dim / 2;
        for k in 0..half {
            let (i, j) = if self.adjacent {
                (2 * k, 2 * k + 1)
            } else {
                (k, k + half)
            };
            let a = p as f64 * self.inv_freq[k];
            let (xi, xj) = (x[i], x[j]);
            x[i] = self.factor * (xi * a.cos() - xj * a.sin());
            x[j] = self.factor * (xj * a.cos() + xi * a.sin());
        }
    }
}

/// A layer's features, as the reference sees them.
#[derive(Clone)]
struct Spec {
    e: usize,
    h: usize,
    kvh: usize,
    rope: Option<RefRope>,
    /// 0 none, 1 per head, 2 whole.
    qk_norm: u8,
    eps: f64,
    unit_offset: bool,
    /// 0 none, 1 causal, 2 symmetric.
    alibi: u8,
    slopes: Vec<f64>,
    softcap: f64,
    sinks: bool,
}

impl Spec {
    fn new(e: usize, h: usize, kvh: usize) -> Spec {
        Spec {
            e,
            h,
            kvh,
            rope: None,
            qk_norm: 0,
            eps: 1e-6,
            unit_offset: false,
            alibi: 0,
            slopes: Vec::new(),
            softcap: 0.0,
            sinks: false,
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

/// The layer's weights in f64, as set into it.
struct Weights {
    q: Vec<f64>,
    k: Vec<f64>,
    v: Vec<f64>,
    o: Vec<f64>,
    bq: Vec<f64>,
    bk: Vec<f64>,
    bv: Vec<f64>,
    bo: Vec<f64>,
    qn: Vec<f64>,
    kn: Vec<f64>,
    sinks: Vec<f64>,
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

fn random_weights(layer: &mut Layer, s: &Spec, seed: u64) -> Weights {
    let (e, kv, hd) = (s.e, s.kv(), s.hd());
    let (qn, kn) = if s.qk_norm == 2 { (e, kv) } else { (hd, hd) };
    // Norm weights around 1 (around 0 with the unit offset), sink logits
    // around 1: values a model could have, far from the defaults.
    let norm_shift = if s.unit_offset { 0.0 } else { 1.0 };
    Weights {
        q: set(layer, Weight::Q, e * e, seed, 0.0),
        k: set(layer, Weight::K, kv * e, seed + 1, 0.0),
        v: set(layer, Weight::V, kv * e, seed + 2, 0.0),
        o: set(layer, Weight::Out, e * e, seed + 3, 0.0),
        bq: set(layer, Weight::QBias, e, seed + 4, 0.0),
        bk: set(layer, Weight::KBias, kv, seed + 5, 0.0),
        bv: set(layer, Weight::VBias, kv, seed + 6, 0.0),
        bo: set(layer, Weight::OutBias, e, seed + 7, 0.0),
        qn: set(layer, Weight::QNorm, qn, seed + 8, norm_shift),
        kn: set(layer, Weight::KNorm, kn, seed + 9, norm_shift),
        sinks: set(layer, Weight::Sinks, s.h, seed + 10, 1.0),
    }
}

/// y = x W^T + b for one token.
fn linear(x: &[f64], w: &[f64], b: &[f64]) -> Vec<f64> {
    let n_in = x.len();
    (0..b.len())
        .map(|o| b[o] + (0..n_in).map(|i| x[i] * w[o * n_in + i]).sum::<f64>())
        .collect()
}

/// RMSNorm of x in place with weights w.
fn rms(x: &mut [f64], w: &[f64], eps: f64, unit: bool) {
    let ms = x.iter().map(|v| v * v).sum::<f64>() / x.len() as f64;
    let r = 1.0 / (ms + eps).sqrt();
    for (v, &g) in x.iter_mut().zip(w) {
        *v *= r * if unit { 1.0 + g } else { g };
    }
}

/// Projected, normed and rotated q (or k) of one token: [heads * hd].
fn project(
    s: &Spec,
    x: &[f64],
    w: &[f64],
    b: &[f64],
    norm: &[f64],
    heads: usize,
    p: i64,
) -> Vec<f64> {
    let hd = s.hd();
    let mut y = linear(x, w, b);
    if s.qk_norm == 2 {
        rms(&mut y, norm, s.eps, s.unit_offset);
    }
    for h in 0..heads {
        let head = &mut y[h * hd..(h + 1) * hd];
        if s.qk_norm == 1 {
            rms(head, norm, s.eps, s.unit_offset);
        }
        if let Some(r) = &s.rope {
            r.apply(head, p);
        }
    }
    y
}

/// The layer's output [b, lq, E] for query [b, lq, E] over key = value
/// [b, lk, E], with positions qpos [b, lq] and kpos [b, lk], causal
/// (top-left, by index) or not.
#[allow(clippy::too_many_arguments)]
fn reference(
    s: &Spec,
    w: &Weights,
    b: usize,
    lq: usize,
    lk: usize,
    query: &[f32],
    kv_in: &[f32],
    qpos: &[i64],
    kpos: &[i64],
    causal: bool,
) -> Vec<f64> {
    let (e, hd, kvd) = (s.e, s.hd(), s.kv());
    let group = s.h / s.kvh;
    let scale = 1.0 / (hd as f64).sqrt();
    let mut out = Vec::with_capacity(b * lq * e);
    for row in 0..b {
        let tok = |x: &[f32], l: usize, i: usize| -> Vec<f64> {
            x[(row * l + i) * e..(row * l + i + 1) * e]
                .iter()
                .map(|&v| v as f64)
                .collect()
        };
        let ks: Vec<Vec<f64>> = (0..lk)
            .map(|j| {
                project(
                    s,
                    &tok(kv_in, lk, j),
                    &w.k,
                    &w.bk,
                    &w.kn,
                    s.kvh,
                    kpos[row * lk + j],
                )
            })
            .collect();
        let vs: Vec<Vec<f64>> = (0..lk)
            .map(|j| linear(&tok(kv_in, lk, j), &w.v, &w.bv))
            .collect();
        assert_eq!(ks[0].len(), kvd);
        for i in 0..lq {
            let pq = qpos[row * lq + i];
            let q = project(s, &tok(query, lq, i), &w.q, &w.bq, &w.qn, s.h, pq);
            let mut att = vec![0.0; e];
            for h in 0..s.h {
                let g = h / group;
                let qh = &q[h * hd..(h + 1) * hd];
                let mut scores = Vec::new();
                for j in 0..lk {
                    if causal && j > i {
                        continue;
                    }
                    let kh = &ks[j][g * hd..(g + 1) * hd];
                    let mut sc = scale * qh.iter().zip(kh).map(|(a, b)| a * b).sum::<f64>();
                    if s.softcap > 0.0 {
                        sc = s.softcap * (sc / s.softcap).tanh();
                    }
                    let pk = kpos[row * lk + j];
                    match s.alibi {
                        1 => sc += s.slopes[h] * (pk - pq) as f64,
                        2 => sc -= s.slopes[h] * (pq - pk).abs() as f64,
                        _ => {}
                    }
                    scores.push((j, sc));
                }
                let mut m = scores.iter().map(|x| x.1).fold(f64::NEG_INFINITY, f64::max);
                if s.sinks {
                    m = m.max(w.sinks[h]);
                }
                let mut den: f64 = scores.iter().map(|x| (x.1 - m).exp()).sum();
                if s.sinks {
                    den += (w.sinks[h] - m).exp();
                }
                for &(j, sc) in &scores {
                    let p = (sc - m).exp() / den;
                    for d in 0..hd {
                        att[h * hd + d] += p * vs[j][g * hd + d];
                    }
                }
            }
            out.extend(linear(&att, &w.o, &w.bo));
        }
    }
    out
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
    let want = reference(s, &w, b, l, l, &x, &x, &pos, &pos, true);
    assert_close("forward", &out, &want);
    let without = reference(plain, &w, b, l, l, &x, &x, &pos, &pos, true);
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
    s.rope = Some(RefRope::new(false, 8, 10000.0, 1.0, 1.0));
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
    s.rope = Some(RefRope::new(true, 4, 500.0, 1.0, 1.0));
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
    s.rope = Some(RefRope::new(false, 6, 1000.0, 2.5, 1.25));
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
    s.rope = Some(RefRope {
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
    s.rope = Some(RefRope::new(false, 8, 10000.0, 1.0, 1.0));
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
    let want = reference(&s, &w, b, lq, lk, &q, &kv, &qpos, &kpos, false);
    assert_close("forward with positions", &out, &want);

    // Only query positions, len_q = len_k: the keys take the same ones.
    let x = rand_vec(b * lk * E, 62);
    let mut out = vec![0.0f32; b * lk * E];
    let mut opts = Options::new().query_positions(&kpos);
    layer
        .self_forward(b, lk, &x, None, Some(&mut opts), &mut out)
        .unwrap();
    let want = reference(&s, &w, b, lk, lk, &x, &x, &kpos, &kpos, false);
    assert_close("self forward with positions", &out, &want);
}

#[test]
fn alibi_causal_standard_slopes_for_six_heads() {
    // Six heads: four from the power of two and two from the remainder.
    let (e, h) = (24, 6);
    let mut s = Spec::new(e, h, h);
    let plain = s.clone();
    s.alibi = 1;
    s.slopes = standard_slopes(h);
    let builder = Layer::builder(e).num_heads(h).alibi(Alibi::Causal);
    check_self(builder, &s, &plain, Some(&[2, 11]), 6);
}

#[test]
fn alibi_symmetric_caller_slopes_with_positions() {
    let slopes = [0.5f32, 0.25, 1.5, 0.1];
    let mut s = Spec::new(E, H, KVH);
    s.alibi = 2;
    s.slopes = slopes.iter().map(|&v| v as f64).collect();
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
    let want = reference(&s, &w, b, l, l, &x, &x, &pos, &pos, false);
    assert_close("symmetric alibi", &out, &want);
}

#[test]
fn softcap() {
    let mut s = Spec::new(E, H, KVH);
    let plain = s.clone();
    s.softcap = 0.2;
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
    s.sinks = true;
    plain.sinks = false;
    let builder = Layer::builder(E).num_heads(H).num_kv_heads(KVH).sinks(true);
    check_self(builder, &s, &plain, None, 9);
}

#[test]
fn qk_norm_per_head() {
    let mut s = Spec::new(E, H, KVH);
    let plain = s.clone();
    s.qk_norm = 1;
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
    s.qk_norm = 2;
    s.unit_offset = true;
    s.eps = 0.05;
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
    s.rope = Some(RefRope::new(false, 6, 10000.0, 1.0, 1.0));
    s.qk_norm = 1;
    s.softcap = 0.5;
    s.sinks = true;
    s.alibi = 1;
    s.slopes = standard_slopes(H);
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
