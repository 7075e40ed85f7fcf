// SPDX-License-Identifier: MIT
//! Bad input is an Err with a status and a message, never a crash, and
//! leaves outputs and layers unchanged.

mod common;

use attn::{
    Alibi, BiasShape, Error, KvCache, Layer, LayerBuilder, Mask, Memory, Naming, Options, QkNorm,
    Rope, Status, Weight, WeightsMode,
};
use common::{data_dir, rand_vec, random_layer};

const E: usize = 8;

fn layer() -> Layer {
    random_layer(E, 2, 0, 0, 1)
}

/// Runs `f` on an output filled with 7s: it must fail with `status` and a
/// message containing `fragment`, leaving the output as it was.
fn expect_err(
    status: Status,
    fragment: &str,
    len: usize,
    f: impl FnOnce(&mut [f32]) -> attn::Result<()>,
) -> Error {
    let mut out = vec![7.0f32; len];
    let err = f(&mut out).expect_err("the call should fail");
    assert_eq!(err.status(), status, "{}", err);
    assert!(
        err.message().contains(fragment),
        "message {:?} lacks {:?}",
        err.message(),
        fragment
    );
    assert!(
        out.iter().all(|&v| v == 7.0),
        "output changed by a failed call"
    );
    err
}

#[test]
fn the_library_message_comes_with_its_status() {
    let err = Layer::builder(510).num_heads(8).build().unwrap_err();
    assert_eq!(err.status(), Status::BAD_SIZE);
    assert!(err.message().contains("510"), "{}", err.message());
    assert_eq!(
        err.status().description(),
        "a size is zero, negative or inconsistent"
    );
    // Display has both; std::error::Error makes `?` into Box<dyn Error> work.
    let shown = err.to_string();
    assert!(
        shown.contains("510") && shown.contains("inconsistent"),
        "{}",
        shown
    );
    let boxed: Box<dyn std::error::Error + Send + Sync> = Box::new(err);
    assert!(boxed.to_string().contains("510"));
}

#[test]
fn wrong_lengths_are_caught_before_the_call() {
    let l = layer();
    let x = rand_vec(2 * 3 * E, 1);
    let n = x.len();
    expect_err(Status::BAD_SIZE, "x has 47 elements", n, |o| {
        l.self_forward(2, 3, &x[..n - 1], None, None, o)
    });
    expect_err(Status::BAD_SIZE, "out has", n - 1, |o| {
        l.self_forward(2, 3, &x, None, None, o)
    });
    expect_err(Status::BAD_SIZE, "key has", n, |o| {
        l.forward(2, 3, 4, &x, &x, &x, None, None, o)
    });
    expect_err(Status::OVERFLOW, "overflows", n, |o| {
        l.forward(usize::MAX, 3, 3, &x, &x, &x, None, None, o)
    });
    // Mask arrays and the weights output are checked too.
    let lengths = [3i64];
    expect_err(Status::BAD_SIZE, "key_lengths", n, |o| {
        l.self_forward(2, 3, &x, Some(&Mask::new().key_lengths(&lengths)), None, o)
    });
    let pad = [0u8; 5];
    expect_err(Status::BAD_SIZE, "key_padding", n, |o| {
        l.self_forward(2, 3, &x, Some(&Mask::new().key_padding(&pad)), None, o)
    });
    let bias = [0f32; 8];
    expect_err(Status::BAD_SIZE, "bias", n, |o| {
        l.self_forward(
            2,
            3,
            &x,
            Some(&Mask::new().bias(&bias, BiasShape::Shared)),
            None,
            o,
        )
    });
    let strided = BiasShape::strided(9, 0, 3);
    expect_err(Status::BAD_SIZE, "reach element", n, |o| {
        l.self_forward(2, 3, &x, Some(&Mask::new().bias(&bias, strided)), None, o)
    });
    let mut w = vec![0.0; 2 * 3 * 3 + 1];
    expect_err(Status::BAD_SIZE, "attn_weights", n, |o| {
        let mut opts = Options::new().attn_weights(&mut w, WeightsMode::Average);
        l.self_forward(2, 3, &x, None, Some(&mut opts), o)
    });
}

