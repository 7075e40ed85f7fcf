// SPDX-License-Identifier: MIT

package attn

import (
	"math"
	"testing"
)

// The decoder attention features against the float64 reference of
// main_test.go, written from the formulas attn.h states: the layer
// computes in float32 (angles, cosines and sines in float64) what the
// reference computes in float64. The inputs and weights are O(1), the
// widths at most 24, the positions below 2^12: float32 rounding of each
// product, norm and rotation is about 1e-7 relative, so the package's
// tolerance (1e-5 absolute + 1e-4 relative, main_test.go) still leaves a
// margin of about 100, while a wrong pairing, frequency, slope, order of
// soft-capping and ALiBi, or a missing sink moves outputs by 1e-3 or more
// (each test also checks that its feature changes the output that much).

// featureLayer is a layer of cfg with seeded weights, random biases for
// the projections that have one, QK-norm weights in [0.5, 1.5] and sink
// logits in [-0.5, 2].
func featureLayer(t *testing.T, cfg Config, seed uint64) *Layer {
	t.Helper()
	l, err := NewLayer(cfg)
	must(t, err)
	t.Cleanup(func() { l.Close() })
	must(t, l.InitWeights(seed))
	set := func(w Weight, lo, hi float32, s uint64) {
		n, err := l.WeightCount(w)
		must(t, err)
		x := randVec(n, s)
		for i := range x {
			x[i] = lo + (x[i]+1)/2*(hi-lo)
		}
		must(t, l.SetWeight(w, x))
	}
	parts := refBiasParts(cfg)
	for i, p := range []struct {
		bit BiasParts
		w   Weight
	}{{BiasQ, WeightQBias}, {BiasK, WeightKBias}, {BiasV, WeightVBias}, {BiasO, WeightOutBias}} {
		if parts&p.bit != 0 {
			set(p.w, -0.5, 0.5, seed+10+uint64(i))
		}
	}
	if cfg.QKNorm != QKNormNone {
		set(WeightQNorm, 0.5, 1.5, seed+20)
		set(WeightKNorm, 0.5, 1.5, seed+21)
	}
	if cfg.Sinks {
		set(WeightSinks, -0.5, 2, seed+22)
	}
	return l
}

// maxDiff is the largest absolute difference of two outputs.
func maxDiff(a []float32, b []float64) float64 {
	m := 0.0
	for i := range a {
		m = math.Max(m, math.Abs(float64(a[i])-b[i]))
	}
	return m
}

// selfCase runs a self-attention forward of l over random x at the
// positions start[b] + i (opts.Positions when start is not all zero) and
// compares it with the reference; it returns the output.
func selfCase(t *testing.T, what string, l *Layer, cfg Config, batch, n int, start []int64, causal bool) []float32 {
	t.Helper()
	x := randVec(batch*n*cfg.EmbedDim, 3)
	out := make([]float32, len(x))
	var mask *Mask
	if causal {
		mask = &Mask{Causal: CausalTopLeft}
	}
	opts := &Options{Positions: &Positions{Start: start}}
	must(t, l.SelfForward(batch, n, x, mask, opts, out))
	pos := rangePositions(start, n)
	rc := refCall{batch: batch, lq: n, lk: n, q: x, k: x, v: x, qpos: pos, kpos: pos}
	if causal {
		rc.causal = CausalTopLeft
	}
	want, _ := reference(t, l, &cfg, rc)
	assertClose(t, what, out, want)
	return out
}

// plainDiff compares with what a layer without the features, with the same
// weights, gives: the features must move the output away from it.
func plainDiff(t *testing.T, l *Layer, cfg Config, batch, n int, out []float32, causal bool) float64 {
	t.Helper()
	plain := Config{EmbedDim: cfg.EmbedDim, NumHeads: cfg.NumHeads, NumKVHeads: cfg.NumKVHeads,
		BiasParts: cfg.BiasParts, NoBias: cfg.NoBias}
	x := randVec(batch*n*cfg.EmbedDim, 3)
	rc := refCall{batch: batch, lq: n, lk: n, q: x, k: x, v: x}
	if causal {
		rc.causal = CausalTopLeft
	}
	want, _ := reference(t, l, &plain, rc)
	return maxDiff(out, want)
}

