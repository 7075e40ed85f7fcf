// SPDX-License-Identifier: MIT
//! Masks, attention weights, scratch reuse and runtimes against the
//! double-precision reference of tests/common (the header's semantics
//! written out plainly).

mod common;

use attn::{BiasShape, BlasPolicy, Causal, EmptyRows, Mask, Options, Scratch, WeightsMode};
use common::{assert_close, average_heads, rand_vec, random_layer, reference, RefMask};
use std::rc::Rc;

const E: usize = 16;
const H: usize = 4;

/// Runs a cross-attention forward with `mask` and per-head and averaged
/// weights, and compares everything with the reference under `rmask`.
fn check(what: &str, b: usize, lq: usize, lk: usize, mask: &Mask<'_>, rmask: &RefMask) {
    let layer = random_layer(E, H, 12, 10, 7);
    let q = rand_vec(b * lq * E, 1);
    let k = rand_vec(b * lk * 12, 2);
    let v = rand_vec(b * lk * 10, 3);
    let (want, probs) = reference(&layer, b, lq, lk, &q, &k, &v, rmask);

    let mut out = vec![0.0; b * lq * E];
    let mut w = vec![0.0; b * H * lq * lk];
    let mut opts = Options::new().attn_weights(&mut w, WeightsMode::PerHead);
    layer
        .forward(b, lq, lk, &q, &k, &v, Some(mask), Some(&mut opts), &mut out)
        .unwrap();
    assert_close(&format!("{} out", what), &out, &want);
    assert_close(&format!("{} per-head weights", what), &w, &probs);

    let mut avg = vec![0.0; b * lq * lk];
    let mut opts = Options::new().attn_weights(&mut avg, WeightsMode::Average);
    layer
        .forward(b, lq, lk, &q, &k, &v, Some(mask), Some(&mut opts), &mut out)
        .unwrap();
    assert_close(
        &format!("{} averaged weights", what),
        &avg,
        &average_heads(&probs, b, H, lq, lk),
    );
}

#[test]
fn no_mask() {
    check("none", 2, 3, 5, &Mask::new(), &RefMask::default());
}

#[test]
fn causal_modes() {
    for (mode, code) in [(Causal::TopLeft, 1), (Causal::BottomRight, 2)] {
        let rm = RefMask {
            causal: code,
            ..Default::default()
        };
        check(
            &format!("{:?}", mode),
            2,
            3,
            5,
            &Mask::new().causal(mode),
            &rm,
        );
    }
}

#[test]
fn key_lengths_and_padding() {
    let lengths = [5i64, 2];
    let pad: Vec<u8> = vec![0, 1, 0, 0, 1, /* row 1 */ 0, 0, 1, 1, 1];
    let rm = RefMask {
        key_lengths: Some(lengths.to_vec()),
        padding: Some(pad.clone()),
        causal: 2,
        ..Default::default()
    };
    let m = Mask::new()
        .key_lengths(&lengths)
        .key_padding(&pad)
        .causal(Causal::BottomRight);
    check("lengths+padding+causal", 2, 3, 5, &m, &rm);
}

#[test]
fn bias_broadcasts() {
    let (b, lq, lk) = (2, 3, 5);
    let shared = rand_vec(lq * lk, 11);
    let s2 = shared.clone();
    let rm = RefMask {
        bias: Some(Rc::new(move |_, _, i, j| s2[i * lk + j] as f64)),
        ..Default::default()
    };
    check(
        "bias [Lq,Lk]",
        b,
        lq,
        lk,
        &Mask::new().bias(&shared, BiasShape::Shared),
        &rm,
    );

    let per_batch = rand_vec(b * lq * lk, 12);
    let p2 = per_batch.clone();
    let rm = RefMask {
        bias: Some(Rc::new(move |bb, _, i, j| {
            p2[(bb * lq + i) * lk + j] as f64
        })),
        ..Default::default()
    };
    check(
        "bias [B,Lq,Lk]",
        b,
        lq,
        lk,
        &Mask::new().bias(&per_batch, BiasShape::PerBatch),
        &rm,
    );

    let mut per_head = rand_vec(b * H * lq * lk, 13);
    per_head[7] = f32::NEG_INFINITY; // -inf hides a key
    let p3 = per_head.clone();
    let rm = RefMask {
        bias: Some(Rc::new(move |bb, h, i, j| {
            p3[((bb * H + h) * lq + i) * lk + j] as f64
        })),
        ..Default::default()
    };
    check(
        "bias [B,H,Lq,Lk]",
        b,
        lq,
        lk,
        &Mask::new().bias(&per_head, BiasShape::PerHead),
        &rm,
    );

    // Strided: one [H, Lq, Lk] block shared by the batch rows.
    let heads = rand_vec(H * lq * lk, 14);
    let p4 = heads.clone();
    let rm = RefMask {
        bias: Some(Rc::new(move |_, h, i, j| p4[(h * lq + i) * lk + j] as f64)),
        ..Default::default()
    };
    let shape = BiasShape::strided(0, lq * lk, lk);
    check(
        "bias strided",
        b,
        lq,
        lk,
        &Mask::new().bias(&heads, shape),
        &rm,
    );
}

