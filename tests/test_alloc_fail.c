/* SPDX-License-Identifier: MIT */
/* Allocation-failure sweep: every allocation a scenario makes is failed in
 * turn (n = 1, 2, ... up to the number a successful run makes), and each
 * run must return ATTN_ERR_NO_MEMORY with a message, leave the objects it
 * was given as they were, and free everything it allocated.
 *
 * The program is linked with --wrap for malloc, calloc, realloc,
 * posix_memalign and free, which routes every allocation of the library's
 * objects (and of this file) through the counters below; cJSON, which
 * builds the headers of saved files, is pointed at them with
 * cJSON_InitHooks. Scenarios: layers, weights, forward (with masks and
 * attention weights), saving and loading weight files (from a file and
 * from memory), KV caches and decoding steps, memories, memory_set and
 * cross steps, runtimes. A step allocates only its scratch, in one of
 * three ways, each swept for decoding and cross steps: its runtime keeps
 * no block yet, another call holds the kept block, or the step runs in a
 * child after fork(); test_step_allocations pins that it allocates
 * nothing otherwise. The ASan build runs it with leak checking too. */
#include "common/runtime.h"
#include "ref.h"
#include "tsan.h"

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>

#include <cmocka.h>

#include <cJSON.h>
#include <errno.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

void *__real_malloc(size_t n);
void *__real_calloc(size_t n, size_t size);
void *__real_realloc(void *p, size_t n);
int __real_posix_memalign(void **p, size_t align, size_t n);
void __real_free(void *p);
void *__wrap_malloc(size_t n);
void *__wrap_calloc(size_t n, size_t size);
void *__wrap_realloc(void *p, size_t n);
int __wrap_posix_memalign(void **p, size_t align, size_t n);
void __wrap_free(void *p);

/* Counting: while armed, allocation number fail_at (1-based) fails, and
 * the live allocations made are tracked. */
static bool armed;
static long counted, fail_at, failed;
#define MAX_LIVE 4096
static void *live[MAX_LIVE];
static int n_live;

static bool should_fail(void) {
  if (!armed)
    return false;
  if (++counted == fail_at) {
    failed++;
    return true;
  }
  return false;
}

static void track(void *p) {
  if (!armed || !p)
    return;
  if (n_live == MAX_LIVE)
    abort();
  live[n_live++] = p;
}

static void untrack(void *p) {
  for (int i = n_live - 1; i >= 0; i--)
    if (live[i] == p) {
      live[i] = live[--n_live];
      return;
    }
}

void *__wrap_malloc(size_t n) {
  if (should_fail())
    return NULL;
  void *p = __real_malloc(n);
  track(p);
  return p;
}

void *__wrap_calloc(size_t n, size_t size) {
  if (should_fail())
    return NULL;
  void *p = __real_calloc(n, size);
  track(p);
  return p;
}

void *__wrap_realloc(void *p, size_t n) {
  if (should_fail())
    return NULL;
  void *q = __real_realloc(p, n);
  if (q) {
    untrack(p);
    track(q);
  }
  return q;
}

int __wrap_posix_memalign(void **p, size_t align, size_t n) {
  if (should_fail())
    return ENOMEM;
  int r = __real_posix_memalign(p, align, n);
  if (r == 0)
    track(*p);
  return r;
}

void __wrap_free(void *p) {
  untrack(p);
  __real_free(p);
}

static void *hook_malloc(size_t n) { return __wrap_malloc(n); }
static void hook_free(void *p) { __wrap_free(p); }

/* ------------------------------------------------------------------------ */

/* A scenario: what it is given (made before the sweep, unarmed), one run
 * of the operation (which cleans up what it made when it succeeds), and a
 * check that a failed run left its objects as they were. */
typedef struct scenario scenario;
struct scenario {
  const char *name;
  void (*prepare)(scenario *s); /* before every run, nothing failing */
  attn_status (*run)(scenario *s);
  void (*unchanged)(scenario *s);
  bool optional_ok; /* a failed allocation may be one the call can skip */
  attn_layer *layer, *other;
  attn_kv_cache *cache;
  attn_memory *mem;
  float *x, *out, *out_before, *w;
  int64_t lens[2];
  char path[300];
  unsigned char *file;
  size_t file_size;
};

static long total_failures;

/* One run, then the default runtime's kept scratch is freed, so that what
 * the run allocated must be gone at the end (counted while still armed). */
