// SPDX-License-Identifier: MIT
//! Shared by the tests: the torch fixture of tests/data, a plain
//! double-precision reference of the attention the header specifies, and
//! comparisons.
#![allow(dead_code)]

use attn::{Causal, Layer, Mask, Weight};
use std::collections::HashMap;
use std::path::PathBuf;

/// Tolerances of every comparison with torch or the reference: the library
/// computes in float32 what they compute in float64; over these small
/// widths (sums of at most 16 products of values below ~2) float32 rounding
/// stays below 1e-6, so 1e-5 absolute + 1e-4 relative leaves a wide margin
/// while any wrong mask, weight or layout is off by 1e-2 or more.
pub const ATOL: f64 = 1e-5;
pub const RTOL: f64 = 1e-4;

/// tests/data of the libattn repository.
pub fn data_dir() -> PathBuf {
    let manifest = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    manifest
        .join("..")
        .join("..")
        .join("..")
        .join("tests")
        .join("data")
}

/// One case of tests/data/torch_mha_expected.txt (the format is described
/// in make_torch_fixture.py next to it).
#[derive(Debug, Clone)]
pub struct TorchCase {
    pub name: String,
    pub prefix: String,
    pub embed_dim: usize,
    pub num_heads: usize,
    /// The real widths (embed_dim when torch's kdim/vdim were not given).
    pub kdim: usize,
    pub vdim: usize,
    pub bias: bool,
    pub batch: usize,
    pub len_q: usize,
    pub len_k: usize,
    /// torch's attn_mask triu(ones(Lq, Lk), 1): `Causal::TopLeft`.
    pub causal: bool,
    pub query: Vec<f32>,
    pub key: Vec<f32>,
    pub value: Vec<f32>,
    /// [B, Lk], 1 = ignore the key (torch's key_padding_mask).
    pub key_padding: Option<Vec<u8>>,
    /// What torch computed, in float64.
    pub out: Vec<f64>,
    pub weights_per_head: Vec<f64>,
    pub weights_average: Vec<f64>,
    /// Whether key and value are the query (self-attention).
    pub is_self: bool,
}

impl TorchCase {
    /// The case's mask (None when it has none).
    pub fn mask(&self) -> Option<Mask<'_>> {
        if !self.causal && self.key_padding.is_none() {
            return None;
        }
        let mut m = Mask::new();
        if self.causal {
            m = m.causal(Causal::TopLeft);
        }
        if let Some(p) = &self.key_padding {
            m = m.key_padding(p);
        }
        Some(m)
    }
}

fn numbers<T: std::str::FromStr>(case: &str, key: &str, values: &[&str]) -> Vec<T> {
    values
        .iter()
        .map(|v| {
            v.parse()
                .unwrap_or_else(|_| panic!("{}: {}: bad number {}", case, key, v))
        })
        .collect()
}

/// Reads tests/data/torch_mha_expected.txt, the numbers the C, Python and
/// Go tests check too: "key values..." lines, "case NAME" starting a case.
pub fn torch_cases() -> Vec<TorchCase> {
    let path = data_dir().join("torch_mha_expected.txt");
    let text =
        std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {}", path.display(), e));
    let mut fields: Vec<(String, HashMap<String, Vec<String>>)> = Vec::new();
    for line in text.lines() {
        let mut tokens = line.split_whitespace();
        let key = match tokens.next() {
            Some(k) if !k.starts_with('#') => k,
            _ => continue,
        };
        let values: Vec<String> = tokens.map(String::from).collect();
        if key == "case" {
            fields.push((values[0].clone(), HashMap::new()));
            continue;
        }
        let case = &mut fields.last_mut().expect("a field before the first case").1;
        assert!(
            case.insert(key.to_string(), values).is_none(),
            "{} twice",
            key
        );
    }
    let cases: Vec<TorchCase> = fields.iter().map(|(n, f)| torch_case(n, f)).collect();
    assert!(cases.len() >= 10, "only {} torch cases read", cases.len());
    cases
}

fn sized<T>(case: &str, key: &str, v: Vec<T>, n: usize) -> Vec<T> {
    assert_eq!(v.len(), n, "{}: {} has the wrong length", case, key);
    v
}

