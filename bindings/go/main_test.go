// SPDX-License-Identifier: MIT

package attn

import (
	"fmt"
	"math"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
)

// TestMain runs the tests under GODEBUG=cgocheck=2, which checks every
// store of a Go pointer into C memory: the binary runs itself again with it
// when it was started without.
func TestMain(m *testing.M) {
	if !strings.Contains(os.Getenv("GODEBUG"), "cgocheck=2") {
		godebug := "cgocheck=2"
		if g := os.Getenv("GODEBUG"); g != "" {
			godebug = g + "," + godebug
		}
		cmd := exec.Command(os.Args[0], os.Args[1:]...)
		cmd.Env = append(os.Environ(), "GODEBUG="+godebug)
		cmd.Stdin, cmd.Stdout, cmd.Stderr = os.Stdin, os.Stdout, os.Stderr
		if err := cmd.Run(); err != nil {
			if ee, ok := err.(*exec.ExitError); ok {
				os.Exit(ee.ExitCode())
			}
			fmt.Fprintln(os.Stderr, "cannot rerun the tests with cgocheck=2:", err)
			os.Exit(2)
		}
		os.Exit(0)
	}
	os.Exit(m.Run())
}

// Tolerances of every comparison with torch or the reference: the library
// computes in float32 what they compute in float64; over these small
// widths float32 rounding stays below 1e-6, so 1e-5 absolute + 1e-4
// relative leaves a wide margin while a wrong mask, weight or layout is off
// by 1e-2 or more.
const (
	atol = 1e-5
	rtol = 1e-4
)

func assertClose(t *testing.T, what string, got []float32, want []float64) {
	t.Helper()
	if len(got) != len(want) {
		t.Fatalf("%s: %d values, want %d", what, len(got), len(want))
	}
	for i := range got {
		g, w := float64(got[i]), want[i]
		if math.IsNaN(w) && math.IsNaN(g) {
			continue
		}
		if !(math.Abs(g-w) <= atol+rtol*math.Abs(w)) {
			t.Fatalf("%s: element %d is %g but should be %g", what, i, g, w)
		}
	}
}

// projRef is x W^T + b in float64: x [rows, in], W [out, in].
func projRef(x []float64, rows int, w, b []float64, out int) []float64 {
	in := len(w) / out
	y := make([]float64, rows*out)
	for r := 0; r < rows; r++ {
		for o := 0; o < out; o++ {
			s := b[o]
			for i := 0; i < in; i++ {
				s += x[r*in+i] * w[o*in+i]
			}
			y[r*out+o] = s
		}
	}
	return y
}

func to64(x []float32) []float64 {
	y := make([]float64, len(x))
	for i, v := range x {
		y[i] = float64(v)
	}
	return y
}

