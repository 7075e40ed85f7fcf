// SPDX-License-Identifier: MIT
//! Runtimes: worker threads created once and a BLAS policy.

use crate::error::{check, Error, Result, Status};
use attn_sys as sys;
use attn_sys::Versioned;
use std::ptr::{self, NonNull};

/// How a runtime meets the BLAS's own threads (`ATTN_BLAS_*`).
///
/// The library may add policies: match with a wildcard arm.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum BlasPolicy {
    /// Hold OpenBLAS at one thread while a call runs (the default): the
    /// library threads the projections itself. OpenBLAS's thread count is
    /// process-wide; see `ATTN_BLAS_HOLD` in attn.h.
    Hold,
    /// Never change a BLAS setting.
    Leave,
}

impl BlasPolicy {
    /// The C value, `ATTN_BLAS_*`. Use this rather than `as i32`, which
    /// stops compiling if an enum gains a variant with data.
    pub const fn raw(self) -> i32 {
        match self {
            BlasPolicy::Hold => sys::ATTN_BLAS_HOLD,
            BlasPolicy::Leave => sys::ATTN_BLAS_LEAVE,
        }
    }
}

/// An execution context: a pool of worker threads, started once and asleep
/// between calls, and a [`BlasPolicy`]. Pass it to calls with
/// [`Options::runtime`](crate::Options::runtime); calls without one use the
/// library's default runtime (every CPU, [`BlasPolicy::Hold`]).
///
/// Any number of threads may make calls with one runtime at once. Dropping
/// it stops its workers; the borrow in `Options` keeps it alive during
/// calls.
#[derive(Debug)]
pub struct Runtime {
    ptr: NonNull<sys::attn_runtime>,
}

// SAFETY: the C runtime is made for calls from any number of threads.
unsafe impl Send for Runtime {}
unsafe impl Sync for Runtime {}

impl Runtime {
    /// A runtime with `threads` threads in all, the calling thread
    /// included (0 = [`cpu_count()`]), and the given BLAS policy.
    pub fn new(threads: usize, blas: BlasPolicy) -> Result<Runtime> {
        let mut cfg = sys::attn_runtime_config::init_default().map_err(Error::from_library)?;
        cfg.num_threads = i32::try_from(threads).map_err(|_| {
            Error::new(
                Status::BAD_OPTION,
                format!("{} threads is too many", threads),
            )
        })?;
        cfg.blas_policy = blas.raw();
        let mut out = ptr::null_mut();
        // SAFETY: cfg is initialised by the library; out is a valid pointer.
        check(unsafe { sys::attn_runtime_create(&cfg, &mut out) })?;
        let ptr = NonNull::new(out).expect("attn_runtime_create returned NULL");
        Ok(Runtime { ptr })
    }

    /// Number of threads, the calling thread included.
    pub fn threads(&self) -> usize {
        let mut n = 0;
        // SAFETY: the runtime is alive; n is a valid pointer.
        let st = unsafe { sys::attn_runtime_threads(self.ptr.as_ptr(), &mut n) };
        debug_assert_eq!(st, sys::ATTN_OK);
        n.max(1) as usize
    }

    /// Frees the scratch memory the runtime keeps between calls (a block a
    /// running call holds is freed when that call ends).
    pub fn trim(&self) {
        // SAFETY: the runtime is alive; trimming is thread-safe.
        unsafe { sys::attn_runtime_trim(self.ptr.as_ptr()) }
    }

    pub(crate) fn as_ptr(&self) -> *mut sys::attn_runtime {
        self.ptr.as_ptr()
    }
}

impl Drop for Runtime {
    fn drop(&mut self) {
        // SAFETY: owned pointer, destroyed once; no call can still borrow it.
        unsafe { sys::attn_runtime_destroy(self.ptr.as_ptr()) }
    }
}

/// Threads of the library's default runtime (created on first use).
pub fn default_runtime_threads() -> Result<usize> {
    let mut n = 0;
    // SAFETY: NULL selects the default runtime; n is a valid pointer.
    check(unsafe { sys::attn_runtime_threads(ptr::null(), &mut n) })?;
    Ok(n as usize)
}

/// Frees the scratch memory the default runtime keeps between calls.
pub fn trim_default_runtime() {
    // SAFETY: NULL selects the default runtime; never fails.
    unsafe { sys::attn_runtime_trim(ptr::null_mut()) }
}

/// CPUs this process may run on (affinity mask and cgroup quota), at least 1.
pub fn cpu_count() -> usize {
    // SAFETY: no arguments; always succeeds.
    unsafe { sys::attn_cpu_count() }.max(1) as usize
}
