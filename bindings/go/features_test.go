// SPDX-License-Identifier: MIT

package attn

import (
	"math"
	"testing"
)

// The decoder attention features against a float64 reference written here
// from the formulas attn.h states (not from the library's code): the layer
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

func refBiasParts(cfg Config) BiasParts {
	if cfg.BiasParts != 0 {
		return cfg.BiasParts
	}
	if cfg.NoBias {
		return 0
	}
	return BiasAll
}

// standardSlopes are the ALiBi slopes of Press et al. for h heads: with n
// the largest power of two <= h, 2^(-8(i+1)/n) for i < n, then
// 2^(-4(2(i-n)+1)/n).
func standardSlopes(h int) []float64 {
	n := 1
	for n*2 <= h {
		n *= 2
	}
	s := make([]float64, h)
	for i := range s {
		if i < n {
			s[i] = math.Pow(2, -8*float64(i+1)/float64(n))
		} else {
			s[i] = math.Pow(2, -4*float64(2*(i-n)+1)/float64(n))
		}
	}
	return s
}

// featCall is one forward call for the reference: query i of row b at
// qpos[b*lq+i], key j at kpos[b*lk+j].
type featCall struct {
	batch, lq, lk int
	q, k, v       []float32
	qpos, kpos    []int64
	causal        bool    // top-left: key j hidden from query i when j > i
	keyLengths    []int64 // nil = every key
}

// rangePositions is start[b] + i for i < n in each row.
func rangePositions(start []int64, n int) []int64 {
	p := make([]int64, 0, len(start)*n)
	for _, s := range start {
		for i := 0; i < n; i++ {
			p = append(p, s+int64(i))
		}
	}
	return p
}

// featureReference is the layer's output [B, Lq, E] as cfg (what the test
// asked for, defaults resolved here) says it is computed, from the layer's
// weights.
func featureReference(t *testing.T, l *Layer, cfg Config, c featCall) []float64 {
	t.Helper()
	e := cfg.EmbedDim
	h := cfg.NumHeads
	kvh := cfg.NumKVHeads
	if kvh == 0 {
		kvh = h
	}
	d := e / h
	kv := kvh * d
	scale := cfg.Scale
	if scale == 0 {
		scale = 1 / math.Sqrt(float64(d))
	}
	get := func(w Weight) []float64 {
		x, err := l.Weight(w)
		must(t, err)
		return to64(x)
	}
	zeros := func(n int) []float64 { return make([]float64, n) }
	bq, bk, bv, bo := zeros(e), zeros(kv), zeros(kv), zeros(e)
	parts := refBiasParts(cfg)
	if parts&BiasQ != 0 {
		bq = get(WeightQBias)
	}
	if parts&BiasK != 0 {
		bk = get(WeightKBias)
	}
	if parts&BiasV != 0 {
		bv = get(WeightVBias)
	}
	if parts&BiasO != 0 {
		bo = get(WeightOutBias)
	}
	qp := projRef(to64(c.q), c.batch*c.lq, get(WeightQ), bq, e)
	kp := projRef(to64(c.k), c.batch*c.lk, get(WeightK), bk, kv)
	vp := projRef(to64(c.v), c.batch*c.lk, get(WeightV), bv, kv)

	// QK-norm: RMSNorm over groups of `group` values of each row.
	if cfg.QKNorm != QKNormNone {
		eps := cfg.QKNormEps
		if eps == 0 {
			eps = 1e-6
		}
		norm := func(x []float64, width int, w []float64) {
			if cfg.QKNormUnitOffset {
				for i := range w {
					w[i]++
				}
			}
			group := d
			if cfg.QKNorm == QKNormAll {
				group = width
			}
			for s := 0; s < len(x); s += group {
				ms := 0.0
				for i := 0; i < group; i++ {
					ms += x[s+i] * x[s+i]
				}
				r := 1 / math.Sqrt(ms/float64(group)+eps)
				for i := 0; i < group; i++ {
					x[s+i] *= r * w[(s+i)%width%len(w)]
				}
			}
		}
		norm(qp, e, get(WeightQNorm))
		norm(kp, kv, get(WeightKNorm))
	}

	// Rotary embeddings of every head of every row at its position.
	if r := cfg.Rope; r != nil {
		rd := r.RotaryDim
		if rd == 0 {
			rd = d
		}
		theta, lf, af := r.Theta, r.LinearFactor, r.AttentionFactor
		if theta == 0 {
			theta = 10000
		}
		if lf == 0 {
			lf = 1
		}
		if af == 0 {
			af = 1
		}
		inv := make([]float64, rd/2)
		for k := range inv {
			if r.InvFreq != nil {
				inv[k] = float64(r.InvFreq[k])
			} else {
				inv[k] = math.Pow(theta, -2*float64(k)/float64(rd)) / lf
			}
		}
		rotate := func(x []float64, width int, pos []int64) {
			for row, p := range pos {
				for hs := row * width; hs < (row+1)*width; hs += d {
					for k := range inv {
						i, j := hs+k, hs+k+rd/2
						if r.Pairing == RopeAdjacent {
							i, j = hs+2*k, hs+2*k+1
						}
						a := float64(p) * inv[k]
						xi, xj := x[i], x[j]
						x[i] = af * (xi*math.Cos(a) - xj*math.Sin(a))
						x[j] = af * (xj*math.Cos(a) + xi*math.Sin(a))
					}
				}
			}
		}
		rotate(qp, e, c.qpos)
		rotate(kp, kv, c.kpos)
	}

	var slopes []float64
	if cfg.Alibi != AlibiNone {
		slopes = standardSlopes(h)
		if cfg.AlibiSlopes != nil {
			slopes = to64(cfg.AlibiSlopes)
		}
	}
	var sinks []float64
	if cfg.Sinks {
		sinks = get(WeightSinks)
	}

	att := make([]float64, c.batch*c.lq*e)
	for b := 0; b < c.batch; b++ {
		n := c.lk
		if c.keyLengths != nil {
			n = int(c.keyLengths[b])
		}
		for hh := 0; hh < h; hh++ {
			g := hh * kvh / h
			for i := 0; i < c.lq; i++ {
				pq := float64(c.qpos[b*c.lq+i])
				var idx []int
				var sc []float64
				for j := 0; j < n; j++ {
					if c.causal && j > i {
						continue
					}
					s := 0.0
					for x := 0; x < d; x++ {
						s += qp[(b*c.lq+i)*e+hh*d+x] * kp[(b*c.lk+j)*kv+g*d+x]
					}
					s *= scale
					if cfg.Softcap > 0 {
						s = cfg.Softcap * math.Tanh(s/cfg.Softcap)
					}
					pk := float64(c.kpos[b*c.lk+j])
					switch cfg.Alibi {
					case AlibiCausal:
						s += slopes[hh] * (pk - pq)
					case AlibiSymmetric:
						s -= slopes[hh] * math.Abs(pq-pk)
					}
					idx, sc = append(idx, j), append(sc, s)
				}
				if len(idx) == 0 {
					continue // zeros before the output projection
				}
				mx := math.Inf(-1)
				for _, s := range sc {
					mx = math.Max(mx, s)
				}
				if sinks != nil {
					mx = math.Max(mx, sinks[hh])
				}
				den := 0.0
				for _, s := range sc {
					den += math.Exp(s - mx)
				}
				if sinks != nil {
					den += math.Exp(sinks[hh] - mx)
				}
				for jj, j := range idx {
					p := math.Exp(sc[jj]-mx) / den
					for x := 0; x < d; x++ {
						att[(b*c.lq+i)*e+hh*d+x] += p * vp[(b*c.lk+j)*kv+g*d+x]
					}
				}
			}
		}
	}
	return projRef(att, c.batch*c.lq, get(WeightOut), bo, e)
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
	want := featureReference(t, l, cfg, featCall{batch: batch, lq: n, lk: n, q: x, k: x, v: x,
		qpos: pos, kpos: pos, causal: causal})
	assertClose(t, what, out, want)
	return out
}

