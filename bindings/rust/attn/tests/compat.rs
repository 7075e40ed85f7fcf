// SPDX-License-Identifier: MIT
//! What a program using this crate writes so that it keeps compiling when
//! libattn grows: wildcard arms on the enums, parts built from constants,
//! configs read by field. Built with `-D warnings` in CI, so an enum that
//! lost `#[non_exhaustive]` would fail here: its wildcard arm would be an
//! unreachable pattern.

use attn::{
    Alibi, BiasParts, BiasShape, BlasPolicy, Causal, Core, EmptyRows, Layer, LayerConfig, Naming,
    QkNorm, Rope, RopeConfig, RopePairing, Weight, WeightsMode,
};

fn weight_name(w: Weight) -> &'static str {
    match w {
        Weight::InProj => "in_proj_weight",
        Weight::InProjBias => "in_proj_bias",
        Weight::Q => "q_proj_weight",
        Weight::K => "k_proj_weight",
        Weight::V => "v_proj_weight",
        Weight::Out => "out_proj.weight",
        Weight::OutBias => "out_proj.bias",
        Weight::QBias => "q bias",
        Weight::KBias => "k bias",
        Weight::VBias => "v bias",
        Weight::QNorm => "q_norm.weight",
        Weight::KNorm => "k_norm.weight",
        Weight::Sinks => "sinks",
        _ => "a newer weight",
    }
}

#[test]
fn enums_are_matched_with_a_wildcard_arm() {
    assert_eq!(weight_name(Weight::Sinks), "sinks");
    let naming = match Naming::HuggingFace {
        Naming::Torch => "torch",
        Naming::HuggingFace => "out_proj",
        Naming::HuggingFaceOProj => "o_proj",
        _ => "newer",
    };
    let pairing = match RopePairing::default() {
        RopePairing::Halves => 0,
        RopePairing::Adjacent => 1,
        RopePairing::Unknown(v) => v.raw(),
        _ => -1,
    };
    let norm = match QkNorm::All {
        QkNorm::None | QkNorm::Head => 0,
        QkNorm::All => 2,
        QkNorm::Unknown(v) => v.raw(),
        _ => -1,
    };
    let alibi = match Alibi::Symmetric {
        Alibi::None | Alibi::Causal => 0,
        Alibi::Symmetric => 2,
        Alibi::Unknown(v) => v.raw(),
        _ => -1,
    };
    let causal = match Causal::BottomRight {
        Causal::None | Causal::TopLeft => false,
        Causal::BottomRight => true,
        _ => false,
    };
    let empty = match EmptyRows::Nan {
        EmptyRows::Zero => false,
        EmptyRows::Nan => true,
        _ => false,
    };
    let shape = BiasShape::strided(0, 0, 3);
    let query_stride = match shape {
        BiasShape::Shared | BiasShape::PerBatch | BiasShape::PerHead => 0,
        BiasShape::Strided { query, .. } => query,
        _ => 0,
    };
    let per_head = match WeightsMode::PerHead {
        WeightsMode::PerHead => true,
        WeightsMode::Average => false,
        _ => false,
    };
    let core = match Core::default() {
        Core::Auto => "auto",
        Core::Blas => "blas",
        Core::Packed => "packed",
        _ => "newer",
    };
    let hold = match BlasPolicy::Hold {
        BlasPolicy::Hold => true,
        BlasPolicy::Leave => false,
        _ => false,
    };
    assert!(causal && empty && per_head && hold);
    assert_eq!(naming, "out_proj");
    assert_eq!((pairing, norm, alibi, query_stride), (0, 2, 2, 3));
    assert_eq!(core, "auto");
}

#[test]
fn bias_parts_are_built_from_constants_and_read_back() {
    let parts = BiasParts::NONE.with_q(true).with_v(true);
    let layer = Layer::builder(8)
        .num_heads(2)
        .bias_parts(parts)
        .build()
        .unwrap();
    let c = layer.config();
    assert_eq!(c.bias_parts, parts);
    assert!(c.bias_parts.q && !c.bias_parts.k && c.bias_parts.v && !c.bias_parts.o);
    assert_eq!(c.bias_parts.other_bits(), 0);
    assert!(layer.weight_count(Weight::KBias).is_err());

    // Fields stay writable on a value one already has.
    let mut p = BiasParts::ALL;
    p.o = false;
    assert_eq!(p, BiasParts::QKV);
}

