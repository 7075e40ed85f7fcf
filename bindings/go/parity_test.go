// SPDX-License-Identifier: MIT

package attn

import (
	"fmt"
	"os"
	"path/filepath"
	"testing"
)

// The torch fixture of tests/data through every path of the Go API.

func loadCase(t *testing.T, c torchCase) *Layer {
	t.Helper()
	l, err := NewLayer(Config{EmbedDim: c.e, NumHeads: c.h, KDim: c.kdim, VDim: c.vdim, NoBias: !c.bias})
	must(t, err)
	t.Cleanup(func() { l.Close() })
	if err := l.LoadSafetensors(filepath.Join(dataDir(), "torch_mha.safetensors"), c.prefix); err != nil {
		t.Fatalf("%s: %v", c.name, err)
	}
	return l
}

func forwardCase(t *testing.T, l *Layer, c torchCase, opts *Options) []float32 {
	t.Helper()
	out := make([]float32, len(c.out))
	if err := l.Forward(c.batch, c.lenQ, c.lenK, c.query, c.key, c.value, nil, opts, out); err != nil {
		t.Fatalf("%s: %v", c.name, err)
	}
	return out
}

func TestForwardMatchesTorch(t *testing.T) {
	for _, c := range torchCases(t) {
		l := loadCase(t, c)
		assertClose(t, c.name, forwardCase(t, l, c, nil), to64(c.out))
		if c.isSelf {
			out := make([]float32, len(c.out))
			must(t, l.SelfForward(c.batch, c.lenQ, c.query, nil, nil, out))
			assertClose(t, c.name+" self", out, to64(c.out))
		}
	}
}

func TestLoadFromBytesAndSetWeightMatchTorch(t *testing.T) {
	raw, err := os.ReadFile(filepath.Join(dataDir(), "torch_mha.safetensors"))
	must(t, err)
	for _, c := range torchCases(t) {
		src := loadCase(t, c)
		cfg := Config{EmbedDim: c.e, NumHeads: c.h, KDim: c.kdim, VDim: c.vdim, NoBias: !c.bias}
		fromBytes, err := NewLayer(cfg)
		must(t, err)
		defer fromBytes.Close()
		must(t, fromBytes.LoadSafetensorsBytes(raw, c.prefix))
		assertClose(t, c.name+" bytes", forwardCase(t, fromBytes, c, nil), to64(c.out))

		copied, err := NewLayer(cfg)
		must(t, err)
		defer copied.Close()
		names := []Weight{WeightQ, WeightK, WeightV, WeightOut}
		if c.kdim == 0 && c.vdim == 0 {
			names = []Weight{WeightInProj, WeightOut}
		}
		if c.bias {
			names = append(names, WeightInProjBias, WeightOutBias)
		}
		for _, w := range names {
			data, err := src.Weight(w)
			must(t, err)
			must(t, copied.SetWeight(w, data))
		}
		assertClose(t, c.name+" set_weight", forwardCase(t, copied, c, nil), to64(c.out))
	}
}

func TestEveryOptionPathMatchesTorch(t *testing.T) {
	rt, err := NewRuntime(2, BlasLeave)
	must(t, err)
	defer rt.Close()
	n, err := rt.Threads()
	must(t, err)
	if n != 2 {
		t.Fatalf("runtime has %d threads", n)
	}
	scratch := NewScratch()
	defer scratch.Close()
	for _, c := range torchCases(t) {
		l := loadCase(t, c)
		for _, threads := range []int{1, 2} {
			opts := &Options{Threads: threads, Runtime: rt, Scratch: scratch}
			assertClose(t, fmt.Sprintf("%s threads=%d", c.name, threads), forwardCase(t, l, c, opts), to64(c.out))
		}
	}
	if scratch.Size() == 0 {
		t.Fatal("the scratch was never used")
	}
}

func TestCrossStepMatchesTorch(t *testing.T) {
	for _, c := range torchCases(t) {
		l := loadCase(t, c)
		mem, err := NewMemory(l, c.batch, c.lenK+2)
		must(t, err)
		must(t, mem.Set(c.lenK, c.key, c.value, nil, nil, nil))
		out := make([]float32, len(c.out))
		must(t, l.CrossStep(mem, c.lenQ, c.query, nil, nil, out))
		assertClose(t, c.name+" cross step", out, to64(c.out))
		must(t, mem.Close())
	}
}

func TestSavedAndReloadedWeightsMatchTorch(t *testing.T) {
	dir := t.TempDir()
	for _, c := range torchCases(t) {
		l := loadCase(t, c)
		for i, naming := range []Naming{NamesTorch, NamesHF, NamesHFOProj} {
			path := filepath.Join(dir, fmt.Sprintf("%s-%d.safetensors", c.name, i))
			must(t, l.SaveSafetensors(path, "m.", naming))
			back, err := NewLayer(l.Config())
			must(t, err)
			must(t, back.LoadSafetensors(path, "m."))
			assertClose(t, c.name+" reloaded", forwardCase(t, back, c, nil), to64(c.out))
			must(t, back.Close())
		}
	}
}
