// SPDX-License-Identifier: MIT
//! A layer is Send + Sync and serves concurrent forward calls.

mod common;

use attn::{Layer, Options, Runtime};
use common::{rand_vec, random_layer};

fn assert_send_sync<T: Send + Sync>() {}

#[test]
fn handles_are_send_and_sync() {
    assert_send_sync::<Layer>();
    assert_send_sync::<Runtime>();
    assert_send_sync::<attn::KvCache<'static>>();
    assert_send_sync::<attn::Memory<'static>>();
    assert_send_sync::<attn::Error>();
    // Settings and per-call options move between threads too.
    assert_send_sync::<attn::LayerBuilder>();
    assert_send_sync::<attn::Rope>();
    assert_send_sync::<Options<'static>>();
}

#[test]
fn concurrent_forwards_on_one_layer_agree() {
    let layer = random_layer(32, 4, 0, 0, 5);
    let x = rand_vec(2 * 24 * 32, 6);
    let mut want = vec![0.0; x.len()];
    layer
        .self_forward(2, 24, &x, None, None, &mut want)
        .unwrap();
    let rt = Runtime::new(2, attn::BlasPolicy::Hold).unwrap();
    std::thread::scope(|s| {
        for t in 0..4 {
            let (layer, x, want, rt) = (&layer, &x, &want, &rt);
            s.spawn(move || {
                let mut out = vec![0.0; x.len()];
                for _ in 0..20 {
                    let mut opts = Options::new();
                    if t % 2 == 1 {
                        opts = opts.runtime(rt);
                    }
                    layer
                        .self_forward(2, 24, x, None, Some(&mut opts), &mut out)
                        .unwrap();
                    assert_eq!(&out, want);
                }
            });
        }
    });
}

#[test]
fn a_layer_moves_to_another_thread() {
    let layer = random_layer(8, 2, 0, 0, 6);
    let x = rand_vec(3 * 8, 1);
    let out = std::thread::spawn(move || {
        let mut out = vec![0.0; x.len()];
        layer
            .self_forward(1, 3, &x, None, None, &mut out)
            .map(|_| out)
    })
    .join()
    .unwrap()
    .unwrap();
    assert!(out.iter().all(|v| v.is_finite()));
}