static attn_status run_trimmed(scenario *s) {
  attn_status st = s->run(s);
  attn_runtime_trim(NULL);
  return st;
}

static void sweep(scenario *s) {
  /* A run with nothing failing counts the allocations. */
  if (s->prepare)
    s->prepare(s);
  armed = true;
  counted = 0;
  fail_at = 0;
  n_live = 0;
  attn_status st = run_trimmed(s);
  armed = false;
  if (st != ATTN_OK)
    fail_msg("%s: status %d without failures (%s)", s->name, (int)st,
             attn_last_error());
  if (n_live != 0)
    fail_msg("%s: %d allocations left after a successful run", s->name, n_live);
  long n = counted;
  /* A scenario that allocates nothing could not fail: the sweep would
   * hold nothing to account. */
  if (n == 0)
    fail_msg("%s: no allocation to fail", s->name);
  for (long k = 1; k <= n; k++) {
    if (s->prepare)
      s->prepare(s);
    counted = 0;
    failed = 0;
    fail_at = k;
    n_live = 0;
    armed = true;
    st = run_trimmed(s);
    armed = false;
    if (n_live != 0)
      fail_msg("%s: allocation %ld of %ld failed: %d allocations leaked",
               s->name, k, n, n_live);
    if (st == ATTN_OK && s->optional_ok)
      continue;
    if (st != ATTN_ERR_NO_MEMORY || attn_last_error()[0] == '\0')
      fail_msg("%s: allocation %ld of %ld failed: status %d (%s), expected "
               "ATTN_ERR_NO_MEMORY",
               s->name, k, n, (int)st, attn_last_error());
    if (s->unchanged)
      s->unchanged(s);
  }
  print_message("%s: %ld allocations, each failed once\n", s->name, n);
  total_failures += n;
}

/* sweep() in a child after fork(), where a call's runtime cannot be
 * shared and every call takes a scratch block of its own. A failed check
 * aborts the child (CMOCKA_TEST_ABORT) after printing its message; the
 * child's count comes back through a pipe. */
static void sweep_forked(scenario *s) {
#ifdef UNDER_TSAN
  print_message("%s: skipped under ThreadSanitizer\n", s->name);
  return;
#endif
  int fds[2];
  assert_int_equal(pipe(fds), 0);
  fflush(NULL);
  pid_t pid = fork();
  assert_true(pid >= 0);
  if (pid == 0) {
    close(fds[0]);
    setenv("CMOCKA_TEST_ABORT", "1", 1);
    long before = total_failures;
    sweep(s);
    long n = total_failures - before;
    bool sent = write(fds[1], &n, sizeof n) == (ssize_t)sizeof n;
    fflush(NULL);
    _exit(sent ? 0 : 1);
  }
  close(fds[1]);
  long n = 0;
  ssize_t got = read(fds[0], &n, sizeof n);
  close(fds[0]);
  int status = 0;
  assert_int_equal(waitpid(pid, &status, 0), pid);
  if (!WIFEXITED(status) || WEXITSTATUS(status) != 0)
    fail_msg("%s: the child failed (status %d)", s->name, status);
  assert_int_equal(got, (ssize_t)sizeof n);
  total_failures += n;
}

static attn_layer *layer_of(int64_t E, int64_t H, int64_t kdim, int64_t vdim,
                            uint64_t seed) {
  attn_config cfg;
  attn_config_init(&cfg);
  cfg.embed_dim = E;
  cfg.num_heads = H;
  cfg.kdim = kdim;
  cfg.vdim = vdim;
  attn_layer *l = NULL;
  assert_int_equal(attn_layer_create(&cfg, &l), ATTN_OK);
  assert_int_equal(attn_layer_init_weights(l, seed), ATTN_OK);
  return l;
}

#define E 16
#define H 4
#define B 2
#define L 5

static void same_out(scenario *s) {
  assert_memory_equal(s->out, s->out_before, B * L * E * sizeof(float));
}

/* Layers ---------------------------------------------------------------- */

static attn_status run_layer(scenario *s) {
  (void)s;
  attn_config cfg;
  attn_config_init(&cfg);
  cfg.embed_dim = 8;
  cfg.num_heads = 2;
  cfg.kdim = 6;
  cfg.vdim = 5;
  attn_layer *l = NULL;
  attn_status st = attn_layer_create(&cfg, &l);
  if (st == ATTN_OK) {
    float w[64] = {0};
    st = attn_layer_set_weight(l, ATTN_W_OUT, w, 64);
    if (st == ATTN_OK)
      st = attn_layer_init_weights(l, 3);
    attn_layer_destroy(l);
  }
  return st;
}