#[test]
fn empty_and_non_finite_inputs_are_refused_by_the_library() {
    let l = layer();
    // Zero sizes with empty slices: the lengths agree, the library refuses.
    expect_err(Status::BAD_SIZE, "batch", 0, |o| {
        l.self_forward(0, 3, &[], None, None, o)
    });
    expect_err(Status::BAD_SIZE, "", 0, |o| {
        l.self_forward(2, 0, &[], None, None, o)
    });
    let mut x = rand_vec(2 * 3 * E, 2);
    x[5] = f32::NAN;
    expect_err(Status::NOT_FINITE, "", x.len(), |o| {
        l.self_forward(2, 3, &x, None, None, o)
    });
    let bad_len = [4i64, 1];
    let y = rand_vec(2 * 3 * E, 3);
    expect_err(Status::BAD_MASK, "", y.len(), |o| {
        l.self_forward(2, 3, &y, Some(&Mask::new().key_lengths(&bad_len)), None, o)
    });
    // Self-attention needs kdim = vdim = E.
    let cross = random_layer(E, 2, 3, 5, 2);
    expect_err(Status::BAD_SIZE, "", y.len(), |o| {
        cross.self_forward(2, 3, &y, None, None, o)
    });
}

#[test]
fn weights_and_files() {
    let mut l = Layer::builder(E).num_heads(2).build().unwrap();
    let x = rand_vec(3 * E, 1);
    expect_err(Status::WEIGHTS_NOT_SET, "", x.len(), |o| {
        l.self_forward(1, 3, &x, None, None, o)
    });
    let err = l.set_weight(Weight::Out, &[0.0; 3]).unwrap_err();
    assert_eq!(err.status(), Status::WEIGHT_SIZE);
    let mut w = vec![0.0; E * E];
    w[3] = f32::INFINITY;
    assert_eq!(
        l.set_weight(Weight::Out, &w).unwrap_err().status(),
        Status::NOT_FINITE
    );
    assert_eq!(
        l.weight(Weight::Out).unwrap(),
        vec![0.0; E * E],
        "a refused weight is not kept"
    );

    let nobias = Layer::builder(E).bias(false).build().unwrap();
    assert_eq!(
        nobias.weight_count(Weight::OutBias).unwrap_err().status(),
        Status::WEIGHT_LAYOUT
    );

    let err = l
        .load_safetensors("/nonexistent/w.safetensors", "")
        .unwrap_err();
    assert_eq!(err.status(), Status::IO);
    assert!(
        err.message().contains("/nonexistent/w.safetensors"),
        "{}",
        err.message()
    );
    let err = l
        .load_safetensors_bytes(b"not a safetensors file", "")
        .unwrap_err();
    assert_eq!(err.status(), Status::FILE_FORMAT);
    let path = data_dir().join("torch_mha.safetensors");
    let err = l.load_safetensors(&path, "no.such.prefix.").unwrap_err();
    assert_eq!(err.status(), Status::TENSOR_MISSING);
    assert!(
        err.message().contains("no.such.prefix."),
        "{}",
        err.message()
    );
    assert_eq!(
        l.load_safetensors(&path, "a\0b").unwrap_err().status(),
        Status::BAD_OPTION
    );
    let err = l.save_safetensors(
        std::env::temp_dir().join("attn-never.st"),
        "",
        Naming::Torch,
    );
    assert_eq!(err.unwrap_err().status(), Status::WEIGHTS_NOT_SET);
}

