# SPDX-License-Identifier: MIT
"""Loading libattn.so and describing its C API to ctypes.

Everything that knows about C types lives here: the library lookup, the
mirrors of the public structs (attn_config, attn_mask, attn_options, the
decoding structs), the function prototypes, the status constants and the
exception that carries the library's detail message.

The library is looked up once, at import:

1. the path in the ATTN_LIBRARY environment variable, if set;
2. the system's library lookup for the SONAME this package was written for
   (``libattn.so.0``: LD_LIBRARY_PATH, the ld.so cache, standard paths);
3. ``ctypes.util.find_library("attn")``.

Import then checks that the library's major version is the one the package
expects and that each struct mirrored here is one the library can read.
"""

import ctypes
import ctypes.util
import os

#: Major version of libattn this package was written for. A library with
#: another major version may have another ABI, so import refuses it.
EXPECTED_MAJOR = 0

#: SONAME suffix matching EXPECTED_MAJOR (the ABI major of the C library).
_SONAME = "libattn.so.%d" % EXPECTED_MAJOR

# --------------------------------------------------------------------------
# Constants (values from include/attn/attn.h; they are append-only there).
# --------------------------------------------------------------------------

OK = 0
ERR_NULL_POINTER = 1
ERR_STRUCT_SIZE = 2
ERR_BAD_SIZE = 3
ERR_OVERFLOW = 4
ERR_WEIGHT_SIZE = 5
ERR_WEIGHT_LAYOUT = 6
ERR_WEIGHTS_NOT_SET = 7
ERR_BAD_MASK = 8
ERR_BAD_OPTION = 9
ERR_NOT_FINITE = 10
ERR_NO_MEMORY = 11
ERR_SCRATCH_TOO_SMALL = 12
ERR_IO = 13
ERR_FILE_FORMAT = 14
ERR_TENSOR_MISSING = 15
ERR_TENSOR_DTYPE = 16
ERR_TENSOR_SHAPE = 17
ERR_CAPACITY = 18
ERR_MISMATCH = 19
ERR_UNSUPPORTED = 20

W_IN_PROJ = 0
B_IN_PROJ = 1
W_Q = 2
W_K = 3
W_V = 4
W_OUT = 5
B_OUT = 6
B_Q = 7
B_K = 8
B_V = 9
W_Q_NORM = 10
W_K_NORM = 11
W_SINKS = 12

BIAS_Q = 1
BIAS_K = 2
BIAS_V = 4
BIAS_O = 8
BIAS_ALL = 15

QK_NORM_NONE = 0
QK_NORM_HEAD = 1
QK_NORM_ALL = 2

ALIBI_NONE = 0
ALIBI_CAUSAL = 1
ALIBI_SYMMETRIC = 2

ROPE_HALVES = 0
ROPE_ADJACENT = 1

#: Largest token position (attn_positions).
MAX_POSITION = 2**31 - 1

CAUSAL_NONE = 0
CAUSAL_TOP_LEFT = 1
CAUSAL_BOTTOM_RIGHT = 2

EMPTY_ROW_ZERO = 0
EMPTY_ROW_NAN = 1

WEIGHTS_PER_HEAD = 0
WEIGHTS_AVERAGE = 1

CORE_AUTO = 0
CORE_BLAS = 1
CORE_PACKED = 2

NAMES_TORCH = 0
NAMES_HF = 1
NAMES_HF_O_PROJ = 2


class AttnError(RuntimeError):
    """A libattn call failed.

    ``str(err)`` is the library's detail message (attn_last_error(), e.g.
    "embed_dim 510 is not divisible by num_heads 8"); ``err.status`` is the
    numeric attn_status (compare with the ``attn.ERR_*`` constants) and
    ``err.status_name`` its short description (attn_status_string()).
    """

    def __init__(self, status, message, status_name=""):
        super().__init__(message or status_name or "libattn error %d" % status)
        self.status = status
        self.status_name = status_name


