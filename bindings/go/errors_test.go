// SPDX-License-Identifier: MIT

package attn

import (
	"errors"
	"math"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"testing"
)

// Bad input is an *Error with a status and a message, never a panic, and
// leaves outputs unchanged.

// expectErr runs f on an output of n sevens: it must fail with status and a
// message containing fragment, leaving the output as it was.
func expectErr(t *testing.T, status Status, fragment string, n int, f func(out []float32) error) *Error {
	t.Helper()
	out := make([]float32, n)
	for i := range out {
		out[i] = 7
	}
	err := f(out)
	var e *Error
	if !errors.As(err, &e) {
		t.Fatalf("want an *attn.Error, got %v", err)
	}
	if e.Status != status || !strings.Contains(e.Message, fragment) {
		t.Fatalf("got %v (status %d), want status %d with %q", e, e.Status, status, fragment)
	}
	for _, v := range out {
		if v != 7 {
			t.Fatal("a failed call changed its output")
		}
	}
	return e
}

func TestLibraryMessages(t *testing.T) {
	_, err := NewLayer(Config{EmbedDim: 510, NumHeads: 8})
	var e *Error
	if !errors.As(err, &e) || e.Status != StatusBadSize || !strings.Contains(e.Message, "510") {
		t.Fatalf("got %v", err)
	}
	if !strings.Contains(err.Error(), "510") || !strings.Contains(err.Error(), "inconsistent") {
		t.Fatalf("Error() = %q", err.Error())
	}
	if !errors.Is(err, &Error{Status: StatusBadSize}) || errors.Is(err, ErrClosed) {
		t.Fatal("errors.Is by status")
	}
	if StatusBadSize.String() != "a size is zero, negative or inconsistent" {
		t.Fatal(StatusBadSize.String())
	}
}

func TestWrongLengthsAreCaughtBeforeTheCall(t *testing.T) {
	l := randomLayer(t, 8, 2, 0, 0, 1)
	x := randVec(2*3*8, 1)
	n := len(x)
	expectErr(t, StatusBadSize, "x has 47 elements", n, func(o []float32) error {
		return l.SelfForward(2, 3, x[:n-1], nil, nil, o)
	})
	expectErr(t, StatusBadSize, "out has", n-1, func(o []float32) error { return l.SelfForward(2, 3, x, nil, nil, o) })
	expectErr(t, StatusBadSize, "key has", n, func(o []float32) error { return l.Forward(2, 3, 4, x, x, x, nil, nil, o) })
	expectErr(t, StatusOverflow, "overflows", n, func(o []float32) error {
		return l.Forward(math.MaxInt, 3, 3, x, x, x, nil, nil, o)
	})
	expectErr(t, StatusBadSize, "negative", n, func(o []float32) error { return l.SelfForward(-2, 3, x, nil, nil, o) })
	expectErr(t, StatusBadSize, "KeyLengths", n, func(o []float32) error {
		return l.SelfForward(2, 3, x, &Mask{KeyLengths: []int64{3}}, nil, o)
	})
	expectErr(t, StatusBadSize, "KeyPadding", n, func(o []float32) error {
		return l.SelfForward(2, 3, x, &Mask{KeyPadding: make([]bool, 5)}, nil, o)
	})
	expectErr(t, StatusBadSize, "Bias", n, func(o []float32) error {
		return l.SelfForward(2, 3, x, &Mask{Bias: make([]float32, 8)}, nil, o)
	})
	expectErr(t, StatusBadSize, "reach element", n, func(o []float32) error {
		m := &Mask{Bias: make([]float32, 8), BiasShape: BiasStrided, BiasStrides: [3]int{9, 0, 3}}
		return l.SelfForward(2, 3, x, m, nil, o)
	})
	expectErr(t, StatusBadSize, "AttnWeights", n, func(o []float32) error {
		return l.SelfForward(2, 3, x, nil, &Options{AttnWeights: make([]float32, 19), WeightsMode: WeightsAverage}, o)
	})
}