#[test]
fn decoding_misuse() {
    let l = layer();
    let other = layer();
    let mut cache = KvCache::new(&other, 1, 4).unwrap();
    let x = rand_vec(E, 1);
    expect_err(Status::MISMATCH, "", E, |o| {
        l.decode_step(&mut cache, 1, &x, None, None, o)
    });
    expect_err(Status::BAD_SIZE, "x has", E, |o| {
        other.decode_step(&mut cache, 2, &x, None, None, o)
    });
    assert_eq!(
        cache.truncate(&[1, 2]).unwrap_err().status(),
        Status::BAD_SIZE
    );
    assert_eq!(cache.truncate(&[3]).unwrap_err().status(), Status::BAD_SIZE);
    assert_eq!(cache.reorder(&[5]).unwrap_err().status(), Status::BAD_SIZE);
    assert_eq!(
        KvCache::new(&l, 0, 4).unwrap_err().status(),
        Status::BAD_SIZE
    );

    let mut mem = Memory::new(&l, 1, 3).unwrap();
    expect_err(Status::BAD_SIZE, "never set", E, |o| {
        l.cross_step(&mem, 1, &x, None, None, o)
    });
    let kv = rand_vec(4 * E, 2);
    let err = mem.set(4, &kv, &kv, None, None, None).unwrap_err();
    assert_eq!(err.status(), Status::CAPACITY);
    assert_eq!(mem.len_k(), None, "a failed set keeps the memory as it was");
    let err = mem.set(3, &kv, &kv, None, None, None).unwrap_err();
    assert_eq!(err.status(), Status::BAD_SIZE);
    assert!(err.message().contains("key has"));
}

#[test]
fn each_thread_gets_its_own_message() {
    std::thread::scope(|s| {
        let handles: Vec<_> = (1..=4usize)
            .map(|i| {
                s.spawn(move || {
                    let e = 10 * i + 1; // odd: not divisible by 2 heads
                    for _ in 0..50 {
                        let err = Layer::builder(e).num_heads(2).build().unwrap_err();
                        assert!(err.message().contains(&e.to_string()), "{}", err.message());
                    }
                })
            })
            .collect();
        for h in handles {
            h.join().unwrap();
        }
    });
}

/// `builder` must fail to build with `status` and a message containing
/// `fragment`.
fn expect_build_err(builder: LayerBuilder, status: Status, fragment: &str) {
    let err = builder.build().expect_err("the layer should be refused");
    assert_eq!(err.status(), status, "{}", err);
    assert!(
        err.message().contains(fragment),
        "message {:?} lacks {:?}",
        err.message(),
        fragment
    );
}

#[test]
fn bad_feature_settings_are_refused_when_building() {
    // E = 8, two heads: head_dim 4.
    let b = || Layer::builder(E).num_heads(2);
    let rope = |r: Rope| b().rope(r);
    expect_build_err(
        rope(Rope::new().rotary_dim(3)),
        Status::BAD_SIZE,
        "rotary_dim",
    );
    expect_build_err(
        rope(Rope::new().rotary_dim(6)),
        Status::BAD_SIZE,
        "rotary_dim",
    );
    expect_build_err(
        rope(Rope::new().theta(f64::NAN)),
        Status::BAD_OPTION,
        "theta",
    );
    expect_build_err(rope(Rope::new().theta(-2.0)), Status::BAD_OPTION, "theta");
    expect_build_err(
        rope(Rope::new().linear_factor(0.0)),
        Status::BAD_OPTION,
        "linear_factor",
    );
    expect_build_err(
        rope(Rope::new().attention_factor(f64::INFINITY)),
        Status::BAD_OPTION,
        "attention_factor",
    );
    // The table must have rotary_dim / 2 = 2 finite, non-negative values.
    expect_build_err(
        rope(Rope::new().inv_freq(&[0.5])),
        Status::BAD_SIZE,
        "rope inv_freq has 1 elements, expected 2 = [rotary_dim / 2]",
    );
    expect_build_err(
        rope(Rope::new().rotary_dim(2).inv_freq(&[0.5, 0.1])),
        Status::BAD_SIZE,
        "rope inv_freq has 2 elements, expected 1 = [rotary_dim / 2]",
    );
    expect_build_err(
        rope(Rope::new().inv_freq(&[f32::NAN, 0.1])),
        Status::NOT_FINITE,
        "inv_freq",
    );
    expect_build_err(
        rope(Rope::new().inv_freq(&[-0.5, 0.1])),
        Status::NOT_FINITE,
        "inv_freq",
    );
    // A table with sizes the library refuses is never handed over.
    expect_build_err(
        rope(Rope::new().rotary_dim(5).inv_freq(&[0.5, 0.1])),
        Status::BAD_SIZE,
        "rotary_dim",
    );
    expect_build_err(
        Layer::builder(9)
            .num_heads(2)
            .rope(Rope::new().inv_freq(&[0.5, 0.1])),
        Status::BAD_SIZE,
        "divisible",
    );

    for cap in [-1.0, f64::NAN, f64::INFINITY] {
        expect_build_err(b().softcap(cap), Status::BAD_OPTION, "softcap");
    }
    expect_build_err(
        b().alibi(Alibi::Causal).alibi_slopes(&[0.5, 0.25, 0.125]),
        Status::BAD_SIZE,
        "alibi_slopes has 3 elements, expected 2 = [num_heads]",
    );
    expect_build_err(
        b().alibi(Alibi::Causal).alibi_slopes(&[0.5, f32::NAN]),
        Status::NOT_FINITE,
        "slope",
    );
    expect_build_err(
        b().qk_norm(QkNorm::Head).qk_norm_eps(-1e-6),
        Status::BAD_OPTION,
        "qk_norm_eps",
    );
    expect_build_err(b().num_kv_heads(3), Status::BAD_SIZE, "num_kv_heads");
}