/* Forward ---------------------------------------------------------------- */

static attn_status run_forward(scenario *s) {
  attn_mask m;
  attn_mask_init(&m);
  m.causal = ATTN_CAUSAL_BOTTOM_RIGHT;
  m.key_lengths = s->lens;
  m.window = 3;
  attn_options o;
  attn_options_init(&o);
  o.attn_weights = s->w;
  o.num_threads = 2;
  return attn_self_forward(s->layer, B, L, s->x, &m, &o, s->out);
}

static attn_status run_cross_forward(scenario *s) {
  return attn_forward(s->other, B, L, L, s->x, s->x, s->x, NULL, NULL, s->out);
}

static attn_status run_runtime(scenario *s) {
  attn_runtime_config rc;
  attn_runtime_config_init(&rc);
  rc.num_threads = 2;
  attn_runtime *rt = NULL;
  attn_status st = attn_runtime_create(&rc, &rt);
  if (st != ATTN_OK)
    return st;
  attn_options o;
  attn_options_init(&o);
  o.runtime = rt;
  st = attn_self_forward(s->layer, B, L, s->x, NULL, &o, s->out);
  attn_runtime_destroy(rt);
  return st;
}

/* Weight files ---------------------------------------------------------- */

static int temp_files(const scenario *s) {
  char cmd[400];
  snprintf(cmd, sizeof cmd, "ls -a '%.*s' | grep -c '\\.tmp-'",
           (int)(strrchr(s->path, '/') - s->path), s->path);
  FILE *p = popen(cmd, "r");
  int n = 0;
  if (p) {
    if (fscanf(p, "%d", &n) != 1)
      n = 0;
    pclose(p);
  }
  return n;
}

static attn_status run_save(scenario *s) {
  return attn_layer_save_safetensors(s->layer, s->path, "enc.",
                                     ATTN_NAMES_HF_O_PROJ);
}

static void save_unchanged(scenario *s) {
  /* The file is either the old one or the new one (the same bytes here),
   * never partial, and no temporary file is left. */
  attn_layer *l = layer_of(E, H, 0, 0, 77);
  assert_int_equal(attn_layer_load_safetensors(l, s->path, "enc."), ATTN_OK);
  attn_layer_destroy(l);
  assert_int_equal(temp_files(s), 0);
}

static void reset_other(scenario *s) {
  assert_int_equal(attn_layer_init_weights(s->other, 5), ATTN_OK);
}

static attn_status run_load_file(scenario *s) {
  return attn_layer_load_safetensors(s->other, s->path, "enc.");
}

static attn_status run_load_mem(scenario *s) {
  return attn_layer_load_safetensors_mem(s->other, s->file, s->file_size,
                                         "enc.");
}

static void other_unchanged(scenario *s) {
  attn_layer *fresh = layer_of(E, H, 0, 0, 5);
  float a[3 * E * E], b[3 * E * E];
  int ids[] = {ATTN_W_IN_PROJ, ATTN_W_OUT, ATTN_B_IN_PROJ, ATTN_B_OUT};
  for (int i = 0; i < 4; i++) {
    int64_t n = 0;
    assert_int_equal(attn_layer_weight_count(fresh, ids[i], &n), ATTN_OK);
    assert_int_equal(attn_layer_get_weight(fresh, ids[i], a, n), ATTN_OK);
    assert_int_equal(attn_layer_get_weight(s->other, ids[i], b, n), ATTN_OK);
    assert_memory_equal(a, b, (size_t)n * sizeof(float));
  }
  attn_layer_destroy(fresh);
}

/* Caches and steps ------------------------------------------------------ */

static attn_status run_cache(scenario *s) {
  attn_cache_config cc;
  attn_cache_config_init(&cc);
  cc.batch = B;
  cc.capacity = 8;
  cc.window = 4;
  attn_kv_cache *c = NULL;
  attn_status st = attn_kv_cache_create(s->layer, &cc, &c);
  attn_kv_cache_destroy(c);
  return st;
}

