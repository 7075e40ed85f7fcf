// SPDX-License-Identifier: MIT

package attn_test

import (
	"fmt"
	"log"
	"math"

	"libattn/attn"
)

// A Llama-style attention layer: rotary embeddings (rotate-half pairing,
// theta 500000), grouped-query attention with 2 key/value heads for 8
// query heads, no biases. A prompt of 5 tokens is decoded through a KV
// cache, 3 tokens then 2, and gives what one causal forward gives.
func ExampleNewLayer_llama() {
	const e, heads, prompt = 64, 8, 5
	layer, err := attn.NewLayer(attn.Config{
		EmbedDim:   e,
		NumHeads:   heads,
		NumKVHeads: 2,
		NoBias:     true,
		Rope:       &attn.Rope{Theta: 500000},
	})
	if err != nil {
		log.Fatal(err)
	}
	defer layer.Close()
	// A model's weights come from LoadSafetensors (q_proj, k_proj, v_proj,
	// o_proj); seeded random ones will do here.
	if err := layer.InitWeights(1); err != nil {
		log.Fatal(err)
	}
	x := make([]float32, prompt*e)
	for i := range x {
		x[i] = float32(math.Sin(float64(i)))
	}

	// The whole prompt at once, at positions 0 .. 4.
	full := make([]float32, len(x))
	if err := layer.SelfForward(1, prompt, x, &attn.Mask{Causal: attn.CausalTopLeft}, nil, full); err != nil {
		log.Fatal(err)
	}

	// The same tokens decoded through a cache: each step's tokens take
	// their positions from the cache.
	cache, err := attn.NewKvCache(layer, 1, 16, 0)
	if err != nil {
		log.Fatal(err)
	}
	defer cache.Close()
	var steps []float32
	for _, span := range [][2]int{{0, 3}, {3, 5}} {
		out := make([]float32, (span[1]-span[0])*e)
		if err := layer.DecodeStep(cache, span[1]-span[0], x[span[0]*e:span[1]*e], nil, nil, out); err != nil {
			log.Fatal(err)
		}
		steps = append(steps, out...)
	}
	worst := 0.0
	for i := range full {
		worst = math.Max(worst, math.Abs(float64(full[i]-steps[i])))
	}
	lengths, _, _ := cache.Lengths()
	fmt.Println("weights of k_proj:", mustCount(layer, attn.WeightK), "(2 heads of 8 by 64)")
	fmt.Println("tokens cached:", lengths[0])
	fmt.Println("steps agree with the forward pass:", worst < 1e-5)

	// Bad settings are errors, not panics.
	_, err = attn.NewLayer(attn.Config{EmbedDim: e, NumHeads: heads, Rope: &attn.Rope{RotaryDim: 9}})
	fmt.Println(err != nil)
	// Output:
	// weights of k_proj: 1024 (2 heads of 8 by 64)
	// tokens cached: 5
	// steps agree with the forward pass: true
	// true
}

func mustCount(l *attn.Layer, w attn.Weight) int {
	n, err := l.WeightCount(w)
	if err != nil {
		log.Fatal(err)
	}
	return n
}