/// Slopes are for an ALiBi form: without one the library refuses them
/// (rather than build a layer without the bias they ask for), whatever
/// their count, and with one they work whichever is set first.
#[test]
fn alibi_slopes_without_alibi_are_refused() {
    let b = || Layer::builder(E).num_heads(2);
    let refused = "alibi_slopes given but alibi is ATTN_ALIBI_NONE";
    expect_build_err(b().alibi_slopes(&[0.5, 0.25]), Status::BAD_OPTION, refused);
    expect_build_err(
        b().alibi(Alibi::None).alibi_slopes(&[0.5, 0.25]),
        Status::BAD_OPTION,
        refused,
    );
    expect_build_err(
        b().alibi(Alibi::Causal)
            .alibi_slopes(&[0.5, 0.25])
            .alibi(Alibi::None),
        Status::BAD_OPTION,
        refused,
    );
    expect_build_err(
        b().alibi_slopes(&[0.5, 0.25, 0.125]),
        Status::BAD_OPTION,
        refused,
    );
    let layer = b()
        .alibi_slopes(&[0.5, 0.25])
        .alibi(Alibi::Symmetric)
        .build()
        .unwrap();
    assert_eq!(layer.config().alibi, Alibi::Symmetric);
}

#[test]
fn feature_weights_exist_only_with_their_feature() {
    let mut plain = layer();
    let err = plain.set_weight(Weight::Sinks, &[0.0, 0.0]).unwrap_err();
    assert_eq!(err.status(), Status::WEIGHT_LAYOUT);
    assert!(!err.message().is_empty());
    assert_eq!(
        plain.weight_count(Weight::QNorm).unwrap_err().status(),
        Status::WEIGHT_LAYOUT
    );

    let mut l = Layer::builder(E)
        .num_heads(2)
        .qk_norm(QkNorm::Head)
        .sinks(true)
        .build()
        .unwrap();
    assert_eq!(
        l.weight(Weight::QNorm).unwrap(),
        vec![1.0; 4],
        "ones until set"
    );
    assert_eq!(
        l.weight(Weight::Sinks).unwrap(),
        vec![0.0; 2],
        "zeros until set"
    );
    let err = l.set_weight(Weight::QNorm, &[1.0; 8]).unwrap_err();
    assert_eq!(err.status(), Status::WEIGHT_SIZE);
    let err = l.set_weight(Weight::Sinks, &[0.0, f32::NAN]).unwrap_err();
    assert_eq!(err.status(), Status::NOT_FINITE);
    assert_eq!(l.weight(Weight::Sinks).unwrap(), vec![0.0; 2], "unchanged");
}

