// SPDX-License-Identifier: MIT

// Command translate runs cross-attention of a short French target over an
// English source and prints what each target word attends to.
//
//	go run ./examples/translate
//
// Toy embeddings: each word is a fixed pseudo-random vector of its meaning
// (a French word shares its English translation's vector) plus a little
// noise of its own. The projections are identities scaled by a gain, so
// the scores are dot products of meanings and each target word should
// attend to its translation.
package main

import (
	"fmt"
	"log"

	"libattn/attn"
)

const (
	embed = 32
	heads = 4
)

// vector is deterministic values in [-1, 1) from a string.
func vector(text string) []float32 {
	h := uint64(0xcbf29ce484222325)
	for i := 0; i < len(text); i++ {
		h = (h ^ uint64(text[i])) * 0x100000001b3
	}
	v := make([]float32, embed)
	for i := range v {
		h = h*6364136223846793005 + 1442695040888963407
		v[i] = float32(h>>40)/float32(1<<24)*2 - 1
	}
	return v
}

type word struct{ text, meaning string }

func embedWords(words []word) []float32 {
	var x []float32
	for _, w := range words {
		m, own := vector(w.meaning), vector(w.text)
		for i := range m {
			x = append(x, m[i]+0.2*own[i])
		}
	}
	return x
}

func identity(gain float32) []float32 {
	w := make([]float32, embed*embed)
	for i := 0; i < embed; i++ {
		w[i*embed+i] = gain
	}
	return w
}

func main() {
	source := []word{{"the", "the"}, {"black", "black"}, {"cat", "cat"}, {"sleeps", "sleep"}, {"here", "here"}}
	target := []word{{"le", "the"}, {"chat", "cat"}, {"noir", "black"}, {"dort", "sleep"}}

	layer, err := attn.NewLayer(attn.Config{EmbedDim: embed, NumHeads: heads})
	if err != nil {
		log.Fatal(err)
	}
	defer layer.Close()
	inProj := append(append(identity(1.5), identity(1.5)...), identity(1)...)
	for _, w := range []struct {
		id   attn.Weight
		data []float32
	}{
		{attn.WeightInProj, inProj},
		{attn.WeightInProjBias, make([]float32, 3*embed)},
		{attn.WeightOut, identity(1)},
		{attn.WeightOutBias, make([]float32, embed)},
	} {
		if err := layer.SetWeight(w.id, w.data); err != nil {
			log.Fatal(err)
		}
	}

	tgt, src := embedWords(target), embedWords(source)
	lq, lk := len(target), len(source)
	out := make([]float32, lq*embed)
	weights := make([]float32, lq*lk)
	opts := &attn.Options{AttnWeights: weights, WeightsMode: attn.WeightsAverage}
	if err := layer.Forward(1, lq, lk, tgt, src, src, nil, opts, out); err != nil {
		log.Fatal(err)
	}

	fmt.Printf("libattn %s: cross-attention, averaged over %d heads\n", attn.LibraryVersion(), heads)
	fmt.Printf("%8s", "")
	for _, w := range source {
		fmt.Printf(" %7s", w.text)
	}
	fmt.Println()
	for i, w := range target {
		row := weights[i*lk : (i+1)*lk]
		fmt.Printf("%8s", w.text)
		best := 0
		for j, p := range row {
			fmt.Printf(" %7.3f", p)
			if p > row[best] {
				best = j
			}
		}
		fmt.Printf("   -> %s\n", source[best].text)
	}
}
