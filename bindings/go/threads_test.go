// SPDX-License-Identifier: MIT

package attn

import (
	"runtime"
	"sync"
	"testing"
)

// A layer serves concurrent forward calls; weight changes and Close wait
// for them (run with -race).

func TestConcurrentForwards(t *testing.T) {
	l := randomLayer(t, 32, 4, 0, 0, 5)
	x := randVec(2*24*32, 6)
	want := make([]float32, len(x))
	must(t, l.SelfForward(2, 24, x, nil, nil, want))
	rt, err := NewRuntime(2, BlasHold)
	must(t, err)
	defer rt.Close()
	s := NewScratch() // shared: calls take turns with it
	defer s.Close()
	var wg sync.WaitGroup
	for g := 0; g < 4; g++ {
		wg.Add(1)
		go func(g int) {
			defer wg.Done()
			out := make([]float32, len(x))
			w := make([]float32, 2*24*24)
			for i := 0; i < 20; i++ {
				opts := &Options{AttnWeights: w, WeightsMode: WeightsAverage}
				if g%2 == 1 {
					opts.Runtime, opts.Scratch = rt, s
				}
				if err := l.SelfForward(2, 24, x, &Mask{KeyPadding: make([]bool, 2*24)}, opts, out); err != nil {
					t.Error(err)
					return
				}
				for j := range out {
					if out[j] != want[j] {
						t.Error("concurrent forward differs")
						return
					}
				}
			}
		}(g)
	}
	wg.Wait()
}

func TestWeightChangesAndCloseWaitForCalls(t *testing.T) {
	l := randomLayer(t, 16, 2, 0, 0, 7)
	x := randVec(4*16, 1)
	var wg sync.WaitGroup
	for g := 0; g < 4; g++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			out := make([]float32, len(x))
			for i := 0; i < 50; i++ {
				err := l.SelfForward(1, 4, x, nil, nil, out)
				if err != nil && err != ErrClosed {
					t.Error(err)
					return
				}
			}
		}()
	}
	for i := 0; i < 20; i++ {
		must(t, l.InitWeights(uint64(i)))
	}
	must(t, l.Close())
	wg.Wait()
}

// A forgotten layer, cache or memory is freed by its finalizer without
// disturbing anything.
func TestFinalizers(t *testing.T) {
	for i := 0; i < 20; i++ {
		l, err := NewLayer(Config{EmbedDim: 8, NumHeads: 2})
		must(t, err)
		must(t, l.InitWeights(1))
		_, err = NewKvCache(l, 1, 4, 0)
		must(t, err)
		_, err = NewMemory(l, 1, 4)
		must(t, err)
		NewScratch()
	}
	runtime.GC()
	runtime.GC()
}
