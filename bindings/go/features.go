// SPDX-License-Identifier: MIT

package attn

/*
#include <attn/attn.h>
*/
import "C"

import "unsafe"

// The attention features of decoder layers: per-projection biases,
// QK-norm, ALiBi, logit soft-capping, rotary position embeddings (RoPE)
// and attention sinks (fields of Config), their weights (WeightQNorm,
// WeightKNorm, WeightSinks) and token positions (Options.Positions).

// BiasParts is a set of projections that have a bias (Config.BiasParts).
type BiasParts int32

const (
	BiasQ   BiasParts = C.ATTN_BIAS_Q   // query projection bias (WeightQBias)
	BiasK   BiasParts = C.ATTN_BIAS_K   // key projection bias (WeightKBias)
	BiasV   BiasParts = C.ATTN_BIAS_V   // value projection bias (WeightVBias)
	BiasO   BiasParts = C.ATTN_BIAS_O   // output projection bias (WeightOutBias)
	BiasAll BiasParts = C.ATTN_BIAS_ALL // every projection (the default)
)

// QKNorm is an RMSNorm of the projected queries and keys (Config.QKNorm):
// x * w / sqrt(mean(x^2) + eps), after the projection and its bias, before
// the rotation; its weights are WeightQNorm and WeightKNorm (ones until
// set).
type QKNorm int32

const (
	// QKNormNone: no norm (default).
	QKNormNone QKNorm = C.ATTN_QK_NORM_NONE
	// QKNormHead: each head's q and k over its head_dim values, with
	// weights of head_dim values shared by the heads.
	QKNormHead QKNorm = C.ATTN_QK_NORM_HEAD
	// QKNormAll: a token's whole q (weight [E]) and k (weight [KV]) before
	// they are split into heads.
	QKNormAll QKNorm = C.ATTN_QK_NORM_ALL
)

// Alibi is the form of ALiBi's linear bias by position (Config.Alibi),
// added to the scaled scores after soft-capping.
type Alibi int32

const (
	// AlibiNone: no ALiBi (default).
	AlibiNone Alibi = C.ATTN_ALIBI_NONE
	// AlibiCausal: slope_h * (p_key - p_query) is added to head h's score.
	AlibiCausal Alibi = C.ATTN_ALIBI_CAUSAL
	// AlibiSymmetric: -slope_h * |p_query - p_key|.
	AlibiSymmetric Alibi = C.ATTN_ALIBI_SYMMETRIC
)

// RopePairing says which dimensions of a head rotate together.
type RopePairing int32

const (
	// RopeHalves: dimension k with k + RotaryDim/2 (the default; the
	// rotate-half layout).
	RopeHalves RopePairing = C.ATTN_ROPE_HALVES
	// RopeAdjacent: dimensions 2k and 2k+1 (interleaved layout).
	RopeAdjacent RopePairing = C.ATTN_ROPE_ADJACENT
)

// MaxPosition is the largest position a token may have.
const MaxPosition = C.ATTN_MAX_POSITION

// Rope configures rotary position embeddings (Config.Rope). After the Q
// and K projections (and their biases and QK-norm) the first RotaryDim
// dimensions of every query and key head at position p are rotated in
// pairs: pair k by the angle p * invFreq[k], with invFreq[k] =
// Theta^(-2k/RotaryDim) / LinearFactor unless InvFreq gives the table;
// both rotated values are multiplied by AttentionFactor. A zero field
// takes the library's default. NewLayer copies the Rope (and InvFreq)
// into the layer: the caller may change or drop it afterwards.
type Rope struct {
	// Pairing of the rotated dimensions (zero value: RopeHalves).
	Pairing RopePairing
	// RotaryDim is the number of dimensions of each head that rotate:
	// even, at most head_dim (NewLayer fails with StatusBadSize
	// otherwise). 0 = head_dim.
	RotaryDim int
	// Theta is the base of the frequencies: positive and finite
	// (StatusBadOption otherwise). 0 = 10000. Unused with InvFreq.
	Theta float64
	// LinearFactor divides the positions (linear scaling): positive and
	// finite. 0 = 1 (none). Unused with InvFreq.
	LinearFactor float64
	// InvFreq, when not nil, holds the RotaryDim/2 inverse frequencies
	// (radians per position; finite, not negative) and replaces Theta
	// and LinearFactor: any scaling scheme that changes frequencies only
	// (Llama 3, YaRN) is a table computed by the caller. Its length is
	// checked (StatusBadSize).
	InvFreq []float32
	// AttentionFactor multiplies the rotated q and k (YaRN's attention
	// scaling): positive and finite. 0 = 1.
	AttentionFactor float64
}

