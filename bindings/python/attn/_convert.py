# SPDX-License-Identifier: MIT
"""Turning what users pass (numpy arrays, torch tensors, lists) into numpy
arrays, copying only when the library could not read the data as it is."""

import numbers

import numpy as np

_F32 = np.dtype(np.float32)
_I64 = np.dtype(np.int64)
_I64_MAX = np.uint64(np.iinfo(_I64).max)
_I64_RANGE = range(np.iinfo(_I64).min, np.iinfo(_I64).max + 1)


def to_numpy(x):
    """x as a numpy array. A torch tensor (on any device, with or without
    grad) is detached and moved to the CPU; a CPU tensor of a dtype numpy
    knows is not copied. Anything else goes through np.asarray."""
    if isinstance(x, np.ndarray):
        return x
    if hasattr(x, "detach") and hasattr(x, "cpu") and hasattr(x, "numpy"):
        t = x.detach().cpu()
        if t.is_floating_point() and str(t.dtype) not in (
                "torch.float32", "torch.float64", "torch.float16"):
            t = t.float()  # bfloat16 and friends: numpy has no such type
        return t.numpy()
    return np.asarray(x)


def as_float32(x):
    """x as a C-contiguous float32 ndarray: x itself when it already is one
    (or a torch tensor's memory when that is one), otherwise one converted
    copy. TypeError for arrays and tensors that are not floating point
    (integer, boolean, complex): converting them would hide a mistake or
    drop an imaginary part."""
    if isinstance(x, np.ndarray) and x.dtype == _F32 and x.flags.c_contiguous:
        return x
    a = to_numpy(x)
    if a.dtype.kind != "f" and not (a.dtype.kind in "iu" and
                                    not isinstance(x, np.ndarray) and
                                    not hasattr(x, "detach")):
        # Complex values would lose their imaginary part, integers and
        # booleans are not activations or weights: say so, don't convert.
        raise TypeError("libattn computes in float32 and takes floating-"
                        "point data (or Python numbers), not an array of "
                        "dtype %s: convert it explicitly" % a.dtype)
    return np.ascontiguousarray(a, dtype=_F32)


def as_int64(x, shape, name, broadcast=False, hint=""):
    """x (integers: an array, a tensor, a list or, with broadcast, one
    integer for the whole shape) as a C-contiguous int64 array of that
    shape. TypeError for data that is not integer, OverflowError for an
    unsigned value above int64's range (converting it would wrap it to a
    negative number), ValueError for another shape (its message ends with
    hint)."""
    a = to_numpy(x)
    # numpy keeps Python integers beyond 64 bits as objects (and an
    # object array may hold small ones too).
    object_ints = a.dtype == object and a.size and all(
        isinstance(v, numbers.Integral) for v in a.flat)
    if a.dtype.kind not in "iu" and not object_ints:
        raise TypeError("%s must hold integers, not %s" % (name, a.dtype))
    # Unsigned values compared as uint64, before any conversion.
    if (object_ints and any(int(v) not in _I64_RANGE for v in a.flat)) or (
            a.dtype.kind == "u" and a.size and a.max() > _I64_MAX):
        raise OverflowError("%s does not fit the library's 64-bit integers"
                            % name)
    if broadcast and a.ndim == 0:
        a = np.full(shape, a, dtype=_I64)
    if a.shape != shape:
        raise ValueError("%s must have shape %s%s, not %s"
                         % (name, shape, hint, tuple(a.shape)))
    return np.ascontiguousarray(a, dtype=_I64)