#[test]
fn bad_positions_are_refused() {
    let mut l = Layer::builder(E)
        .num_heads(2)
        .rope(Rope::new())
        .build()
        .unwrap();
    l.init_weights(3).unwrap();
    let (b, n) = (2, 3);
    let x = rand_vec(b * n * E, 4);
    let len = x.len();
    let fwd = |opts: &mut Options<'_>, o: &mut [f32]| l.self_forward(b, n, &x, None, Some(opts), o);

    expect_err(
        Status::BAD_SIZE,
        "start positions has 1 elements",
        len,
        |o| fwd(&mut Options::new().start_positions(&[0]), o),
    );
    expect_err(Status::BAD_OPTION, "start[1]", len, |o| {
        fwd(&mut Options::new().start_positions(&[0, -1]), o)
    });
    let max = attn::sys::ATTN_MAX_POSITION;
    expect_err(Status::BAD_OPTION, "start[0]", len, |o| {
        fwd(&mut Options::new().start_positions(&[max - 1, 0]), o)
    });
    expect_err(
        Status::BAD_SIZE,
        "query positions has 5 elements",
        len,
        |o| fwd(&mut Options::new().query_positions(&[0; 5]), o),
    );
    expect_err(Status::BAD_OPTION, "q_positions[4]", len, |o| {
        fwd(&mut Options::new().query_positions(&[0, 1, 2, 0, -7, 2]), o)
    });
    expect_err(Status::BAD_OPTION, "k_positions[0]", len, |o| {
        fwd(
            &mut Options::new().key_positions(&[max + 1, 1, 2, 0, 1, 2]),
            o,
        )
    });
    expect_err(Status::BAD_SIZE, "key positions has 7 elements", len, |o| {
        fwd(&mut Options::new().key_positions(&[0; 7]), o)
    });

    // Decoding steps take positions from the cache: the library refuses
    // query and key positions there, whatever their length (the crate
    // checks none: a step never reads them).
    let mut cache = KvCache::new(&l, b, 4).unwrap();
    let x1 = rand_vec(b * E, 5);
    let step_len = x1.len();
    let mut step = |opts: &mut Options<'_>, o: &mut [f32]| {
        l.decode_step(&mut cache, 1, &x1, None, Some(opts), o)
    };
    expect_err(Status::BAD_OPTION, STEP_POSITIONS, step_len, |o| {
        step(&mut Options::new().query_positions(&[0, 0]), o)
    });
    expect_err(Status::BAD_OPTION, STEP_POSITIONS, step_len, |o| {
        step(&mut Options::new().key_positions(&[0, 0]), o)
    });
    expect_err(Status::BAD_OPTION, STEP_POSITIONS, step_len, |o| {
        step(&mut Options::new().query_positions(&[0; 5]), o)
    });
    expect_err(Status::BAD_OPTION, "row 1", step_len, |o| {
        step(&mut Options::new().start_positions(&[0, -3]), o)
    });
    expect_err(Status::BAD_SIZE, "start positions", step_len, |o| {
        step(&mut Options::new().start_positions(&[0, 0, 0]), o)
    });
    assert_eq!(cache.lengths().unwrap(), vec![0, 0], "no step was taken");

    // A memory has no positions: a rotary layer cannot have one.
    let err = Memory::new(&l, 1, 4).unwrap_err();
    assert_eq!(err.status(), Status::BAD_OPTION);
    assert!(err.message().contains("positions"), "{}", err.message());
}

/// The library's message for query or key positions in a decoding step of
/// a layer with rotary embeddings or ALiBi.
const STEP_POSITIONS: &str =
    "a decoding step takes its tokens' positions from the cache; q_positions and k_positions must be NULL";

/// ALiBi, like rotary embeddings, computes from positions: its steps
/// refuse query and key positions too, and no step is taken.
#[test]
fn alibi_steps_refuse_query_and_key_positions() {
    let mut l = Layer::builder(E)
        .num_heads(2)
        .alibi(Alibi::Causal)
        .build()
        .unwrap();
    l.init_weights(6).unwrap();
    let mut cache = KvCache::new(&l, 2, 4).unwrap();
    let x = rand_vec(2 * E, 7);
    let pos = [0i64, 0];
    for mut opts in [
        Options::new().query_positions(&pos),
        Options::new().key_positions(&pos),
        Options::new().start_positions(&pos).query_positions(&pos),
    ] {
        expect_err(Status::BAD_OPTION, STEP_POSITIONS, x.len(), |o| {
            l.decode_step(&mut cache, 1, &x, None, Some(&mut opts), o)
        });
    }
    assert_eq!(cache.lengths().unwrap(), vec![0, 0], "no step was taken");
}
