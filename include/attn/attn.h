/* SPDX-License-Identifier: MIT */
/**
 * @file
 * libattn: multi-head self- and cross-attention layers for C programs.
 *
 * The public API. Everything here uses the prefix attn_ / ATTN_.
 *
 * Conventions
 * -----------
 * - Tensors are row-major and batch first: a sequence batch is [B, L, E],
 *   contiguous, float32.
 * - Sizes are int64_t so that negative values can be detected and reported.
 * - Every fallible function returns an attn_status. ATTN_OK is zero. On any
 *   other value the call has changed nothing: outputs, layers and caches are
 *   left exactly as they were. attn_last_error() then gives a message that
 *   says what exactly was wrong.
 * - Structs that may grow start with their own size (struct_size) and are
 *   filled with defaults by an attn_*_init() function. Those are inline
 *   functions of this header: they pass the size of the struct as the
 *   caller's program was compiled, to the exported attn_*_init_sized(), so
 *   a program built against an older header never has more bytes written
 *   into its struct than it has (FFI callers call attn_*_init_sized() with
 *   their own struct's size). New fields are only ever appended. The
 *   library reads and writes only the first struct_size bytes of a
 *   caller's struct; fields past them take their documented defaults. A
 *   struct_size smaller than the struct's first layout (the
 *   ATTN_*_SIZE_0_1 and ATTN_*_SIZE_0_2 constants) is refused, and so is
 *   a larger one than the library knows unless the unknown tail is all
 *   zero bytes. Structs are always passed by pointer. See docs/ABI.md.
 * - Destroy functions accept NULL.
 *
 * Thread safety
 * -------------
 * A layer whose weights are set is read-only during forward calls: any
 * number of threads may call attn_forward() / attn_self_forward() on the
 * same layer at once. Functions that change a layer (weight setters,
 * attn_layer_init_weights(), loading a weight file) must not run
 * concurrently with any other call on that layer. Scratch buffers passed in
 * by callers belong to one call at a time. The library keeps no hidden
 * global state: what a call needs besides its arguments (worker threads,
 * the BLAS policy) lives in an attn_runtime; the only process-wide things
 * are the per-thread error message, the default runtime (created on first
 * use when a call names none) and the one effect a runtime may have on
 * the process, holding OpenBLAS at one thread while a call runs, which is
 * described under ATTN_BLAS_HOLD and can be turned off (ATTN_BLAS_LEAVE).
 *
 * Threads inside a call
 * ---------------------
 * A call runs on the calling thread plus idle worker threads of its
 * runtime (attn_options.runtime; NULL = the default runtime), at most
 * attn_options.num_threads (or attn_config.num_threads) in all, and fewer
 * when the work is too small to pay for them. Workers are started once,
 * when the runtime is created, and sleep between calls. Within a call of
 * more than one thread, a worker (or the calling thread) with nothing to
 * do polls for up to 0.1 ms before it sleeps, so the call's next step
 * starts without waiting for a thread to wake. How the library
 * meets the BLAS's own threads is the runtime's BLAS policy
 * (ATTN_BLAS_HOLD, ATTN_BLAS_LEAVE).
 *
 * Reproducibility
 * ---------------
 * On one machine, with one build of the library and one BLAS, a call's
 * results (outputs, attention weights, a step's cache contents) are
 * bit-identical whenever it is repeated with the same layer, sizes,
 * inputs, mask and options under the same BLAS policy, whatever its thread
 * count (num_threads, the runtime's threads, idle or busy workers) and
 * whether its scratch is the caller's or the library's: the work is cut
 * into blocks chosen from the shapes and the CPU (cache size, vector
 * instructions) only, and each block is computed the same way on any
 * thread. The two BLAS policies cut the projections differently
 * (ATTN_BLAS_HOLD in blocks, ATTN_BLAS_LEAVE in one BLAS call), so their
 * results may differ from each other in the last bits. Arguments that say the
 * same thing count as the same (NULL or a default mask or options, a
 * larger struct with a zero tail). This holds while the BLAS's own
 * settings stay as they were: a program that changes OpenBLAS's thread
 * count (openblas_set_num_threads) while calls run, from another thread,
 * may make products of those calls run threaded, with results that differ
 * in the last bits. Nothing else is bit-identical: the same row computed
 * inside a batch of another size or composition, with other sizes, masks
 * that describe the same visibility another way, attention weights
 * requested or not, on another CPU or with another BLAS, can differ by
 * float rounding (relative differences of about 1e-6), all within the
 * tolerance the tests check against a double-precision reference.
 */
#ifndef ATTN_ATTN_H
#define ATTN_ATTN_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/** @def ATTN_API
 * Export macro: the library is built with hidden visibility and only the
 * functions marked ATTN_API are exported. */
#if defined(ATTN_STATIC_DEFINE)
#define ATTN_API
#elif defined(_WIN32)
#ifdef ATTN_BUILDING
#define ATTN_API __declspec(dllexport)
#else
#define ATTN_API __declspec(dllimport)
#endif
#elif defined(__GNUC__) && __GNUC__ >= 4
#define ATTN_API __attribute__((visibility("default")))
#else
#define ATTN_API
#endif

/* ------------------------------------------------------------------------ */
/* Version                                                                   */
/* ------------------------------------------------------------------------ */

/** Major version of this header. */
#define ATTN_VERSION_MAJOR 0
/** Minor version of this header. */
#define ATTN_VERSION_MINOR 1
/** Patch version of this header. */
#define ATTN_VERSION_PATCH 0
/** MAJOR * 10000 + MINOR * 100 + PATCH, e.g. 100 for 0.1.0. */
#define ATTN_VERSION_NUMBER                                                    \
  (ATTN_VERSION_MAJOR * 10000 + ATTN_VERSION_MINOR * 100 + ATTN_VERSION_PATCH)
/** Version of this header as a string, "MAJOR.MINOR.PATCH". */
#define ATTN_VERSION_STRING "0.1.0"

/** Version number of the library actually loaded, same encoding as
 * ATTN_VERSION_NUMBER. Compare the two to detect a header/library mismatch.
 * Thread-safe. */
ATTN_API unsigned attn_version_number(void);

/** Version string of the library actually loaded ("0.1.0"). Static storage;
 * never free it. Thread-safe. */
ATTN_API const char *attn_version_string(void);

/* ------------------------------------------------------------------------ */
/* Status codes                                                              */
/* ------------------------------------------------------------------------ */

/** Status of a fallible call. Values are append-only and never renumbered. */
typedef int32_t attn_status;

/** Success. */
#define ATTN_OK 0
/** A required pointer argument was NULL. */
#define ATTN_ERR_NULL_POINTER 1
/** A struct's struct_size is smaller than the first release of that struct
 * or larger than this library knows and the extra part is not all zero. */
#define ATTN_ERR_STRUCT_SIZE 2
/** A size is zero, negative or inconsistent (e.g. embed_dim not divisible by
 * num_heads, batch 0). */
#define ATTN_ERR_BAD_SIZE 3
/** A size computation would overflow (tensor element counts, byte counts). */
#define ATTN_ERR_OVERFLOW 4
/** A weight array has the wrong number of elements for the layer. */
#define ATTN_ERR_WEIGHT_SIZE 5
/** The weight asked for does not exist in this layer's layout (packed
 * in_proj when kdim/vdim differ from embed_dim, a bias when bias is off, an
 * unknown weight id). */
#define ATTN_ERR_WEIGHT_LAYOUT 6
/** A forward call was made before every weight of the layer was set. */
#define ATTN_ERR_WEIGHTS_NOT_SET 7
/** A mask descriptor is invalid (unknown causal mode, key length out of
 * range, negative bias stride, ...). */
#define ATTN_ERR_BAD_MASK 8
/** An option value is out of range (unknown enum value, bad thread count). */
#define ATTN_ERR_BAD_OPTION 9
/** Input data (weights, sequences, mask bias) contain NaN or infinity where
 * only finite values are allowed. */
#define ATTN_ERR_NOT_FINITE 10
/** Memory allocation failed. */
#define ATTN_ERR_NO_MEMORY 11
/** The caller's scratch buffer is smaller than the call needs. */
#define ATTN_ERR_SCRATCH_TOO_SMALL 12
/** A file could not be opened, read or written. */
#define ATTN_ERR_IO 13
/** A file is not in the expected format (corrupt, truncated, bad header). */
#define ATTN_ERR_FILE_FORMAT 14
/** A tensor the layer needs is missing from a weight file. */
#define ATTN_ERR_TENSOR_MISSING 15
/** A tensor in a weight file has a data type the library cannot use. */
#define ATTN_ERR_TENSOR_DTYPE 16
/** A tensor in a weight file has the wrong shape for the layer. */
#define ATTN_ERR_TENSOR_SHAPE 17
/** A cache or memory object has no room for the requested tokens. */
#define ATTN_ERR_CAPACITY 18
/** An object was used with a layer it was not made for. */
#define ATTN_ERR_MISMATCH 19
/** The request is valid but this CPU, build or layer cannot carry it out,
 * e.g. attn_options.core = ATTN_CORE_PACKED without AVX2/FMA; the message
 * says why. */
#define ATTN_ERR_UNSUPPORTED 20

/** Short English description of a status (e.g. "a size is zero, negative
 * or inconsistent" for ATTN_ERR_BAD_SIZE). Static storage; unknown values
 * give "unknown status". Thread-safe. */
ATTN_API const char *attn_status_string(attn_status status);

/** Detail message of the last failed call made by the calling thread, e.g.
 * "embed_dim 510 is not divisible by num_heads 8". Empty string if no call
 * has failed on this thread. The pointer is valid until the next libattn
 * call on the same thread. Successful calls leave the message unchanged. */
ATTN_API const char *attn_last_error(void);

/* ------------------------------------------------------------------------ */
/* Runtimes: worker threads and the BLAS policy                              */
/* ------------------------------------------------------------------------ */

