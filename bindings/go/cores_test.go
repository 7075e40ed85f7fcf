// SPDX-License-Identifier: MIT

package attn

import (
	"testing"
)

// The caller's choice of attention core (Options.Core): each core the CPU
// can run against the float64 reference of main_test.go, the same bits on
// 1 and 2 threads; the packed core where it cannot run is refused with
// StatusUnsupported and nothing written.

func TestCoreAvailability(t *testing.T) {
	if !CoreAuto.Available() || !CoreBlas.Available() {
		t.Fatal("the automatic and the BLAS cores must always be available")
	}
	if Core(3).Available() {
		t.Fatal("an unknown core reported available")
	}
}

func TestEachCoreMatchesTheReference(t *testing.T) {
	l := randomLayer(t, tE, tH, 12, 10, 11)
	for _, core := range []Core{CoreAuto, CoreBlas, CorePacked} {
		for _, s := range [][3]int{{2, 3, 5}, {2, 20, 33}, {1, 9, 40}} {
			b, lq, lk := s[0], s[1], s[2]
			q, k, v := randVec(b*lq*tE, 1), randVec(b*lk*12, 2), randVec(b*lk*10, 3)
			mask := &Mask{Causal: CausalBottomRight}
			if !core.Available() {
				expectErr(t, StatusUnsupported, "ATTN_CORE_PACKED", b*lq*tE, func(out []float32) error {
					return l.Forward(b, lq, lk, q, k, v, mask, &Options{Core: core}, out)
				})
				continue
			}
			want, probs := reference(t, l, nil, refCall{batch: b, lq: lq, lk: lk, q: q, k: k, v: v,
				causal: CausalBottomRight})
			var outs, ws [2][]float32
			for i, threads := range []int{1, 2} {
				outs[i] = make([]float32, b*lq*tE)
				ws[i] = make([]float32, b*tH*lq*lk)
				opts := &Options{AttnWeights: ws[i], WeightsMode: WeightsPerHead, Threads: threads, Core: core}
				must(t, l.Forward(b, lq, lk, q, k, v, mask, opts, outs[i]))
				assertClose(t, "out", outs[i], want)
				assertClose(t, "weights", ws[i], probs)
			}
			for i := range outs[0] {
				if outs[0][i] != outs[1][i] {
					t.Fatalf("core %d: 1 and 2 threads differ at %d", core, i)
				}
			}
			for i := range ws[0] {
				if ws[0][i] != ws[1][i] {
					t.Fatalf("core %d: weights on 1 and 2 threads differ at %d", core, i)
				}
			}
		}
	}
}
