// SPDX-License-Identifier: MIT
//! Errors: the library's status and its message.

use attn_sys as sys;
use std::ffi::CStr;
use std::fmt;

/// A status of the C API (`attn_status`). The library only ever appends new
/// values, so this is an open set of codes rather than an enum.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Status(pub i32);

impl Status {
    pub const OK: Status = Status(sys::ATTN_OK);
    pub const NULL_POINTER: Status = Status(sys::ATTN_ERR_NULL_POINTER);
    pub const STRUCT_SIZE: Status = Status(sys::ATTN_ERR_STRUCT_SIZE);
    pub const BAD_SIZE: Status = Status(sys::ATTN_ERR_BAD_SIZE);
    pub const OVERFLOW: Status = Status(sys::ATTN_ERR_OVERFLOW);
    pub const WEIGHT_SIZE: Status = Status(sys::ATTN_ERR_WEIGHT_SIZE);
    pub const WEIGHT_LAYOUT: Status = Status(sys::ATTN_ERR_WEIGHT_LAYOUT);
    pub const WEIGHTS_NOT_SET: Status = Status(sys::ATTN_ERR_WEIGHTS_NOT_SET);
    pub const BAD_MASK: Status = Status(sys::ATTN_ERR_BAD_MASK);
    pub const BAD_OPTION: Status = Status(sys::ATTN_ERR_BAD_OPTION);
    pub const NOT_FINITE: Status = Status(sys::ATTN_ERR_NOT_FINITE);
    pub const NO_MEMORY: Status = Status(sys::ATTN_ERR_NO_MEMORY);
    pub const SCRATCH_TOO_SMALL: Status = Status(sys::ATTN_ERR_SCRATCH_TOO_SMALL);
    pub const IO: Status = Status(sys::ATTN_ERR_IO);
    pub const FILE_FORMAT: Status = Status(sys::ATTN_ERR_FILE_FORMAT);
    pub const TENSOR_MISSING: Status = Status(sys::ATTN_ERR_TENSOR_MISSING);
    pub const TENSOR_DTYPE: Status = Status(sys::ATTN_ERR_TENSOR_DTYPE);
    pub const TENSOR_SHAPE: Status = Status(sys::ATTN_ERR_TENSOR_SHAPE);
    pub const CAPACITY: Status = Status(sys::ATTN_ERR_CAPACITY);
    pub const MISMATCH: Status = Status(sys::ATTN_ERR_MISMATCH);
    pub const UNSUPPORTED: Status = Status(sys::ATTN_ERR_UNSUPPORTED);

    /// The library's short description ("a size is zero, negative or
    /// inconsistent"); "unknown status" for a value it does not know.
    pub fn description(self) -> &'static str {
        // SAFETY: attn_status_string returns static storage for any value.
        unsafe { CStr::from_ptr(sys::attn_status_string(self.0)) }
            .to_str()
            .unwrap_or("unknown status")
    }
}

impl fmt::Display for Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.description())
    }
}

/// A failed call: the status and what exactly was wrong.
///
/// Errors from the library carry its message (`attn_last_error()`), read on
/// the same thread right after the failing call. Errors this crate finds
/// before calling (a slice of the wrong length for the shapes given) carry
/// the status the library would have given and a message of their own.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Error {
    status: Status,
    message: String,
}

/// `Result` with [`Error`].
pub type Result<T> = std::result::Result<T, Error>;

impl Error {
    /// An error with this status and message.
    pub fn new(status: Status, message: impl Into<String>) -> Error {
        Error {
            status,
            message: message.into(),
        }
    }

    /// The error of a call that just returned `status` on this thread.
    pub(crate) fn from_library(status: i32) -> Error {
        // SAFETY: attn_last_error never returns NULL; the string stays valid
        // until the next libattn call on this thread, and is copied here.
        let message = unsafe { CStr::from_ptr(sys::attn_last_error()) }
            .to_string_lossy()
            .into_owned();
        Error {
            status: Status(status),
            message,
        }
    }

    /// The status of the failure.
    pub fn status(&self) -> Status {
        self.status
    }

    /// What exactly was wrong, e.g. "embed_dim 510 is not divisible by
    /// num_heads 8".
    pub fn message(&self) -> &str {
        &self.message
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.message.is_empty() {
            write!(f, "{}", self.status)
        } else {
            write!(f, "{} ({})", self.message, self.status)
        }
    }
}

impl std::error::Error for Error {}

/// Ok for ATTN_OK, else the library's error.
pub(crate) fn check(status: i32) -> Result<()> {
    if status == sys::ATTN_OK {
        Ok(())
    } else {
        Err(Error::from_library(status))
    }
}

/// `x` as the C API's int64_t.
pub(crate) fn to_i64(x: usize, what: &str) -> Result<i64> {
    i64::try_from(x)
        .map_err(|_| Error::new(Status::OVERFLOW, format!("{} {} is too large", what, x)))
}

/// The product of `dims`, or an overflow error naming `what`.
pub(crate) fn elements(dims: &[usize], what: &str) -> Result<usize> {
    let mut n: usize = 1;
    for &d in dims {
        n = n.checked_mul(d).ok_or_else(|| {
            Error::new(Status::OVERFLOW, format!("the size of {} overflows", what))
        })?;
    }
    Ok(n)
}

/// Checks that a slice holds exactly the elements of `shape`.
pub(crate) fn expect_len(len: usize, dims: &[usize], what: &str, shape: &str) -> Result<()> {
    let want = elements(dims, what)?;
    if len == want {
        Ok(())
    } else {
        Err(Error::new(
            Status::BAD_SIZE,
            format!(
                "{} has {} elements, expected {} = {} ({:?})",
                what, len, want, shape, dims
            ),
        ))
    }
}
