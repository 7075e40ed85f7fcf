# SPDX-License-Identifier: MIT
"""Turning what users pass (numpy arrays, torch tensors, lists) into numpy
arrays, copying only when the library could not read the data as it is."""

import numpy as np

_F32 = np.dtype(np.float32)


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
