// SPDX-License-Identifier: MIT

package attn

import (
	"errors"
	"math"
	"reflect"
	"sync"
	"testing"
)

// KvCache, Memory and the steps: a sequence decoded a few tokens at a time
// gives what one causal forward over the whole sequence gives.

func TestDecodeStepsEqualACausalForward(t *testing.T) {
	l := randomLayer(t, tE, tH, 0, 0, 21)
	b, n := 2, 6
	x := randVec(b*n*tE, 8)
	full := make([]float32, len(x))
	must(t, l.SelfForward(b, n, x, &Mask{Causal: CausalTopLeft}, nil, full))

	cache, err := NewKvCache(l, b, 8, 0)
	must(t, err)
	defer cache.Close()
	s := NewScratch()
	defer s.Close()
	pos := 0
	for _, k := range []int{1, 2, 3} {
		var xs []float32
		for row := 0; row < b; row++ {
			xs = append(xs, x[(row*n+pos)*tE:(row*n+pos+k)*tE]...)
		}
		out := make([]float32, b*k*tE)
		w := make([]float32, b*k*8)
		must(t, l.DecodeStep(cache, k, xs, nil, &Options{AttnWeights: w, WeightsMode: WeightsAverage, Scratch: s}, out))
		for row := 0; row < b; row++ {
			assertClose(t, "step", out[row*k*tE:(row+1)*k*tE], to64(full[(row*n+pos)*tE:(row*n+pos+k)*tE]))
			for i := 0; i < k; i++ {
				sum := float32(0)
				for j, p := range w[(row*k+i)*8 : (row*k+i+1)*8] {
					sum += p
					if j > pos+i && p != 0 {
						t.Fatal("weight past the token")
					}
				}
				if math.Abs(float64(sum)-1) > 1e-5 {
					t.Fatalf("weights sum to %g", sum)
				}
			}
		}
		pos += k
	}
	lengths, first, err := cache.Lengths()
	must(t, err)
	if !reflect.DeepEqual(lengths, []int64{6, 6}) || !reflect.DeepEqual(first, []int64{0, 0}) {
		t.Fatal(lengths, first)
	}
}

func TestTruncateReorderReset(t *testing.T) {
	l := randomLayer(t, tE, tH, 0, 0, 22)
	b := 3
	cache, err := NewKvCache(l, b, 4, 0)
	must(t, err)
	defer cache.Close()
	step := func(seed uint64) []float32 {
		out := make([]float32, b*tE)
		must(t, l.DecodeStep(cache, 1, randVec(b*tE, seed), nil, nil, out))
		return out
	}
	step(1)
	step(2)
	third := step(3)
	must(t, cache.Truncate([]int64{2, 2, 2}))
	if !reflect.DeepEqual(step(3), third) {
		t.Fatal("the step after a rollback differs")
	}
	must(t, cache.Truncate([]int64{2, 1, 0}))
	must(t, cache.Reorder([]int64{1, 1, 1}))
	lengths, _, err := cache.Lengths()
	must(t, err)
	if !reflect.DeepEqual(lengths, []int64{1, 1, 1}) {
		t.Fatal(lengths)
	}
	x1 := randVec(tE, 9)
	xs := append(append(append([]float32{}, x1...), x1...), x1...)
	out := make([]float32, b*tE)
	must(t, l.DecodeStep(cache, 1, xs, nil, nil, out))
	if !reflect.DeepEqual(out[:tE], out[tE:2*tE]) || !reflect.DeepEqual(out[:tE], out[2*tE:]) {
		t.Fatal("reordered rows differ")
	}
	must(t, cache.Reset())
	for s := uint64(0); s < 4; s++ {
		step(10 + s)
	}
	out = []float32{}
	for i := 0; i < b*tE; i++ {
		out = append(out, 7)
	}
	var e *Error
	err = l.DecodeStep(cache, 1, randVec(b*tE, 99), nil, nil, out)
	if !errors.As(err, &e) || e.Status != StatusCapacity {
		t.Fatalf("full cache: %v", err)
	}
	for _, v := range out {
		if v != 7 {
			t.Fatal("a failed step wrote its output")
		}
	}
}

func TestDecodeMask(t *testing.T) {
	l := randomLayer(t, tE, tH, 0, 0, 23)
	b := 2
	cache, err := NewKvCache(l, b, 6, 0)
	must(t, err)
	defer cache.Close()
	x := randVec(b*3*tE, 4)
	out := make([]float32, b*3*tE)
	m := &DecodeMask{NewLengths: []int64{3, 1}, NewPadding: []bool{false, true, false, false, false, false}}
	must(t, l.DecodeStep(cache, 3, x, m, nil, out))
	lengths, _, err := cache.Lengths()
	must(t, err)
	if !reflect.DeepEqual(lengths, []int64{3, 1}) {
		t.Fatal(lengths)
	}
	for _, v := range out[(3+1)*tE:] {
		if v != 0 {
			t.Fatal("rows past NewLengths are not zero")
		}
	}
	want, _ := reference(t, l, nil, refCall{batch: 1, lq: 3, lk: 3, q: x[:3*tE], k: x[:3*tE], v: x[:3*tE],
		causal: CausalTopLeft, padding: []bool{false, true, false}})
	assertClose(t, "padded step", out[:3*tE], want)
}

func TestCrossStepWithMemory(t *testing.T) {
	l := randomLayer(t, tE, tH, 12, 10, 24)
	b, lk, n := 2, 5, 2
	k, v, q := randVec(b*lk*12, 1), randVec(b*lk*10, 2), randVec(b*n*tE, 3)
	lengths := []int64{4, 5}
	pad := []bool{false, false, true, false, false, true, false, false, false, false}
	mem, err := NewMemory(l, b, 8)
	must(t, err)
	defer mem.Close()
	must(t, mem.Set(lk, k, v, lengths, pad, nil))
	if mem.LenK() != lk {
		t.Fatal(mem.LenK())
	}
	want, probs := reference(t, l, nil, refCall{batch: b, lq: n, lk: lk, q: q, k: k, v: v,
		keyLengths: lengths, padding: pad})
	out := make([]float32, b*n*tE)
	w := make([]float32, b*tH*n*lk)
	must(t, l.CrossStep(mem, n, q, nil, &Options{AttnWeights: w}, out))
	assertClose(t, "cross step", out, want)
	assertClose(t, "cross step weights", w, probs)

	// A memory has no positions: CrossStep neither checks nor passes
	// opts.Positions (these would fail both the length and range checks).
	unused := make([]float32, len(out))
	must(t, l.CrossStep(mem, n, q, nil, &Options{Positions: &Positions{Start: []int64{-1}, Query: []int64{-1}}}, unused))
	if !reflect.DeepEqual(unused, out) {
		t.Fatal("opts.Positions changed a cross step")
	}

	var wg sync.WaitGroup
	for g := 0; g < 3; g++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			o := make([]float32, b*n*tE)
			if err := l.CrossStep(mem, n, q, nil, nil, o); err != nil {
				t.Error(err)
				return
			}
			for i := range o {
				if math.Abs(float64(o[i])-want[i]) > atol+rtol*math.Abs(want[i]) {
					t.Error("concurrent cross step differs")
					return
				}
			}
		}()
	}
	wg.Wait()
}