func TestRotaryEmbeddingsMatchTheReference(t *testing.T) {
	const e, h = 16, 2 // head_dim 8
	for _, c := range []struct {
		name string
		rope Rope
		kvh  int
	}{
		{"halves", Rope{}, 0},
		{"adjacent", Rope{Pairing: RopeAdjacent}, 0},
		{"halves partial", Rope{RotaryDim: 4}, 0},
		{"adjacent partial", Rope{Pairing: RopeAdjacent, RotaryDim: 4}, 0},
		{"halves GQA theta", Rope{Theta: 500, LinearFactor: 2, AttentionFactor: 1.25}, 1},
		{"adjacent table", Rope{Pairing: RopeAdjacent, RotaryDim: 6, InvFreq: []float32{1, 0.3, 0.05}}, 0},
	} {
		t.Run(c.name, func(t *testing.T) {
			r := c.rope
			cfg := Config{EmbedDim: e, NumHeads: h, NumKVHeads: c.kvh, Rope: &r}
			l := featureLayer(t, cfg, 31)
			out := selfCase(t, "from 0", l, cfg, 2, 5, []int64{0, 0}, true)
			if d := plainDiff(t, l, cfg, 2, 5, out, true); d < 1e-3 {
				t.Fatalf("the rotation changes the output by only %g", d)
			}
			selfCase(t, "from start", l, cfg, 2, 5, []int64{7, 300}, false)

			// Explicit positions (left padding, repeated positions), and a
			// cross forward with key positions of their own.
			b, lq, lk := 2, 3, 4
			q, kv := randVec(b*lq*e, 4), randVec(b*lk*e, 5)
			qpos := []int64{0, 0, 1, 9, 10, 11}
			kpos := []int64{5, 6, 7, 8, 0, 40, 41, 42}
			out = make([]float32, b*lq*e)
			must(t, l.Forward(b, lq, lk, q, kv, kv, nil, &Options{Positions: &Positions{Query: qpos, Key: kpos}}, out))
			want, _ := reference(t, l, &cfg,
				refCall{batch: b, lq: lq, lk: lk, q: q, k: kv, v: kv, qpos: qpos, kpos: kpos})
			assertClose(t, "explicit positions", out, want)

			// Self-attention with Query only: the keys take the same positions.
			x := randVec(b*lk*e, 6)
			out = make([]float32, b*lk*e)
			must(t, l.SelfForward(b, lk, x, nil, &Options{Positions: &Positions{Query: kpos}}, out))
			want, _ = reference(t, l, &cfg,
				refCall{batch: b, lq: lk, lk: lk, q: x, k: x, v: x, qpos: kpos, kpos: kpos})
			assertClose(t, "query positions for keys", out, want)
		})
	}
}

// Rotary embeddings only see the distance between query and key: the same
// tokens shifted by any start give the same output.
func TestRotaryEmbeddingsAreRelative(t *testing.T) {
	cfg := Config{EmbedDim: 16, NumHeads: 2, Rope: &Rope{RotaryDim: 6}}
	l := featureLayer(t, cfg, 32)
	x := randVec(4*16, 7)
	a, b := make([]float32, len(x)), make([]float32, len(x))
	must(t, l.SelfForward(1, 4, x, nil, nil, a))
	must(t, l.SelfForward(1, 4, x, nil, &Options{Positions: &Positions{Start: []int64{1000}}}, b))
	assertClose(t, "shifted by 1000", b, to64(a))
}

func TestAlibiMatchesTheReference(t *testing.T) {
	const e, h = 24, 6 // 6 heads: the standard slopes' second series too
	for _, c := range []struct {
		name   string
		alibi  Alibi
		slopes []float32
		causal bool
	}{
		{"causal", AlibiCausal, nil, true},
		{"causal form without mask", AlibiCausal, nil, false},
		{"symmetric", AlibiSymmetric, nil, false},
		{"own slopes", AlibiSymmetric, []float32{0.9, 0.5, -0.25, 0, 1.5, 0.125}, true},
	} {
		t.Run(c.name, func(t *testing.T) {
			cfg := Config{EmbedDim: e, NumHeads: h, Alibi: c.alibi, AlibiSlopes: c.slopes}
			l := featureLayer(t, cfg, 33)
			out := selfCase(t, "from 0", l, cfg, 2, 6, []int64{0, 0}, c.causal)
			if d := plainDiff(t, l, cfg, 2, 6, out, c.causal); d < 1e-3 {
				t.Fatalf("ALiBi changes the output by only %g", d)
			}
			selfCase(t, "from start", l, cfg, 2, 6, []int64{3, 100}, c.causal)
			want := standardSlopes(h)
			if c.slopes != nil {
				want = to64(c.slopes)
			}
			assertClose(t, "Config().AlibiSlopes", l.Config().AlibiSlopes, want)
		})
	}
}

func TestSoftcapSinksAndQKNormMatchTheReference(t *testing.T) {
	const e, h = 16, 4
	for _, c := range []struct {
		name string
		cfg  Config
	}{
		{"softcap", Config{Softcap: 0.3}},
		{"softcap then ALiBi", Config{Softcap: 0.2, Alibi: AlibiCausal}},
		{"sinks", Config{Sinks: true}},
		{"QK-norm per head", Config{QKNorm: QKNormHead}},
		{"QK-norm per head, unit offset, eps", Config{QKNorm: QKNormHead, QKNormUnitOffset: true, QKNormEps: 0.5}},
		{"QK-norm of the whole q and k", Config{QKNorm: QKNormAll, NumKVHeads: 2}},
		{"q, k and v biases only", Config{BiasParts: BiasQ | BiasK | BiasV}},
		{"everything", Config{NumKVHeads: 2, QKNorm: QKNormHead, Softcap: 2, Sinks: true,
			Alibi: AlibiSymmetric, BiasParts: BiasQ | BiasO,
			Rope: &Rope{Pairing: RopeAdjacent, RotaryDim: 2, Theta: 100}}},
	} {
		t.Run(c.name, func(t *testing.T) {
			cfg := c.cfg
			cfg.EmbedDim, cfg.NumHeads = e, h
			l := featureLayer(t, cfg, 34)
			out := selfCase(t, "causal", l, cfg, 2, 5, []int64{0, 0}, true)
			if d := plainDiff(t, l, cfg, 2, 5, out, true); d < 1e-3 && c.name != "q, k and v biases only" {
				t.Fatalf("the feature changes the output by only %g", d)
			}
			selfCase(t, "not causal", l, cfg, 2, 5, []int64{2, 9}, false)
		})
	}
}