/* BLAS policies of a runtime. Values are append-only. */
/** Default. While a call of this runtime runs, OpenBLAS (pthreads build,
 * found at run time, also behind libblas.so.3) is held at one thread, so
 * that every BLAS product runs in the thread that calls it: the library
 * then cuts the projections into blocks for its own threads. Reason:
 * OpenBLAS's idle threads keep spinning for about 0.1 s after each
 * threaded product and take the cores from the library's threads
 * (docs/PERFORMANCE.md has the measurement). OpenBLAS's thread count is
 * process-wide: the first of overlapping calls (of any runtime with this
 * policy) reads it and sets 1, the last one to finish puts the count it
 * read back, unless the count is no longer 1 then: a count the program set
 * while calls ran is kept, never overwritten. Meanwhile, BLAS calls that
 * other threads of the program make run single-threaded. With a BLAS whose
 * threads cannot be controlled (a generic CBLAS, OpenMP OpenBLAS) this
 * acts as ATTN_BLAS_LEAVE. */
#define ATTN_BLAS_HOLD 0
/** The library never changes a BLAS setting. Each projection is one BLAS
 * call from the calling thread, which the BLAS may thread itself; the
 * attention's products, made on the library's threads, stay small enough
 * (M * N * K <= 262144) that OpenBLAS runs them in the calling thread, so
 * its threads never run nested inside the library's. */
#define ATTN_BLAS_LEAVE 1

/** Largest number of threads a runtime can have. */
#define ATTN_MAX_THREADS 1024

/** Settings of a runtime. Fill with attn_runtime_config_init(). */
typedef struct attn_runtime_config {
  /** sizeof(attn_runtime_config) as compiled by the caller; set by
   * attn_runtime_config_init(). */
  size_t struct_size;
  /** Threads of the runtime, the calling thread included (the runtime
   * starts num_threads - 1 workers). 0 (default) = the CPUs this process
   * may run on: its CPU affinity mask, further limited by a cgroup v2
   * cpu.max quota when there is one (attn_cpu_count()). At most
   * ATTN_MAX_THREADS. */
  int32_t num_threads;
  /** ATTN_BLAS_HOLD (default) or ATTN_BLAS_LEAVE. */
  int32_t blas_policy;
} attn_runtime_config;

/** Size of attn_runtime_config in its first layout: the smallest
 * struct_size the library accepts (a _0_1 layout: the struct came with the
 * size constants, docs/ABI.md). */
#define ATTN_RUNTIME_CONFIG_SIZE_0_1                                           \
  (offsetof(attn_runtime_config, blas_policy) + sizeof(int32_t))

/** Fills the first `size` bytes at cfg with the defaults (num_threads 0,
 * ATTN_BLAS_HOLD) and sets cfg->struct_size to `size`, as
 * attn_config_init_sized(). Errors (nothing written):
 * ATTN_ERR_NULL_POINTER, ATTN_ERR_STRUCT_SIZE. Thread-safe. */
ATTN_API attn_status attn_runtime_config_init_sized(attn_runtime_config *cfg,
                                                    size_t size);

/** attn_runtime_config_init_sized(cfg, sizeof *cfg). */
static inline attn_status attn_runtime_config_init(attn_runtime_config *cfg) {
  return attn_runtime_config_init_sized(cfg, sizeof *cfg);
}

/** Opaque execution context: a pool of worker threads, created once and
 * asleep between calls (they never spin), and a BLAS policy. Calls choose
 * one through attn_options.runtime; a NULL runtime means the default
 * runtime, created on first use (thread-safe) with the defaults of
 * attn_runtime_config and kept until the process exits. Any number of
 * threads may make calls with one runtime at once: a call takes the
 * workers that are idle, and runs alone on its calling thread when none
 * is, so overlapping calls never run more threads than the runtime has
 * plus their callers. A process that forks runs calls of runtimes created
 * before the fork on the calling thread only, in the child, and may
 * destroy them there. Any call that
 * takes an attn_options may return ATTN_ERR_NO_MEMORY when it needs the
 * default runtime and the system cannot give it memory or threads.
 *
 * Scratch memory: a call that is not given scratch (attn_options.scratch)
 * takes the runtime's kept scratch block, and a larger one replaces it
 * when the call needs more; the block stays with the runtime for the next
 * call, so repeated calls neither allocate nor fault in fresh pages. A
 * runtime therefore keeps as much memory as the largest such call needed
 * (attn_forward_scratch_size() and the other size queries tell how much)
 * until attn_runtime_trim() or attn_runtime_destroy(). While one call
 * holds the block, overlapping calls allocate and free their own. */
typedef struct attn_runtime attn_runtime;

/** Creates a runtime and starts its workers. On success *out owns it, to be
 * freed with attn_runtime_destroy(); on failure *out is unchanged.
 * cfg may be NULL for the defaults. Errors: ATTN_ERR_NULL_POINTER (out),
 * ATTN_ERR_STRUCT_SIZE, ATTN_ERR_BAD_OPTION (num_threads negative or above
 * ATTN_MAX_THREADS, unknown blas_policy), ATTN_ERR_NO_MEMORY (also: the
 * system refused to start a thread). Thread-safe. */
ATTN_API attn_status attn_runtime_create(const attn_runtime_config *cfg,
                                         attn_runtime **out);

/** Stops the runtime's workers and frees it. NULL is allowed. Calls still
 * running on it are waited for; making a call with a runtime after (or
 * while) it is destroyed is a bug of the caller's. Never call it from
 * inside a call of that runtime. */
ATTN_API void attn_runtime_destroy(attn_runtime *rt);

/** Frees the scratch memory rt keeps between calls (NULL: the default
 * runtime's, if it exists; it is not created). A block a running call
 * holds is freed when that call ends. The next call without caller
 * scratch allocates anew. In a child process after fork() it frees the
 * child's copy of the block, unless a thread of the parent was using the
 * runtime at the fork (attn_runtime_destroy() alike). Thread-safe; never
 * fails. */
ATTN_API void attn_runtime_trim(attn_runtime *rt);

/** Number of threads of rt (NULL: of the default runtime, creating it if
 * needed), the calling thread included, in *threads. Errors:
 * ATTN_ERR_NULL_POINTER (threads), ATTN_ERR_NO_MEMORY (the default runtime
 * could not be created). Thread-safe. */
ATTN_API attn_status attn_runtime_threads(const attn_runtime *rt,
                                          int32_t *threads);

/** Number of CPUs this process may run on: the CPUs of its affinity mask,
 * limited by a cgroup v2 cpu.max quota (rounded up) when one applies; at
 * least 1. Read anew on each call. Thread-safe. */
ATTN_API int32_t attn_cpu_count(void);

/* ------------------------------------------------------------------------ */
/* Positions inside attention: rotary embeddings                             */
/* ------------------------------------------------------------------------ */

/* How a head's dimensions are paired for rotation. Values are append-only. */
/** Halves (default): dimension k is rotated with dimension k + rotary_dim/2,
 * by the angle of frequency k (Hugging Face's rotate_half, GPT-NeoX, Llama,
 * Qwen, Mistral, Gemma, Phi in Hugging Face's format). */
#define ATTN_ROPE_HALVES 0
/** Adjacent pairs: dimensions 2k and 2k + 1 are rotated by the angle of
 * frequency k (GPT-J, the original Llama code, GGUF files). */
#define ATTN_ROPE_ADJACENT 1

/** Rotary position embeddings (RoPE) of a layer, referenced by
 * attn_config.rope and copied by attn_layer_create(). Fill with
 * attn_rope_config_init().
 *
 * After the Q and K projections (and their biases and QK-norm), each query
 * and key head x at position p has its first rotary_dim dimensions rotated
 * in pairs (i, j) chosen by `pairing`: with angle a = p * inv_freq[k] for
 * pair k (k < rotary_dim / 2),
 *   x'[i] = f * (x[i] cos a - x[j] sin a),  x'[j] = f * (x[j] cos a + x[i] sin
 * a) where f is attention_factor; dimensions from rotary_dim on are kept. The
 * angle and its cosine and sine are computed in double precision.
 *
 * Frequencies: inv_freq[k] = theta^(-2k / rotary_dim) / linear_factor,
 * unless the caller gives the table itself (inv_freq), which covers every
 * scaling scheme that changes frequencies only:
 * - linear ("position interpolation"): linear_factor = the model's factor;
 * - Llama 3 (rope_type "llama3"): start from theta^(-2k/rotary_dim); with
 *   wavelength w = 2 pi / inv_freq[k], keep inv_freq[k] when w <
 *   original_max_position / high_freq_factor, divide it by factor when w >
 *   original_max_position / low_freq_factor, and in between use
 *   (1 - t) inv_freq[k] / factor + t inv_freq[k] with t =
 *   (original_max_position / w - low_freq_factor) / (high_freq_factor -
 *   low_freq_factor); attention_factor 1;
 * - YaRN: the blend of theta^(-2k/rotary_dim) and the same divided by
 *   factor with YaRN's linear ramp over the correction range, and
 *   attention_factor = 0.1 ln(factor) + 1 (or the model's value), which
 *   multiplies both q and k as Hugging Face applies it to cos and sin.
 * A dynamic scheme (frequencies that change with the sequence length) is
 * the caller's: create the layer with the table for the length in use. */
typedef struct attn_rope_config {
  /** sizeof(attn_rope_config) as compiled by the caller; set by
   * attn_rope_config_init(). */
  size_t struct_size;
  /** ATTN_ROPE_HALVES (default) or ATTN_ROPE_ADJACENT. */
  int32_t pairing;
  /** Reserved, must be 0. */
  int32_t reserved;
  /** Dimensions of each head that are rotated: even, at most head_dim; the
   * rest of the head is left as it is (Phi, GPT-NeoX's rotary_pct). 0
   * (default) = head_dim. */
  int64_t rotary_dim;
  /** Base of the frequencies; positive and finite. Default 10000. Ignored
   * when inv_freq is given. */
  double theta;
  /** Linear scaling: positions are divided by it (frequencies are).
   * Positive and finite; default 1 (none). Ignored when inv_freq is given. */
  double linear_factor;
  /** [rotary_dim / 2] inverse frequencies (radians per position), finite
   * and not negative; NULL (default) = from theta and linear_factor. Copied
   * by attn_layer_create(); the caller keeps ownership. */
  const float *inv_freq;
  /** Factor on both rotated q and k (YaRN's attention scaling, the
   * attention_scaling of Hugging Face's rotary embeddings); positive and
   * finite; default 1. */
  double attention_factor;
} attn_rope_config;

