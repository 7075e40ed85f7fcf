// SPDX-License-Identifier: MIT

package attn

import (
	"math"
	"testing"
)

// Masks, attention weights, scratch and runtimes against the float64
// reference of main_test.go (the header's semantics written out plainly).

const (
	tE = 16
	tH = 4
)

// checkMask compares a forward under mask with the reference of call rc,
// which gives the mask's part of the call; checkMask fills in the rest.
func checkMask(t *testing.T, what string, b, lq, lk int, mask *Mask, rc refCall) {
	t.Helper()
	l := randomLayer(t, tE, tH, 12, 10, 7)
	q, k, v := randVec(b*lq*tE, 1), randVec(b*lk*12, 2), randVec(b*lk*10, 3)
	rc.batch, rc.lq, rc.lk, rc.q, rc.k, rc.v = b, lq, lk, q, k, v
	want, probs := reference(t, l, nil, rc)

	out := make([]float32, b*lq*tE)
	w := make([]float32, b*tH*lq*lk)
	must(t, l.Forward(b, lq, lk, q, k, v, mask, &Options{AttnWeights: w, WeightsMode: WeightsPerHead}, out))
	assertClose(t, what+" out", out, want)
	assertClose(t, what+" per-head weights", w, probs)

	avg := make([]float32, b*lq*lk)
	must(t, l.Forward(b, lq, lk, q, k, v, mask, &Options{AttnWeights: avg, WeightsMode: WeightsAverage}, out))
	assertClose(t, what+" averaged weights", avg, averageHeads(probs, b, tH, lq, lk))
}

func TestMasks(t *testing.T) {
	checkMask(t, "none", 2, 3, 5, nil, refCall{})
	checkMask(t, "top-left", 2, 3, 5, &Mask{Causal: CausalTopLeft}, refCall{causal: CausalTopLeft})
	checkMask(t, "bottom-right", 2, 3, 5, &Mask{Causal: CausalBottomRight}, refCall{causal: CausalBottomRight})

	lengths := []int64{5, 2}
	pad := []bool{false, true, false, false, true, false, false, true, true, true}
	checkMask(t, "lengths+padding+causal", 2, 3, 5,
		&Mask{KeyLengths: lengths, KeyPadding: pad, Causal: CausalBottomRight},
		refCall{keyLengths: lengths, padding: pad, causal: CausalBottomRight})

	checkMask(t, "window", 1, 5, 5, &Mask{Causal: CausalTopLeft, Window: 2}, refCall{causal: CausalTopLeft, window: 2})
}

func TestBiasBroadcasts(t *testing.T) {
	b, lq, lk := 2, 3, 5
	shared := randVec(lq*lk, 11)
	checkMask(t, "bias [Lq,Lk]", b, lq, lk, &Mask{Bias: shared, BiasShape: BiasShared},
		refCall{bias: func(_, _, i, j int) float64 { return float64(shared[i*lk+j]) }})
	perBatch := randVec(b*lq*lk, 12)
	checkMask(t, "bias [B,Lq,Lk]", b, lq, lk, &Mask{Bias: perBatch, BiasShape: BiasPerBatch},
		refCall{bias: func(bb, _, i, j int) float64 { return float64(perBatch[(bb*lq+i)*lk+j]) }})
	perHead := randVec(b*tH*lq*lk, 13)
	perHead[7] = float32(math.Inf(-1)) // -inf hides a key
	checkMask(t, "bias [B,H,Lq,Lk]", b, lq, lk, &Mask{Bias: perHead, BiasShape: BiasPerHead},
		refCall{bias: func(bb, h, i, j int) float64 { return float64(perHead[((bb*tH+h)*lq+i)*lk+j]) }})
	heads := randVec(tH*lq*lk, 14) // one [H, Lq, Lk] block for every batch row
	checkMask(t, "bias strided", b, lq, lk,
		&Mask{Bias: heads, BiasShape: BiasStrided, BiasStrides: [3]int{0, lq * lk, lk}},
		refCall{bias: func(_, h, i, j int) float64 { return float64(heads[(h*lq+i)*lk+j]) }})
}