class OwnsCObject:
    """Base of the classes whose objects own one C object (a layer, a cache,
    a memory) in ``_handle``, None once their close() has freed it; they
    work as ``with`` blocks that close them. A copy would share the C
    object, and closing either would leave the other pointing at freed
    memory, so copying and pickling are refused with a TypeError that says
    what to do instead (``_copy_hint``)."""

    _handle = None
    _copy_hint = ""

    @property
    def closed(self) -> bool:
        """True once close() has freed the C object."""
        return self._handle is None

    def close(self) -> None:
        """Frees the C object now (otherwise when the object is collected).
        Waits for the calls using it (a layer's calls, a cache's steps, a
        memory's cross steps and set); later calls raise ValueError.
        Closing twice is fine."""
        if self._handle is None:
            return
        with self._exclusive():
            if self._handle is not None:  # not closed while waiting
                self._finalizer()
                self._handle = None

    def _exclusive(self):
        """A context manager holding the object's lock so that no other
        call uses the C object (here the writing side of a _ReadWriteLock
        in ``_lock``)."""
        return self._lock.writing()

    def __enter__(self):
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _live_handle(self):
        h = self._handle
        if h is None:
            raise ValueError("this %s is closed" % type(self).__name__)
        return h

    def _refuse_copy(self):
        return TypeError("a %s owns a C object and cannot be copied or "
                         "pickled%s" % (type(self).__name__, self._copy_hint))

    def __copy__(self):
        raise self._refuse_copy()

    def __deepcopy__(self, memo):
        raise self._refuse_copy()

    def __reduce_ex__(self, protocol):
        raise self._refuse_copy()


# --------------------------------------------------------------------------
# Struct mirrors. Field order and types follow attn.h exactly; the library
# only ever appends fields, so these stay valid for later minor versions.
# --------------------------------------------------------------------------

_size_t = ctypes.c_size_t
_i32 = ctypes.c_int32
_i64 = ctypes.c_int64
_ptr = ctypes.c_void_p


class Config(ctypes.Structure):
    """Mirror of attn_config."""

    _fields_ = [
        ("struct_size", _size_t),
        ("embed_dim", _i64),
        ("num_heads", _i64),
        ("kdim", _i64),
        ("vdim", _i64),
        ("bias", _i32),
        ("num_threads", _i32),
        ("scale", ctypes.c_double),
        ("num_kv_heads", _i64),
        # Appended after 0.1.0's first layout: decoder attention features.
        ("bias_parts", _i32),
        ("qk_norm", _i32),
        ("qk_norm_eps", ctypes.c_double),
        ("qk_norm_unit_offset", _i32),
        ("alibi", _i32),
        ("alibi_slopes", _ptr),
        ("softcap", ctypes.c_double),
        ("rope", _ptr),
        ("sinks", _i32),
    ]


class RopeConfig(ctypes.Structure):
    """Mirror of attn_rope_config."""

    _fields_ = [
        ("struct_size", _size_t),
        ("pairing", _i32),
        ("reserved", _i32),
        ("rotary_dim", _i64),
        ("theta", ctypes.c_double),
        ("linear_factor", ctypes.c_double),
        ("inv_freq", _ptr),
        ("attention_factor", ctypes.c_double),
    ]


class Positions(ctypes.Structure):
    """Mirror of attn_positions."""

    _fields_ = [
        ("struct_size", _size_t),
        ("start", _ptr),
        ("q_positions", _ptr),
        ("k_positions", _ptr),
    ]


class Mask(ctypes.Structure):
    """Mirror of attn_mask."""

    _fields_ = [
        ("struct_size", _size_t),
        ("causal", _i32),
        ("empty_rows", _i32),
        ("key_lengths", _ptr),
        ("key_padding", _ptr),
        ("bias", _ptr),
        ("bias_stride_b", _i64),
        ("bias_stride_h", _i64),
        ("bias_stride_q", _i64),
        ("window", _i64),
    ]


class CacheConfig(ctypes.Structure):
    """Mirror of attn_cache_config."""

    _fields_ = [
        ("struct_size", _size_t),
        ("batch", _i64),
        ("capacity", _i64),
        ("window", _i64),
    ]


