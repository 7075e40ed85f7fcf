// SPDX-License-Identifier: MIT
//! The torch fixture of tests/data (weights in torch_mha.safetensors;
//! inputs, masks and torch's outputs and attention weights in
//! torch_mha_expected.txt, the numbers the C, Python and Go tests check)
//! through every path of the Rust API: key padding through
//! `Mask::key_padding` (or the memory's padding), torch's triu attn_mask
//! through `Causal::TopLeft`, weights through `Options::attn_weights`.

mod common;

use attn::{
    BlasPolicy, Causal, Layer, Mask, Memory, Naming, Options, Runtime, Scratch, Weight, WeightsMode,
};
use common::{assert_close, data_dir, torch_cases, TorchCase};

fn load(t: &TorchCase) -> Layer {
    let mut layer = Layer::builder(t.embed_dim)
        .num_heads(t.num_heads)
        .kdim(t.kdim)
        .vdim(t.vdim)
        .bias(t.bias)
        .build()
        .unwrap();
    layer
        .load_safetensors(data_dir().join("torch_mha.safetensors"), &t.prefix)
        .unwrap_or_else(|e| panic!("{}: {}", t.name, e));
    layer
}

fn forward(layer: &Layer, t: &TorchCase, opts: Option<&mut Options<'_>>) -> Vec<f32> {
    let mut out = vec![f32::NAN; t.out.len()];
    layer
        .forward(
            t.batch,
            t.len_q,
            t.len_k,
            &t.query,
            &t.key,
            &t.value,
            t.mask().as_ref(),
            opts,
            &mut out,
        )
        .unwrap_or_else(|e| panic!("{}: {}", t.name, e));
    out
}

#[test]
fn forward_matches_torch() {
    for t in torch_cases() {
        let layer = load(&t);
        assert_close(&t.name, &forward(&layer, &t, None), &t.out);
    }
}

#[test]
fn attention_weights_match_torch() {
    for t in torch_cases() {
        let layer = load(&t);
        let mut w = vec![f32::NAN; t.weights_per_head.len()];
        let mut opts = Options::new().attn_weights(&mut w, WeightsMode::PerHead);
        let out = forward(&layer, &t, Some(&mut opts));
        assert_close(&t.name, &out, &t.out);
        assert_close(
            &format!("{} weights per head", t.name),
            &w,
            &t.weights_per_head,
        );
        let mut w = vec![f32::NAN; t.weights_average.len()];
        let mut opts = Options::new().attn_weights(&mut w, WeightsMode::Average);
        let out = forward(&layer, &t, Some(&mut opts));
        assert_close(&t.name, &out, &t.out);
        assert_close(
            &format!("{} averaged weights", t.name),
            &w,
            &t.weights_average,
        );
    }
}

#[test]
fn the_fixture_covers_padding_causal_and_other_widths() {
    let cases = torch_cases();
    let count = |f: &dyn Fn(&TorchCase) -> bool| cases.iter().filter(|t| f(t)).count();
    assert!(count(&|t| t.is_self) >= 2);
    assert!(count(&|t| !t.is_self) >= 2);
    assert!(count(&|t| t.kdim != t.embed_dim || t.vdim != t.embed_dim) >= 2);
    assert!(count(&|t| t.key_padding.is_some()) >= 2);
    assert!(count(&|t| t.causal) >= 2);
    assert!(count(&|t| t.causal && t.len_q != t.len_k) >= 1);
}

#[test]
fn self_forward_matches_torch() {
    for t in torch_cases().into_iter().filter(|t| t.is_self) {
        let layer = load(&t);
        let mut out = vec![0.0; t.out.len()];
        layer
            .self_forward(
                t.batch,
                t.len_q,
                &t.query,
                t.mask().as_ref(),
                None,
                &mut out,
            )
            .unwrap();
        assert_close(&t.name, &out, &t.out);
    }
}

#[test]
fn loading_from_bytes_gives_the_same_layer() {
    let bytes = std::fs::read(data_dir().join("torch_mha.safetensors")).unwrap();
    for t in torch_cases() {
        let mut layer = Layer::builder(t.embed_dim)
            .num_heads(t.num_heads)
            .kdim(t.kdim)
            .vdim(t.vdim)
            .bias(t.bias)
            .build()
            .unwrap();
        layer.load_safetensors_bytes(&bytes, &t.prefix).unwrap();
        assert_close(&t.name, &forward(&layer, &t, None), &t.out);
    }
}

