// SPDX-License-Identifier: MIT

package attn

/*
#include <attn/attn.h>
#include <stdlib.h>
*/
import "C"

import (
	"math"
	"runtime"
	"strings"
	"sync"
	"unsafe"
)

// Weight names one of a layer's weights, in torch.nn.MultiheadAttention's
// layout: matrices [out_features, in_features] row-major, y = x W^T + b;
// KV = num_kv_heads * head_dim (= E without grouped-query attention).
type Weight int32

const (
	WeightInProj     Weight = C.ATTN_W_IN_PROJ // in_proj_weight [E + 2 KV, E] (kdim = vdim = E only)
	WeightInProjBias Weight = C.ATTN_B_IN_PROJ // in_proj_bias [E + 2 KV]
	WeightQ          Weight = C.ATTN_W_Q       // q_proj_weight [E, E]
	WeightK          Weight = C.ATTN_W_K       // k_proj_weight [KV, kdim]
	WeightV          Weight = C.ATTN_W_V       // v_proj_weight [KV, vdim]
	WeightOut        Weight = C.ATTN_W_OUT     // out_proj.weight [E, E]
	WeightOutBias    Weight = C.ATTN_B_OUT     // out_proj.bias [E]
	WeightQBias      Weight = C.ATTN_B_Q       // query part of in_proj_bias [E]
	WeightKBias      Weight = C.ATTN_B_K       // key part of in_proj_bias [KV]
	WeightVBias      Weight = C.ATTN_B_V       // value part of in_proj_bias [KV]
	// WeightQNorm is the QK-norm weight of the queries (q_norm.weight):
	// [head_dim] with QKNormHead, [E] with QKNormAll; only when the layer
	// has a QK-norm (StatusWeightLayout otherwise). Ones until set.
	WeightQNorm Weight = C.ATTN_W_Q_NORM
	// WeightKNorm is the QK-norm weight of the keys (k_norm.weight):
	// [head_dim] with QKNormHead, [KV] with QKNormAll. Ones until set.
	WeightKNorm Weight = C.ATTN_W_K_NORM
	// WeightSinks is the sink logits [num_heads], only when the layer has
	// sinks (Config.Sinks). Zeros until set.
	WeightSinks Weight = C.ATTN_W_SINKS
)

// Naming is a scheme of tensor names for saving weight files.
type Naming int32

const (
	NamesTorch   Naming = C.ATTN_NAMES_TORCH     // torch's state_dict names
	NamesHF      Naming = C.ATTN_NAMES_HF        // Hugging Face, out_proj
	NamesHFOProj Naming = C.ATTN_NAMES_HF_O_PROJ // Hugging Face, o_proj
)

// Config configures a layer like torch.nn.MultiheadAttention's arguments,
// plus the features of decoder layers. A zero field keeps the library's
// default (one head, kdim = vdim = EmbedDim, bias on, every thread, scale
// 1/sqrt(head_dim), none of the decoder features). NewLayer copies
// everything the Config refers to (Rope, AlibiSlopes): the caller keeps
// them and may change them afterwards. An invalid setting makes NewLayer
// return an *Error whose message names the field.
type Config struct {
	EmbedDim   int
	NumHeads   int
	KDim       int
	VDim       int
	NoBias     bool
	NumThreads int
	Scale      float64
	// NumKVHeads is the number of key/value heads (grouped-query
	// attention); it must divide NumHeads. 0 = NumHeads.
	NumKVHeads int

	// BiasParts, when not zero, is exactly the set of projections that
	// have a bias, whatever NoBias says (e.g. BiasQ|BiasK|BiasV). 0 = as
	// NoBias says (all four or none). Unknown bits are StatusBadOption.
	BiasParts BiasParts
	// QKNorm is the RMSNorm of q and k (QKNormNone by default), with
	// epsilon QKNormEps (0 = 1e-6; negative or not finite is
	// StatusBadOption); QKNormUnitOffset multiplies by 1 + w instead of w.
	QKNorm           QKNorm
	QKNormEps        float64
	QKNormUnitOffset bool
	// Alibi adds a linear bias by position to the scores (AlibiNone by
	// default). AlibiSlopes, when not nil, are the NumHeads slopes
	// (finite; a wrong length is StatusBadSize, slopes without Alibi
	// StatusBadOption); nil = the standard geometric slopes.
	Alibi       Alibi
	AlibiSlopes []float32
	// Softcap, when > 0, turns every scaled score s into Softcap *
	// tanh(s / Softcap) before ALiBi, the mask and the softmax. 0 = none;
	// negative or not finite is StatusBadOption.
	Softcap float64
	// Rope, when not nil, rotates q and k by their positions (see Rope).
	Rope *Rope
	// Sinks gives each head a learned sink logit (WeightSinks) that joins
	// the softmax's denominator without a value; a query that sees no key
	// then gets zeros.
	Sinks bool
}

