// SPDX-License-Identifier: MIT
//! The caller's choice of attention core (`Options::core`): each core the
//! CPU can run against the double-precision reference of tests/common, the
//! same bits on 1 and 2 threads; the packed core where it cannot run is
//! refused with `Status::UNSUPPORTED` and nothing written.

mod common;

use attn::{Causal, Core, Mask, Options, Runtime, Status, WeightsMode};
use common::{assert_close, rand_vec, random_layer, reference, RefMask};

const E: usize = 16;
const H: usize = 4;

fn run(
    core: Core,
    threads: usize,
    b: usize,
    lq: usize,
    lk: usize,
    causal: bool,
) -> attn::Result<(Vec<f32>, Vec<f32>)> {
    let layer = random_layer(E, H, 12, 10, 11);
    let q = rand_vec(b * lq * E, 1);
    let k = rand_vec(b * lk * 12, 2);
    let v = rand_vec(b * lk * 10, 3);
    let mask = Mask::new().causal(if causal {
        Causal::BottomRight
    } else {
        Causal::None
    });
    let rt = Runtime::new(2, attn::BlasPolicy::Hold)?;
    let mut out = vec![7.0; b * lq * E];
    let mut w = vec![7.0; b * H * lq * lk];
    let mut opts = Options::new()
        .attn_weights(&mut w, WeightsMode::PerHead)
        .threads(threads)
        .runtime(&rt)
        .core(core);
    let result = layer.forward(
        b,
        lq,
        lk,
        &q,
        &k,
        &v,
        Some(&mask),
        Some(&mut opts),
        &mut out,
    );
    if let Err(e) = result {
        assert!(
            out.iter().all(|&x| x == 7.0),
            "output changed by a failed call"
        );
        assert!(
            w.iter().all(|&x| x == 7.0),
            "weights changed by a failed call"
        );
        return Err(e);
    }
    let rm = RefMask {
        causal: if causal { 2 } else { 0 },
        ..Default::default()
    };
    let (want, probs) = reference(&layer, b, lq, lk, &q, &k, &v, &rm);
    let what = format!("{:?} b={} lq={} lk={} threads={}", core, b, lq, lk, threads);
    assert_close(&what, &out, &want);
    assert_close(&what, &w, &probs);
    Ok((out, w))
}

#[test]
fn auto_and_blas_are_always_available() {
    assert!(Core::Auto.available());
    assert!(Core::Blas.available());
    assert_eq!(Core::default(), Core::Auto);
}

#[test]
fn each_core_matches_the_reference_on_any_thread_count() {
    for core in [Core::Auto, Core::Blas, Core::Packed] {
        for (b, lq, lk, causal) in [(2, 3, 5, false), (2, 20, 33, true), (1, 9, 40, false)] {
            if !core.available() {
                let err = run(core, 1, b, lq, lk, causal).unwrap_err();
                assert_eq!(err.status(), Status::UNSUPPORTED, "{}", err);
                assert!(err.message().contains("ATTN_CORE_PACKED"), "{}", err);
                continue;
            }
            let one = run(core, 1, b, lq, lk, causal).unwrap();
            let two = run(core, 2, b, lq, lk, causal).unwrap();
            assert_eq!(one, two, "{:?}: 1 and 2 threads differ", core);
        }
    }
}