// With sinks a query that sees no key gets zeros (the sink takes all the
// weight): the output is the output projection's bias, even with
// EmptyRowsNaN.
func TestSinksTakeEmptyRows(t *testing.T) {
	cfg := Config{EmbedDim: 8, NumHeads: 2, Sinks: true}
	l := featureLayer(t, cfg, 35)
	x := randVec(2*3*8, 8)
	out := make([]float32, len(x))
	must(t, l.SelfForward(2, 3, x, &Mask{KeyLengths: []int64{0, 2}, EmptyRows: EmptyRowsNaN}, nil, out))
	want, _ := reference(t, l, &cfg, refCall{batch: 2, lq: 3, lk: 3, q: x, k: x, v: x,
		keyLengths: []int64{0, 2}})
	assertClose(t, "key lengths 0 and 2", out, want)
	bo, err := l.Weight(WeightOutBias)
	must(t, err)
	assertClose(t, "empty row", out[:8], to64(bo))
}

func TestFeatureWeightsAndConfig(t *testing.T) {
	cfg := Config{EmbedDim: 16, NumHeads: 4, NumKVHeads: 2, QKNorm: QKNormAll, Sinks: true,
		BiasParts: BiasQ | BiasK | BiasV, Rope: &Rope{RotaryDim: 2, InvFreq: []float32{0.5}}}
	l, err := NewLayer(cfg)
	must(t, err)
	defer l.Close()
	for _, c := range []struct {
		w Weight
		n int
	}{{WeightQNorm, 16}, {WeightKNorm, 8}, {WeightSinks, 4}, {WeightQBias, 16}, {WeightKBias, 8}} {
		n, err := l.WeightCount(c.w)
		must(t, err)
		if n != c.n {
			t.Errorf("weight %d: %d values, want %d", c.w, n, c.n)
		}
	}
	if _, err := l.WeightCount(WeightOutBias); !isStatus(err, StatusWeightLayout) {
		t.Errorf("out bias of a q/k/v-bias layer: %v", err)
	}
	// Unset norm weights are ones, sinks zeros.
	qn, err := l.Weight(WeightQNorm)
	must(t, err)
	sk, err := l.Weight(WeightSinks)
	must(t, err)
	if qn[0] != 1 || qn[15] != 1 || sk[0] != 0 {
		t.Errorf("defaults: q_norm %v, sinks %v", qn, sk)
	}

	// The configuration reads back resolved, and is a copy.
	got := l.Config()
	if got.BiasParts != BiasQ|BiasK|BiasV || got.QKNorm != QKNormAll || !got.Sinks || got.Rope == nil ||
		got.Rope.RotaryDim != 2 || len(got.Rope.InvFreq) != 1 || got.Rope.InvFreq[0] != 0.5 ||
		got.Rope.AttentionFactor != 1 || got.QKNormEps != 1e-6 {
		t.Errorf("read back: %+v, rope %+v", got, got.Rope)
	}
	got.Rope.InvFreq[0] = 9
	cfg.Rope.InvFreq[0] = 9
	if l.Config().Rope.InvFreq[0] != 0.5 {
		t.Error("Config() shares the layer's table")
	}
	d, err := NewLayer(Config{EmbedDim: 16, NumHeads: 4, Rope: &Rope{}})
	must(t, err)
	defer d.Close()
	if r := d.Config().Rope; r.Theta != 10000 || r.RotaryDim != 4 || r.LinearFactor != 1 ||
		r.Pairing != RopeHalves || d.Config().BiasParts != BiasAll {
		t.Errorf("defaults read back: %+v", r)
	}
	if _, err := l.WeightCount(WeightSinks); err != nil {
		t.Error(err)
	}
	p, err := NewLayer(Config{EmbedDim: 8, NumHeads: 2})
	must(t, err)
	defer p.Close()
	if c := p.Config(); c.Rope != nil || c.AlibiSlopes != nil || c.Sinks || c.QKNorm != QKNormNone {
		t.Errorf("a plain layer reads back features: %+v", c)
	}
	for _, w := range []Weight{WeightQNorm, WeightKNorm, WeightSinks} {
		if _, err := p.WeightCount(w); !isStatus(err, StatusWeightLayout) {
			t.Errorf("weight %d of a plain layer: %v", w, err)
		}
	}
}

func isStatus(err error, s Status) bool {
	e, ok := err.(*Error)
	return ok && e.Status == s && e.Message != ""
}