// Layer is a multi-head attention layer. Once its weights are set, any
// number of goroutines may call Forward, SelfForward and the steps at
// once; SetWeight, InitWeights, the loaders and Close wait until no call
// runs.
type Layer struct {
	mu  sync.RWMutex
	ptr *C.attn_layer
	cfg Config
}

// NewLayer creates a layer; set its weights before calling it.
func NewLayer(cfg Config) (*Layer, error) {
	var c C.attn_config
	if err := call(func() C.attn_status {
		return C.attn_config_init_sized(&c, C.sizeof_attn_config)
	}); err != nil {
		return nil, err
	}
	c.embed_dim = C.int64_t(cfg.EmbedDim)
	if cfg.NumHeads != 0 {
		c.num_heads = C.int64_t(cfg.NumHeads)
	}
	if cfg.KDim != 0 {
		c.kdim = C.int64_t(cfg.KDim)
	}
	if cfg.VDim != 0 {
		c.vdim = C.int64_t(cfg.VDim)
	}
	if cfg.NoBias {
		c.bias = 0
	}
	if cfg.NumThreads != 0 {
		if cfg.NumThreads > math.MaxInt32 || cfg.NumThreads < math.MinInt32 {
			return nil, newError(StatusBadOption, "NumThreads %d out of range", cfg.NumThreads)
		}
		c.num_threads = C.int32_t(cfg.NumThreads)
	}
	if cfg.Scale != 0 {
		c.scale = C.double(cfg.Scale)
	}
	if cfg.NumKVHeads != 0 {
		c.num_kv_heads = C.int64_t(cfg.NumKVHeads)
	}
	// The library copies what the config points at while it creates the
	// layer: that C memory is freed as soon as it returns.
	var mem cmem
	defer mem.free()
	if err := setFeatures(&c, &cfg, &mem); err != nil {
		return nil, err
	}
	var p *C.attn_layer
	if err := call(func() C.attn_status { return C.attn_layer_create(&c, &p) }); err != nil {
		return nil, err
	}
	if err := call(func() C.attn_status { return C.attn_layer_get_config(p, &c) }); err != nil {
		C.attn_layer_destroy(p)
		return nil, err
	}
	l := &Layer{ptr: p, cfg: Config{
		EmbedDim: int(c.embed_dim), NumHeads: int(c.num_heads), KDim: int(c.kdim),
		VDim: int(c.vdim), NoBias: c.bias == 0, NumThreads: int(c.num_threads),
		Scale: float64(c.scale), NumKVHeads: int(c.num_kv_heads),
	}}
	readFeatures(&c, &l.cfg)
	runtime.SetFinalizer(l, (*Layer).Close)
	return l, nil
}

// Config is the layer's effective configuration (defaults resolved:
// BiasParts is the set of biases the layer has, Rope's fields and
// AlibiSlopes are the values in use). It is a copy: changing it changes
// nothing in the layer.
func (l *Layer) Config() Config { return l.cfg.clone() }

// Close frees the layer after the calls running on it. Idempotent; later
// calls return ErrClosed.
func (l *Layer) Close() error {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.ptr != nil {
		C.attn_layer_destroy(l.ptr)
		l.ptr = nil
		runtime.SetFinalizer(l, nil)
	}
	return nil
}

// read runs f with the layer held for reading (calls may overlap).
func (l *Layer) read(f func(p *C.attn_layer) error) error {
	l.mu.RLock()
	defer l.mu.RUnlock()
	if l.ptr == nil {
		return ErrClosed
	}
	return f(l.ptr)
}

// write runs f with the layer held alone.
func (l *Layer) write(f func(p *C.attn_layer) error) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.ptr == nil {
		return ErrClosed
	}
	return f(l.ptr)
}

// WeightCount is the number of floats of weight w for this layer.
func (l *Layer) WeightCount(w Weight) (int, error) {
	var n C.int64_t
	err := l.read(func(p *C.attn_layer) error {
		return call(func() C.attn_status { return C.attn_layer_weight_count(p, C.attn_weight_id(w), &n) })
	})
	return int(n), err
}