/** Size of attn_rope_config in its first layout: the smallest struct_size the
 * library accepts. The struct came after the size constants (the _0_1
 * layouts); the suffix counts layouts, not releases (docs/ABI.md). */
#define ATTN_ROPE_CONFIG_SIZE_0_2                                              \
  (offsetof(attn_rope_config, attention_factor) + sizeof(double))

/** Fills the first `size` bytes at cfg with the defaults (halves,
 * rotary_dim = head_dim, theta 10000, linear_factor 1, no table,
 * attention_factor 1) and sets cfg->struct_size to `size`, as
 * attn_config_init_sized(). Errors (nothing written): ATTN_ERR_NULL_POINTER,
 * ATTN_ERR_STRUCT_SIZE (size below ATTN_ROPE_CONFIG_SIZE_0_2). Thread-safe. */
ATTN_API attn_status attn_rope_config_init_sized(attn_rope_config *cfg,
                                                 size_t size);

/** attn_rope_config_init_sized(cfg, sizeof *cfg). */
static inline attn_status attn_rope_config_init(attn_rope_config *cfg) {
  return attn_rope_config_init_sized(cfg, sizeof *cfg);
}

/* Which projections have a bias (attn_config.bias_parts). */
/** Query projection bias. */
#define ATTN_BIAS_Q 1
/** Key projection bias. */
#define ATTN_BIAS_K 2
/** Value projection bias. */
#define ATTN_BIAS_V 4
/** Output projection bias. */
#define ATTN_BIAS_O 8
/** Every projection (torch's bias=True). */
#define ATTN_BIAS_ALL 15

/* QK-norm modes (attn_config.qk_norm). Values are append-only. */
/** No norm of q and k (default). */
#define ATTN_QK_NORM_NONE 0
/** RMSNorm of each head's q and k over its head_dim values, with learned
 * weights of head_dim values (q_norm.weight, k_norm.weight) shared by the
 * heads: Qwen3, Gemma 3. */
#define ATTN_QK_NORM_HEAD 1
/** RMSNorm of the whole projected q (embed_dim values, weight [E]) and k
 * (KV values, weight [KV]) of a token, before it is split into heads:
 * OLMo 2. */
#define ATTN_QK_NORM_ALL 2

/* ALiBi forms (attn_config.alibi). Values are append-only. */
/** No ALiBi (default). */
#define ATTN_ALIBI_NONE 0
/** Causal form: slope_h * (p_key - p_query) is added to the scaled score of
 * head h (BLOOM, MPT; equal to -slope_h * |p_query - p_key| for every key a
 * causal query sees). */
#define ATTN_ALIBI_CAUSAL 1
/** Bidirectional form: -slope_h * |p_query - p_key|. */
#define ATTN_ALIBI_SYMMETRIC 2

/* ------------------------------------------------------------------------ */
/* Layer configuration                                                       */
/* ------------------------------------------------------------------------ */

/** Configuration of a multi-head attention layer, as the arguments of
 * torch.nn.MultiheadAttention. Fill with attn_config_init(), then set the
 * fields you need. */
typedef struct attn_config {
  /** sizeof(attn_config) as compiled by the caller; set by attn_config_init. */
  size_t struct_size;
  /** Model width E (query width and output width). Default 0: must be set. */
  int64_t embed_dim;
  /** Number of heads H; must divide embed_dim. Default 1. */
  int64_t num_heads;
  /** Width of key inputs; 0 (default) means embed_dim. */
  int64_t kdim;
  /** Width of value inputs; 0 (default) means embed_dim. */
  int64_t vdim;
  /** Nonzero (default): projections have biases, as torch's bias=True. */
  int32_t bias;
  /** Default number of threads for calls with this layer; 0 (default) =
   * every thread of the call's runtime, 1 = the calling thread only. A
   * count above the runtime's is clamped to it. Calls too small to gain
   * from threads use fewer; results do not depend on the number. See
   * "Threads inside a call" at the top of this file. */
  int32_t num_threads;
  /** Score scale; 0 (default) means 1/sqrt(embed_dim / num_heads). */
  double scale;
  /** Number of key/value heads for grouped-query attention; must divide
   * num_heads. 0 (default) means num_heads (ordinary multi-head attention).
   * K and V projections then have num_kv_heads * head_dim outputs. */
  int64_t num_kv_heads;
  /** Which projections have a bias, as ATTN_BIAS_* bits: 0 (default) = as
   * `bias` says (all four or none); nonzero = exactly those, whatever
   * `bias` says (Qwen2: ATTN_BIAS_Q | ATTN_BIAS_K | ATTN_BIAS_V).
   * attn_layer_get_config() returns the layer's set here and bias = 1
   * when it is not empty. */
  int32_t bias_parts;
  /** ATTN_QK_NORM_NONE (default), ATTN_QK_NORM_HEAD or ATTN_QK_NORM_ALL:
   * RMSNorm of q and k after their projection (and bias), before the
   * rotation: x * w / sqrt(mean(x^2) + qk_norm_eps), computed in float.
   * Its weights are ATTN_W_Q_NORM and ATTN_W_K_NORM (ones until set). */
  int32_t qk_norm;
  /** Epsilon of the QK-norm; 0 (default) = 1e-6. Must be finite and not
   * negative. */
  double qk_norm_eps;
  /** Nonzero: the QK-norm multiplies by 1 + w instead of w (Gemma 3's
   * weights are stored that way). Default 0. */
  int32_t qk_norm_unit_offset;
  /** ATTN_ALIBI_NONE (default), ATTN_ALIBI_CAUSAL or ATTN_ALIBI_SYMMETRIC:
   * a linear bias by position added to the scaled scores (after
   * soft-capping), computed from the positions of query and key as the
   * rotation does, never stored as a matrix. */
  int32_t alibi;
  /** [num_heads] ALiBi slopes, finite; NULL (default) = the standard
   * geometric slopes of Press et al. for num_heads heads (with n the
   * largest power of two <= num_heads: 2^(-8(h+1)/n) for h < n, then
   * 2^(-4(2(h-n)+1)/n) for the remaining heads, as BLOOM computes them).
   * Given with alibi = ATTN_ALIBI_NONE it is ATTN_ERR_BAD_OPTION, not
   * ignored. Copied by attn_layer_create(); attn_layer_get_config() points
   * it at the layer's own table (NULL without ALiBi), valid while the layer
   * lives. */
  const float *alibi_slopes;
  /** Logit soft-capping: when > 0, every scaled score s becomes
   * softcap * tanh(s / softcap) before ALiBi, the mask bias and the
   * softmax (Gemma 2's attn_logit_softcapping). 0 (default) = none;
   * negative, infinite or NaN is ATTN_ERR_BAD_OPTION. */
  double softcap;
  /** Rotary position embeddings; NULL (default) = none. The struct (and its
   * inv_freq table) is copied by attn_layer_create(); a read-back points it
   * at the layer's own copy, valid while the layer lives. */
  const attn_rope_config *rope;
  /** Nonzero: each head has a learned sink logit (ATTN_W_SINKS,
   * [num_heads], zeros until set) that joins the softmax's denominator
   * without a value: p_j = exp(s_j) / (exp(sink_h) + sum_k exp(s_k))
   * (gpt-oss). Such a layer never has a query without a key: a query that
   * sees no key gets zeros (the sink takes all the weight), whatever
   * empty_rows says. Default 0. */
  int32_t sinks;
} attn_config;

/** Size of attn_config in 0.1.0's first header, which the first programs
 * were built against: the smallest struct_size the library accepts. */
#define ATTN_CONFIG_SIZE_0_1                                                   \
  (offsetof(attn_config, num_kv_heads) + sizeof(int64_t))

/** Fills the first `size` bytes at cfg with the layer defaults (num_heads 1,
 * bias on, every other field 0) and sets cfg->struct_size to `size`. Fields
 * past the library's own layout (a caller compiled against a newer header) are
 * set to zero, which is their default. Use attn_config_init() from C and C++;
 * FFI callers pass their struct's size. Errors (nothing written):
 * ATTN_ERR_NULL_POINTER, ATTN_ERR_STRUCT_SIZE (size below
 * ATTN_CONFIG_SIZE_0_1). Thread-safe. */
ATTN_API attn_status attn_config_init_sized(attn_config *cfg, size_t size);

/** attn_config_init_sized(cfg, sizeof *cfg): the defaults, for the
 * struct as this program was compiled. Returns as attn_config_init_sized(). */
static inline attn_status attn_config_init(attn_config *cfg) {
  return attn_config_init_sized(cfg, sizeof *cfg);
}

/* ------------------------------------------------------------------------ */
/* Layers                                                                    */
/* ------------------------------------------------------------------------ */

/** Opaque multi-head attention layer: configuration plus weights. */
typedef struct attn_layer attn_layer;

/** Creates a layer. Its weights are not set: set them with the weight
 * setters, attn_layer_init_weights() or a weight file before calling
 * forward. On success *out owns a new layer, to be freed with
 * attn_layer_destroy(). On failure *out is left unchanged.
 * Errors: ATTN_ERR_NULL_POINTER, ATTN_ERR_STRUCT_SIZE (also of cfg->rope),
 * ATTN_ERR_BAD_SIZE (also: rope->rotary_dim odd, negative or above
 * head_dim), ATTN_ERR_BAD_OPTION (also: unknown bias_parts bits, qk_norm or
 * alibi mode, pairing; qk_norm_eps, softcap, theta, linear_factor or
 * attention_factor out of range; rope->reserved not 0), ATTN_ERR_NOT_FINITE
 * (an ALiBi slope or inverse frequency not finite, or a frequency
 * negative), ATTN_ERR_OVERFLOW, ATTN_ERR_NO_MEMORY; the message names the
 * field. Thread-safe. */
ATTN_API attn_status attn_layer_create(const attn_config *cfg,
                                       attn_layer **out);

/** Frees a layer and everything it owns. NULL is allowed. The layer must
 * not be in use by another thread. */
ATTN_API void attn_layer_destroy(attn_layer *layer);

/** Copies the layer's effective configuration (kdim, vdim, scale and
 * num_kv_heads resolved to their actual values) into *cfg. cfg->struct_size
 * must be set by the caller (attn_config_init does that); only the fields
 * that fit are written. Errors: ATTN_ERR_NULL_POINTER, ATTN_ERR_STRUCT_SIZE.
 * Thread-safe: only reads the layer.
 */