#[test]
fn the_config_is_read_by_field_and_destructured_with_rest() {
    let layer = Layer::builder(16)
        .num_heads(4)
        .num_kv_heads(2)
        .rope(Rope::new().rotary_dim(2))
        .build()
        .unwrap();
    let LayerConfig {
        embed_dim,
        num_heads,
        num_kv_heads,
        rope,
        ..
    } = layer.config();
    assert_eq!((*embed_dim, *num_heads, *num_kv_heads), (16, 4, 2));
    let RopeConfig {
        pairing,
        rotary_dim,
        ..
    } = rope.as_ref().expect("rope");
    assert_eq!((*pairing, *rotary_dim), (RopePairing::Halves, 2));
}

/// `raw()` is how a program gets an enum's C value (`as i32` does not
/// compile for the enums with an `Unknown` variant, and would stop
/// compiling for any enum that gained a variant with data).
#[test]
fn raw_gives_the_c_value_of_every_enum() {
    use attn::sys;
    let weights = [
        (Weight::InProj, sys::ATTN_W_IN_PROJ),
        (Weight::InProjBias, sys::ATTN_B_IN_PROJ),
        (Weight::Q, sys::ATTN_W_Q),
        (Weight::K, sys::ATTN_W_K),
        (Weight::V, sys::ATTN_W_V),
        (Weight::Out, sys::ATTN_W_OUT),
        (Weight::OutBias, sys::ATTN_B_OUT),
        (Weight::QBias, sys::ATTN_B_Q),
        (Weight::KBias, sys::ATTN_B_K),
        (Weight::VBias, sys::ATTN_B_V),
        (Weight::QNorm, sys::ATTN_W_Q_NORM),
        (Weight::KNorm, sys::ATTN_W_K_NORM),
        (Weight::Sinks, sys::ATTN_W_SINKS),
    ];
    for (w, c) in weights {
        assert_eq!(w.raw(), c, "{:?}", w);
    }
    assert_eq!(Naming::Torch.raw(), sys::ATTN_NAMES_TORCH);
    assert_eq!(Naming::HuggingFace.raw(), sys::ATTN_NAMES_HF);
    assert_eq!(Naming::HuggingFaceOProj.raw(), sys::ATTN_NAMES_HF_O_PROJ);
    assert_eq!(Causal::None.raw(), sys::ATTN_CAUSAL_NONE);
    assert_eq!(Causal::TopLeft.raw(), sys::ATTN_CAUSAL_TOP_LEFT);
    assert_eq!(Causal::BottomRight.raw(), sys::ATTN_CAUSAL_BOTTOM_RIGHT);
    assert_eq!(EmptyRows::Zero.raw(), sys::ATTN_EMPTY_ROW_ZERO);
    assert_eq!(EmptyRows::Nan.raw(), sys::ATTN_EMPTY_ROW_NAN);
    assert_eq!(WeightsMode::PerHead.raw(), sys::ATTN_WEIGHTS_PER_HEAD);
    assert_eq!(WeightsMode::Average.raw(), sys::ATTN_WEIGHTS_AVERAGE);
    assert_eq!(Core::Auto.raw(), sys::ATTN_CORE_AUTO);
    assert_eq!(Core::Blas.raw(), sys::ATTN_CORE_BLAS);
    assert_eq!(Core::Packed.raw(), sys::ATTN_CORE_PACKED);
    assert_eq!(BlasPolicy::Hold.raw(), sys::ATTN_BLAS_HOLD);
    assert_eq!(BlasPolicy::Leave.raw(), sys::ATTN_BLAS_LEAVE);
    assert_eq!(RopePairing::Halves.raw(), sys::ATTN_ROPE_HALVES);
    assert_eq!(RopePairing::Adjacent.raw(), sys::ATTN_ROPE_ADJACENT);
    assert_eq!(QkNorm::None.raw(), sys::ATTN_QK_NORM_NONE);
    assert_eq!(QkNorm::Head.raw(), sys::ATTN_QK_NORM_HEAD);
    assert_eq!(QkNorm::All.raw(), sys::ATTN_QK_NORM_ALL);
    assert_eq!(Alibi::None.raw(), sys::ATTN_ALIBI_NONE);
    assert_eq!(Alibi::Causal.raw(), sys::ATTN_ALIBI_CAUSAL);
    assert_eq!(Alibi::Symmetric.raw(), sys::ATTN_ALIBI_SYMMETRIC);
}