// clone is a copy that shares no slice with r.
func (r *Rope) clone() *Rope {
	if r == nil {
		return nil
	}
	c := *r
	if r.InvFreq != nil {
		c.InvFreq = append([]float32(nil), r.InvFreq...)
	}
	return &c
}

// clone is a copy of the configuration that shares nothing with c.
func (c Config) clone() Config {
	if c.AlibiSlopes != nil {
		c.AlibiSlopes = append([]float32(nil), c.AlibiSlopes...)
	}
	c.Rope = c.Rope.clone()
	return c
}

// setFeatures fills the feature fields of c from cfg. What the C struct
// points at (the Rope, slopes and frequency table) is put in mem, C memory
// that must live until attn_layer_create has copied it.
func setFeatures(c *C.attn_config, cfg *Config, mem *cmem) error {
	heads := cfg.NumHeads
	if heads == 0 {
		heads = 1
	}
	c.bias_parts = C.int32_t(cfg.BiasParts)
	c.qk_norm = C.int32_t(cfg.QKNorm)
	c.qk_norm_eps = C.double(cfg.QKNormEps)
	if cfg.QKNormUnitOffset {
		c.qk_norm_unit_offset = 1
	}
	c.alibi = C.int32_t(cfg.Alibi)
	if cfg.AlibiSlopes != nil {
		// The library reads num_heads slopes without knowing the slice's
		// length, so the count is checked here. Without ALiBi the library
		// refuses slopes of any count (StatusBadOption) before it reads
		// them, which says what is really wrong: no count is checked then.
		if cfg.Alibi != AlibiNone {
			if err := expectLen(len(cfg.AlibiSlopes), "AlibiSlopes", "[num_heads]", heads); err != nil {
				return err
			}
		}
		p, err := mem.floats(cfg.AlibiSlopes)
		if err != nil {
			return err
		}
		c.alibi_slopes = p
	}
	c.softcap = C.double(cfg.Softcap)
	if cfg.Sinks {
		c.sinks = 1
	}
	if r := cfg.Rope; r != nil {
		p, err := mem.alloc(C.sizeof_attn_rope_config)
		if err != nil {
			return err
		}
		rc := (*C.attn_rope_config)(p)
		if err := call(func() C.attn_status {
			return C.attn_rope_config_init_sized(rc, C.sizeof_attn_rope_config)
		}); err != nil {
			return err
		}
		rc.pairing = C.int32_t(r.Pairing)
		rc.rotary_dim = C.int64_t(r.RotaryDim)
		if r.Theta != 0 {
			rc.theta = C.double(r.Theta)
		}
		if r.LinearFactor != 0 {
			rc.linear_factor = C.double(r.LinearFactor)
		}
		if r.AttentionFactor != 0 {
			rc.attention_factor = C.double(r.AttentionFactor)
		}
		if r.InvFreq != nil {
			// The table's length follows from the rotary dimensions; when
			// those are invalid the library reports them instead.
			if hd, ok := headDim(cfg.EmbedDim, heads); ok {
				rd := r.RotaryDim
				if rd == 0 {
					rd = hd
				}
				if rd > 0 && rd%2 == 0 && rd <= hd {
					if err := expectLen(len(r.InvFreq), "Rope.InvFreq", "[rotary_dim/2]", rd/2); err != nil {
						return err
					}
					f, err := mem.floats(r.InvFreq)
					if err != nil {
						return err
					}
					rc.inv_freq = f
				}
			}
		}
		c.rope = rc
	}
	return nil
}

func headDim(e, h int) (int, bool) {
	if e <= 0 || h <= 0 || e%h != 0 {
		return 0, false
	}
	return e / h, true
}

