// SPDX-License-Identifier: MIT

package attn

import (
	"math"
	"testing"
)

// Decoding with the positional features: steps through the KV cache take
// each token's position from its place in the row (plus Positions.Start)
// and must give what one causal forward at those positions gives (a step
// that put a token or a cached key elsewhere fails it). A Start shifts
// every position of a row alike, which rotary embeddings and ALiBi cannot
// see (they depend on differences of positions): what the Start cases
// check is that it is accepted and kept consistent between forward and
// steps; the explicit positions of TestRotaryEmbeddingsMatchTheReference
// check positions themselves.
func TestDecodeStepsWithFeaturesEqualAForwardWithPositions(t *testing.T) {
	const e, h = 16, 4
	for _, c := range []struct {
		name  string
		cfg   Config
		start []int64
	}{
		{"rope halves partial, GQA", Config{NumKVHeads: 2, Rope: &Rope{RotaryDim: 2}}, nil},
		{"rope halves, rows from 0 and 5", Config{Rope: &Rope{}}, []int64{0, 5}},
		{"rope adjacent, QK-norm, softcap, sinks", Config{NumKVHeads: 1, QKNorm: QKNormHead, Softcap: 1.5,
			Sinks: true, Rope: &Rope{Pairing: RopeAdjacent, Theta: 1000}}, []int64{12, 3}},
		{"ALiBi", Config{Alibi: AlibiCausal}, []int64{4, 0}},
	} {
		t.Run(c.name, func(t *testing.T) {
			cfg := c.cfg
			cfg.EmbedDim, cfg.NumHeads = e, h
			l := featureLayer(t, cfg, 41)
			b, n := 2, 7
			x := randVec(b*n*e, 9)
			full := make([]float32, len(x))
			var pos *Positions
			start := c.start
			if start != nil {
				pos = &Positions{Start: start}
			} else {
				start = []int64{0, 0}
			}
			must(t, l.SelfForward(b, n, x, &Mask{Causal: CausalTopLeft}, &Options{Positions: pos}, full))
			p := rangePositions(start, n)
			want, _ := reference(t, l, &cfg, refCall{batch: b, lq: n, lk: n, q: x, k: x, v: x,
				qpos: p, kpos: p, causal: CausalTopLeft})
			assertClose(t, "forward", full, want)

			cache, err := NewKvCache(l, b, 8, 0)
			must(t, err)
			defer cache.Close()
			rows := func(from, k int) []float32 {
				var xs []float32
				for row := 0; row < b; row++ {
					xs = append(xs, x[(row*n+from)*e:(row*n+from+k)*e]...)
				}
				return xs
			}
			step := func(from, k int) {
				t.Helper()
				out := make([]float32, b*k*e)
				must(t, l.DecodeStep(cache, k, rows(from, k), nil, &Options{Positions: pos}, out))
				assertClose(t, "step", out, to64(rows2(full, b, n, e, from, k)))
			}
			from := 0
			for _, k := range []int{1, 2, 4} {
				step(from, k)
				from += k
			}
			// Rolled back, the next tokens are again at their places.
			must(t, cache.Truncate([]int64{3, 3}))
			step(3, 4)
		})
	}
}

// rows2 is tokens [from, from+k) of every row of a [b, n, e] tensor.
func rows2(x []float32, b, n, e, from, k int) []float32 {
	var y []float32
	for row := 0; row < b; row++ {
		y = append(y, x[(row*n+from)*e:(row*n+from+k)*e]...)
	}
	return y
}