static void prepare_out(scenario *s) {
  memset(s->out, 0x5a, B * L * E * sizeof(float));
  memcpy(s->out_before, s->out, B * L * E * sizeof(float));
}

static void prepare_cache(scenario *s) {
  /* Two tokens per row already held. That step leaves its scratch kept in
   * the default runtime, where the swept step would find it and allocate
   * nothing: it is freed, so the step meets a runtime without a block. */
  assert_int_equal(attn_kv_cache_reset(s->cache), ATTN_OK);
  assert_int_equal(
      attn_decode_step(s->layer, s->cache, B, 2, s->x, NULL, NULL, s->out),
      ATTN_OK);
  attn_runtime_trim(NULL);
  prepare_out(s);
}

static attn_status run_step(scenario *s) {
  int64_t lens[B] = {3, 1};
  attn_decode_mask dm;
  attn_decode_mask_init(&dm);
  dm.new_lengths = lens;
  attn_options o;
  attn_options_init(&o);
  o.attn_weights = s->w;
  return attn_decode_step(s->layer, s->cache, B, 3, s->x, &dm, &o, s->out);
}

static void step_unchanged(scenario *s) {
  int64_t lens[B];
  assert_int_equal(attn_kv_cache_lengths(s->cache, B, lens, NULL), ATTN_OK);
  assert_int_equal(lens[0], 2);
  assert_int_equal(lens[1], 2);
  same_out(s);
}

static attn_status run_memory(scenario *s) {
  attn_memory_config mc;
  attn_memory_config_init(&mc);
  mc.batch = B;
  mc.capacity = L;
  attn_memory *mem = NULL;
  attn_status st = attn_memory_create(s->other, &mc, &mem);
  if (st != ATTN_OK)
    return st;
  int64_t lens[B] = {L, 2};
  st = attn_memory_set(s->other, mem, B, L, s->x, s->x, lens, NULL, NULL);
  if (st == ATTN_OK)
    st = attn_cross_step(s->other, mem, B, 3, s->x, NULL, NULL, s->out);
  attn_memory_destroy(mem);
  return st;
}

static void prepare_cross(scenario *s) {
  /* As prepare_cache: no kept block left by the calls before. */
  attn_runtime_trim(NULL);
  prepare_out(s);
}

static attn_status run_cross_step(scenario *s) {
  attn_options o;
  attn_options_init(&o);
  o.attn_weights = s->w;
  return attn_cross_step(s->other, s->mem, B, 3, s->x, NULL, &o, s->out);
}

/* The other way a step allocates in the parent: its runtime's kept block
 * is held by another call, so the step takes a block of its own. Holding
 * it and giving it back are not counted. */
static attn_status while_kept_held(scenario *s,
                                   attn_status (*run)(scenario *)) {
  attn_exec x;
  armed = false;
  assert_int_equal(attn_exec_resolve(NULL, 0, 0, &x), ATTN_OK);
  void *kept = attn_exec_scratch(&x, 64);
  assert_non_null(kept);
  armed = true;
  attn_status st = run(s);
  armed = false;
  attn_exec_scratch_done(&x, kept);
  armed = true;
  return st;
}

static attn_status run_step_held(scenario *s) {
  return while_kept_held(s, run_step);
}

static attn_status run_cross_step_held(scenario *s) {
  return while_kept_held(s, run_cross_step);
}

/* ------------------------------------------------------------------------ */

static scenario fixture(void) {
  scenario s;
  memset(&s, 0, sizeof s);
  s.layer = layer_of(E, H, 0, 0, 1);
  s.other = layer_of(E, H, 0, 0, 5);
  ref_rng r;
  ref_rng_seed(&r, 9);
  s.x = ref_random(&r, B * L * E, -1, 1);
  s.out = ref_xmalloc(B * L * E * sizeof(float));
  s.out_before = ref_xmalloc(B * L * E * sizeof(float));
  s.w = ref_xmalloc(B * H * L * 8 * sizeof(float));
  s.lens[0] = L;
  s.lens[1] = 3;
  return s;
}

static void free_fixture(scenario *s) {
  attn_layer_destroy(s->layer);
  attn_layer_destroy(s->other);
  free(s->x);
  free(s->out);
  free(s->out_before);
  free(s->w);
  free(s->file);
}

/* The scenario's KV cache (B rows, 8 tokens) and a memory (B rows of L
 * tokens, lens as attn_memory_set takes them) for the steps. */