ATTN_API attn_status attn_layer_get_config(const attn_layer *layer,
                                           attn_config *cfg);

/** Weight identifiers, in torch.nn.MultiheadAttention's layout: every matrix
 * is stored [out_features, in_features] row-major and applied as
 * y = x * W^T + b. Let E = embed_dim, KV = num_kv_heads * head_dim (= E
 * unless grouped-query attention is used). Values are append-only. */
typedef int32_t attn_weight_id;
/** Packed in_proj_weight [E + 2*KV, E]: rows Q, then K, then V. Only when
 * kdim == vdim == embed_dim. */
#define ATTN_W_IN_PROJ 0
/** Packed in_proj_bias [E + 2*KV]. Only when bias is on. */
#define ATTN_B_IN_PROJ 1
/** q_proj_weight [E, E]. */
#define ATTN_W_Q 2
/** k_proj_weight [KV, kdim]. */
#define ATTN_W_K 3
/** v_proj_weight [KV, vdim]. */
#define ATTN_W_V 4
/** out_proj.weight [E, E]. */
#define ATTN_W_OUT 5
/** out_proj.bias [E]. Only when bias is on. */
#define ATTN_B_OUT 6
/** Query bias [E], the first part of in_proj_bias. Only when bias is on. */
#define ATTN_B_Q 7
/** Key bias [KV], the middle part of in_proj_bias. Only when bias is on. */
#define ATTN_B_K 8
/** Value bias [KV], the last part of in_proj_bias. Only when bias is on. */
#define ATTN_B_V 9
/** QK-norm weight of the queries: [head_dim] with ATTN_QK_NORM_HEAD, [E]
 * with ATTN_QK_NORM_ALL (q_norm.weight). Only when qk_norm is on. Every
 * bias and norm id exists only when the layer has it: with bias_parts,
 * ATTN_B_IN_PROJ needs the q, k and v biases, ATTN_B_Q/K/V/OUT their own. */
#define ATTN_W_Q_NORM 10
/** QK-norm weight of the keys: [head_dim] or [KV] (k_norm.weight). */
#define ATTN_W_K_NORM 11
/** Sink logits [num_heads] (sinks). Only when the layer has sinks. */
#define ATTN_W_SINKS 12

/** Number of float elements of weight `which` for this layer in *count.
 * Errors: ATTN_ERR_NULL_POINTER, ATTN_ERR_WEIGHT_LAYOUT. Thread-safe. */
ATTN_API attn_status attn_layer_weight_count(const attn_layer *layer,
                                             attn_weight_id which,
                                             int64_t *count);

/** Copies `count` floats from `data` into weight `which`. count must equal
 * attn_layer_weight_count(). The data must be finite. The layer keeps its
 * own copy; the caller keeps ownership of data. Not to be called while any
 * other thread uses the layer. Errors: ATTN_ERR_NULL_POINTER,
 * ATTN_ERR_WEIGHT_LAYOUT, ATTN_ERR_WEIGHT_SIZE, ATTN_ERR_NOT_FINITE. */
ATTN_API attn_status attn_layer_set_weight(attn_layer *layer,
                                           attn_weight_id which,
                                           const float *data, int64_t count);

/** Copies weight `which` into data (count floats, which must equal
 * attn_layer_weight_count()). A weight never set reads as zeros.
 * Errors: as attn_layer_set_weight() but ATTN_ERR_NOT_FINITE. Thread-safe
 * against concurrent forward calls. */
ATTN_API attn_status attn_layer_get_weight(const attn_layer *layer,
                                           attn_weight_id which, float *data,
                                           int64_t count);

/** Initialises every weight as torch.nn.MultiheadAttention does:
 * xavier-uniform in_proj (the packed matrix as one when kdim == vdim ==
 * embed_dim, each of q/k/v_proj_weight otherwise), out_proj weight uniform in
 * +-1/sqrt(E) (torch's Linear default), every bias zero; QK-norm weights
 * one (zero with qk_norm_unit_offset, the same norm), sink logits zero. The
 * values come from a generator seeded with `seed`: the same seed gives the same
 * weights on every machine (they do not match torch's random stream). Not to be
 * called while any other thread uses the layer. Errors: ATTN_ERR_NULL_POINTER.
 */
ATTN_API attn_status attn_layer_init_weights(attn_layer *layer, uint64_t seed);

/* ------------------------------------------------------------------------ */
/* Masks                                                                     */
/* ------------------------------------------------------------------------ */

/* Causal modes. Values are append-only. */
/** No causal mask. */
#define ATTN_CAUSAL_NONE 0
/** Query i may attend to keys j <= i (aligned to the top-left corner of the
 * Lq x Lk score matrix, torch's is_causal / triu(diagonal=1) convention). */
#define ATTN_CAUSAL_TOP_LEFT 1
/** Query i may attend to keys j <= i + (n - Lq), where n is the row's key
 * count (key_lengths[b] if given, else Lk): the last query sees every key.
 * This is the convention for queries that continue a sequence (decoding
 * with a cache). With Lq == Lk and no key lengths both modes agree. */
#define ATTN_CAUSAL_BOTTOM_RIGHT 2

/* What a query row with no key left to attend to produces. */
/** Zeros in the attention output (before the output projection, so the
 * layer output is out_proj's bias) and zero attention weights. Default. */
#define ATTN_EMPTY_ROW_ZERO 0
/** NaN in the attention output and weights, as PyTorch produces. */
#define ATTN_EMPTY_ROW_NAN 1

/** Mask descriptor. Every part is optional and they combine: a key is
 * hidden from a query if any part hides it; the additive bias is then added
 * to the scores of the keys still visible. Fill with attn_mask_init(). */
typedef struct attn_mask {
  /** sizeof(attn_mask) as compiled by the caller; set by attn_mask_init. */
  size_t struct_size;
  /** ATTN_CAUSAL_NONE (default), ATTN_CAUSAL_TOP_LEFT or
   * ATTN_CAUSAL_BOTTOM_RIGHT. */
  int32_t causal;
  /** ATTN_EMPTY_ROW_ZERO (default) or ATTN_EMPTY_ROW_NAN. */
  int32_t empty_rows;
  /** [B] number of valid keys per batch row (keys j >= key_lengths[b] are
   * hidden); each in [0, Lk]. NULL (default) = all Lk keys. */
  const int64_t *key_lengths;
  /** [B, Lk] bytes, nonzero = hide that key (torch's key_padding_mask).
   * NULL (default) = none. */
  const uint8_t *key_padding;
  /** Additive float bias added to the scaled scores:
   * bias[b*bias_stride_b + h*bias_stride_h + i*bias_stride_q + j] for batch
   * b, head h, query i, key j. Strides are in elements, >= 0; a zero stride
   * broadcasts. [Lq,Lk]: strides (0, 0, Lk); [B,Lq,Lk]: (Lq*Lk, 0, Lk);
   * [B,H,Lq,Lk]: (H*Lq*Lk, Lq*Lk, Lk). Values may be -infinity (hides the
   * key) but not NaN or +infinity. NULL (default) = none. */
  const float *bias;
  /** Stride of bias between batch rows, in elements (see bias). */
  int64_t bias_stride_b;
  /** Stride of bias between heads, in elements (see bias). */
  int64_t bias_stride_h;
  /** Stride of bias between query rows, in elements (see bias). */
  int64_t bias_stride_q;
  /** Sliding window: when > 0, query i only sees keys j with
   * p - j < window, where p is the query's position among the keys:
   * p = i + (n - Lq) under ATTN_CAUSAL_BOTTOM_RIGHT (n as there), p = i
   * otherwise. 0 (default) = no window. Usually combined with a causal mode;
   * without one the window only limits how far back a query looks. Must not
   * be negative. */
  int64_t window;
} attn_mask;

/** Size of attn_mask in 0.1.0's first header, which the first programs
 * were built against: the smallest struct_size the library accepts. */
#define ATTN_MASK_SIZE_0_1 (offsetof(attn_mask, window) + sizeof(int64_t))

/** Fills the first `size` bytes at mask with "no masking" and sets
 * mask->struct_size to `size`. Fields past the library's own layout
 * (a caller compiled against a newer header) are set to zero, which is
 * their default. Use attn_mask_init() from C and C++; FFI callers pass
 * their struct's size. Errors (nothing written): ATTN_ERR_NULL_POINTER,
 * ATTN_ERR_STRUCT_SIZE (size below ATTN_MASK_SIZE_0_1). Thread-safe. */
ATTN_API attn_status attn_mask_init_sized(attn_mask *mask, size_t size);

/** attn_mask_init_sized(mask, sizeof *mask): the defaults, for the
 * struct as this program was compiled. Returns as attn_mask_init_sized(). */
static inline attn_status attn_mask_init(attn_mask *mask) {
  return attn_mask_init_sized(mask, sizeof *mask);
}

/* ------------------------------------------------------------------------ */
/* Forward                                                                   */
/* ------------------------------------------------------------------------ */

/* Attention weight output modes. Values are append-only. */
/** Per head: [B, H, Lq, Lk]. */
#define ATTN_WEIGHTS_PER_HEAD 0
/** Averaged over heads: [B, Lq, Lk] (torch's average_attn_weights=True). */
#define ATTN_WEIGHTS_AVERAGE 1

/** Positions of a call's tokens, for layers with rotary embeddings or ALiBi
 * (attn_options.positions; other layers ignore it). Fill with
 * attn_positions_init(). Every position must lie in
 * [0, ATTN_MAX_POSITION].
 *
 * Forward calls: query i of batch row b is at q_positions[b * len_q + i]
 * if given, else start[b] + i (start NULL: 0 + i); key j at
 * k_positions[b * len_k + j] if given, else at q_positions[b * len_k + j]
 * when q_positions is given and len_q == len_k, else start[b] + j. So a
 * self-attention forward needs nothing (positions 0 .. L-1), a
 * continued sequence gives start, and left-padded rows give q_positions
 * as Hugging Face's position_ids (padding entries at any valid position,
 * e.g. 0). Decoding steps: token positions are their positions in the
 * cache row (attn_kv_cache_lengths()), plus start[b] when start is given
 * (a row that begins mid-sequence: pass the same start at every step);
 * q_positions and k_positions must be NULL there. Cross steps and
 * memories take no positions. */
