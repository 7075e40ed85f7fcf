// SPDX-License-Identifier: MIT

package attn

import (
	"fmt"
	"os"
	"path/filepath"
	"testing"
)

// The torch fixture of tests/data through every path of the Go API: key
// padding through Mask.KeyPadding (or the memory's padding), torch's triu
// attn_mask through CausalTopLeft, weights through Options.AttnWeights.

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
	if err := l.Forward(c.batch, c.lenQ, c.lenK, c.query, c.key, c.value, c.mask(), opts, out); err != nil {
		t.Fatalf("%s: %v", c.name, err)
	}
	return out
}

func TestForwardMatchesTorch(t *testing.T) {
	for _, c := range torchCases(t) {
		l := loadCase(t, c)
		assertClose(t, c.name, forwardCase(t, l, c, nil), c.out)
		if c.isSelf {
			out := make([]float32, len(c.out))
			must(t, l.SelfForward(c.batch, c.lenQ, c.query, c.mask(), nil, out))
			assertClose(t, c.name+" self", out, c.out)
		}
	}
}

func TestAttentionWeightsMatchTorch(t *testing.T) {
	for _, c := range torchCases(t) {
		l := loadCase(t, c)
		perHead := make([]float32, len(c.weightsPerHead))
		out := forwardCase(t, l, c, &Options{AttnWeights: perHead, WeightsMode: WeightsPerHead})
		assertClose(t, c.name, out, c.out)
		assertClose(t, c.name+" weights per head", perHead, c.weightsPerHead)
		avg := make([]float32, len(c.weightsAverage))
		out = forwardCase(t, l, c, &Options{AttnWeights: avg, WeightsMode: WeightsAverage})
		assertClose(t, c.name, out, c.out)
		assertClose(t, c.name+" averaged weights", avg, c.weightsAverage)
	}
}

func TestFixtureCoversPaddingCausalAndOtherWidths(t *testing.T) {
	var self, cross, widths, padding, causal, causalCross int
	for _, c := range torchCases(t) {
		if c.isSelf {
			self++
		} else {
			cross++
		}
		if c.kdim != c.e || c.vdim != c.e {
			widths++
		}
		if c.keyPadding != nil {
			padding++
		}
		if c.causal {
			causal++
			if c.lenQ != c.lenK {
				causalCross++
			}
		}
	}
	if self < 2 || cross < 2 || widths < 2 || padding < 2 || causal < 2 || causalCross < 1 {
		t.Fatalf("the fixture lacks cases: self %d, cross %d, kdim/vdim %d, padding %d, causal %d (Lq != Lk: %d)",
			self, cross, widths, padding, causal, causalCross)
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
		assertClose(t, c.name+" bytes", forwardCase(t, fromBytes, c, nil), c.out)

		copied, err := NewLayer(cfg)
		must(t, err)
		defer copied.Close()
		names := []Weight{WeightQ, WeightK, WeightV, WeightOut}
		if c.kdim == c.e && c.vdim == c.e {
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
		assertClose(t, c.name+" set_weight", forwardCase(t, copied, c, nil), c.out)
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
			assertClose(t, fmt.Sprintf("%s threads=%d", c.name, threads), forwardCase(t, l, c, opts), c.out)
		}
	}
	if scratch.Size() == 0 {
		t.Fatal("the scratch was never used")
	}
}

// The memory holds the key padding; the causal mode goes with the step.
func TestCrossStepMatchesTorch(t *testing.T) {
	for _, c := range torchCases(t) {
		l := loadCase(t, c)
		mem, err := NewMemory(l, c.batch, c.lenK+2)
		must(t, err)
		must(t, mem.Set(c.lenK, c.key, c.value, nil, c.keyPadding, nil))
		mask := &Mask{}
		if c.causal {
			mask.Causal = CausalTopLeft
		}
		out := make([]float32, len(c.out))
		w := make([]float32, len(c.weightsPerHead))
		must(t, l.CrossStep(mem, c.lenQ, c.query, mask, &Options{AttnWeights: w}, out))
		assertClose(t, c.name+" cross step", out, c.out)
		assertClose(t, c.name+" cross step weights", w, c.weightsPerHead)
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
			assertClose(t, c.name+" reloaded", forwardCase(t, back, c, nil), c.out)
			must(t, back.Close())
		}
	}
}