static void open_cache_and_memory(scenario *s, const int64_t *lens) {
  attn_cache_config cc;
  attn_cache_config_init(&cc);
  cc.batch = B;
  cc.capacity = 8;
  assert_int_equal(attn_kv_cache_create(s->layer, &cc, &s->cache), ATTN_OK);
  attn_memory_config mc;
  attn_memory_config_init(&mc);
  mc.batch = B;
  mc.capacity = L;
  assert_int_equal(attn_memory_create(s->other, &mc, &s->mem), ATTN_OK);
  assert_int_equal(
      attn_memory_set(s->other, s->mem, B, L, s->x, s->x, lens, NULL, NULL),
      ATTN_OK);
}

static void test_sweep(void **state) {
  (void)state;
  cJSON_Hooks hooks = {hook_malloc, hook_free};
  cJSON_InitHooks(&hooks);
  int32_t threads;
  /* The default runtime is made once, before any counting. */
  assert_int_equal(attn_runtime_threads(NULL, &threads), ATTN_OK);
  scenario s = fixture();
  char dir[] = "/tmp/attn_alloc_XXXXXX";
  assert_non_null(mkdtemp(dir));
  snprintf(s.path, sizeof s.path, "%s/w.safetensors", dir);
  assert_int_equal(
      attn_layer_save_safetensors(s.layer, s.path, "enc.", ATTN_NAMES_TORCH),
      ATTN_OK);
  FILE *f = fopen(s.path, "rb");
  assert_non_null(f);
  s.file = ref_xmalloc(1 << 16);
  s.file_size = fread(s.file, 1, 1 << 16, f);
  fclose(f);
  const int64_t mem_lens[B] = {L, 2};
  open_cache_and_memory(&s, mem_lens);

  const struct {
    const char *name;
    void (*prepare)(scenario *);
    attn_status (*run)(scenario *);
    void (*unchanged)(scenario *);
    bool optional_ok;
    bool forked;
  } all[] = {
      {"layer create, set weights, init", NULL, run_layer, NULL, false, false},
      {"self forward with masks and weights", prepare_out, run_forward,
       same_out, false, false},
      {"cross forward", prepare_out, run_cross_forward, same_out, false, false},
      {"runtime create and call", prepare_out, run_runtime, same_out, false,
       false},
      {"save safetensors", NULL, run_save, save_unchanged, true, false},
      {"load safetensors file", reset_other, run_load_file, other_unchanged,
       false, false},
      {"load safetensors memory", reset_other, run_load_mem, other_unchanged,
       false, false},
      {"kv cache create", NULL, run_cache, NULL, false, false},
      {"decode step", prepare_cache, run_step, step_unchanged, false, false},
      {"decode step, kept scratch held", prepare_cache, run_step_held,
       step_unchanged, false, false},
      {"decode step in a forked child", prepare_cache, run_step, step_unchanged,
       false, true},
      {"memory create, set, cross step", prepare_out, run_memory, same_out,
       false, false},
      {"cross step", prepare_cross, run_cross_step, same_out, false, false},
      {"cross step, kept scratch held", prepare_cross, run_cross_step_held,
       same_out, false, false},
      {"cross step in a forked child", prepare_cross, run_cross_step, same_out,
       false, true},
  };
  for (size_t i = 0; i < sizeof all / sizeof *all; i++) {
    s.name = all[i].name;
    s.prepare = all[i].prepare;
    s.run = all[i].run;
    s.unchanged = all[i].unchanged;
    s.optional_ok = all[i].optional_ok;
    if (all[i].forked)
      sweep_forked(&s);
    else
      sweep(&s);
  }
  print_message("%ld allocation failures swept in all\n", total_failures);
  attn_kv_cache_destroy(s.cache);
  attn_memory_destroy(s.mem);
  unlink(s.path);
  rmdir(dir);
  free_fixture(&s);
  cJSON_InitHooks(NULL);
}

/* Calls of one runtime share the scratch block it keeps: the first call
 * allocates it, the next allocates one block less and leaves one live
 * block, a larger call replaces it, and attn_runtime_trim() frees it. */
static long counted_forward(scenario *s, attn_runtime *rt, int64_t batch) {
  attn_options o;
  attn_options_init(&o);
  o.runtime = rt;
  counted = 0;
  fail_at = 0;
  armed = true;
  attn_status st =
      attn_self_forward(s->layer, batch, L, s->x, NULL, &o, s->out);
  armed = false;
  assert_int_equal(st, ATTN_OK);
  return counted;
}