typedef struct attn_positions {
  /** sizeof(attn_positions) as compiled by the caller; set by
   * attn_positions_init(). */
  size_t struct_size;
  /** [B] position of each row's first token. NULL (default) = 0. */
  const int64_t *start;
  /** [B, len_q] position of each query. NULL (default) = from start. */
  const int64_t *q_positions;
  /** [B, len_k] position of each key. NULL (default) = as described. */
  const int64_t *k_positions;
} attn_positions;

/** Size of attn_positions in its first layout: the smallest struct_size the
 * library accepts. The struct came after the size constants (the _0_1
 * layouts); the suffix counts layouts, not releases (docs/ABI.md). */
#define ATTN_POSITIONS_SIZE_0_2                                                \
  (offsetof(attn_positions, k_positions) + sizeof(const int64_t *))

/** Largest position a token may have (2^31 - 1). */
#define ATTN_MAX_POSITION 2147483647

/** Fills the first `size` bytes at pos with the defaults (every pointer
 * NULL) and sets pos->struct_size to `size`. Errors (nothing written):
 * ATTN_ERR_NULL_POINTER, ATTN_ERR_STRUCT_SIZE (size below
 * ATTN_POSITIONS_SIZE_0_2). Thread-safe. */
ATTN_API attn_status attn_positions_init_sized(attn_positions *pos,
                                               size_t size);

/** attn_positions_init_sized(pos, sizeof *pos). */
static inline attn_status attn_positions_init(attn_positions *pos) {
  return attn_positions_init_sized(pos, sizeof *pos);
}

/* Attention cores (attn_options.core). Values are append-only. The core
 * computes softmax(scale * Q K^T + mask) V per head, between the
 * projections; both cores give results within the same tolerance of a
 * double-precision reference, not the same bits as each other. Each core
 * alone keeps the reproducibility promise above (the same bits on any
 * thread count). docs/PERFORMANCE.md says how to choose. */
/** Default: the library chooses per call. The packed core when the CPU has
 * it (attn_core_available(ATTN_CORE_PACKED)), the call has at least 8 query
 * rows per batch row and the layer has no score features (ALiBi,
 * soft-capping, sinks); otherwise the BLAS core. Decoding steps of at most
 * 16 new tokens without attention weights run the streaming decoding
 * kernel instead (docs/DECODING.md). A forward call under ATTN_CORE_AUTO
 * gives the same bits as the same call naming the core it chose. */
#define ATTN_CORE_AUTO 0
/** The BLAS core: both products of every tile through cblas_sgemm. Runs on
 * any CPU with any BLAS and with every layer feature: the portable path.
 * Decoding steps run it too (no streaming kernel). */
#define ATTN_CORE_BLAS 1
/** The packed core: each (batch row, key/value head)'s keys and values
 * packed once, both products on register-blocked AVX2/FMA (or AVX-512)
 * micro-kernels. Any number of query rows (below 8 it runs, but was
 * measured slower than the BLAS core), masks and attention weights.
 * Needs a CPU with AVX2 and FMA not capped by the environment variable
 * ATTN_SIMD=portable, and a layer without score features (ALiBi,
 * soft-capping, sinks): otherwise every call with these options, also
 * the scratch size queries and attn_memory_set(), fails with
 * ATTN_ERR_UNSUPPORTED and changes nothing; nothing is substituted.
 * Decoding steps run it too (no streaming kernel). */
#define ATTN_CORE_PACKED 2

/** Whether this CPU and build can run attention core `core` (ATTN_CORE_*):
 * 1 for ATTN_CORE_AUTO and ATTN_CORE_BLAS, 1 for ATTN_CORE_PACKED when the
 * CPU has AVX2 and FMA (and the environment variable ATTN_SIMD, read once
 * per process, does not cap the library at "portable"), 0 for it
 * otherwise and for unknown values. Whether a given layer can use the
 * packed core also depends on its score features (see ATTN_CORE_PACKED).
 * The answer never changes during the process. Thread-safe. */
ATTN_API int32_t attn_core_available(int32_t core);

/** Optional per-call settings. Fill with attn_options_init(). */
typedef struct attn_options {
  /** sizeof(attn_options) as compiled by the caller. */
  size_t struct_size;
  /** If not NULL, receives the attention probabilities in the layout chosen
   * by weights_mode. Default NULL. */
  float *attn_weights;
  /** ATTN_WEIGHTS_PER_HEAD (default) or ATTN_WEIGHTS_AVERAGE. */
  int32_t weights_mode;
  /** Threads for this call: 0 (default) = the layer's num_threads, else
   * that many (1 = the calling thread only), clamped to the runtime's
   * thread count; negative is ATTN_ERR_BAD_OPTION. Results do not depend
   * on it. */
  int32_t num_threads;
  /** Caller-provided scratch memory of scratch_size bytes, at least the
   * size attn_forward_scratch_size() reports, any alignment. The call then
   * allocates nothing. NULL (default) = the runtime's kept scratch block
   * (see attn_runtime), or a block of the call's own while another call
   * holds it. */
  void *scratch;
  /** Size of scratch in bytes; ignored when scratch is NULL. */
  size_t scratch_size;
  /** Execution context of the call (worker threads, BLAS policy); NULL
   * (default) = the default runtime. Not owned: it must outlive the call.
   * Appended after 0.1.0's first layout (ATTN_OPTIONS_SIZE_0_1). */
  attn_runtime *runtime;
  /** Token positions for a layer with rotary embeddings or ALiBi (see
   * attn_positions); NULL (default) = the default positions. Not owned.
   * Bad positions (negative, beyond ATTN_MAX_POSITION, explicit ones in a
   * decoding step) are ATTN_ERR_BAD_OPTION. Appended after 0.1.0's
   * first layout. */
  const attn_positions *positions;
  /** Attention core of the call: ATTN_CORE_AUTO (default: the library
   * chooses), ATTN_CORE_BLAS or ATTN_CORE_PACKED. An unknown value is
   * ATTN_ERR_BAD_OPTION; ATTN_CORE_PACKED where it cannot run is
   * ATTN_ERR_UNSUPPORTED. Appended after 0.1.0's first layout. */
  int32_t core;
  /** Reserved, must be 0 (ATTN_ERR_BAD_OPTION otherwise): it makes the
   * struct's end explicit, so no padding byte is read as a later field. */
  int32_t reserved;
} attn_options;

/** Size of attn_options in 0.1.0's first header, which the first programs
 * were built against: the smallest struct_size the library accepts. */
#define ATTN_OPTIONS_SIZE_0_1                                                  \
  (offsetof(attn_options, scratch_size) + sizeof(size_t))

/** Fills the first `size` bytes at opts with the defaults (no attention
 * weights, the layer's thread count, library-allocated scratch, the default
 * runtime, default positions, ATTN_CORE_AUTO) and sets opts->struct_size to
 * `size`. Fields past the library's own layout (a caller compiled against a
 * newer header) are set to zero, which is their default. Use
 * attn_options_init() from C and C++; FFI callers pass their struct's size.
 * Errors (nothing written): ATTN_ERR_NULL_POINTER, ATTN_ERR_STRUCT_SIZE (size
 * below ATTN_OPTIONS_SIZE_0_1). Thread-safe. */
ATTN_API attn_status attn_options_init_sized(attn_options *opts, size_t size);

/** attn_options_init_sized(opts, sizeof *opts): the defaults, for the
 * struct as this program was compiled. Returns as attn_options_init_sized(). */
static inline attn_status attn_options_init(attn_options *opts) {
  return attn_options_init_sized(opts, sizeof *opts);
}

/** Multi-head attention forward pass (cross-attention in general):
 *   query [B, Lq, E], key [B, Lk, kdim], value [B, Lk, vdim] -> out [B, Lq, E].
 * key and value may be the same pointer (then, if kdim == vdim, K and V are
 * projected in one product); query, key and value may all be the same
 * pointer for self-attention (one fused Q/K/V product, needs Lq == Lk).
 * mask and opts may be NULL. out must not overlap the inputs.
 * Inputs must be finite. Layers with rotary embeddings or ALiBi take the
 * tokens' positions from opts->positions (see attn_positions; default
 * 0, 1, 2, ... in each row). On failure out and opts->attn_weights are
 * left unchanged.
 * Errors: ATTN_ERR_NULL_POINTER, ATTN_ERR_STRUCT_SIZE, ATTN_ERR_BAD_SIZE,
 * ATTN_ERR_OVERFLOW, ATTN_ERR_WEIGHTS_NOT_SET, ATTN_ERR_BAD_MASK,
 * ATTN_ERR_BAD_OPTION, ATTN_ERR_UNSUPPORTED (opts->core),
 * ATTN_ERR_NOT_FINITE, ATTN_ERR_NO_MEMORY, ATTN_ERR_SCRATCH_TOO_SMALL.
 * Thread-safe: any number of threads may run forward on one layer at once,
 * each with its own out, attn_weights and scratch. */
ATTN_API attn_status attn_forward(const attn_layer *layer, int64_t batch,
                                  int64_t len_q, int64_t len_k,
                                  const float *query, const float *key,
                                  const float *value, const attn_mask *mask,
                                  const attn_options *opts, float *out);

/** Self-attention: attn_forward(layer, batch, len, len, x, x, x, mask, opts,
 * out). Needs kdim == vdim == embed_dim. Returns, owns and may be called
 * from several threads exactly as attn_forward(). */
ATTN_API attn_status attn_self_forward(const attn_layer *layer, int64_t batch,
                                       int64_t len, const float *x,
                                       const attn_mask *mask,
                                       const attn_options *opts, float *out);

/** Bytes of scratch memory that attn_forward() / attn_self_forward() need
 * for these sizes and options (opts may be NULL; only attn_weights,
 * weights_mode, num_threads, runtime and core matter: the scratch holds one
 * tile per thread the call will use). Thread-safe.
 * Errors: ATTN_ERR_NULL_POINTER, ATTN_ERR_STRUCT_SIZE, ATTN_ERR_BAD_SIZE,
 * ATTN_ERR_OVERFLOW, ATTN_ERR_BAD_OPTION, ATTN_ERR_UNSUPPORTED (core),
 * ATTN_ERR_NO_MEMORY (the default
 * runtime could not be created). */
