// SPDX-License-Identifier: MIT
//! Shared by the tests: the torch fixture of tests/data, a double-precision
//! reference of the attention the header specifies (masks, every set of
//! bias parts, grouped-query attention and the decoder features), and
//! comparisons.
#![allow(dead_code)]

use attn::{Alibi, Causal, Layer, Mask, QkNorm, Status, Weight};
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

/// Rotary embeddings of the reference.
#[derive(Clone)]
pub struct RefRope {
    pub adjacent: bool,
    pub rotary_dim: usize,
    pub inv_freq: Vec<f64>,
    pub factor: f64,
}

impl RefRope {
    /// Frequencies from theta and the linear factor (attn.h).
    pub fn new(adjacent: bool, rotary_dim: usize, theta: f64, linear: f64, factor: f64) -> RefRope {
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

/// The decoder features of the reference (attn_config's rope, qk_norm,
/// alibi, softcap and sinks); the default has none of them.
#[derive(Clone)]
pub struct RefFeatures {
    pub rope: Option<RefRope>,
    /// 0 none, 1 per head, 2 whole.
    pub qk_norm: u8,
    pub eps: f64,
    pub unit_offset: bool,
    /// 0 none, 1 causal, 2 symmetric.
    pub alibi: u8,
    /// [num_heads] when alibi is not 0.
    pub slopes: Vec<f64>,
    pub softcap: f64,
    pub sinks: bool,
}

impl Default for RefFeatures {
    fn default() -> RefFeatures {
        RefFeatures {
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
}

/// A layer as the reference computes it: sizes, scale, weights in f64 and
/// features.
#[derive(Clone)]
pub struct RefLayer {
    pub embed_dim: usize,
    pub num_heads: usize,
    pub num_kv_heads: usize,
    pub kdim: usize,
    pub vdim: usize,
    pub scale: f64,
    pub q: Vec<f64>,
    pub k: Vec<f64>,
    pub v: Vec<f64>,
    pub out: Vec<f64>,
    /// Zeros for a projection without a bias.
    pub q_bias: Vec<f64>,
    pub k_bias: Vec<f64>,
    pub v_bias: Vec<f64>,
    pub out_bias: Vec<f64>,
    /// QK-norm weights ([head_dim] per head, [E] and [kv width] whole);
    /// read only with features.qk_norm.
    pub q_norm: Vec<f64>,
    pub k_norm: Vec<f64>,
    /// [num_heads] sink logits; read only with features.sinks.
    pub sinks: Vec<f64>,
    pub features: RefFeatures,
}

impl RefLayer {
    /// A layer without decoder features as the library holds it: its sizes,
    /// scale and weights read back, zeros for every bias it has not (any
    /// set of bias parts).
    pub fn of(layer: &Layer) -> RefLayer {
        let c = layer.config();
        assert!(
            c.rope.is_none()
                && c.qk_norm == QkNorm::None
                && c.alibi == Alibi::None
                && c.softcap == 0.0
                && !c.sinks,
            "RefLayer::of reads no decoder features: describe them in RefFeatures"
        );
        let kv = c.num_kv_heads * (c.embed_dim / c.num_heads);
        let weight =
            |w| -> Vec<f64> { layer.weight(w).unwrap().iter().map(|&x| x as f64).collect() };
        // A bias the layer has not is a weight it refuses with WEIGHT_LAYOUT.
        let bias = |w, n| match layer.weight_count(w) {
            Ok(_) => weight(w),
            Err(err) => {
                assert_eq!(err.status(), Status::WEIGHT_LAYOUT, "{:?}: {}", w, err);
                vec![0.0; n]
            }
        };
        RefLayer {
            embed_dim: c.embed_dim,
            num_heads: c.num_heads,
            num_kv_heads: c.num_kv_heads,
            kdim: c.kdim,
            vdim: c.vdim,
            scale: c.scale,
            q: weight(Weight::Q),
            k: weight(Weight::K),
            v: weight(Weight::V),
            out: weight(Weight::Out),
            q_bias: bias(Weight::QBias, c.embed_dim),
            k_bias: bias(Weight::KBias, kv),
            v_bias: bias(Weight::VBias, kv),
            out_bias: bias(Weight::OutBias, c.embed_dim),
            q_norm: Vec::new(),
            k_norm: Vec::new(),
            sinks: Vec::new(),
            features: RefFeatures::default(),
        }
    }

    fn head_dim(&self) -> usize {
        self.embed_dim / self.num_heads
    }

    /// QK-norm and rotation of one projected token of `heads` heads at
    /// position p, in place.
    fn shape_qk(&self, x: &mut [f64], norm: &[f64], heads: usize, p: i64) {
        let f = &self.features;
        let hd = self.head_dim();
        if f.qk_norm == 2 {
            rms(x, norm, f.eps, f.unit_offset);
        }
        for head in x[..heads * hd].chunks_mut(hd) {
            if f.qk_norm == 1 {
                rms(head, norm, f.eps, f.unit_offset);
            }
            if let Some(r) = &f.rope {
                r.apply(head, p);
            }
        }
    }

    /// Output [B, Lq, E] and per-head probabilities [B, H, Lq, Lk] of the
    /// layer's attention in float64, with the documented mask semantics,
    /// zero rows for queries that see no key, and the features applied as
    /// attn.h orders them: QK-norm then rotation of q and k; scaled score,
    /// soft-cap, ALiBi and mask bias; sinks in the softmax's denominator.
    /// `positions` (q [B, Lq], k [B, Lk]) places the tokens for rotation
    /// and ALiBi; `None` = 0, 1, 2, ... in each row.
    #[allow(clippy::too_many_arguments)]
    pub fn forward(
        &self,
        batch: usize,
        len_q: usize,
        len_k: usize,
        q: &[f32],
        k: &[f32],
        v: &[f32],
        mask: &RefMask,
        positions: Option<(&[i64], &[i64])>,
    ) -> (Vec<f64>, Vec<f64>) {
        let (e, h, kvh, f) = (
            self.embed_dim,
            self.num_heads,
            self.num_kv_heads,
            &self.features,
        );
        let d = self.head_dim();
        let kv = kvh * d;
        assert_eq!(
            (self.q.len(), self.k.len(), self.v.len(), self.out.len()),
            (e * e, kv * self.kdim, kv * self.vdim, e * e),
            "projection weights of the wrong size"
        );
        let (qpos, kpos): (Vec<i64>, Vec<i64>) = match positions {
            Some((qp, kp)) => (qp.to_vec(), kp.to_vec()),
            None => (
                (0..batch * len_q).map(|r| (r % len_q) as i64).collect(),
                (0..batch * len_k).map(|r| (r % len_k) as i64).collect(),
            ),
        };
        let mut qp = project(q, e, &self.q, &self.q_bias);
        let mut kp = project(k, self.kdim, &self.k, &self.k_bias);
        let vp = project(v, self.vdim, &self.v, &self.v_bias);
        for (r, x) in qp.chunks_mut(e).enumerate() {
            self.shape_qk(x, &self.q_norm, h, qpos[r]);
        }
        for (r, x) in kp.chunks_mut(kv).enumerate() {
            self.shape_qk(x, &self.k_norm, kvh, kpos[r]);
        }
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
                    let pq = qpos[b * len_q + i];
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
                        s *= self.scale;
                        if f.softcap > 0.0 {
                            s = f.softcap * (s / f.softcap).tanh();
                        }
                        let pk = kpos[b * len_k + j];
                        match f.alibi {
                            1 => s += f.slopes[hh] * (pk - pq) as f64,
                            2 => s -= f.slopes[hh] * (pq - pk).abs() as f64,
                            _ => {}
                        }
                        *score = s + mask.bias.as_ref().map_or(0.0, |bf| bf(b, hh, i, j));
                    }
                    let mut m = scores.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
                    if m == f64::NEG_INFINITY {
                        continue; // no key: zeros, with or without a sink
                    }
                    let sink = if f.sinks { Some(self.sinks[hh]) } else { None };
                    if let Some(s) = sink {
                        m = m.max(s);
                    }
                    let sum: f64 = scores.iter().map(|&s| (s - m).exp()).sum::<f64>()
                        + sink.map_or(0.0, |s| (s - m).exp());
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
        let out = project_f64(&attn, e, &self.out, &self.out_bias);
        (out, probs)
    }
}

/// RMSNorm of x in place with weights w.
fn rms(x: &mut [f64], w: &[f64], eps: f64, unit: bool) {
    let ms = x.iter().map(|v| v * v).sum::<f64>() / x.len() as f64;
    let r = 1.0 / (ms + eps).sqrt();
    for (v, &g) in x.iter_mut().zip(w) {
        *v *= r * if unit { 1.0 + g } else { g };
    }
}

/// y = x W^T + b for every row of x (rows of width `inp`).
fn project_f64(x: &[f64], inp: usize, w: &[f64], b: &[f64]) -> Vec<f64> {
    let outp = b.len();
    let mut y = Vec::with_capacity(x.len() / inp * outp);
    for row in x.chunks(inp) {
        y.extend((0..outp).map(|o| {
            b[o] + row
                .iter()
                .zip(&w[o * inp..(o + 1) * inp])
                .map(|(a, c)| a * c)
                .sum::<f64>()
        }));
    }
    y
}

fn project(x: &[f32], inp: usize, w: &[f64], b: &[f64]) -> Vec<f64> {
    let x: Vec<f64> = x.iter().map(|&v| v as f64).collect();
    project_f64(&x, inp, w, b)
}

/// The reference's output and per-head probabilities (see
/// [`RefLayer::forward`]) for a layer without decoder features, from its
/// own weights.
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
    RefLayer::of(layer).forward(batch, len_q, len_k, q, k, v, mask, None)
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