func TestEmptyAndNonFiniteInputs(t *testing.T) {
	l := randomLayer(t, 8, 2, 0, 0, 1)
	expectErr(t, StatusBadSize, "batch", 0, func(o []float32) error { return l.SelfForward(0, 3, nil, nil, nil, o) })
	expectErr(t, StatusBadSize, "", 0, func(o []float32) error { return l.SelfForward(2, 0, []float32{}, nil, nil, o) })
	x := randVec(2*3*8, 2)
	x[5] = float32(math.NaN())
	expectErr(t, StatusNotFinite, "", len(x), func(o []float32) error { return l.SelfForward(2, 3, x, nil, nil, o) })
	y := randVec(2*3*8, 3)
	expectErr(t, StatusBadMask, "", len(y), func(o []float32) error {
		return l.SelfForward(2, 3, y, &Mask{KeyLengths: []int64{4, 1}}, nil, o)
	})
	cross := randomLayer(t, 8, 2, 3, 5, 2)
	expectErr(t, StatusBadSize, "", len(y), func(o []float32) error { return cross.SelfForward(2, 3, y, nil, nil, o) })
}

func TestWeightsAndFiles(t *testing.T) {
	l, err := NewLayer(Config{EmbedDim: 8, NumHeads: 2})
	must(t, err)
	defer l.Close()
	x := randVec(3*8, 1)
	expectErr(t, StatusWeightsNotSet, "", len(x), func(o []float32) error { return l.SelfForward(1, 3, x, nil, nil, o) })
	var e *Error
	if err := l.SetWeight(WeightOut, make([]float32, 3)); !errors.As(err, &e) || e.Status != StatusWeightSize {
		t.Fatal(err)
	}
	w := make([]float32, 64)
	w[3] = float32(math.Inf(1))
	if err := l.SetWeight(WeightOut, w); !errors.Is(err, &Error{Status: StatusNotFinite}) {
		t.Fatal(err)
	}
	if err := l.SetWeight(WeightOut, nil); !errors.Is(err, &Error{Status: StatusWeightSize}) {
		t.Fatal(err)
	}
	err = l.LoadSafetensors("/nonexistent/w.safetensors", "")
	if !errors.As(err, &e) || e.Status != StatusIO || !strings.Contains(e.Message, "/nonexistent/w.safetensors") {
		t.Fatal(err)
	}
	if err := l.LoadSafetensorsBytes([]byte("not a safetensors file"), ""); !errors.Is(err, &Error{Status: StatusFileFormat}) {
		t.Fatal(err)
	}
	if err := l.LoadSafetensorsBytes(nil, ""); !errors.Is(err, &Error{Status: StatusFileFormat}) {
		t.Fatal(err)
	}
	path := filepath.Join(dataDir(), "torch_mha.safetensors")
	err = l.LoadSafetensors(path, "no.such.prefix.")
	if !errors.As(err, &e) || e.Status != StatusTensorMissing || !strings.Contains(e.Message, "no.such.prefix.") {
		t.Fatal(err)
	}
	if err := l.LoadSafetensors(path, "a\x00b"); !errors.Is(err, &Error{Status: StatusBadOption}) {
		t.Fatal(err)
	}
	tmp := filepath.Join(t.TempDir(), "never.safetensors")
	if err := l.SaveSafetensors(tmp, "", NamesTorch); !errors.Is(err, &Error{Status: StatusWeightsNotSet}) {
		t.Fatal(err)
	}
	if _, err := os.Stat(tmp); !os.IsNotExist(err) {
		t.Fatal("a failed save left a file")
	}
}