// randVec is deterministic values in [-1, 1).
func randVec(n int, seed uint64) []float32 {
	s := seed*0x9E3779B97F4A7C15 + 1
	x := make([]float32, n)
	for i := range x {
		s = s*6364136223846793005 + 1442695040888963407
		x[i] = float32(s>>40)/float32(1<<24)*2 - 1
	}
	return x
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

// randomLayer has seeded weights and random (nonzero) biases.
func randomLayer(t *testing.T, e, h, kdim, vdim int, seed uint64) *Layer {
	t.Helper()
	l, err := NewLayer(Config{EmbedDim: e, NumHeads: h, KDim: kdim, VDim: vdim})
	must(t, err)
	t.Cleanup(func() { l.Close() })
	must(t, l.InitWeights(seed))
	for i, w := range []Weight{WeightQBias, WeightKBias, WeightVBias, WeightOutBias} {
		n, err := l.WeightCount(w)
		must(t, err)
		must(t, l.SetWeight(w, randVec(n, seed+100+uint64(i))))
	}
	return l
}

// ---------------------------------------------------------------------------
// The torch fixture of tests/data (the numbers every language checks).

func dataDir() string { return filepath.Join("..", "..", "tests", "data") }

// torchCase is one case of tests/data/torch_mha_expected.txt (the format
// is described in make_torch_fixture.py next to it).
type torchCase struct {
	name, prefix      string
	e, h, kdim, vdim  int // kdim, vdim: the real widths
	bias              bool
	batch, lenQ, lenK int
	// causal: torch's attn_mask triu(ones(Lq, Lk), 1), CausalTopLeft.
	causal            bool
	query, key, value []float32
	// keyPadding [B, Lk], true = ignore the key; nil = none.
	keyPadding []bool
	// What torch computed, in float64.
	out, weightsPerHead, weightsAverage []float64
	isSelf                              bool // key and value are the query
}

// mask is the case's mask (nil when it has none).
func (c torchCase) mask() *Mask {
	if !c.causal && c.keyPadding == nil {
		return nil
	}
	m := &Mask{KeyPadding: c.keyPadding}
	if c.causal {
		m.Causal = CausalTopLeft
	}
	return m
}

// torchCases reads tests/data/torch_mha_expected.txt, the numbers the C,
// Python and Rust tests check too: "key values..." lines, "case NAME"
// starting a case.
func torchCases(t *testing.T) []torchCase {
	t.Helper()
	raw, err := os.ReadFile(filepath.Join(dataDir(), "torch_mha_expected.txt"))
	must(t, err)
	var names []string
	var fields []map[string][]string
	for _, line := range strings.Split(string(raw), "\n") {
		tokens := strings.Fields(line)
		if len(tokens) == 0 || strings.HasPrefix(tokens[0], "#") {
			continue
		}
		if tokens[0] == "case" {
			names = append(names, tokens[1])
			fields = append(fields, map[string][]string{})
			continue
		}
		if len(fields) == 0 {
			t.Fatalf("%s before the first case", tokens[0])
		}
		f := fields[len(fields)-1]
		if _, dup := f[tokens[0]]; dup {
			t.Fatalf("%s: %s twice", names[len(names)-1], tokens[0])
		}
		f[tokens[0]] = tokens[1:]
	}
	var cases []torchCase
	for i, name := range names {
		cases = append(cases, parseTorchCase(t, name, fields[i]))
	}
	if len(cases) < 10 {
		t.Fatalf("only %d torch cases read", len(cases))
	}
	return cases
}

func parseTorchCase(t *testing.T, name string, f map[string][]string) torchCase {
	t.Helper()
	need := func(key string) []string {
		v, ok := f[key]
		if !ok {
			t.Fatalf("%s: no %s", name, key)
		}
		return v
	}
	num := func(key string, n, bits int) []float64 {
		v := need(key)
		if len(v) != n {
			t.Fatalf("%s: %s has %d values, its shape %d", name, key, len(v), n)
		}
		x := make([]float64, n)
		for i, s := range v {
			var err error
			if x[i], err = strconv.ParseFloat(s, bits); err != nil {
				t.Fatalf("%s: %s: %v", name, key, err)
			}
		}
		return x
	}
	integer := func(key string) int { return int(num(key, 1, 64)[0]) }
	floats := func(key string, n int) []float32 {
		x := make([]float32, n)
		for i, v := range num(key, n, 32) {
			x[i] = float32(v)
		}
		return x
	}
	c := torchCase{
		name: name, prefix: need("prefix")[0],
		e: integer("embed_dim"), h: integer("num_heads"), kdim: integer("kdim"), vdim: integer("vdim"),
		bias: integer("bias") != 0, batch: integer("batch"), lenQ: integer("len_q"), lenK: integer("len_k"),
		causal: integer("causal") != 0,
	}
	c.query = floats("query", c.batch*c.lenQ*c.e)
	_, hasKey := f["key"]
	c.isSelf = !hasKey
	c.key = c.query
	if hasKey {
		c.key = floats("key", c.batch*c.lenK*c.kdim)
	}
	c.value = c.key
	if _, ok := f["value"]; ok {
		c.value = floats("value", c.batch*c.lenK*c.vdim)
	}
	if len(c.key) != c.batch*c.lenK*c.kdim || len(c.value) != c.batch*c.lenK*c.vdim {
		t.Fatalf("%s: key or value has the wrong length", name)
	}
	if _, ok := f["key_padding"]; ok {
		for _, v := range num("key_padding", c.batch*c.lenK, 64) {
			c.keyPadding = append(c.keyPadding, v != 0)
		}
	}
	c.out = num("out", c.batch*c.lenQ*c.e, 64)
	c.weightsPerHead = num("weights_per_head", c.batch*c.h*c.lenQ*c.lenK, 64)
	c.weightsAverage = num("weights_average", c.batch*c.lenQ*c.lenK, 64)
	return c
}

// ---------------------------------------------------------------------------
// A float64 reference of the attention attn.h specifies, written from the
// formulas it states (not from the library's code): the projections with
// the biases the layer has, QK-norm, rotary embeddings, the scaled scores,
// soft-capping, ALiBi, the mask, the sinks in the softmax's denominator and
// the output projection.

// refCall is one call for the reference: query i of row b at
// qpos[b*lq+i], key j at kpos[b*lk+j] (nil: i and j), and the mask.
type refCall struct {
	batch, lq, lk int
	q, k, v       []float32
	qpos, kpos    []int64
	causal        Causal
	keyLengths    []int64 // [B]: keys j >= keyLengths[b] hidden; nil = none
	padding       []bool  // [B, Lk]: true hides the key; nil = none
	bias          func(b, h, i, j int) float64
	window        int // > 0: keys window or more before the query hidden
}

// reference gives out [B, Lq, E] and the per-head probabilities [B, H, Lq,
// Lk] of call c from the layer's weights, computed as cfg says (nil: the
// layer's own Config(); a test's Config may leave defaults, resolved
// here). A query that sees no key and has no sink gets zeros.
func reference(t *testing.T, l *Layer, cfg *Config, c refCall) ([]float64, []float64) {
	t.Helper()
	if cfg == nil {
		own := l.Config()
		// The features' settings must come from the test, not be read
		// back from the layer under test.
		if own.Rope != nil || own.Alibi != AlibiNone || own.QKNorm != QKNormNone ||
			own.Softcap != 0 || own.Sinks {
			t.Fatalf("reference: a layer with decoder features needs the test's own Config")
		}
		cfg = &own
	}
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
	parts := refBiasParts(*cfg)
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
	qpos, kpos := c.qpos, c.kpos
	if qpos == nil {
		qpos = rangePositions(make([]int64, c.batch), c.lq)
	}
	if kpos == nil {
		kpos = rangePositions(make([]int64, c.batch), c.lk)
	}

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
		rotate(qp, e, qpos)
		rotate(kp, kv, kpos)
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
	probs := make([]float64, c.batch*h*c.lq*c.lk)
	for b := 0; b < c.batch; b++ {
		n := c.lk
		if c.keyLengths != nil {
			n = int(c.keyLengths[b])
		}
		for hh := 0; hh < h; hh++ {
			g := hh * kvh / h
			for i := 0; i < c.lq; i++ {
				// last: the last key the causal mask shows the query, and
				// where the window ends.
				last := i
				if c.causal == CausalBottomRight {
					last = i + n - c.lq
				}
				pq := float64(qpos[b*c.lq+i])
				scores := make([]float64, c.lk)
				mx := math.Inf(-1)
				for j := 0; j < c.lk; j++ {
					scores[j] = math.Inf(-1)
					if j >= n || (c.padding != nil && c.padding[b*c.lk+j]) ||
						(c.causal != CausalNone && j > last) || (c.window > 0 && last-j >= c.window) {
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
					pk := float64(kpos[b*c.lk+j])
					switch cfg.Alibi {
					case AlibiCausal:
						s += slopes[hh] * (pk - pq)
					case AlibiSymmetric:
						s -= slopes[hh] * math.Abs(pq-pk)
					}
					if c.bias != nil {
						s += c.bias(b, hh, i, j)
					}
					scores[j] = s
					mx = math.Max(mx, s)
				}
				if sinks != nil {
					mx = math.Max(mx, sinks[hh])
				}
				if math.IsInf(mx, -1) {
					continue // zeros before the output projection
				}
				den := 0.0
				for _, s := range scores {
					den += math.Exp(s - mx)
				}
				if sinks != nil {
					den += math.Exp(sinks[hh] - mx)
				}
				for j, s := range scores {
					p := math.Exp(s-mx) / den
					probs[((b*h+hh)*c.lq+i)*c.lk+j] = p
					for x := 0; x < d; x++ {
						att[(b*c.lq+i)*e+hh*d+x] += p * vp[(b*c.lk+j)*kv+g*d+x]
					}
				}
			}
		}
	}
	return projRef(att, c.batch*c.lq, get(WeightOut), bo, e), probs
}

// refBiasParts is the set of projections with a bias that cfg asks for.
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

func averageHeads(p []float64, batch, h, lq, lk int) []float64 {
	a := make([]float64, batch*lq*lk)
	for b := 0; b < batch; b++ {
		for hh := 0; hh < h; hh++ {
			for x := 0; x < lq*lk; x++ {
				a[b*lq*lk+x] += p[(b*h+hh)*lq*lk+x] / float64(h)
			}
		}
	}
	return a
}

func TestRunsUnderCgocheck2(t *testing.T) {
	if !strings.Contains(os.Getenv("GODEBUG"), "cgocheck=2") {
		t.Fatal("GODEBUG lacks cgocheck=2")
	}
}