// Invalid feature settings are an *Error whose message names what is
// wrong, never a panic; failed calls leave their outputs unchanged.
func TestInvalidFeatureSettings(t *testing.T) {
	const slopesWithoutAlibi = "alibi_slopes given but alibi is ATTN_ALIBI_NONE " +
		"(set alibi, or leave alibi_slopes NULL)"
	nan, inf := math.NaN(), math.Inf(1)
	for _, c := range []struct {
		name     string
		cfg      Config
		status   Status
		fragment string
	}{
		{"odd rotary dim", Config{Rope: &Rope{RotaryDim: 3}}, StatusBadSize, "rotary_dim"},
		{"rotary dim above head dim", Config{Rope: &Rope{RotaryDim: 10}}, StatusBadSize, "rotary_dim"},
		{"negative rotary dim", Config{Rope: &Rope{RotaryDim: -2}}, StatusBadSize, "rotary_dim"},
		{"NaN theta", Config{Rope: &Rope{Theta: nan}}, StatusBadOption, "theta"},
		{"negative theta", Config{Rope: &Rope{Theta: -1}}, StatusBadOption, "theta"},
		{"infinite linear factor", Config{Rope: &Rope{LinearFactor: inf}}, StatusBadOption, "linear_factor"},
		{"NaN attention factor", Config{Rope: &Rope{AttentionFactor: nan}}, StatusBadOption, "attention_factor"},
		{"unknown pairing", Config{Rope: &Rope{Pairing: 7}}, StatusBadOption, "pairing"},
		{"table of the wrong length", Config{Rope: &Rope{InvFreq: make([]float32, 3)}}, StatusBadSize,
			"Rope.InvFreq has 3 elements, expected 4 = [rotary_dim/2] [4]"},
		{"negative frequency", Config{Rope: &Rope{RotaryDim: 2, InvFreq: []float32{-1}}}, StatusNotFinite, "inv_freq"},
		{"negative softcap", Config{Softcap: -1}, StatusBadOption, "softcap"},
		{"NaN softcap", Config{Softcap: nan}, StatusBadOption, "softcap"},
		{"infinite softcap", Config{Softcap: inf}, StatusBadOption, "softcap"},
		{"too few slopes", Config{Alibi: AlibiCausal, AlibiSlopes: []float32{1}}, StatusBadSize,
			"AlibiSlopes has 1 elements, expected 2 = [num_heads] [2]"},
		{"too many slopes", Config{Alibi: AlibiCausal, AlibiSlopes: make([]float32, 3)}, StatusBadSize,
			"AlibiSlopes has 3 elements, expected 2 = [num_heads] [2]"},
		// Refused by the library, whatever the slopes' count.
		{"slopes without ALiBi", Config{AlibiSlopes: make([]float32, 2)}, StatusBadOption, slopesWithoutAlibi},
		{"wrong count of slopes without ALiBi", Config{AlibiSlopes: make([]float32, 3)}, StatusBadOption,
			slopesWithoutAlibi},
		{"empty slopes without ALiBi", Config{AlibiSlopes: []float32{}}, StatusBadOption, slopesWithoutAlibi},
		{"NaN slope", Config{Alibi: AlibiSymmetric, AlibiSlopes: []float32{1, float32(nan)}}, StatusNotFinite, "slope"},
		{"unknown ALiBi form", Config{Alibi: 5}, StatusBadOption, "alibi"},
		{"unknown QK-norm", Config{QKNorm: 9}, StatusBadOption, "qk_norm"},
		{"negative QK-norm eps", Config{QKNorm: QKNormHead, QKNormEps: -1}, StatusBadOption, "qk_norm_eps"},
		{"unknown bias bit", Config{BiasParts: 16}, StatusBadOption, "bias_parts"},
	} {
		t.Run(c.name, func(t *testing.T) {
			cfg := c.cfg
			cfg.EmbedDim, cfg.NumHeads = 16, 2 // head_dim 8
			l, err := NewLayer(cfg)
			if l != nil {
				l.Close()
			}
			e, ok := err.(*Error)
			if !ok || e.Status != c.status || !containsFold(e.Message, c.fragment) {
				t.Fatalf("got %v, want status %d (%s) with %q", err, c.status, c.status, c.fragment)
			}
		})
	}
}

func containsFold(s, sub string) bool {
	for i := 0; i+len(sub) <= len(s); i++ {
		if equalFold(s[i:i+len(sub)], sub) {
			return true
		}
	}
	return false
}

func equalFold(a, b string) bool {
	for i := 0; i < len(a); i++ {
		x, y := a[i], b[i]
		if 'A' <= x && x <= 'Z' {
			x += 'a' - 'A'
		}
		if 'A' <= y && y <= 'Z' {
			y += 'a' - 'A'
		}
		if x != y {
			return false
		}
	}
	return true
}