#[test]
fn sliding_window() {
    let rm = RefMask {
        causal: 1,
        window: 2,
        ..Default::default()
    };
    check(
        "window",
        1,
        5,
        5,
        &Mask::new().causal(Causal::TopLeft).window(2),
        &rm,
    );
}

#[test]
fn empty_rows_zero_or_nan() {
    let layer = random_layer(E, H, 0, 0, 3);
    let x = rand_vec(2 * 3 * E, 5);
    let lengths = [0i64, 3]; // row 0 sees no key at all
    let mut out = vec![0.0; x.len()];
    let m = Mask::new().key_lengths(&lengths);
    layer
        .self_forward(2, 3, &x, Some(&m), None, &mut out)
        .unwrap();
    let bias_out = layer.weight(attn::Weight::OutBias).unwrap();
    for i in 0..3 {
        assert_eq!(
            &out[i * E..(i + 1) * E],
            &bias_out[..],
            "empty row {} is out_proj.bias",
            i
        );
    }
    let m = m.empty_rows(EmptyRows::Nan);
    layer
        .self_forward(2, 3, &x, Some(&m), None, &mut out)
        .unwrap();
    assert!(out[..3 * E].iter().all(|v| v.is_nan()));
    assert!(out[3 * E..].iter().all(|v| v.is_finite()));
}

#[test]
fn scratch_is_sized_once_and_reused() {
    let layer = random_layer(E, H, 0, 0, 9);
    let x = rand_vec(2 * 6 * E, 1);
    let mut plain = vec![0.0; x.len()];
    layer
        .self_forward(2, 6, &x, None, None, &mut plain)
        .unwrap();

    let need = layer
        .forward_scratch_size(2, 6, 6, Some(&mut Options::new().threads(1)))
        .unwrap();
    let mut scratch = Scratch::new();
    let mut out = vec![0.0; x.len()];
    for _ in 0..3 {
        let mut opts = Options::new().threads(1).scratch(&mut scratch);
        layer
            .self_forward(2, 6, &x, None, Some(&mut opts), &mut out)
            .unwrap();
        assert_eq!(
            out, plain,
            "results do not depend on the scratch or threads"
        );
    }
    assert_eq!(
        scratch.len(),
        need,
        "grown exactly to what the library asked for"
    );
    // Smaller calls keep using it without growing it.
    let mut small = vec![0.0; 2 * 2 * E];
    let mut opts = Options::new().threads(1).scratch(&mut scratch);
    layer
        .self_forward(2, 2, &x[..2 * 2 * E], None, Some(&mut opts), &mut small)
        .unwrap();
    assert_eq!(scratch.len(), need);
}

#[test]
fn runtimes_and_thread_counts_agree_bit_for_bit() {
    let layer = random_layer(E, H, 0, 0, 4);
    let x = rand_vec(3 * 40 * E, 2);
    let mut base = vec![0.0; x.len()];
    layer
        .self_forward(
            3,
            40,
            &x,
            None,
            Some(&mut Options::new().threads(1)),
            &mut base,
        )
        .unwrap();
    // The header promises the same bits for every thread count; across
    // BLAS policies the projections are cut differently, so only closeness.
    for (threads, policy) in [
        (1, BlasPolicy::Hold),
        (2, BlasPolicy::Hold),
        (3, BlasPolicy::Hold),
        (2, BlasPolicy::Leave),
    ] {
        let rt = attn::Runtime::new(threads, policy).unwrap();
        assert_eq!(rt.threads(), threads);
        let mut out = vec![0.0; x.len()];
        let mut opts = Options::new().runtime(&rt);
        layer
            .self_forward(3, 40, &x, None, Some(&mut opts), &mut out)
            .unwrap();
        if policy == BlasPolicy::Hold {
            assert_eq!(out, base, "runtime with {} threads", threads);
        } else {
            let want: Vec<f64> = base.iter().map(|&v| v as f64).collect();
            assert_close("BlasPolicy::Leave", &out, &want);
        }
    }
    assert!(attn::cpu_count() >= 1);
    assert!(attn::default_runtime_threads().unwrap() >= 1);
}