ATTN_API attn_status attn_forward_scratch_size(const attn_layer *layer,
                                               int64_t batch, int64_t len_q,
                                               int64_t len_k,
                                               const attn_options *opts,
                                               size_t *bytes);

/* ------------------------------------------------------------------------ */
/* Weight files (safetensors)                                                */
/* ------------------------------------------------------------------------ */

/* Weight files in the safetensors format: an 8-byte little-endian header
 * length N, N bytes of JSON header mapping tensor names to
 * {"dtype", "shape", "data_offsets"}, then the raw little-endian tensor data.
 * A layer's tensors are found by name: an optional prefix (the module's path
 * in the model, e.g. "decoder.layers.0.self_attn.") followed by the names of
 * one of these naming schemes. */

/** Naming scheme of torch.nn.MultiheadAttention's state_dict:
 * in_proj_weight [E + 2*KV, E] when kdim == vdim == embed_dim, else
 * q_proj_weight [E, E], k_proj_weight [KV, kdim], v_proj_weight [KV, vdim];
 * in_proj_bias [E + 2*KV] (packed in both cases, as torch stores it);
 * out_proj.weight [E, E], out_proj.bias [E]. */
#define ATTN_NAMES_TORCH 0
/** Hugging Face naming scheme with the output projection called out_proj
 * (BART, Whisper, ...): q_proj.weight [E, E], k_proj.weight [KV, kdim],
 * v_proj.weight [KV, vdim], out_proj.weight [E, E], and q_proj.bias [E],
 * k_proj.bias [KV], v_proj.bias [KV], out_proj.bias [E]. */
#define ATTN_NAMES_HF 1
/** Hugging Face naming scheme with the output projection called o_proj
 * (Llama, Mistral, Qwen, ...): as ATTN_NAMES_HF with o_proj.weight and
 * o_proj.bias in place of out_proj.weight and out_proj.bias. Only used when
 * saving; loading accepts either name. */
#define ATTN_NAMES_HF_O_PROJ 2

/** Largest JSON header a weight file may have, in bytes (100 MB, the limit
 * of the reference safetensors implementation). Longer headers are
 * rejected with ATTN_ERR_FILE_FORMAT before anything is allocated. */
#define ATTN_SAFETENSORS_MAX_HEADER 100000000

/** Loads every weight of the layer from the safetensors file at path.
 *
 * The tensors are looked up as prefix + name (prefix NULL or "" for none)
 * and the naming scheme (ATTN_NAMES_TORCH or Hugging Face with o_proj or
 * out_proj) is detected from the names present; other tensors in the file
 * are ignored, as is the optional "__metadata__" entry. F32 tensors are
 * loaded as they are, F16 and BF16 tensors are converted exactly to float.
 * The file must hold exactly the tensors the layer's configuration has:
 * each bias the layer has (bias, bias_parts) must be in the file and no
 * other may be (ATTN_ERR_WEIGHT_LAYOUT: the layer would silently drop it;
 * torch's packed in_proj_bias needs all of the q, k and v biases, or none);
 * likewise "q_norm.weight" and "k_norm.weight" (shapes as ATTN_W_Q_NORM and
 * ATTN_W_K_NORM) with qk_norm, and "sinks" [num_heads] with sinks, under
 * either naming scheme (a Qwen2 file: q/k/v biases and o_proj without one;
 * Qwen3: q_norm/k_norm; gpt-oss: sinks).
 *
 * The whole header is validated first (every entry's dtype, shape and
 * data_offsets, which must lie inside the file, not overlap and cover the
 * data section without gaps, as the format requires), then the layer's
 * tensors are read, converted and checked to be finite, and only then copied
 * into the layer: on any failure the layer is left exactly as it was. Only
 * the header and the layer's own tensors are read, so loading one layer from
 * a large model file is cheap.
 *
 * The header must be JSON in UTF-8, as the format requires: names with
 * bytes that are not UTF-8, or escapes of lone surrogates or of U+0000, are
 * refused. Parsing it takes memory proportional to its length, whatever
 * its number of entries.
 *
 * Errors: ATTN_ERR_NULL_POINTER (layer or path), ATTN_ERR_IO (cannot open or
 * read the file, not a regular file: a FIFO or a device is refused at once,
 * never waited on), ATTN_ERR_FILE_FORMAT (truncated or corrupt file, header
 * length 0, larger than the file or than ATTN_SAFETENSORS_MAX_HEADER, header
 * not a JSON object or not UTF-8, bad entries, data_offsets reversed,
 * outside the data, overlapping, leaving gaps or not matching dtype and
 * shape, duplicate names, names of both schemes under the prefix),
 * ATTN_ERR_TENSOR_MISSING (the message names the tensor),
 * ATTN_ERR_TENSOR_DTYPE (a needed tensor is not F32, F16 or BF16),
 * ATTN_ERR_TENSOR_SHAPE (the message names the tensor, its shape and the
 * expected shape), ATTN_ERR_WEIGHT_LAYOUT (packed in_proj_weight for a layer
 * with kdim or vdim != embed_dim, a bias, norm weight or sink tensor the
 * layer does not have, torch's bias_k/bias_v which the library does not
 * support), ATTN_ERR_NOT_FINITE (a needed tensor holds NaN or infinity),
 * ATTN_ERR_NO_MEMORY.
 *
 * Threading: changes the layer, so it must not run concurrently with any
 * other call on the same layer. Loading into different layers from several
 * threads at once is fine. */
ATTN_API attn_status attn_layer_load_safetensors(attn_layer *layer,
                                                 const char *path,
                                                 const char *prefix);

/** As attn_layer_load_safetensors(), from the size bytes of a whole
 * safetensors file at data (for embedded users, archives and fuzzing). data
 * needs no particular alignment and is only read; the caller keeps
 * ownership. Errors: as attn_layer_load_safetensors() but ATTN_ERR_IO
 * (ATTN_ERR_NULL_POINTER when layer or data is NULL). */
ATTN_API attn_status attn_layer_load_safetensors_mem(attn_layer *layer,
                                                     const void *data,
                                                     size_t size,
                                                     const char *prefix);

/** Saves every weight of the layer to a safetensors file at path, as F32
 * little-endian data aligned to 8 bytes in the file, under prefix + the
 * names of `naming` (ATTN_NAMES_TORCH, ATTN_NAMES_HF or
 * ATTN_NAMES_HF_O_PROJ; prefix NULL or "" for none). The header's
 * "__metadata__" is {"format":"pt"}.
 *
 * With ATTN_NAMES_TORCH the file holds what torch's state_dict holds: the
 * packed in_proj_weight when kdim == vdim == embed_dim, else q_proj_weight,
 * k_proj_weight and v_proj_weight; the packed in_proj_bias either way (when
 * the layer has the q, k and v biases; a layer with only some of them is
 * ATTN_ERR_BAD_OPTION under these names). Only the biases the layer has are
 * written, and its QK-norm weights and sinks as "q_norm.weight",
 * "k_norm.weight" and "sinks" under any naming.
 *
 * The file is written to a temporary file in the same directory
 * (path + ".tmp-<pid>-<n>", the file name part shortened when the whole
 * would exceed the system's limit on a name's length, so that any valid
 * path can be saved to), flushed to disk and renamed over path, so path
 * holds either its old content or the whole new file, never a partial one;
 * on failure the temporary file is removed and path is untouched. The new
 * file gets the usual permissions of a new file (0666 less the umask), and
 * a symbolic link at path is replaced, not followed. A file written here
 * loads back bit for bit with attn_layer_load_safetensors().
 *
 * Errors: ATTN_ERR_NULL_POINTER (layer or path), ATTN_ERR_BAD_OPTION
 * (unknown naming, prefix not valid UTF-8, torch names for a part of the
 * q/k/v biases), ATTN_ERR_WEIGHTS_NOT_SET (a
 * weight the file would hold has never been set), ATTN_ERR_IO (cannot
 * create, write, flush or rename the file; the message has the system's
 * reason), ATTN_ERR_OVERFLOW, ATTN_ERR_NO_MEMORY.
 *
 * Threading: only reads the layer, so it may run while other threads call
 * forward on the same layer; not while the layer's weights are changed. */
ATTN_API attn_status attn_layer_save_safetensors(const attn_layer *layer,
                                                 const char *path,
                                                 const char *prefix,
                                                 int32_t naming);

/* ------------------------------------------------------------------------ */
/* Incremental decoding                                                      */
/* ------------------------------------------------------------------------ */

/* Generating a sequence a token (or a few tokens) at a time. A decoder's
 * self-attention keeps the keys and values of the tokens seen so far in an
 * attn_kv_cache; its cross-attention projects the encoder output once into
 * an attn_memory. A step then projects only its new tokens and attends to
 * what is stored, so generating L tokens costs O(L) projections instead of
 * the O(L^2) of running the full forward again for every token.
 *
 * Positions: the tokens of a cache row are numbered 0, 1, 2, ... in the
 * order they were appended; a row's length is the number appended so far
 * (less what was truncated). A step's new token at position p attends to
 * the keys at positions 0 .. p of its row, exactly as a full forward with
 * ATTN_CAUSAL_TOP_LEFT over the whole sequence would.
 *
 * Binding: a cache or memory belongs to the layer object it was created for
 * and holds keys and values projected with that layer's weights. Using it
 * with another layer gives ATTN_ERR_MISMATCH. The library never frees or
 * reads the layer through the cache: destroy the cache before the layer.
 *
 * Thread safety: the layer stays shareable (any number of threads may
 * decode with one layer at once, each with its own caches). A cache is
 * changed (stepped, truncated, reordered, reset) by one thread at a time,
 * and nothing else reads it meanwhile but attn_decode_scratch_size(); so is
 * a memory while attn_memory_set() runs on it, but attn_cross_step() only
 * reads its memory, so several threads may run cross steps on one memory
 * at once. Steps and attn_memory_set() take
 * an attn_options and use their runtime's threads and BLAS policy exactly
 * as forward calls do (see "Threads inside a call"); their results do not
 * depend on the number of threads. See docs/DECODING.md. */

/** Settings of a self-attention key/value cache. Fill with
 * attn_cache_config_init(), then set the fields you need. */