class DecodeMask(ctypes.Structure):
    """Mirror of attn_decode_mask."""

    _fields_ = [
        ("struct_size", _size_t),
        ("new_lengths", _ptr),
        ("new_padding", _ptr),
        ("empty_rows", _i32),
    ]


class MemoryConfig(ctypes.Structure):
    """Mirror of attn_memory_config."""

    _fields_ = [
        ("struct_size", _size_t),
        ("batch", _i64),
        ("capacity", _i64),
    ]


class Options(ctypes.Structure):
    """Mirror of attn_options."""

    _fields_ = [
        ("struct_size", _size_t),
        ("attn_weights", _ptr),
        ("weights_mode", _i32),
        ("num_threads", _i32),
        ("scratch", _ptr),
        ("scratch_size", _size_t),
        ("runtime", _ptr),
        ("positions", _ptr),
        ("core", _i32),
        ("reserved", _i32),
    ]


# --------------------------------------------------------------------------
# Loading
# --------------------------------------------------------------------------


def _load():
    path = os.environ.get("ATTN_LIBRARY")
    if path:
        try:
            return ctypes.CDLL(path)
        except OSError as e:
            raise ImportError(
                "cannot load libattn from ATTN_LIBRARY=%r: %s" % (path, e)
            ) from e
    errors = []
    for name in (_SONAME, ctypes.util.find_library("attn")):
        if not name:
            continue
        try:
            return ctypes.CDLL(name)
        except OSError as e:
            errors.append(str(e))
    raise ImportError(
        "cannot find libattn (%s): set ATTN_LIBRARY to the path of "
        "libattn.so, or install the library where the system's loader finds "
        "it (%s)" % (_SONAME, "; ".join(errors) or "not found")
    )


lib = _load()
path = getattr(lib, "_name", None)


class _Functions:
    """The library's functions with their prototypes.

    Calls go through the attributes of the single instance ``C`` so that a
    test can wrap one function (e.g. to see which pointers reach
    attn_forward) by replacing the attribute.
    """


C = _Functions()


def _bind(name, restype, argtypes, required=True):
    try:
        fn = getattr(lib, name)
    except AttributeError:
        if required:
            raise ImportError(
                "%s (%s) does not export %s: it is not a libattn this package "
                "can use" % (path, _version_or_unknown(), name)
            ) from None
        setattr(C, name, None)
        return
    fn.restype = restype
    fn.argtypes = argtypes
    setattr(C, name, fn)


def _version_or_unknown():
    try:
        fn = lib.attn_version_string
        fn.restype = ctypes.c_char_p
        fn.argtypes = []
        return "version " + fn().decode()
    except Exception:  # the library is not usable anyway; keep the message
        return "unknown version"


_P = ctypes.POINTER
_bind("attn_version_number", ctypes.c_uint, [])
_bind("attn_version_string", ctypes.c_char_p, [])
_bind("attn_status_string", ctypes.c_char_p, [_i32])
_bind("attn_last_error", ctypes.c_char_p, [])
_bind("attn_config_init_sized", _i32, [_ptr, _size_t])
_bind("attn_mask_init_sized", _i32, [_ptr, _size_t])
_bind("attn_options_init_sized", _i32, [_ptr, _size_t])
_bind("attn_layer_create", _i32, [_P(Config), _P(_ptr)])
_bind("attn_layer_destroy", None, [_ptr])
_bind("attn_layer_get_config", _i32, [_ptr, _P(Config)])
_bind("attn_layer_weight_count", _i32, [_ptr, _i32, _P(_i64)])
_bind("attn_layer_set_weight", _i32, [_ptr, _i32, _ptr, _i64])
_bind("attn_layer_get_weight", _i32, [_ptr, _i32, _ptr, _i64])
_bind("attn_layer_init_weights", _i32, [_ptr, ctypes.c_uint64])
_bind(
    "attn_forward",
    _i32,
    [_ptr, _i64, _i64, _i64, _ptr, _ptr, _ptr, _P(Mask), _P(Options), _ptr],
)
# Incremental decoding (in the first release): key/value caches, decoding
# steps, cross-attention memories and cross steps.
_bind("attn_cache_config_init_sized", _i32, [_ptr, _size_t])
_bind("attn_kv_cache_size", _i32, [_ptr, _P(CacheConfig), _P(_size_t)])
_bind("attn_kv_cache_create", _i32, [_ptr, _P(CacheConfig), _P(_ptr)])
_bind("attn_kv_cache_destroy", None, [_ptr])
_bind("attn_kv_cache_lengths", _i32, [_ptr, _i64, _ptr, _ptr])
_bind("attn_kv_cache_truncate", _i32, [_ptr, _i64, _ptr])
_bind("attn_kv_cache_reorder", _i32, [_ptr, _i64, _ptr])
_bind("attn_kv_cache_reset", _i32, [_ptr])
_bind("attn_decode_mask_init_sized", _i32, [_ptr, _size_t])
_bind("attn_decode_step", _i32, [_ptr, _ptr, _i64, _i64, _ptr,
                                 _P(DecodeMask), _P(Options), _ptr])
