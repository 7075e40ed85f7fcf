// SPDX-License-Identifier: MIT

package attn

/*
#include <attn/attn.h>
*/
import "C"

// Causal is a causal mode.
type Causal int32

const (
	// CausalNone: no causal mask.
	CausalNone Causal = C.ATTN_CAUSAL_NONE
	// CausalTopLeft: query i sees keys j <= i (torch's is_causal).
	CausalTopLeft Causal = C.ATTN_CAUSAL_TOP_LEFT
	// CausalBottomRight: query i sees keys j <= i + (n - Lq), n the row's
	// key count, so the last query sees every key.
	CausalBottomRight Causal = C.ATTN_CAUSAL_BOTTOM_RIGHT
)

// EmptyRows says what a query that sees no key gives.
type EmptyRows int32

const (
	// EmptyRowsZero: zero attention output and weights (default).
	EmptyRowsZero EmptyRows = C.ATTN_EMPTY_ROW_ZERO
	// EmptyRowsNaN: NaN, as torch.
	EmptyRowsNaN EmptyRows = C.ATTN_EMPTY_ROW_NAN
)

// BiasShape is the layout of Mask.Bias.
type BiasShape int

const (
	// BiasShared is [Lq, Lk], the same for every batch row and head.
	BiasShared BiasShape = iota
	// BiasPerBatch is [B, Lq, Lk], the same for every head.
	BiasPerBatch
	// BiasPerHead is [B, H, Lq, Lk].
	BiasPerHead
	// BiasStrided puts element [b, h, i, j] at b*BiasStrides[0] +
	// h*BiasStrides[1] + i*BiasStrides[2] + j; a zero stride broadcasts.
	BiasStrided
)

// Mask hides keys from queries; every part is optional (zero values mean
// none) and they combine: a key is hidden when any part hides it, and the
// bias is added to the scores of the keys still visible.
type Mask struct {
	Causal    Causal
	EmptyRows EmptyRows
	// KeyLengths [B]: keys j >= KeyLengths[b] are hidden.
	KeyLengths []int64
	// KeyPadding [B, Lk]: true hides that key (torch's key_padding_mask).
	KeyPadding []bool
	// Bias is added to the scaled scores (-Inf hides a key; never NaN).
	Bias        []float32
	BiasShape   BiasShape
	BiasStrides [3]int
	// Window > 0: the query at position p sees keys with p - j < Window.
	Window int
}

// toC checks the mask against the call's sizes and builds the C
// descriptor in mem, its arrays copied there too.
func (m *Mask) toC(mem *cmem, batch, heads, lenQ, lenK int) (*C.attn_mask, error) {
	p, err := mem.alloc(C.sizeof_attn_mask)
	if err != nil {
		return nil, err
	}
	c := (*C.attn_mask)(p)
	if err := call(func() C.attn_status {
		return C.attn_mask_init_sized(c, C.sizeof_attn_mask)
	}); err != nil {
		return nil, err
	}
	c.causal = C.int32_t(m.Causal)
	c.empty_rows = C.int32_t(m.EmptyRows)
	c.window = C.int64_t(m.Window)
	if m.KeyLengths != nil {
		if err = expectLen(len(m.KeyLengths), "KeyLengths", "[batch]", batch); err != nil {
			return nil, err
		}
		if c.key_lengths, err = mem.int64s(m.KeyLengths); err != nil {
			return nil, err
		}
	}
	if m.KeyPadding != nil {
		if err = expectLen(len(m.KeyPadding), "KeyPadding", "[batch, len_k]", batch, lenK); err != nil {
			return nil, err
		}
		if c.key_padding, err = mem.bools(m.KeyPadding); err != nil {
			return nil, err
		}
	}
	if m.Bias != nil {
		strides, err := m.biasStrides(batch, heads, lenQ, lenK)
		if err != nil {
			return nil, err
		}
		if c.bias, err = mem.floats(m.Bias); err != nil {
			return nil, err
		}
		c.bias_stride_b = C.int64_t(strides[0])
		c.bias_stride_h = C.int64_t(strides[1])
		c.bias_stride_q = C.int64_t(strides[2])
	}
	return c, nil
}

// biasStrides checks the bias's length against its shape and returns its
// strides.
func (m *Mask) biasStrides(batch, heads, lenQ, lenK int) ([3]int, error) {
	n := len(m.Bias)
	switch m.BiasShape {
	case BiasShared:
		return [3]int{0, 0, lenK}, expectLen(n, "Bias", "[len_q, len_k]", lenQ, lenK)
	case BiasPerBatch:
		return [3]int{lenQ * lenK, 0, lenK},
			expectLen(n, "Bias", "[batch, len_q, len_k]", batch, lenQ, lenK)
	case BiasPerHead:
		return [3]int{heads * lenQ * lenK, lenQ * lenK, lenK},
			expectLen(n, "Bias", "[batch, heads, len_q, len_k]", batch, heads, lenQ, lenK)
	case BiasStrided:
		s := m.BiasStrides
		if batch <= 0 || heads <= 0 || lenQ <= 0 || lenK <= 0 {
			return s, nil // the library refuses the sizes themselves
		}
		if s[0] < 0 || s[1] < 0 || s[2] < 0 {
			return s, newError(StatusBadMask, "negative bias stride %v", s)
		}
		last := lenK - 1
		for i, d := range []int{batch, heads, lenQ} {
			term, err := elements("bias strides", d-1, s[i])
			if err != nil {
				return s, err
			}
			if last > int(^uint(0)>>1)-term {
				return s, newError(StatusOverflow, "the bias strides overflow")
			}
			last += term
		}
		if n <= last {
			return s, newError(StatusBadSize, "Bias has %d elements, but its strides %v reach element %d", n, s, last)
		}
		return s, nil
	}
	return [3]int{}, newError(StatusBadMask, "unknown BiasShape %d", m.BiasShape)
}

// DecodeMask is the per-step mask of Layer.DecodeStep (zero values: every
// new token of every row, no padding).
type DecodeMask struct {
	// NewLengths [B]: new tokens of each row, each in [0, n_new].
	NewLengths []int64
	// NewPadding [B, n_new]: true marks a new token as padding, hidden from
	// every query of this and later steps.
	NewPadding []bool
	EmptyRows  EmptyRows
}

func (m *DecodeMask) toC(mem *cmem, batch, nNew int) (*C.attn_decode_mask, error) {
	p, err := mem.alloc(C.sizeof_attn_decode_mask)
	if err != nil {
		return nil, err
	}
	c := (*C.attn_decode_mask)(p)
	if err := call(func() C.attn_status {
		return C.attn_decode_mask_init_sized(c, C.sizeof_attn_decode_mask)
	}); err != nil {
		return nil, err
	}
	c.empty_rows = C.int32_t(m.EmptyRows)
	if m.NewLengths != nil {
		if err = expectLen(len(m.NewLengths), "NewLengths", "[batch]", batch); err != nil {
			return nil, err
		}
		if c.new_lengths, err = mem.int64s(m.NewLengths); err != nil {
			return nil, err
		}
	}
	if m.NewPadding != nil {
		if err = expectLen(len(m.NewPadding), "NewPadding", "[batch, n_new]", batch, nNew); err != nil {
			return nil, err
		}
		if c.new_padding, err = mem.bools(m.NewPadding); err != nil {
			return nil, err
		}
	}
	return c, nil
}
