// SPDX-License-Identifier: MIT

package attn

/*
#include <attn/attn.h>
*/
import "C"

import (
	"math"
	"runtime"
	"sync"
)

// BlasPolicy says how a runtime meets the BLAS's own threads.
type BlasPolicy int32

const (
	// BlasHold holds OpenBLAS at one thread while a call runs (the
	// default); OpenBLAS's thread count is process-wide (see attn.h).
	BlasHold BlasPolicy = C.ATTN_BLAS_HOLD
	// BlasLeave never changes a BLAS setting.
	BlasLeave BlasPolicy = C.ATTN_BLAS_LEAVE
)

// Runtime is an execution context: worker threads started once and asleep
// between calls, and a BLAS policy. Pass it to calls in Options.Runtime;
// calls without one use the library's default runtime. Any number of
// goroutines may make calls with one runtime at once; Close waits for them.
type Runtime struct {
	mu  sync.RWMutex
	ptr *C.attn_runtime
}

// NewRuntime starts a runtime of threads threads in all, the calling
// thread included (0 = CPUCount()).
func NewRuntime(threads int, policy BlasPolicy) (*Runtime, error) {
	var cfg C.attn_runtime_config
	if err := call(func() C.attn_status {
		return C.attn_runtime_config_init_sized(&cfg, C.sizeof_attn_runtime_config)
	}); err != nil {
		return nil, err
	}
	if threads < 0 || threads > math.MaxInt32 {
		return nil, newError(StatusBadOption, "runtime threads %d out of range", threads)
	}
	cfg.num_threads = C.int32_t(threads)
	cfg.blas_policy = C.int32_t(policy)
	var p *C.attn_runtime
	if err := call(func() C.attn_status { return C.attn_runtime_create(&cfg, &p) }); err != nil {
		return nil, err
	}
	rt := &Runtime{ptr: p}
	runtime.SetFinalizer(rt, (*Runtime).Close)
	return rt, nil
}

// Threads is the runtime's number of threads, the calling thread included.
func (rt *Runtime) Threads() (int, error) {
	rt.mu.RLock()
	defer rt.mu.RUnlock()
	if rt.ptr == nil {
		return 0, ErrClosed
	}
	var n C.int32_t
	err := call(func() C.attn_status { return C.attn_runtime_threads(rt.ptr, &n) })
	return int(n), err
}

// Trim frees the scratch memory the runtime keeps between calls (a block a
// running call holds is freed when that call ends).
func (rt *Runtime) Trim() {
	rt.mu.RLock()
	defer rt.mu.RUnlock()
	if rt.ptr != nil {
		C.attn_runtime_trim(rt.ptr)
	}
}

// Close stops the runtime's workers, after the calls using it. Idempotent.
func (rt *Runtime) Close() error {
	rt.mu.Lock()
	defer rt.mu.Unlock()
	if rt.ptr != nil {
		C.attn_runtime_destroy(rt.ptr)
		rt.ptr = nil
		runtime.SetFinalizer(rt, nil)
	}
	return nil
}

// TrimDefaultRuntime frees the scratch memory the default runtime keeps
// between calls.
func TrimDefaultRuntime() { C.attn_runtime_trim(nil) }

// DefaultRuntimeThreads is the number of threads of the library's default
// runtime (created on first use).
func DefaultRuntimeThreads() (int, error) {
	var n C.int32_t
	err := call(func() C.attn_status { return C.attn_runtime_threads(nil, &n) })
	return int(n), err
}