_bind("attn_memory_config_init_sized", _i32, [_ptr, _size_t])
_bind("attn_memory_size", _i32, [_ptr, _P(MemoryConfig), _P(_size_t)])
_bind("attn_memory_create", _i32, [_ptr, _P(MemoryConfig), _P(_ptr)])
_bind("attn_memory_destroy", None, [_ptr])
_bind("attn_memory_set", _i32, [_ptr, _ptr, _i64, _i64, _ptr, _ptr, _ptr,
                                _ptr, _P(Options)])
_bind("attn_cross_step", _i32, [_ptr, _ptr, _i64, _i64, _ptr, _P(Mask),
                                _P(Options), _ptr])
# Weight files arrived after the first release: optional, so that the rest
# of the package works with a library that predates them.
_bind("attn_layer_load_safetensors", _i32, [_ptr, ctypes.c_char_p,
                                            ctypes.c_char_p], required=False)
_bind("attn_layer_save_safetensors", _i32, [_ptr, ctypes.c_char_p,
                                            ctypes.c_char_p, _i32],
      required=False)
_bind("attn_layer_load_safetensors_mem", _i32, [_ptr, _ptr, _size_t,
                                                ctypes.c_char_p],
      required=False)
# Decoder attention features (rotary embeddings, positions) came later too.
_bind("attn_rope_config_init_sized", _i32, [_ptr, _size_t], required=False)
_bind("attn_positions_init_sized", _i32, [_ptr, _size_t], required=False)
# The caller's choice of attention core, later still.
_bind("attn_core_available", _i32, [_i32], required=False)
# Runtimes keep their scratch between calls; this gives it back.
_bind("attn_runtime_trim", None, [_ptr], required=False)

version_number = C.attn_version_number()
version = C.attn_version_string().decode()
if version_number // 10000 != EXPECTED_MAJOR:
    raise ImportError(
        "%s is libattn %s, but this package needs major version %d"
        % (path, version, EXPECTED_MAJOR)
    )


def status_string(status):
    """attn_status_string(): the short English description of a status
    (e.g. "a size is zero, negative or inconsistent")."""
    return C.attn_status_string(status).decode("utf-8", "replace")


def check(status):
    """Raises AttnError with the calling thread's detail message unless
    status is ATTN_OK. Must run on the thread that made the failing call
    (the message is per thread), right after it."""
    if status != OK:
        message = C.attn_last_error().decode("utf-8", "replace")
        raise AttnError(status, message, status_string(status))


# --------------------------------------------------------------------------
# Structs. Each attn_*_init_sized() fills exactly the bytes we pass (our
# mirror's size) with the library's defaults; a library older than the
# mirror accepts it as long as the fields it does not know are zero, and
# refuses it (ImportError here) otherwise.
# --------------------------------------------------------------------------


def _defaults(struct, init_sized, cname):
    value = struct()
    status = init_sized(ctypes.byref(value), ctypes.sizeof(struct))
    if status != OK:
        raise ImportError(
            "%s (libattn %s) refuses a %d-byte %s: %s"
            % (path, version, ctypes.sizeof(struct), cname,
               C.attn_last_error().decode("utf-8", "replace"))
        )
    return value


