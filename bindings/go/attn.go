// SPDX-License-Identifier: MIT

// Package attn gives Go programs the multi-head self- and cross-attention
// layers of libattn, with torch.nn.MultiheadAttention's computation and
// weight layout.
//
// Tensors are row-major []float32, batch first ([B, L, E]). Every call
// checks each slice's length against the sizes it is given before calling
// the library: a wrong length is an *Error, never a crash.
//
// Errors are *Error values with the library's Status and its message, read
// on the same OS thread as the failing call (the message is per thread).
//
// cgo's pointer rules: slices passed as call arguments are handed to C as
// they are; what the C API takes inside structs (mask key lengths, padding
// and bias, the attention-weights output, scratch, Positions, and for
// NewLayer the Rope with its InvFreq table and the AlibiSlopes) is copied
// into C memory for the call, so no Go pointer is ever stored where C can
// keep it. Tests run with GODEBUG=cgocheck=2.
//
// Handles (Layer, KvCache, Memory, Runtime, Scratch) own C memory: Close
// them (Close is idempotent); a finalizer frees a handle that was forgotten.
// A Layer serves concurrent forward calls from many goroutines; changing
// its weights waits for those calls, and calls on a closed Layer return
// ErrClosed.
//
// The package links libattn through pkg-config (module attn): set
// PKG_CONFIG_PATH to an install's lib/pkgconfig when it is not in a system
// directory, and LD_LIBRARY_PATH to its lib/ to run.
package attn

/*
#cgo pkg-config: attn
#include <attn/attn.h>
#include <stdlib.h>

// malloc that never returns NULL for 0 bytes; NULL means out of memory.
static void *attn_go_alloc(size_t n) { return malloc(n ? n : 1); }
*/
import "C"

import (
	"fmt"
	"runtime"
	"unsafe"
)

// Status is a status of the C API. The library only appends new values.
type Status int32

// Statuses: ATTN_OK and ATTN_ERR_*.
const (
	StatusOK              Status = C.ATTN_OK
	StatusNullPointer     Status = C.ATTN_ERR_NULL_POINTER
	StatusStructSize      Status = C.ATTN_ERR_STRUCT_SIZE
	StatusBadSize         Status = C.ATTN_ERR_BAD_SIZE
	StatusOverflow        Status = C.ATTN_ERR_OVERFLOW
	StatusWeightSize      Status = C.ATTN_ERR_WEIGHT_SIZE
	StatusWeightLayout    Status = C.ATTN_ERR_WEIGHT_LAYOUT
	StatusWeightsNotSet   Status = C.ATTN_ERR_WEIGHTS_NOT_SET
	StatusBadMask         Status = C.ATTN_ERR_BAD_MASK
	StatusBadOption       Status = C.ATTN_ERR_BAD_OPTION
	StatusNotFinite       Status = C.ATTN_ERR_NOT_FINITE
	StatusNoMemory        Status = C.ATTN_ERR_NO_MEMORY
	StatusScratchTooSmall Status = C.ATTN_ERR_SCRATCH_TOO_SMALL
	StatusIO              Status = C.ATTN_ERR_IO
	StatusFileFormat      Status = C.ATTN_ERR_FILE_FORMAT
	StatusTensorMissing   Status = C.ATTN_ERR_TENSOR_MISSING
	StatusTensorDtype     Status = C.ATTN_ERR_TENSOR_DTYPE
	StatusTensorShape     Status = C.ATTN_ERR_TENSOR_SHAPE
	StatusCapacity        Status = C.ATTN_ERR_CAPACITY
	StatusMismatch        Status = C.ATTN_ERR_MISMATCH
	StatusUnsupported     Status = C.ATTN_ERR_UNSUPPORTED
)

// String is the library's short description of the status.
func (s Status) String() string {
	return C.GoString(C.attn_status_string(C.attn_status(s)))
}

// Error is a failed call: its status and what exactly was wrong.
type Error struct {
	Status  Status
	Message string
}

func (e *Error) Error() string {
	if e.Message == "" {
		return "attn: " + e.Status.String()
	}
	return fmt.Sprintf("attn: %s (%s)", e.Message, e.Status)
}

// Is reports whether target is an *Error of the same status and, when the
// target has a message, the same message: errors.Is(err,
// &attn.Error{Status: attn.StatusBadSize}) matches every size error.
func (e *Error) Is(target error) bool {
	t, ok := target.(*Error)
	return ok && t.Status == e.Status && (t.Message == "" || t.Message == e.Message)
}