typedef struct attn_cache_config {
  /** sizeof(attn_cache_config) as compiled by the caller; set by
   * attn_cache_config_init(). */
  size_t struct_size;
  /** Number of sequences decoded side by side (batch rows B). Default 1. */
  int64_t batch;
  /** Number of tokens each row can hold. Default 0: must be set. */
  int64_t capacity;
  /** Sliding window W. When > 0, every query attends only to its own token
   * and the W - 1 tokens before it (as attn_mask.window), and when a row's
   * buffer is full the cache drops the tokens that no later query can see,
   * keeping the last W - 1; a row can then go on for ever, taking steps of
   * up to capacity - W + 1 new tokens (capacity >= 2 * W keeps the cost of
   * the moves below one token per token). 0 (default) = no window: every
   * token is kept and a full row gives ATTN_ERR_CAPACITY. */
  int64_t window;
} attn_cache_config;

/** Size of attn_cache_config in 0.1.0's first header, which the first programs
 * were built against: the smallest struct_size the library accepts. */
#define ATTN_CACHE_CONFIG_SIZE_0_1                                             \
  (offsetof(attn_cache_config, window) + sizeof(int64_t))

/** Fills the first `size` bytes at cfg with the defaults (batch 1, capacity 0,
 * window 0) and sets cfg->struct_size to `size`. Fields past the library's own
 * layout (a caller compiled against a newer header) are set to zero, which is
 * their default. Use attn_cache_config_init() from C and C++; FFI callers pass
 * their struct's size. Errors (nothing written): ATTN_ERR_NULL_POINTER,
 * ATTN_ERR_STRUCT_SIZE (size below ATTN_CACHE_CONFIG_SIZE_0_1). Thread-safe. */
ATTN_API attn_status attn_cache_config_init_sized(attn_cache_config *cfg,
                                                  size_t size);

/** attn_cache_config_init_sized(cfg, sizeof *cfg): the defaults, for the
 * struct as this program was compiled. Returns as
 * attn_cache_config_init_sized(). */
static inline attn_status attn_cache_config_init(attn_cache_config *cfg) {
  return attn_cache_config_init_sized(cfg, sizeof *cfg);
}

/** Opaque self-attention key/value cache: for each of `batch` rows, the
 * projected keys and values of up to `capacity` tokens, their padding flags
 * and the row's length. */
typedef struct attn_kv_cache attn_kv_cache;

/** Bytes a cache for this layer and cfg takes (the handle included), for
 * attn_kv_cache_create_in(). The layer must have kdim == vdim == embed_dim
 * (self-attention). Thread-safe.
 * Errors: ATTN_ERR_NULL_POINTER, ATTN_ERR_STRUCT_SIZE, ATTN_ERR_BAD_SIZE,
 * ATTN_ERR_OVERFLOW. */
ATTN_API attn_status attn_kv_cache_size(const attn_layer *layer,
                                        const attn_cache_config *cfg,
                                        size_t *bytes);

/** Creates an empty cache for `layer` (every row of length 0). On success
 * *out owns a new cache, to be freed with attn_kv_cache_destroy(); on
 * failure *out is left unchanged. The cache keeps the layer's address to
 * check later calls but never dereferences it. On Linux a cache of 2 MiB
 * or more is aligned to 2 MiB and its whole 2 MiB pages are offered to
 * transparent huge pages (madvise, a hint), which makes steps faster.
 * Errors: as attn_kv_cache_size(), and ATTN_ERR_NO_MEMORY. Thread-safe. */
ATTN_API attn_status attn_kv_cache_create(const attn_layer *layer,
                                          const attn_cache_config *cfg,
                                          attn_kv_cache **out);

/** As attn_kv_cache_create(), but the cache lives in the caller's buffer of
 * `size` bytes (at least attn_kv_cache_size(), any alignment) and the
 * library allocates nothing. The caller keeps ownership of the buffer and
 * must keep it alive and unmoved while the cache is used;
 * attn_kv_cache_destroy() on such a cache frees nothing and is optional.
 * Errors: as attn_kv_cache_size(), and ATTN_ERR_SCRATCH_TOO_SMALL when size
 * is too small. */
ATTN_API attn_status attn_kv_cache_create_in(const attn_layer *layer,
                                             const attn_cache_config *cfg,
                                             void *buffer, size_t size,
                                             attn_kv_cache **out);

/** Frees a cache made by attn_kv_cache_create() (for one made by
 * attn_kv_cache_create_in() nothing is freed). NULL is allowed. The cache
 * must not be in use by another thread. */
ATTN_API void attn_kv_cache_destroy(attn_kv_cache *cache);

/** Copies each row's length (tokens appended, less those truncated) into
 * lengths[0 .. batch-1] and, when first is not NULL, the position of the
 * oldest token still held into first[0 .. batch-1] (0 unless a sliding
 * window dropped tokens). batch must be the cache's batch. Only reads the
 * cache: may run concurrently with other read-only calls on it.
 * Errors: ATTN_ERR_NULL_POINTER, ATTN_ERR_BAD_SIZE. */
ATTN_API attn_status attn_kv_cache_lengths(const attn_kv_cache *cache,
                                           int64_t batch, int64_t *lengths,
                                           int64_t *first);

/** Rolls rows back: row b keeps its first lengths[b] tokens (each at most
 * the row's current length) and the next step continues from there, as if
 * the later tokens had never been appended. With a sliding window a row can
 * only go back as far as the tokens it still holds allow: the new length
 * must be at most W - 1 past the oldest token held, unless nothing was
 * dropped. Changes the cache: must not run while any other call uses it.
 * Errors (nothing changed): ATTN_ERR_NULL_POINTER,
 * ATTN_ERR_BAD_SIZE (wrong batch, a length negative or too long, or tokens
 * it would need were dropped). */
ATTN_API attn_status attn_kv_cache_truncate(attn_kv_cache *cache, int64_t batch,
                                            const int64_t *lengths);

/** Reorders rows for beam search: afterwards row b holds what row
 * src_rows[b] held before (tokens, padding flags and length), for every b
 * at once. Repeats are allowed (a beam that continues in several places);
 * rows not named are overwritten. Works in place, allocating nothing; the
 * cost is proportional to the tokens moved. Changes the cache: must not run
 * while any other call uses it. Errors (nothing changed):
 * ATTN_ERR_NULL_POINTER, ATTN_ERR_BAD_SIZE (wrong batch or an index
 * outside [0, batch)). */
ATTN_API attn_status attn_kv_cache_reorder(attn_kv_cache *cache, int64_t batch,
                                           const int64_t *src_rows);

/** Empties every row (length 0), keeping the memory for a new batch of
 * sequences. Changes the cache: must not run while any other call uses it.
 * Errors: ATTN_ERR_NULL_POINTER. */
ATTN_API attn_status attn_kv_cache_reset(attn_kv_cache *cache);

/** Per-step mask of attn_decode_step(). Fill with attn_decode_mask_init().
 */
typedef struct attn_decode_mask {
  /** sizeof(attn_decode_mask) as compiled by the caller; set by
   * attn_decode_mask_init(). */
  size_t struct_size;
  /** [B] number of new tokens of each row, each in [0, n_new]: row b takes
   * only x[b, 0 .. new_lengths[b]-1]; the rest of its x rows are not read,
   * and its out rows (and attention weight rows) beyond new_lengths[b] are
   * set to zero. A row with 0 is left as it is. NULL (default) = n_new for
   * every row. */
  const int64_t *new_lengths;
  /** [B, n_new] bytes, nonzero = that new token is padding: it takes a
   * position in its row, but no query of this or any later step attends to
   * it (as torch's key_padding_mask over the whole sequence). Its own query
   * is still computed. NULL (default) = none. */
  const uint8_t *new_padding;
  /** ATTN_EMPTY_ROW_ZERO (default) or ATTN_EMPTY_ROW_NAN: the output of a
   * query that sees no key (only when padding hides every key it could
   * see). */
  int32_t empty_rows;
} attn_decode_mask;

/** Size of attn_decode_mask in 0.1.0's first header, which the first programs
 * were built against: the smallest struct_size the library accepts. */
#define ATTN_DECODE_MASK_SIZE_0_1                                              \
  (offsetof(attn_decode_mask, empty_rows) + sizeof(int32_t))

/** Fills the first `size` bytes at mask with "all n_new tokens of every row, no
 * padding" and sets mask->struct_size to `size`. Fields past the library's own
 * layout (a caller compiled against a newer header) are set to zero, which is
 * their default. Use attn_decode_mask_init() from C and C++; FFI callers pass
 * their struct's size. Errors (nothing written): ATTN_ERR_NULL_POINTER,
 * ATTN_ERR_STRUCT_SIZE (size below ATTN_DECODE_MASK_SIZE_0_1). Thread-safe. */
ATTN_API attn_status attn_decode_mask_init_sized(attn_decode_mask *mask,
                                                 size_t size);

/** attn_decode_mask_init_sized(mask, sizeof *mask): the defaults, for the
 * struct as this program was compiled. Returns as
 * attn_decode_mask_init_sized(). */
static inline attn_status attn_decode_mask_init(attn_decode_mask *mask) {
  return attn_decode_mask_init_sized(mask, sizeof *mask);
}

/** One self-attention decoding step: x [batch, n_new, E] holds each row's
 * next tokens; their keys and values are appended to the cache at the end
 * of the row, and out [batch, n_new, E] receives the layer's output for
 * them, each new token attending to its row's earlier tokens and to itself
 * (causal among the new tokens; within the window if the cache has one).
 * The Q/K/V projections of all new tokens are one matrix product. With
 * rotary embeddings each new token is rotated at its position in its row
 * (plus opts->positions->start[b] when given) and its key is cached
 * rotated; ALiBi, soft-capping and sinks apply as in attn_forward(). batch
 * must be the cache's. mask and opts may be NULL.
 * Attention weights (opts->attn_weights): [batch, H, n_new, capacity] per
 * head, or [batch, n_new, capacity] averaged; column j is the row's j-th
 * held token, at position first[b] + j (attn_kv_cache_lengths() after the
 * step); columns past the tokens held are zero.
 * opts->scratch: at least attn_decode_scratch_size() bytes.
 * Errors (cache, out and weights unchanged): ATTN_ERR_NULL_POINTER,
 * ATTN_ERR_STRUCT_SIZE, ATTN_ERR_BAD_SIZE, ATTN_ERR_OVERFLOW,
 * ATTN_ERR_MISMATCH (cache of another layer), ATTN_ERR_WEIGHTS_NOT_SET,
 * ATTN_ERR_BAD_MASK (a new length outside [0, n_new], unknown empty_rows),
 * ATTN_ERR_BAD_OPTION, ATTN_ERR_UNSUPPORTED (opts->core),
 * ATTN_ERR_NOT_FINITE, ATTN_ERR_CAPACITY (a row has
 * no room for its new tokens), ATTN_ERR_NO_MEMORY,
 * ATTN_ERR_SCRATCH_TOO_SMALL. Thread-safe as described above: one thread
 * per cache. */