_CONFIG_DEFAULT = _defaults(Config, C.attn_config_init_sized, "attn_config")
_MASK_DEFAULT = _defaults(Mask, C.attn_mask_init_sized, "attn_mask")
_OPTIONS_DEFAULT = _defaults(Options, C.attn_options_init_sized,
                             "attn_options")


_CACHE_CONFIG_DEFAULT = _defaults(CacheConfig,
                                  C.attn_cache_config_init_sized,
                                  "attn_cache_config")
_DECODE_MASK_DEFAULT = _defaults(DecodeMask, C.attn_decode_mask_init_sized,
                                 "attn_decode_mask")
_MEMORY_CONFIG_DEFAULT = _defaults(MemoryConfig,
                                   C.attn_memory_config_init_sized,
                                   "attn_memory_config")


def new_config():
    """An attn_config filled with the library's defaults."""
    return Config.from_buffer_copy(_CONFIG_DEFAULT)


def new_mask():
    """An attn_mask meaning "no masking"."""
    return Mask.from_buffer_copy(_MASK_DEFAULT)


def new_options():
    """An attn_options with the library's defaults."""
    return Options.from_buffer_copy(_OPTIONS_DEFAULT)


def new_cache_config():
    """An attn_cache_config with the defaults (batch 1, capacity 0, no
    window)."""
    return CacheConfig.from_buffer_copy(_CACHE_CONFIG_DEFAULT)


def new_decode_mask():
    """An attn_decode_mask meaning "every new token, no padding"."""
    return DecodeMask.from_buffer_copy(_DECODE_MASK_DEFAULT)


def new_memory_config():
    """An attn_memory_config with the defaults (batch 1, capacity 0)."""
    return MemoryConfig.from_buffer_copy(_MEMORY_CONFIG_DEFAULT)


def _features_defaults():
    if (C.attn_rope_config_init_sized is None
            or C.attn_positions_init_sized is None):
        return None, None
    return (_defaults(RopeConfig, C.attn_rope_config_init_sized,
                      "attn_rope_config"),
            _defaults(Positions, C.attn_positions_init_sized,
                      "attn_positions"))


_ROPE_DEFAULT, _POSITIONS_DEFAULT = _features_defaults()


def has_features():
    """True when the loaded library has rotary embeddings and positions
    (and with them every decoder attention feature)."""
    return _ROPE_DEFAULT is not None


def new_rope_config():
    """An attn_rope_config with the library's defaults."""
    return RopeConfig.from_buffer_copy(_ROPE_DEFAULT)


def new_positions():
    """An attn_positions with the defaults (every pointer NULL)."""
    return Positions.from_buffer_copy(_POSITIONS_DEFAULT)


#: Names of the attention cores (attn_options.core) for ``core=``.
CORES = {"auto": CORE_AUTO, "blas": CORE_BLAS, "packed": CORE_PACKED}


def core_code(name):
    """The attn_options.core value of a core name ("auto", "blas" or
    "packed"); ValueError for anything else."""
    if not isinstance(name, str) or name not in CORES:
        raise ValueError("core must be one of %s, not %r"
                         % (", ".join(repr(n) for n in CORES), name))
    return CORES[name]


def core_available(name):
    """attn_core_available(): whether this CPU and library can run the
    named core ("auto", "blas", "packed"). A library without the choice of
    core runs only its automatic choice: True for "auto" alone."""
    code = core_code(name)
    if C.attn_core_available is None:
        return code == CORE_AUTO
    return bool(C.attn_core_available(code))


def trim():
    """attn_runtime_trim(NULL): frees the scratch memory the library's
    default runtime keeps between calls (as much as the largest call
    without caller scratch needed). Calls after it allocate anew. Does
    nothing with a library that predates it."""
    if C.attn_runtime_trim is not None:
        C.attn_runtime_trim(None)


def has_safetensors():
    """True when the loaded library has the safetensors functions."""
    return (C.attn_layer_load_safetensors is not None
            and C.attn_layer_save_safetensors is not None
            and C.attn_layer_load_safetensors_mem is not None)
