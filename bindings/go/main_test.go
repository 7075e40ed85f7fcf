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
// The torch fixture of tests/data (the numbers the C tests check).

func dataDir() string { return filepath.Join("..", "..", "tests", "data") }

type torchCase struct {
	name, prefix           string
	e, h, kdim, vdim       int
	bias                   bool
	batch, lenQ, lenK      int
	query, key, value, out []float32
	isSelf                 bool
}

// torchCases parses the arrays and the torch_cases table of
// tests/data/torch_mha_expected.h.
func torchCases(t *testing.T) []torchCase {
	t.Helper()
	raw, err := os.ReadFile(filepath.Join(dataDir(), "torch_mha_expected.h"))
	must(t, err)
	text := string(raw)
	arrays := map[string][]float32{}
	for _, part := range strings.Split(text, "static const float ")[1:] {
		name := part[:strings.IndexByte(part, '[')]
		count, err := strconv.Atoi(part[strings.IndexByte(part, '[')+1 : strings.IndexByte(part, ']')])
		must(t, err)
		body := part[strings.IndexByte(part, '{')+1 : strings.Index(part, "};")]
		var vals []float32
		for _, v := range strings.Split(body, ",") {
			v = strings.TrimSuffix(strings.TrimSpace(v), "f")
			if v == "" {
				continue
			}
			f, err := strconv.ParseFloat(v, 32)
			must(t, err)
			vals = append(vals, float32(f))
		}
		if len(vals) != count {
			t.Fatalf("%s: %d values, declared %d", name, len(vals), count)
		}
		arrays[name] = vals
	}
	table := text[strings.Index(text, "torch_cases[] = {"):]
	table = table[strings.IndexByte(table, '{')+1 : strings.Index(table, "};")]
	var cases []torchCase
	for _, entry := range strings.Split(table, "}") {
		entry = strings.TrimPrefix(strings.TrimSpace(strings.TrimPrefix(strings.TrimSpace(entry), ",")), "{")
		if entry == "" {
			continue
		}
		var f []string
		for _, s := range strings.Split(entry, ",") {
			f = append(f, strings.Trim(strings.TrimSpace(s), `"`))
		}
		if len(f) != 14 {
			t.Fatalf("unexpected torch_cases entry %q", entry)
		}
		n := func(i int) int {
			v, err := strconv.Atoi(f[i])
			must(t, err)
			return v
		}
		arr := func(i int) []float32 {
			a, ok := arrays[f[i]]
			if !ok {
				t.Fatalf("no array %s", f[i])
			}
			return a
		}
		cases = append(cases, torchCase{
			name: f[0], prefix: f[1], e: n(2), h: n(3), kdim: n(4), vdim: n(5), bias: n(6) != 0,
			batch: n(7), lenQ: n(8), lenK: n(9),
			query: arr(10), key: arr(11), value: arr(12), out: arr(13),
			isSelf: f[10] == f[11] && f[11] == f[12],
		})
	}
	if len(cases) < 5 {
		t.Fatalf("only %d torch cases parsed", len(cases))
	}
	return cases
}

// ---------------------------------------------------------------------------
// A float64 reference of the attention attn.h specifies.

type refMask struct {
	causal     int // 0 none, 1 top-left, 2 bottom-right
	keyLengths []int64
	padding    []bool
	bias       func(b, h, i, j int) float64
	window     int
}

// reference gives out [B, Lq, E] and per-head probabilities [B, H, Lq, Lk]
// from the layer's own weights, with zero rows for queries that see no key.
func reference(t *testing.T, l *Layer, batch, lq, lk int, q, k, v []float32, m refMask) ([]float64, []float64) {
	t.Helper()
	c := l.Config()
	e, h := c.EmbedDim, c.NumHeads
	d := e / h
	kvh := c.NumKVHeads
	kv := kvh * d
	get := func(w Weight) []float64 {
		x, err := l.Weight(w)
		must(t, err)
		return to64(x)
	}
	bq, bk, bv, bo := make([]float64, e), make([]float64, kv), make([]float64, kv), make([]float64, e)
	if !c.NoBias {
		bq, bk, bv, bo = get(WeightQBias), get(WeightKBias), get(WeightVBias), get(WeightOutBias)
	}
	proj := func(x []float32, rows, in int, w, b []float64, out int) []float64 {
		y := make([]float64, rows*out)
		for r := 0; r < rows; r++ {
			for o := 0; o < out; o++ {
				s := b[o]
				for i := 0; i < in; i++ {
					s += float64(x[r*in+i]) * w[o*in+i]
				}
				y[r*out+o] = s
			}
		}
		return y
	}
	qp := proj(q, batch*lq, e, get(WeightQ), bq, e)
	kp := proj(k, batch*lk, c.KDim, get(WeightK), bk, kv)
	vp := proj(v, batch*lk, c.VDim, get(WeightV), bv, kv)
	att := make([]float64, batch*lq*e)
	probs := make([]float64, batch*h*lq*lk)
	for b := 0; b < batch; b++ {
		n := int64(lk)
		if m.keyLengths != nil {
			n = m.keyLengths[b]
		}
		for hh := 0; hh < h; hh++ {
			g := hh * kvh / h
			for i := 0; i < lq; i++ {
				p := int64(i)
				if m.causal == 2 {
					p = int64(i) + n - int64(lq)
				}
				scores := make([]float64, lk)
				mx := math.Inf(-1)
				for j := 0; j < lk; j++ {
					jj := int64(j)
					scores[j] = math.Inf(-1)
					if jj >= n || (m.padding != nil && m.padding[b*lk+j]) ||
						(m.causal == 1 && j > i) || (m.causal == 2 && jj > p) ||
						(m.window > 0 && p-jj >= int64(m.window)) {
						continue
					}
					s := 0.0
					for x := 0; x < d; x++ {
						s += qp[(b*lq+i)*e+hh*d+x] * kp[(b*lk+j)*kv+g*d+x]
					}
					s *= c.Scale
					if m.bias != nil {
						s += m.bias(b, hh, i, j)
					}
					scores[j] = s
					mx = math.Max(mx, s)
				}
				if math.IsInf(mx, -1) {
					continue
				}
				sum := 0.0
				for _, s := range scores {
					sum += math.Exp(s - mx)
				}
				for j := 0; j < lk; j++ {
					pr := math.Exp(scores[j]-mx) / sum
					probs[((b*h+hh)*lq+i)*lk+j] = pr
					for x := 0; x < d; x++ {
						att[(b*lq+i)*e+hh*d+x] += pr * vp[(b*lk+j)*kv+g*d+x]
					}
				}
			}
		}
	}
	wo := get(WeightOut)
	out := make([]float64, batch*lq*e)
	for r := 0; r < batch*lq; r++ {
		for o := 0; o < e; o++ {
			s := bo[o]
			for i := 0; i < e; i++ {
				s += att[r*e+i] * wo[o*e+i]
			}
			out[r*e+o] = s
		}
	}
	return out, probs
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