func TestEmptyRows(t *testing.T) {
	l := randomLayer(t, tE, tH, 0, 0, 3)
	x := randVec(2*3*tE, 5)
	out := make([]float32, len(x))
	m := &Mask{KeyLengths: []int64{0, 3}} // row 0 sees no key
	must(t, l.SelfForward(2, 3, x, m, nil, out))
	bo, err := l.Weight(WeightOutBias)
	must(t, err)
	for i := 0; i < 3*tE; i++ {
		if out[i] != bo[i%tE] {
			t.Fatalf("empty row: element %d is %g, want out_proj.bias %g", i, out[i], bo[i%tE])
		}
	}
	m.EmptyRows = EmptyRowsNaN
	must(t, l.SelfForward(2, 3, x, m, nil, out))
	for i, v := range out {
		if (i < 3*tE) != math.IsNaN(float64(v)) {
			t.Fatalf("element %d: %g", i, v)
		}
	}
}

func TestScratchIsSizedOnceAndReused(t *testing.T) {
	l := randomLayer(t, tE, tH, 0, 0, 9)
	x := randVec(2*6*tE, 1)
	plain := make([]float32, len(x))
	must(t, l.SelfForward(2, 6, x, nil, nil, plain))
	need, err := l.ForwardScratchSize(2, 6, 6, &Options{Threads: 1})
	must(t, err)
	s := NewScratch()
	defer s.Close()
	out := make([]float32, len(x))
	for i := 0; i < 3; i++ {
		must(t, l.SelfForward(2, 6, x, nil, &Options{Threads: 1, Scratch: s}, out))
		for j := range out {
			if out[j] != plain[j] {
				t.Fatal("results depend on the scratch or threads")
			}
		}
	}
	if s.Size() != need {
		t.Fatalf("scratch of %d bytes, the library asked for %d", s.Size(), need)
	}
	must(t, s.Close())
	must(t, s.Close()) // idempotent
	if err := l.SelfForward(2, 6, x, nil, &Options{Scratch: s}, out); err != ErrClosed {
		t.Fatalf("closed scratch: %v", err)
	}
}

func TestRuntimesAgree(t *testing.T) {
	l := randomLayer(t, tE, tH, 0, 0, 4)
	x := randVec(3*40*tE, 2)
	base := make([]float32, len(x))
	must(t, l.SelfForward(3, 40, x, nil, &Options{Threads: 1}, base))
	// The same bits for every thread count (a promise of attn.h); across
	// BLAS policies the projections are cut differently: only closeness.
	for _, c := range []struct {
		threads int
		policy  BlasPolicy
	}{{1, BlasHold}, {2, BlasHold}, {3, BlasHold}, {2, BlasLeave}} {
		rt, err := NewRuntime(c.threads, c.policy)
		must(t, err)
		n, err := rt.Threads()
		must(t, err)
		if n != c.threads {
			t.Fatalf("runtime has %d threads, want %d", n, c.threads)
		}
		out := make([]float32, len(x))
		must(t, l.SelfForward(3, 40, x, nil, &Options{Runtime: rt}, out))
		if c.policy == BlasHold {
			for i := range out {
				if out[i] != base[i] {
					t.Fatalf("%d threads: element %d differs", c.threads, i)
				}
			}
		} else {
			assertClose(t, "BlasLeave", out, to64(base))
		}
		must(t, rt.Close())
		must(t, rt.Close())
		if err := l.SelfForward(3, 40, x, nil, &Options{Runtime: rt}, out); err != ErrClosed {
			t.Fatalf("closed runtime: %v", err)
		}
	}
	if CPUCount() < 1 {
		t.Fatal("no CPU")
	}
	if n, err := DefaultRuntimeThreads(); err != nil || n < 1 {
		t.Fatal(n, err)
	}
}