// readFeatures copies the feature fields of a layer's configuration, as
// attn_layer_get_config returned it (pointers into the layer), into cfg,
// whose feature fields are still zero.
func readFeatures(c *C.attn_config, cfg *Config) {
	cfg.BiasParts = BiasParts(c.bias_parts)
	cfg.QKNorm = QKNorm(c.qk_norm)
	cfg.QKNormEps = float64(c.qk_norm_eps)
	cfg.QKNormUnitOffset = c.qk_norm_unit_offset != 0
	cfg.Alibi = Alibi(c.alibi)
	if c.alibi_slopes != nil { // NULL without ALiBi
		cfg.AlibiSlopes = append([]float32(nil),
			unsafe.Slice((*float32)(unsafe.Pointer(c.alibi_slopes)), int(c.num_heads))...)
	}
	cfg.Softcap = float64(c.softcap)
	cfg.Sinks = c.sinks != 0
	if rc := c.rope; rc != nil {
		r := &Rope{
			Pairing: RopePairing(rc.pairing), RotaryDim: int(rc.rotary_dim), Theta: float64(rc.theta),
			LinearFactor: float64(rc.linear_factor), AttentionFactor: float64(rc.attention_factor),
		}
		if rc.inv_freq != nil {
			r.InvFreq = append([]float32(nil),
				unsafe.Slice((*float32)(unsafe.Pointer(rc.inv_freq)), int(rc.rotary_dim)/2)...)
		}
		cfg.Rope = r
	}
}

// Positions are the positions of a call's tokens, for a layer with rotary
// embeddings or ALiBi (other layers ignore them). Every position must lie
// in [0, MaxPosition] (StatusBadOption otherwise). The call copies the
// slices into C memory; the caller keeps them.
//
// Forward calls: query i of row b is at Query[b*lenQ+i] when Query is
// given, else at Start[b] + i (Start nil: i); key j at Key[b*lenK+j] when
// Key is given, else at Query[b*lenK+j] when Query is given and lenQ ==
// lenK, else at Start[b] + j. Decoding steps take their tokens' positions
// from the cache (their place in the row), plus Start[b] when given; the
// library refuses Query and Key there for a layer with rotary embeddings
// or ALiBi (StatusBadOption) and, like other positions, other layers ignore
// them.
type Positions struct {
	// Start [batch]: position of each row's first token; nil = 0.
	Start []int64
	// Query [batch, lenQ]: the position of each query; nil = from Start.
	Query []int64
	// Key [batch, lenK]: the position of each key; nil = as described.
	Key []int64
}

// positionDims are the sizes a call's Positions are checked against.
type positionDims struct {
	batch, lenQ, lenK int
	step              bool // a decoding step: Query and Key are the library's to refuse
}

// toC checks p's lengths and copies it into mem. In a decoding step only
// Start is checked: the library never reads Query or Key there (it refuses
// them or ignores them), so a length error would hide its answer.
func (p *Positions) toC(mem *cmem, d positionDims) (*C.attn_positions, error) {
	ptr, err := mem.alloc(C.sizeof_attn_positions)
	if err != nil {
		return nil, err
	}
	cp := (*C.attn_positions)(ptr)
	if err := call(func() C.attn_status {
		return C.attn_positions_init_sized(cp, C.sizeof_attn_positions)
	}); err != nil {
		return nil, err
	}
	for _, f := range []struct {
		src   []int64
		dst   **C.int64_t
		name  string
		shape string
		dims  []int
	}{
		{p.Start, &cp.start, "Positions.Start", "[batch]", []int{d.batch}},
		{p.Query, &cp.q_positions, "Positions.Query", "[batch, len_q]", []int{d.batch, d.lenQ}},
		{p.Key, &cp.k_positions, "Positions.Key", "[batch, len_k]", []int{d.batch, d.lenK}},
	} {
		if f.src == nil {
			continue
		}
		src := f.src
		if !d.step || f.dst == &cp.start {
			if err := expectLen(len(src), f.name, f.shape, f.dims...); err != nil {
				return nil, err
			}
		} else if len(src) > 1 {
			src = src[:1] // only told apart from nil: one element will do
		}
		c, err := mem.int64s(src)
		if err != nil {
			return nil, err
		}
		*f.dst = c
	}
	return cp, nil
}