ATTN_API attn_status attn_decode_step(const attn_layer *layer,
                                      attn_kv_cache *cache, int64_t batch,
                                      int64_t n_new, const float *x,
                                      const attn_decode_mask *mask,
                                      const attn_options *opts, float *out);

/** Bytes of scratch memory attn_decode_step() needs for n_new new tokens
 * per row with this cache and these options (opts may be NULL; only
 * attn_weights, weights_mode, num_threads, runtime and core matter).
 * Thread-safe: reads only the layer and the cache's fixed shape, never its
 * contents, so it may run while another thread steps the cache.
 * Errors: ATTN_ERR_NULL_POINTER, ATTN_ERR_STRUCT_SIZE, ATTN_ERR_BAD_SIZE,
 * ATTN_ERR_OVERFLOW, ATTN_ERR_MISMATCH, ATTN_ERR_BAD_OPTION,
 * ATTN_ERR_UNSUPPORTED (core), ATTN_ERR_NO_MEMORY (the default runtime
 * could not be created). */
ATTN_API attn_status attn_decode_scratch_size(const attn_layer *layer,
                                              const attn_kv_cache *cache,
                                              int64_t n_new,
                                              const attn_options *opts,
                                              size_t *bytes);

/** Settings of a cross-attention memory. Fill with
 * attn_memory_config_init(). */
typedef struct attn_memory_config {
  /** sizeof(attn_memory_config) as compiled by the caller; set by
   * attn_memory_config_init(). */
  size_t struct_size;
  /** Number of batch rows B. Default 1. */
  int64_t batch;
  /** Largest number of memory positions (source tokens) per row. Default
   * 0: must be set. */
  int64_t capacity;
} attn_memory_config;

/** Size of attn_memory_config in 0.1.0's first header, which the first programs
 * were built against: the smallest struct_size the library accepts. */
#define ATTN_MEMORY_CONFIG_SIZE_0_1                                            \
  (offsetof(attn_memory_config, capacity) + sizeof(int64_t))

/** Fills the first `size` bytes at cfg with the defaults (batch 1, capacity 0)
 * and sets cfg->struct_size to `size`. Fields past the library's own layout (a
 * caller compiled against a newer header) are set to zero, which is their
 * default. Use attn_memory_config_init() from C and C++; FFI callers pass their
 * struct's size. Errors (nothing written): ATTN_ERR_NULL_POINTER,
 * ATTN_ERR_STRUCT_SIZE (size below ATTN_MEMORY_CONFIG_SIZE_0_1). Thread-safe.
 */
ATTN_API attn_status attn_memory_config_init_sized(attn_memory_config *cfg,
                                                   size_t size);

/** attn_memory_config_init_sized(cfg, sizeof *cfg): the defaults, for the
 * struct as this program was compiled. Returns as
 * attn_memory_config_init_sized(). */
static inline attn_status attn_memory_config_init(attn_memory_config *cfg) {
  return attn_memory_config_init_sized(cfg, sizeof *cfg);
}

/** Opaque cross-attention memory: the keys and values of an encoder output,
 * projected once with a layer's K/V weights, with per-row lengths and
 * padding. */
typedef struct attn_memory attn_memory;

/** Bytes a memory for this layer and cfg takes (the handle included), for
 * attn_memory_create_in(). Thread-safe. Errors: ATTN_ERR_NULL_POINTER,
 * ATTN_ERR_STRUCT_SIZE, ATTN_ERR_BAD_SIZE, ATTN_ERR_OVERFLOW,
 * ATTN_ERR_BAD_OPTION (a layer with rotary embeddings or ALiBi: a memory
 * has no positions; QK-norm, soft-capping and sinks are fine). */
ATTN_API attn_status attn_memory_size(const attn_layer *layer,
                                      const attn_memory_config *cfg,
                                      size_t *bytes);

/** Creates an empty memory for `layer` (set it with attn_memory_set()
 * before stepping). On success *out owns a new memory, to be freed with
 * attn_memory_destroy(); on failure *out is left unchanged.
 * Errors: as attn_memory_size(), and ATTN_ERR_NO_MEMORY. Thread-safe. */
ATTN_API attn_status attn_memory_create(const attn_layer *layer,
                                        const attn_memory_config *cfg,
                                        attn_memory **out);

/** As attn_memory_create(), in the caller's buffer of `size` bytes (at
 * least attn_memory_size(), any alignment); the library allocates nothing.
 * The caller keeps ownership of the buffer and must keep it alive and
 * unmoved while the memory is used; attn_memory_destroy() on it frees
 * nothing. Errors: as attn_memory_size(), and ATTN_ERR_SCRATCH_TOO_SMALL. */
ATTN_API attn_status attn_memory_create_in(const attn_layer *layer,
                                           const attn_memory_config *cfg,
                                           void *buffer, size_t size,
                                           attn_memory **out);

/** Frees a memory made by attn_memory_create() (for one made by
 * attn_memory_create_in() nothing is freed). NULL is allowed. The memory
 * must not be in use by another thread. */
ATTN_API void attn_memory_destroy(attn_memory *mem);

/** Projects key [batch, len_k, kdim] and value [batch, len_k, vdim] with
 * the layer's K/V weights into the memory, replacing what it held (one
 * matrix product for both when key == value and kdim == vdim).
 * key_lengths [batch] (each in [0, len_k]; NULL = len_k) and key_padding
 * [batch, len_k] (nonzero = hide; NULL = none) are kept and hide those
 * positions from every later cross step. len_k is at most the capacity;
 * batch must be the memory's. The caller keeps ownership of every input.
 * Inputs must be finite. opts (may be NULL): num_threads and runtime are
 * used; the other fields are checked as for attn_forward() (so a core the
 * CPU cannot run fails here too). Changes the memory: no other call may
 * use it meanwhile, cross steps included; the layer is only read.
 * Errors (memory unchanged):
 * ATTN_ERR_NULL_POINTER, ATTN_ERR_STRUCT_SIZE, ATTN_ERR_BAD_SIZE,
 * ATTN_ERR_OVERFLOW, ATTN_ERR_MISMATCH, ATTN_ERR_WEIGHTS_NOT_SET,
 * ATTN_ERR_BAD_MASK, ATTN_ERR_BAD_OPTION, ATTN_ERR_UNSUPPORTED
 * (opts->core), ATTN_ERR_NOT_FINITE, ATTN_ERR_CAPACITY (len_k >
 * capacity). */
ATTN_API attn_status attn_memory_set(const attn_layer *layer, attn_memory *mem,
                                     int64_t batch, int64_t len_k,
                                     const float *key, const float *value,
                                     const int64_t *key_lengths,
                                     const uint8_t *key_padding,
                                     const attn_options *opts);

/** Cross-attention step: query [batch, n, E] (any number n of decoder
 * tokens) attends to the memory; out [batch, n, E] receives the layer's
 * output, equal to attn_forward() with the key and value given to the last
 * attn_memory_set(). mask (may be NULL) applies on top of the memory's own
 * lengths and padding, with len_q = n and len_k = the memory's len_k: its
 * key_lengths further shorten rows, its key_padding adds hidden positions,
 * and its bias, causal mode, window and empty_rows act as in
 * attn_forward(). Attention weights (opts->attn_weights) are
 * [batch, H, n, len_k] or [batch, n, len_k]. opts->scratch: at least
 * attn_cross_scratch_size() bytes. Thread-safe: only reads the layer and
 * the memory, so any number of threads may run cross steps on one memory
 * at once, each with its own out, attn_weights and scratch, but not while
 * attn_memory_set() changes it.
 * Errors (out and weights unchanged): ATTN_ERR_NULL_POINTER,
 * ATTN_ERR_STRUCT_SIZE, ATTN_ERR_BAD_SIZE (also: memory never set),
 * ATTN_ERR_OVERFLOW, ATTN_ERR_MISMATCH, ATTN_ERR_WEIGHTS_NOT_SET,
 * ATTN_ERR_BAD_MASK, ATTN_ERR_BAD_OPTION, ATTN_ERR_UNSUPPORTED (opts->core),
 * ATTN_ERR_NOT_FINITE, ATTN_ERR_NO_MEMORY, ATTN_ERR_SCRATCH_TOO_SMALL. */
ATTN_API attn_status attn_cross_step(const attn_layer *layer,
                                     const attn_memory *mem, int64_t batch,
                                     int64_t n, const float *query,
                                     const attn_mask *mask,
                                     const attn_options *opts, float *out);

/** Bytes of scratch memory attn_cross_step() needs for n queries per row
 * with this memory and options (opts may be NULL; only attn_weights,
 * weights_mode, num_threads, runtime and core matter), valid until the next
 * attn_memory_set() (for a memory never set: for len_k = its capacity).
 * Thread-safe: only reads the layer and the memory, so it may run
 * alongside cross steps on the memory, but not while attn_memory_set()
 * changes it. Errors: ATTN_ERR_NULL_POINTER, ATTN_ERR_STRUCT_SIZE,
 * ATTN_ERR_BAD_SIZE, ATTN_ERR_OVERFLOW, ATTN_ERR_MISMATCH,
 * ATTN_ERR_BAD_OPTION, ATTN_ERR_UNSUPPORTED (core), ATTN_ERR_NO_MEMORY (the
 * default runtime could not be created). */
ATTN_API attn_status attn_cross_scratch_size(const attn_layer *layer,
                                             const attn_memory *mem, int64_t n,
                                             const attn_options *opts,
                                             size_t *bytes);

#ifdef __cplusplus
}
#endif

#endif /* ATTN_ATTN_H */