// ErrClosed is returned by calls on a closed Layer, KvCache, Memory,
// Runtime or Scratch.
var ErrClosed = &Error{Status: StatusNullPointer, Message: "use of a closed attn handle"}

func newError(s Status, format string, args ...interface{}) error {
	return &Error{Status: s, Message: fmt.Sprintf(format, args...)}
}

// call runs f, a libattn call, and on failure reads the message on the same
// OS thread: the goroutine is locked to its thread for both.
func call(f func() C.attn_status) error {
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	st := f()
	if st == C.ATTN_OK {
		return nil
	}
	return &Error{Status: Status(st), Message: C.GoString(C.attn_last_error())}
}

// LibraryVersion is the version of the libattn loaded ("0.1.0").
func LibraryVersion() string { return C.GoString(C.attn_version_string()) }

// LibraryVersionNumber is MAJOR*10000 + MINOR*100 + PATCH of the libattn
// loaded.
func LibraryVersionNumber() int { return int(C.attn_version_number()) }

// HeaderVersionNumber is the same number for the header this package was
// compiled against.
const HeaderVersionNumber = C.ATTN_VERSION_NUMBER

// CPUCount is the number of CPUs this process may run on (affinity mask and
// cgroup quota), at least 1.
func CPUCount() int { return int(C.attn_cpu_count()) }

// ---------------------------------------------------------------------------
// Sizes and pointers

// elements is the product of dims, or an overflow error naming what.
func elements(what string, dims ...int) (int, error) {
	n := 1
	for _, d := range dims {
		if d < 0 {
			return 0, newError(StatusBadSize, "%s: negative size %d", what, d)
		}
		if d != 0 && n > int(^uint(0)>>1)/d {
			return 0, newError(StatusOverflow, "the size of %s overflows", what)
		}
		n *= d
	}
	return n, nil
}

// expectLen checks that a slice of length n holds the elements of dims.
func expectLen(n int, what, shape string, dims ...int) error {
	want, err := elements(what, dims...)
	if err != nil {
		return err
	}
	if n != want {
		return newError(StatusBadSize, "%s has %d elements, expected %d = %s %v", what, n, want, shape, dims)
	}
	return nil
}

// emptyFloat stands in for an empty slice's data, so the library sees a
// valid pointer and reports the sizes themselves.
var emptyFloat [1]float32

func floatPtr(x []float32) *C.float {
	if len(x) == 0 {
		return (*C.float)(unsafe.Pointer(&emptyFloat[0]))
	}
	return (*C.float)(unsafe.Pointer(&x[0]))
}

func int64Ptr(x []int64) *C.int64_t {
	if len(x) == 0 {
		return nil
	}
	return (*C.int64_t)(unsafe.Pointer(&x[0]))
}

// cmem is C memory allocated for one call, freed together.
type cmem struct{ ptrs []unsafe.Pointer }

func (m *cmem) alloc(bytes int) (unsafe.Pointer, error) {
	p := C.attn_go_alloc(C.size_t(bytes))
	if p == nil {
		return nil, newError(StatusNoMemory, "cannot allocate %d bytes of C memory", bytes)
	}
	m.ptrs = append(m.ptrs, p)
	return p, nil
}

func (m *cmem) free() {
	for _, p := range m.ptrs {
		C.free(p)
	}
	m.ptrs = nil
}

func (m *cmem) floats(src []float32) (*C.float, error) {
	p, err := m.alloc(4 * len(src))
	if err != nil {
		return nil, err
	}
	copy(unsafe.Slice((*float32)(p), len(src)), src)
	return (*C.float)(p), nil
}

func (m *cmem) int64s(src []int64) (*C.int64_t, error) {
	p, err := m.alloc(8 * len(src))
	if err != nil {
		return nil, err
	}
	copy(unsafe.Slice((*int64)(p), len(src)), src)
	return (*C.int64_t)(p), nil
}

func (m *cmem) bools(src []bool) (*C.uint8_t, error) {
	p, err := m.alloc(len(src))
	if err != nil {
		return nil, err
	}
	dst := unsafe.Slice((*uint8)(p), len(src))
	for i, b := range src {
		dst[i] = 0
		if b {
			dst[i] = 1
		}
	}
	return (*C.uint8_t)(p), nil
}