#[test]
fn weights_copied_through_set_weight_match_torch() {
    for t in torch_cases() {
        let src = load(&t);
        let mut dst = Layer::builder(t.embed_dim)
            .num_heads(t.num_heads)
            .kdim(t.kdim)
            .vdim(t.vdim)
            .bias(t.bias)
            .build()
            .unwrap();
        // torch's layout: the packed matrix when kdim = vdim = E, else q/k/v.
        let mut names = if t.kdim == t.embed_dim && t.vdim == t.embed_dim {
            vec![Weight::InProj]
        } else {
            vec![Weight::Q, Weight::K, Weight::V]
        };
        names.push(Weight::Out);
        if t.bias {
            names.extend([Weight::InProjBias, Weight::OutBias]);
        }
        for w in names {
            dst.set_weight(w, &src.weight(w).unwrap()).unwrap();
        }
        assert_close(&t.name, &forward(&dst, &t, None), &t.out);
    }
}

#[test]
fn every_option_path_matches_torch() {
    let rt = Runtime::new(2, BlasPolicy::Leave).unwrap();
    assert_eq!(rt.threads(), 2);
    let mut scratch = Scratch::new();
    for t in torch_cases() {
        let layer = load(&t);
        for threads in [1, 2] {
            let mut opts = Options::new()
                .threads(threads)
                .runtime(&rt)
                .scratch(&mut scratch);
            let out = forward(&layer, &t, Some(&mut opts));
            assert_close(&format!("{} threads={}", t.name, threads), &out, &t.out);
        }
    }
    assert!(!scratch.is_empty(), "the scratch was never used");
}

/// The memory holds the key padding; the causal mode goes with the step.
#[test]
fn cross_step_over_a_memory_matches_torch() {
    for t in torch_cases() {
        let layer = load(&t);
        let mut mem = Memory::new(&layer, t.batch, t.len_k + 2).unwrap();
        mem.set(
            t.len_k,
            &t.key,
            &t.value,
            None,
            t.key_padding.as_deref(),
            None,
        )
        .unwrap();
        let causal = if t.causal {
            Causal::TopLeft
        } else {
            Causal::None
        };
        let mask = Mask::new().causal(causal);
        let mut out = vec![0.0; t.out.len()];
        let mut w = vec![f32::NAN; t.weights_per_head.len()];
        let mut opts = Options::new().attn_weights(&mut w, WeightsMode::PerHead);
        layer
            .cross_step(
                &mem,
                t.len_q,
                &t.query,
                Some(&mask),
                Some(&mut opts),
                &mut out,
            )
            .unwrap();
        assert_close(&t.name, &out, &t.out);
        assert_close(&format!("{} weights", t.name), &w, &t.weights_per_head);
    }
}

#[test]
fn saved_and_reloaded_weights_still_match_torch() {
    let dir = std::env::temp_dir().join(format!("attn-rust-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    for t in torch_cases() {
        let layer = load(&t);
        for (i, naming) in [Naming::Torch, Naming::HuggingFace, Naming::HuggingFaceOProj]
            .iter()
            .enumerate()
        {
            let path = dir.join(format!("{}-{}.safetensors", t.name, i));
            layer.save_safetensors(&path, "m.", *naming).unwrap();
            let mut back = Layer::builder(t.embed_dim)
                .num_heads(t.num_heads)
                .kdim(t.kdim)
                .vdim(t.vdim)
                .bias(t.bias)
                .build()
                .unwrap();
            back.load_safetensors(&path, "m.").unwrap();
            for w in [Weight::Q, Weight::K, Weight::V, Weight::Out] {
                assert_eq!(
                    back.weight(w).unwrap(),
                    layer.weight(w).unwrap(),
                    "{} {:?}",
                    t.name,
                    w
                );
            }
            assert_close(&t.name, &forward(&back, &t, None), &t.out);
        }
    }
    std::fs::remove_dir_all(&dir).unwrap();
}