// SetWeight copies data (exactly WeightCount(w) finite floats) into weight w.
func (l *Layer) SetWeight(w Weight, data []float32) error {
	return l.write(func(p *C.attn_layer) error {
		return call(func() C.attn_status {
			return C.attn_layer_set_weight(p, C.attn_weight_id(w), floatPtr(data), C.int64_t(len(data)))
		})
	})
}

// WeightInto copies weight w into out (exactly its count).
func (l *Layer) WeightInto(w Weight, out []float32) error {
	return l.read(func(p *C.attn_layer) error {
		return call(func() C.attn_status {
			return C.attn_layer_get_weight(p, C.attn_weight_id(w), floatPtr(out), C.int64_t(len(out)))
		})
	})
}

// Weight returns a copy of weight w.
func (l *Layer) Weight(w Weight) ([]float32, error) {
	n, err := l.WeightCount(w)
	if err != nil {
		return nil, err
	}
	out := make([]float32, n)
	return out, l.WeightInto(w, out)
}

// InitWeights initialises every weight as torch does (xavier-uniform
// in_proj, uniform out_proj, zero biases) from a generator seeded with seed.
func (l *Layer) InitWeights(seed uint64) error {
	return l.write(func(p *C.attn_layer) error {
		return call(func() C.attn_status { return C.attn_layer_init_weights(p, C.uint64_t(seed)) })
	})
}

func cString(what, s string) (*C.char, error) {
	if strings.IndexByte(s, 0) >= 0 {
		return nil, newError(StatusBadOption, "%s contains a NUL byte", what)
	}
	return C.CString(s), nil
}

// LoadSafetensors loads every weight from a safetensors file, tensors
// named prefix + torch's or Hugging Face's names; other tensors in the
// file are ignored. Under the prefix it must hold every tensor the layer
// has and no bias, norm or sink tensor the layer lacks: each bias it has
// (BiasParts), q_norm.weight and k_norm.weight with a QKNorm, sinks with
// Sinks. On error the layer is unchanged.
func (l *Layer) LoadSafetensors(path, prefix string) error {
	cpath, err := cString("path", path)
	if err != nil {
		return &Error{Status: StatusIO, Message: err.(*Error).Message}
	}
	defer C.free(unsafe.Pointer(cpath))
	cprefix, err := cString("prefix", prefix)
	if err != nil {
		return err
	}
	defer C.free(unsafe.Pointer(cprefix))
	return l.write(func(p *C.attn_layer) error {
		return call(func() C.attn_status { return C.attn_layer_load_safetensors(p, cpath, cprefix) })
	})
}

// LoadSafetensorsBytes is LoadSafetensors from the bytes of a whole file.
func (l *Layer) LoadSafetensorsBytes(data []byte, prefix string) error {
	cprefix, err := cString("prefix", prefix)
	if err != nil {
		return err
	}
	defer C.free(unsafe.Pointer(cprefix))
	var ptr unsafe.Pointer
	if len(data) > 0 {
		ptr = unsafe.Pointer(&data[0])
	} else {
		ptr = unsafe.Pointer(&emptyFloat[0])
	}
	return l.write(func(p *C.attn_layer) error {
		return call(func() C.attn_status {
			return C.attn_layer_load_safetensors_mem(p, ptr, C.size_t(len(data)), cprefix)
		})
	})
}

// SaveSafetensors writes every weight to a safetensors file (through a
// temporary file renamed over path).
func (l *Layer) SaveSafetensors(path, prefix string, naming Naming) error {
	cpath, err := cString("path", path)
	if err != nil {
		return &Error{Status: StatusIO, Message: err.(*Error).Message}
	}
	defer C.free(unsafe.Pointer(cpath))
	cprefix, err := cString("prefix", prefix)
	if err != nil {
		return err
	}
	defer C.free(unsafe.Pointer(cprefix))
	return l.read(func(p *C.attn_layer) error {
		return call(func() C.attn_status {
			return C.attn_layer_save_safetensors(p, cpath, cprefix, C.int32_t(naming))
		})
	})
}

// forwardScratch asks the bytes of scratch a forward call needs.
func forwardScratch(p *C.attn_layer, b, lq, lk C.int64_t) func(*C.attn_options) (int, error) {
	return func(o *C.attn_options) (int, error) {
		var n C.size_t
		err := call(func() C.attn_status { return C.attn_forward_scratch_size(p, b, lq, lk, o, &n) })
		return int(n), err
	}
}