fn torch_case(name: &str, f: &HashMap<String, Vec<String>>) -> TorchCase {
    let get = |key: &str| -> Option<Vec<&str>> {
        f.get(key).map(|v| v.iter().map(|s| s.as_str()).collect())
    };
    let need = |key: &str| get(key).unwrap_or_else(|| panic!("{}: no {}", name, key));
    let int = |key: &str| -> usize { numbers(name, key, &need(key))[0] };
    let (b, lq, lk, e, h) = (
        int("batch"),
        int("len_q"),
        int("len_k"),
        int("embed_dim"),
        int("num_heads"),
    );
    let (kdim, vdim) = (int("kdim"), int("vdim"));
    let floats =
        |key: &str, n: usize| -> Vec<f32> { sized(name, key, numbers(name, key, &need(key)), n) };
    let doubles =
        |key: &str, n: usize| -> Vec<f64> { sized(name, key, numbers(name, key, &need(key)), n) };
    let query = floats("query", b * lq * e);
    let is_self = get("key").is_none();
    let key = if is_self {
        query.clone()
    } else {
        floats("key", b * lk * kdim)
    };
    let value = if get("value").is_none() {
        key.clone()
    } else {
        floats("value", b * lk * vdim)
    };
    assert_eq!(key.len(), b * lk * kdim, "{}: key", name);
    assert_eq!(value.len(), b * lk * vdim, "{}: value", name);
    TorchCase {
        name: name.to_string(),
        prefix: need("prefix")[0].to_string(),
        embed_dim: e,
        num_heads: h,
        kdim,
        vdim,
        bias: int("bias") != 0,
        batch: b,
        len_q: lq,
        len_k: lk,
        causal: int("causal") != 0,
        query,
        key,
        value,
        key_padding: get("key_padding").map(|v| {
            sized(
                name,
                "key_padding",
                numbers(name, "key_padding", &v),
                b * lk,
            )
        }),
        out: doubles("out", b * lq * e),
        weights_per_head: doubles("weights_per_head", b * h * lq * lk),
        weights_average: doubles("weights_average", b * lq * lk),
        is_self,
    }
}

/// |got - want| <= ATOL + RTOL |want| everywhere (NaN only where NaN is
/// wanted); panics naming the worst element.
pub fn assert_close(what: &str, got: &[f32], want: &[f64]) {
    assert_eq!(got.len(), want.len(), "{}: lengths differ", what);
    for (i, (&g, &w)) in got.iter().zip(want).enumerate() {
        let g = g as f64;
        if w.is_nan() && g.is_nan() {
            continue;
        }
        let ok = (g - w).abs() <= ATOL + RTOL * w.abs();
        assert!(
            ok,
            "{}: element {} is {} but should be {} (tolerance {} + {} rel)",
            what, i, g, w, ATOL, RTOL
        );
    }
}

pub fn assert_close_f32(what: &str, got: &[f32], want: &[f32]) {
    let w: Vec<f64> = want.iter().map(|&x| x as f64).collect();
    assert_close(what, got, &w);
}