static void test_scratch_kept(void **state) {
  (void)state;
  scenario s = fixture();
  attn_runtime *rt = NULL;
  assert_int_equal(attn_runtime_create(NULL, &rt), ATTN_OK);
  n_live = 0;
  long first = counted_forward(&s, rt, 1);
  assert_int_equal(n_live, 1); /* the kept block */
  long again = counted_forward(&s, rt, 1);
  assert_int_equal(again, first - 1);
  assert_int_equal(n_live, 1);
  counted_forward(&s, rt, B); /* needs more: replaced, still one */
  assert_int_equal(n_live, 1);
  /* A child after fork() that destroys the runtime frees the kept block
   * (its copy of it). */
  fflush(NULL);
  pid_t pid = fork();
  assert_true(pid >= 0);
  if (pid == 0) {
    armed = true;
    attn_runtime_destroy(rt);
    armed = false;
    _exit(n_live == 0 ? 0 : 1);
  }
  int status = 0;
  assert_int_equal(waitpid(pid, &status, 0), pid);
  assert_true(WIFEXITED(status));
  assert_int_equal(WEXITSTATUS(status), 0);
  armed = true;
  attn_runtime_trim(rt);
  attn_runtime_trim(rt); /* nothing left: a no-op */
  armed = false;
  assert_int_equal(n_live, 0);
  assert_int_equal(counted_forward(&s, rt, 1), first);
  attn_runtime_destroy(rt);
  free_fixture(&s);
}

/* The allocations of one step with 3 new tokens per row (a decoding step
 * on the emptied cache). */
static long counted_step(scenario *s, bool cross, const attn_options *o) {
  if (!cross)
    assert_int_equal(attn_kv_cache_reset(s->cache), ATTN_OK);
  prepare_out(s);
  counted = 0;
  fail_at = 0;
  armed = true;
  attn_status st =
      cross ? attn_cross_step(s->other, s->mem, B, 3, s->x, NULL, o, s->out)
            : attn_decode_step(s->layer, s->cache, B, 3, s->x, NULL, o, s->out);
  armed = false;
  assert_int_equal(st, ATTN_OK);
  return counted;
}

/* The steps' only allocation is their scratch (swept in test_sweep): with
 * the caller's scratch, or a runtime whose kept block is large enough,
 * they allocate nothing, and with a runtime holding none, one block. */
static void test_step_allocations(void **state) {
  (void)state;
  scenario s = fixture();
  open_cache_and_memory(&s, NULL);
  attn_runtime *rt = NULL;
  assert_int_equal(attn_runtime_create(NULL, &rt), ATTN_OK);
  attn_options o;
  attn_options_init(&o);
  o.runtime = rt;
  for (int cross = 0; cross < 2; cross++) {
    size_t bytes = 0;
    assert_int_equal(
        cross ? attn_cross_scratch_size(s.other, s.mem, 3, &o, &bytes)
              : attn_decode_scratch_size(s.layer, s.cache, 3, &o, &bytes),
        ATTN_OK);
    n_live = 0;
    assert_int_equal(counted_step(&s, cross, &o), 1); /* no kept block */
    assert_int_equal(n_live, 1);                      /* now kept */
    assert_int_equal(counted_step(&s, cross, &o), 0); /* the kept one */
    assert_int_equal(n_live, 1);
    attn_runtime_trim(rt);
    assert_int_equal(n_live, 0);
    void *mine = ref_xmalloc(bytes);
    o.scratch = mine;
    o.scratch_size = bytes;
    assert_int_equal(counted_step(&s, cross, &o), 0); /* the caller's */
    assert_int_equal(n_live, 0);
    o.scratch = NULL;
    o.scratch_size = 0;
    free(mine);
  }
  attn_runtime_destroy(rt);
  attn_kv_cache_destroy(s.cache);
  attn_memory_destroy(s.mem);
  free_fixture(&s);
}

int main(void) {
  const struct CMUnitTest tests[] = {cmocka_unit_test(test_sweep),
                                     cmocka_unit_test(test_scratch_kept),
                                     cmocka_unit_test(test_step_allocations)};
  return cmocka_run_group_tests(tests, NULL, NULL);
}