func TestInvalidPositions(t *testing.T) {
	cfg := Config{EmbedDim: 8, NumHeads: 2, Rope: &Rope{}}
	l := featureLayer(t, cfg, 42)
	b, n := 2, 3
	x := randVec(b*n*8, 10)
	size := len(x)
	fwd := func(p *Positions) func([]float32) error {
		return func(o []float32) error { return l.SelfForward(b, n, x, nil, &Options{Positions: p}, o) }
	}
	cross := func(p *Positions) func([]float32) error {
		return func(o []float32) error {
			return l.Forward(b, n, 2, x, x[:b*2*8], x[:b*2*8], nil, &Options{Positions: p}, o)
		}
	}
	expectErr(t, StatusBadOption, "q_positions[4] = -1", size, fwd(&Positions{Query: []int64{0, 1, 2, 0, -1, 2}}))
	expectErr(t, StatusBadOption, "ATTN_MAX_POSITION", size,
		fwd(&Positions{Query: []int64{0, 1, MaxPosition + 1, 0, 1, 2}}))
	expectErr(t, StatusBadOption, "start[1]", size, fwd(&Positions{Start: []int64{0, MaxPosition - 1}}))
	expectErr(t, StatusBadOption, "start[0]", size, fwd(&Positions{Start: []int64{-1, 0}}))
	expectErr(t, StatusBadOption, "k_positions[0] = -5", size,
		cross(&Positions{Key: []int64{-5, 0, 0, 0}}))
	expectErr(t, StatusBadSize, "Positions.Start has 1 elements", size, fwd(&Positions{Start: []int64{0}}))
	expectErr(t, StatusBadSize, "Positions.Query has 5 elements", size, fwd(&Positions{Query: make([]int64, 5)}))
	expectErr(t, StatusBadSize, "Positions.Key has 6 elements", size, cross(&Positions{Key: make([]int64, 6)}))
	if _, err := l.ForwardScratchSize(b, n, n, &Options{Positions: &Positions{Start: []int64{1}}}); !isStatus(err, StatusBadSize) {
		t.Errorf("scratch size with a short Start: %v", err)
	}

	cache, err := NewKvCache(l, b, 4, 0)
	must(t, err)
	defer cache.Close()
	step := func(p *Positions) func([]float32) error {
		return func(o []float32) error { return l.DecodeStep(cache, 1, x[:b*8], nil, &Options{Positions: p}, o) }
	}
	// The library's refusal, whatever the length of the slice.
	const refused = "q_positions and k_positions must be NULL"
	expectErr(t, StatusBadOption, refused, b*8, step(&Positions{Query: []int64{0, 0}}))
	expectErr(t, StatusBadOption, refused, b*8, step(&Positions{Key: []int64{0, 0}}))
	expectErr(t, StatusBadOption, refused, b*8, step(&Positions{Query: []int64{0, 0, 0}}))
	expectErr(t, StatusBadOption, "ATTN_MAX_POSITION", b*8, step(&Positions{Start: []int64{0, MaxPosition + 1}}))
	expectErr(t, StatusBadSize, "Positions.Start", b*8, step(&Positions{Start: []int64{0, 0, 0}}))
	if lengths, _, err := cache.Lengths(); err != nil || lengths[0] != 0 || lengths[1] != 0 {
		t.Fatalf("failed steps changed the cache: %v %v", lengths, err)
	}

	// A memory has no positions: a rotary layer cannot have one.
	if _, err := NewMemory(l, 1, 4); !isStatus(err, StatusBadOption) {
		t.Errorf("memory of a rotary layer: %v", err)
	}
	if err := l.SetWeight(WeightSinks, []float32{0, 0}); !isStatus(err, StatusWeightLayout) {
		t.Errorf("sinks of a layer without: %v", err)
	}
	s := featureLayer(t, Config{EmbedDim: 8, NumHeads: 2, Sinks: true}, 43)
	if err := s.SetWeight(WeightSinks, []float32{0, float32(math.Inf(-1))}); !isStatus(err, StatusNotFinite) {
		t.Errorf("infinite sink: %v", err)
	}
}

// A layer without rotary embeddings or ALiBi ignores positions, in steps
// too: Query and Key of any length leave the output as it is without them.
func TestStepsOfPlainLayersIgnoreQueryAndKeyPositions(t *testing.T) {
	for _, cfg := range []Config{
		{EmbedDim: 8, NumHeads: 2},
		{EmbedDim: 8, NumHeads: 2, Softcap: 5, Sinks: true},
	} {
		l := featureLayer(t, cfg, 44)
		b := 2
		x := randVec(2*b*8, 11)
		steps := func(p *Positions) []float32 {
			cache, err := NewKvCache(l, b, 4, 0)
			must(t, err)
			defer cache.Close()
			out := make([]float32, 2*b*8)
			for s := 0; s < 2; s++ {
				must(t, l.DecodeStep(cache, 1, x[s*b*8:(s+1)*b*8], nil, &Options{Positions: p}, out[s*b*8:(s+1)*b*8]))
			}
			return out
		}
		want := steps(nil)
		for _, p := range []*Positions{{Query: []int64{7, 7}}, {Key: []int64{-3}}} {
			got := steps(p)
			for i := range want {
				if got[i] != want[i] {
					t.Fatalf("%+v, positions %+v: out[%d] = %g, %g without positions", cfg, *p, i, got[i], want[i])
				}
			}
		}
	}
}