// plainOutput is what a layer without the features, with the same
// weights, gives: the features must move the output away from it.
func plainDiff(t *testing.T, l *Layer, cfg Config, batch, n int, out []float32, causal bool) float64 {
	t.Helper()
	plain := Config{EmbedDim: cfg.EmbedDim, NumHeads: cfg.NumHeads, NumKVHeads: cfg.NumKVHeads,
		BiasParts: cfg.BiasParts, NoBias: cfg.NoBias}
	x := randVec(batch*n*cfg.EmbedDim, 3)
	zero := make([]int64, batch)
	want := featureReference(t, l, plain, featCall{batch: batch, lq: n, lk: n, q: x, k: x, v: x,
		qpos: rangePositions(zero, n), kpos: rangePositions(zero, n), causal: causal})
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
			assertClose(t, "explicit positions", out, featureReference(t, l, cfg,
				featCall{batch: b, lq: lq, lk: lk, q: q, k: kv, v: kv, qpos: qpos, kpos: kpos}))

			// Self-attention with Query only: the keys take the same positions.
			x := randVec(b*lk*e, 6)
			out = make([]float32, b*lk*e)
			must(t, l.SelfForward(b, lk, x, nil, &Options{Positions: &Positions{Query: kpos}}, out))
			assertClose(t, "query positions for keys", out, featureReference(t, l, cfg,
				featCall{batch: b, lq: lk, lk: lk, q: x, k: x, v: x, qpos: kpos, kpos: kpos}))
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
	pos := rangePositions([]int64{0, 0}, 3)
	want := featureReference(t, l, cfg, featCall{batch: 2, lq: 3, lk: 3, q: x, k: x, v: x,
		qpos: pos, kpos: pos, keyLengths: []int64{0, 2}})
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