// ForwardScratchSize is the bytes of scratch a Forward of these sizes and
// options needs.
func (l *Layer) ForwardScratchSize(batch, lenQ, lenK int, opts *Options) (int, error) {
	var n int
	err := l.read(func(p *C.attn_layer) error {
		var o Options
		if opts != nil {
			o = *opts
			o.Scratch = nil
		}
		dims := l.weightDims(batch, lenQ, lenK)
		co, err := prepareOptions(&o, dims, nil)
		if err != nil {
			return err
		}
		defer co.release()
		n, err = forwardScratch(p, C.int64_t(batch), C.int64_t(lenQ), C.int64_t(lenK))(co.c)
		return err
	})
	return n, err
}

func (l *Layer) weightDims(batch, lenQ, lenK int) weightDims {
	return weightDims{
		perHead: []int{batch, l.cfg.NumHeads, lenQ, lenK},
		average: []int{batch, lenQ, lenK},
		shape:   "[batch, heads, len_q, len_k] or [batch, len_q, len_k]",
		pos:     &positionDims{batch: batch, lenQ: lenQ, lenK: lenK},
	}
}

// Forward is attention of queries over keys and values (cross-attention in
// general): query [batch, lenQ, E], key [batch, lenK, kdim], value [batch,
// lenK, vdim] -> out [batch, lenQ, E]. mask and opts may be nil. On any
// error out and opts.AttnWeights are unchanged.
func (l *Layer) Forward(batch, lenQ, lenK int, query, key, value []float32,
	mask *Mask, opts *Options, out []float32) error {
	c := l.cfg
	for _, chk := range []error{
		expectLen(len(query), "query", "[batch, len_q, embed_dim]", batch, lenQ, c.EmbedDim),
		expectLen(len(key), "key", "[batch, len_k, kdim]", batch, lenK, c.KDim),
		expectLen(len(value), "value", "[batch, len_k, vdim]", batch, lenK, c.VDim),
		expectLen(len(out), "out", "[batch, len_q, embed_dim]", batch, lenQ, c.EmbedDim),
	} {
		if chk != nil {
			return chk
		}
	}
	return l.forwardCall(batch, lenQ, lenK, mask, opts,
		func(p *C.attn_layer, b, lq, lk C.int64_t, cm *C.attn_mask, co *C.attn_options) C.attn_status {
			return C.attn_forward(p, b, lq, lk, floatPtr(query), floatPtr(key), floatPtr(value),
				cm, co, floatPtr(out))
		})
}

// SelfForward is self-attention over x [batch, length, E] into out
// [batch, length, E] (needs kdim = vdim = E); otherwise as Forward.
func (l *Layer) SelfForward(batch, length int, x []float32, mask *Mask, opts *Options, out []float32) error {
	c := l.cfg
	if err := expectLen(len(x), "x", "[batch, len, embed_dim]", batch, length, c.EmbedDim); err != nil {
		return err
	}
	if err := expectLen(len(out), "out", "[batch, len, embed_dim]", batch, length, c.EmbedDim); err != nil {
		return err
	}
	return l.forwardCall(batch, length, length, mask, opts,
		func(p *C.attn_layer, b, n, _ C.int64_t, cm *C.attn_mask, co *C.attn_options) C.attn_status {
			return C.attn_self_forward(p, b, n, floatPtr(x), cm, co, floatPtr(out))
		})
}

// forwardCall runs a forward entry point under the layer's read lock: the
// mask and options copied to C memory for the call, f making it, and the
// options' outputs taken back when it succeeds.
func (l *Layer) forwardCall(batch, lenQ, lenK int, mask *Mask, opts *Options,
	f func(p *C.attn_layer, b, lq, lk C.int64_t, cm *C.attn_mask, co *C.attn_options) C.attn_status) error {
	return l.read(func(p *C.attn_layer) error {
		b, lq, lk := C.int64_t(batch), C.int64_t(lenQ), C.int64_t(lenK)
		var mem cmem
		defer mem.free()
		var cm *C.attn_mask
		if mask != nil {
			m, err := mask.toC(&mem, batch, l.cfg.NumHeads, lenQ, lenK)
			if err != nil {
				return err
			}
			cm = m
		}
		co, err := prepareOptions(opts, l.weightDims(batch, lenQ, lenK), forwardScratch(p, b, lq, lk))
		if err != nil {
			return err
		}
		defer co.release()
		err = call(func() C.attn_status { return f(p, b, lq, lk, cm, co.c) })
		if err == nil {
			co.finish()
		}
		return err
	})
}