func TestClosedHandles(t *testing.T) {
	l := randomLayer(t, 8, 2, 0, 0, 1)
	cache, err := NewKvCache(l, 1, 4, 0)
	must(t, err)
	mem, err := NewMemory(l, 1, 4)
	must(t, err)
	must(t, l.Close())
	must(t, l.Close()) // idempotent
	x := randVec(8, 1)
	for _, f := range []func(o []float32) error{
		func(o []float32) error { return l.SelfForward(1, 1, x, nil, nil, o) },
		func(o []float32) error { return l.Forward(1, 1, 1, x, x, x, nil, nil, o) },
		func(o []float32) error { return l.DecodeStep(cache, 1, x, nil, nil, o) },
		func(o []float32) error { return l.CrossStep(mem, 1, x, nil, nil, o) },
		func(o []float32) error { return l.SetWeight(WeightOut, make([]float32, 64)) },
		func(o []float32) error { return l.InitWeights(1) },
		func(o []float32) error { _, err := l.Weight(WeightOut); return err },
		func(o []float32) error { return mem.Set(1, x, x, nil, nil, nil) },
	} {
		if e := expectErr(t, StatusNullPointer, "closed", 8, f); e != ErrClosed {
			t.Fatal(e)
		}
	}
	must(t, cache.Close())
	must(t, cache.Close())
	if err := cache.Reset(); err != ErrClosed {
		t.Fatal(err)
	}
	must(t, mem.Close())
	must(t, mem.Close())
	if _, err := NewKvCache(l, 1, 4, 0); err != ErrClosed {
		t.Fatal(err)
	}
}

func TestDecodingMisuse(t *testing.T) {
	l := randomLayer(t, 8, 2, 0, 0, 1)
	other := randomLayer(t, 8, 2, 0, 0, 1)
	cache, err := NewKvCache(other, 1, 4, 0)
	must(t, err)
	defer cache.Close()
	x := randVec(8, 1)
	expectErr(t, StatusMismatch, "", 8, func(o []float32) error { return l.DecodeStep(cache, 1, x, nil, nil, o) })
	expectErr(t, StatusBadSize, "x has", 8, func(o []float32) error { return other.DecodeStep(cache, 2, x, nil, nil, o) })
	if err := cache.Truncate([]int64{1, 2}); !errors.Is(err, &Error{Status: StatusBadSize}) {
		t.Fatal(err)
	}
	if err := cache.Truncate([]int64{3}); !errors.Is(err, &Error{Status: StatusBadSize}) {
		t.Fatal(err)
	}
	if err := cache.Reorder([]int64{5}); !errors.Is(err, &Error{Status: StatusBadSize}) {
		t.Fatal(err)
	}
	if _, err := NewKvCache(l, 0, 4, 0); !errors.Is(err, &Error{Status: StatusBadSize}) {
		t.Fatal(err)
	}
	mem, err := NewMemory(l, 1, 3)
	must(t, err)
	defer mem.Close()
	expectErr(t, StatusBadSize, "never set", 8, func(o []float32) error { return l.CrossStep(mem, 1, x, nil, nil, o) })
	kv := randVec(4*8, 2)
	if err := mem.Set(4, kv, kv, nil, nil, nil); !errors.Is(err, &Error{Status: StatusCapacity}) {
		t.Fatal(err)
	}
	if mem.LenK() != 0 {
		t.Fatal("a failed Set changed the memory")
	}
}

// Each goroutine gets the message of its own failure, however the Go
// scheduler moves goroutines between threads.
func TestMessagesPerGoroutine(t *testing.T) {
	var wg sync.WaitGroup
	for g := 1; g <= 8; g++ {
		wg.Add(1)
		go func(g int) {
			defer wg.Done()
			e := 10*g + 1 // odd: not divisible by 2 heads
			for i := 0; i < 200; i++ {
				_, err := NewLayer(Config{EmbedDim: e, NumHeads: 2})
				if err == nil || !strings.Contains(err.Error(), strconv.Itoa(e)) {
					t.Errorf("goroutine %d: %v", g, err)
					return
				}
				runtime.Gosched()
			}
		}(g)
	}
	wg.Wait()
}