/// Deterministic values in [-1, 1).
pub fn rand_vec(n: usize, seed: u64) -> Vec<f32> {
    let mut s = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15).wrapping_add(1);
    (0..n)
        .map(|_| {
            s = s
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            ((s >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
        })
        .collect()
}

/// A layer with seeded weights and random (nonzero) biases.
pub fn random_layer(e: usize, h: usize, kdim: usize, vdim: usize, seed: u64) -> Layer {
    let mut layer = Layer::builder(e)
        .num_heads(h)
        .kdim(kdim)
        .vdim(vdim)
        .build()
        .unwrap();
    layer.init_weights(seed).unwrap();
    for (i, w) in [Weight::QBias, Weight::KBias, Weight::VBias, Weight::OutBias]
        .iter()
        .enumerate()
    {
        let n = layer.weight_count(*w).unwrap();
        layer
            .set_weight(*w, &rand_vec(n, seed + 100 + i as u64))
            .unwrap();
    }
    layer
}

/// bias(b, h, i, j) of the reference.
pub type BiasFn = std::rc::Rc<dyn Fn(usize, usize, usize, usize) -> f64>;

/// The mask of the reference, in the header's terms.
#[derive(Default, Clone)]
pub struct RefMask {
    /// 0 none, 1 top-left, 2 bottom-right.
    pub causal: u8,
    pub key_lengths: Option<Vec<i64>>,
    pub padding: Option<Vec<u8>>,
    /// bias(b, h, i, j)
    pub bias: Option<BiasFn>,
    pub window: usize,
}

/// Output [B, Lq, E] and per-head probabilities [B, H, Lq, Lk] of the layer's
/// attention, in float64 from the layer's own weights, with the documented
/// mask semantics and zero rows for queries that see no key.
#[allow(clippy::too_many_arguments)]
pub fn reference(
    layer: &Layer,
    batch: usize,
    len_q: usize,
    len_k: usize,
    q: &[f32],
    k: &[f32],
    v: &[f32],
    mask: &RefMask,
) -> (Vec<f64>, Vec<f64>) {
    let c = layer.config();
    let (e, h) = (c.embed_dim, c.num_heads);
    let d = e / h;
    let kvh = c.num_kv_heads;
    let kv = kvh * d;
    let get = |w| -> Vec<f64> { layer.weight(w).unwrap().iter().map(|&x| x as f64).collect() };
    let zeros = |n| vec![0.0; n];
    let (bq, bk, bv, bo) = if c.bias {
        (
            get(Weight::QBias),
            get(Weight::KBias),
            get(Weight::VBias),
            get(Weight::OutBias),
        )
    } else {
        (zeros(e), zeros(kv), zeros(kv), zeros(e))
    };
    let proj = |x: &[f32], rows: usize, inp: usize, w: &[f64], b: &[f64], outp: usize| {
        let mut y = vec![0.0; rows * outp];
        for r in 0..rows {
            for o in 0..outp {
                let mut s = b[o];
                for i in 0..inp {
                    s += x[r * inp + i] as f64 * w[o * inp + i];
                }
                y[r * outp + o] = s;
            }
        }
        y
    };
    let qp = proj(q, batch * len_q, e, &get(Weight::Q), &bq, e);
    let kp = proj(k, batch * len_k, c.kdim, &get(Weight::K), &bk, kv);
    let vp = proj(v, batch * len_k, c.vdim, &get(Weight::V), &bv, kv);
    let mut attn = vec![0.0; batch * len_q * e];
    let mut probs = vec![0.0; batch * h * len_q * len_k];
    for b in 0..batch {
        let n = mask.key_lengths.as_ref().map_or(len_k as i64, |l| l[b]);
        for hh in 0..h {
            let g = hh * kvh / h;
            for i in 0..len_q {
                let p = if mask.causal == 2 {
                    i as i64 + n - len_q as i64
                } else {
                    i as i64
                };
                let mut scores = vec![f64::NEG_INFINITY; len_k];
                for (j, score) in scores.iter_mut().enumerate() {
                    let jj = j as i64;
                    let hidden = jj >= n
                        || mask
                            .padding
                            .as_ref()
                            .map_or(false, |pd| pd[b * len_k + j] != 0)
                        || (mask.causal == 1 && jj > i as i64)
                        || (mask.causal == 2 && jj > p)
                        || (mask.window > 0 && p - jj >= mask.window as i64);
                    if hidden {
                        continue;
                    }
                    let mut s = 0.0;
                    for t in 0..d {
                        s += qp[(b * len_q + i) * e + hh * d + t]
                            * kp[(b * len_k + j) * kv + g * d + t];
                    }
                    *score = s * c.scale + mask.bias.as_ref().map_or(0.0, |f| f(b, hh, i, j));
                }
                let m = scores.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
                if m == f64::NEG_INFINITY {
                    continue; // no key: zeros
                }
                let sum: f64 = scores.iter().map(|&s| (s - m).exp()).sum();
                for j in 0..len_k {
                    let pr = (scores[j] - m).exp() / sum;
                    probs[((b * h + hh) * len_q + i) * len_k + j] = pr;
                    for t in 0..d {
                        attn[(b * len_q + i) * e + hh * d + t] +=
                            pr * vp[(b * len_k + j) * kv + g * d + t];
                    }
                }
            }
        }
    }
    let wo = get(Weight::Out);
    let mut out = vec![0.0; batch * len_q * e];
    for r in 0..batch * len_q {
        for o in 0..e {
            let mut s = bo[o];
            for i in 0..e {
                s += attn[r * e + i] * wo[o * e + i];
            }
            out[r * e + o] = s;
        }
    }
    (out, probs)
}

/// [B, H, Lq, Lk] averaged over heads.
pub fn average_heads(p: &[f64], batch: usize, h: usize, lq: usize, lk: usize) -> Vec<f64> {
    let mut a = vec![0.0; batch * lq * lk];
    for b in 0..batch {
        for hh in 0..h {
            for x in 0..lq * lk {
                a[b * lq * lk + x] += p[(b * h + hh) * lq * lk + x] / h as f64;
            }
        }
    }
    a
}
