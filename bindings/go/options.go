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
	"sync"
	"unsafe"
)

// WeightsMode is the layout of the attention weights a call writes.
type WeightsMode int32

const (
	// WeightsPerHead: [B, H, Lq, Lk].
	WeightsPerHead WeightsMode = C.ATTN_WEIGHTS_PER_HEAD
	// WeightsAverage: averaged over heads, [B, Lq, Lk] (torch's default).
	WeightsAverage WeightsMode = C.ATTN_WEIGHTS_AVERAGE
)

// Core is the attention core a call runs on (attn_options.core). The cores
// agree within float rounding, not bit for bit; each alone gives the same
// bits on any thread count.
type Core int32

const (
	// CoreAuto: the library chooses (default): the packed core where the
	// CPU has it, the call has 8 query rows or more and the layer no score
	// features; otherwise the BLAS core (short decoding steps: the
	// streaming kernel).
	CoreAuto Core = C.ATTN_CORE_AUTO
	// CoreBlas: both products of every tile through cblas_sgemm; any CPU,
	// any layer.
	CoreBlas Core = C.ATTN_CORE_BLAS
	// CorePacked: the packed AVX2/FMA micro-kernel core. Where the CPU
	// lacks it (or ATTN_SIMD=portable caps the library), or the layer has
	// ALiBi, soft-capping or sinks, calls fail with StatusUnsupported.
	CorePacked Core = C.ATTN_CORE_PACKED
)

// Available reports whether this CPU and library can run the core
// (attn_core_available).
func (c Core) Available() bool { return C.attn_core_available(C.int32_t(c)) != 0 }

// Options are the optional settings of one call (nil = defaults).
type Options struct {
	// AttnWeights, if not nil, receives the attention probabilities in the
	// layout of WeightsMode; its length must be that layout's (checked).
	// The library writes them into C memory, copied here after the call.
	AttnWeights []float32
	WeightsMode WeightsMode
	// Threads for the call: 0 = the layer's setting, 1 = the calling
	// thread only. Results do not depend on it.
	Threads int
	// Scratch to reuse: grown to what the call needs, then reused.
	Scratch *Scratch
	// Runtime whose threads and BLAS policy the call uses (nil = default).
	Runtime *Runtime
	// Core the call's attention runs on (zero value: CoreAuto).
	Core Core
	// Positions of the call's tokens for a layer with rotary embeddings
	// or ALiBi (nil = 0, 1, 2, ... in each row; see Positions). Their
	// lengths are checked (StatusBadSize), except a decoding step's Query
	// and Key, which the library refuses or ignores unread; they are
	// copied into C memory for the call. Memory.Set and CrossStep take no
	// positions: they are not passed there.
	Positions *Positions
}

// Scratch is C memory reused from call to call, so that calls allocate
// nothing once it is large enough. One call at a time uses it (others
// wait).
type Scratch struct {
	mu     sync.Mutex
	ptr    unsafe.Pointer
	size   int
	closed bool
}

// NewScratch returns empty scratch; the first call sizes it.
func NewScratch() *Scratch {
	s := &Scratch{}
	runtime.SetFinalizer(s, (*Scratch).Close)
	return s
}

// Size is the scratch's size in bytes.
func (s *Scratch) Size() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.size
}

// Close frees the scratch. Idempotent.
func (s *Scratch) Close() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.ptr != nil {
		C.free(s.ptr)
	}
	s.ptr, s.size, s.closed = nil, 0, true
	runtime.SetFinalizer(s, nil)
	return nil
}

// callOptions is the C options of one call and what it holds for it. The
// C struct lives in C memory: cgo checks the whole Go allocation behind a
// pointer argument, and this one holds Go pointers.
type callOptions struct {
	c        *C.attn_options
	mem      cmem
	weights  []float32 // the caller's output
	cWeights *C.float
	unlock   []func()
}

// weightDims are the two layouts the weights of a call may have.
type weightDims struct {
	perHead, average []int
	shape            string
	// pos is what Positions are checked against; nil for a call that
	// takes no positions, which then leaves Options.Positions unused.
	pos *positionDims
}

// prepareOptions checks o against the call and builds the C options;
// scratchSize tells the bytes the call needs with them. release() after
// the call, finish() after a successful one.
func prepareOptions(o *Options, dims weightDims,
	scratchSize func(*C.attn_options) (int, error)) (*callOptions, error) {
	co := &callOptions{}
	ok := false
	defer func() {
		if !ok { // an error or a panic: give back what was taken
			co.release()
		}
	}()
	p, err := co.mem.alloc(C.sizeof_attn_options)
	if err != nil {
		return nil, err
	}
	co.c = (*C.attn_options)(p)
	if err := call(func() C.attn_status {
		return C.attn_options_init_sized(co.c, C.sizeof_attn_options)
	}); err != nil {
		return nil, err
	}
	if o != nil {
		if err := co.fill(o, dims, scratchSize); err != nil {
			return nil, err
		}
	}
	ok = true
	return co, nil
}

func (co *callOptions) fill(o *Options, dims weightDims,
	scratchSize func(*C.attn_options) (int, error)) error {
	if o.AttnWeights != nil {
		d, name := dims.perHead, "AttnWeights (per head)"
		if o.WeightsMode == WeightsAverage {
			d, name = dims.average, "AttnWeights (averaged)"
		}
		if err := expectLen(len(o.AttnWeights), name, dims.shape, d...); err != nil {
			return err
		}
		p, err := co.mem.alloc(4 * len(o.AttnWeights))
		if err != nil {
			return err
		}
		co.weights, co.cWeights = o.AttnWeights, (*C.float)(p)
		co.c.attn_weights = co.cWeights
		co.c.weights_mode = C.int32_t(o.WeightsMode)
	}
	if o.Threads > math.MaxInt32 || o.Threads < math.MinInt32 {
		return newError(StatusBadOption, "threads %d out of range", o.Threads)
	}
	co.c.num_threads = C.int32_t(o.Threads)
	co.c.core = C.int32_t(o.Core)
	if o.Positions != nil && dims.pos != nil {
		p, err := o.Positions.toC(&co.mem, *dims.pos)
		if err != nil {
			return err
		}
		co.c.positions = p
	}
	if rt := o.Runtime; rt != nil {
		rt.mu.RLock()
		co.unlock = append(co.unlock, rt.mu.RUnlock)
		if rt.ptr == nil {
			return ErrClosed
		}
		co.c.runtime = rt.ptr
	}
	if s := o.Scratch; s != nil {
		s.mu.Lock()
		co.unlock = append(co.unlock, s.mu.Unlock)
		if s.closed {
			return ErrClosed
		}
		need, err := scratchSize(co.c)
		if err != nil {
			return err
		}
		if need > s.size {
			p := C.realloc(s.ptr, C.size_t(need))
			if p == nil {
				return newError(StatusNoMemory, "cannot allocate %d bytes of scratch", need)
			}
			s.ptr, s.size = p, need
		}
		co.c.scratch, co.c.scratch_size = s.ptr, C.size_t(s.size)
	}
	return nil
}

// finish copies the attention weights out of C memory.
func (co *callOptions) finish() {
	if co.cWeights != nil {
		copy(co.weights, unsafe.Slice((*float32)(unsafe.Pointer(co.cWeights)), len(co.weights)))
	}
}

func (co *callOptions) release() {
	co.mem.free()
	for i := len(co.unlock) - 1; i >= 0; i-- {
		co.unlock[i]()
	}
	co.unlock = nil
}
