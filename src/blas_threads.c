/* Keeping the BLAS's threads out of the library's way.
 *
 * OpenBLAS (pthreads build) runs a big product on its own thread pool, and
 * its idle pool threads then keep spinning for about 0.1 s (2^28 TSC
 * cycles) waiting for the next product. Library threads started in that
 * window share the cores with them: measured on 2 cores, two threads of
 * plain arithmetic right after a threaded sgemm took 66 ms instead of 34.
 * So while a forward call runs, OpenBLAS is set to one thread (and set back
 * when the last concurrent call ends), and the projections are split over
 * the library's own threads instead. The thread controls are looked up at
 * run time: a build against a generic CBLAS has none of them, and then the
 * BLAS is left alone and does its own threading of the projections. */
#define _GNU_SOURCE /* RTLD_DEFAULT, RTLD_NOLOAD */
#include "kernels.h"

#include <dlfcn.h>
#include <pthread.h>

static int (*get_threads)(void);
static void (*set_threads)(int);
static pthread_once_t find_once = PTHREAD_ONCE_INIT;

static void find(void) {
  int (*get)(void) = NULL, (*parallel)(void) = NULL;
  void (*set)(int) = NULL;
  /* In the global scope when the program linked OpenBLAS; otherwise (a
   * dlopen()ed libattn, OpenBLAS behind libblas.so.3) ask the loaded
   * OpenBLAS itself, never loading it. */
  void *loaded = dlopen("libopenblas.so.0", RTLD_LAZY | RTLD_NOLOAD);
  void *handles[2] = {RTLD_DEFAULT, loaded}; /* RTLD_DEFAULT may be NULL */
  for (int i = 0; i < 2 && !(get && set && parallel); i++) {
    if (i == 1 && !loaded)
      break;
    *(void **)&get = dlsym(handles[i], "openblas_get_num_threads");
    *(void **)&set = dlsym(handles[i], "openblas_set_num_threads");
    *(void **)&parallel = dlsym(handles[i], "openblas_get_parallel");
  }
  /* Kept open on purpose: the functions must stay valid. */
  /* Only the pthreads build (1) has one process-wide thread count; in the
   * OpenMP build (2) the count is per calling thread, so the library's
   * threads would not see it. Sequential builds (0) need nothing. */
  if (get && set && parallel && parallel() == 1) {
    get_threads = get;
    set_threads = set;
  }
}

static pthread_mutex_t users_lock = PTHREAD_MUTEX_INITIALIZER;
static int users;   /* forward calls inside a serial section */
static int restore; /* the count to put back, or 0 */

bool attn_blas_serial_begin(void) {
  pthread_once(&find_once, find);
  if (!set_threads)
    return false;
  pthread_mutex_lock(&users_lock);
  if (users++ == 0) {
    int n = get_threads();
    restore = n > 1 ? n : 0;
    if (restore)
      set_threads(1);
  }
  pthread_mutex_unlock(&users_lock);
  return true;
}

void attn_blas_serial_end(void) {
  pthread_mutex_lock(&users_lock);
  if (--users == 0 && restore) {
    set_threads(restore);
    restore = 0;
  }
  pthread_mutex_unlock(&users_lock);
}

/* Projections on the library's threads ------------------------------------ */

typedef struct {
  int64_t M, N, K, ldx, ldy, mr, nc, col_blocks;
  const float *x, *w, *b;
  float *y;
} linear_job;

static void linear_item(void *ctx, int64_t item, int32_t worker) {
  (void)worker;
  const linear_job *j = ctx;
  int64_t m0 = item / j->col_blocks * j->mr, n0 = item % j->col_blocks * j->nc;
  int64_t m = j->M - m0 < j->mr ? j->M - m0 : j->mr;
  int64_t n = j->N - n0 < j->nc ? j->N - n0 : j->nc;
  attn_linear(m, n, j->K, j->x + m0 * j->ldx, j->ldx, j->w + n0 * j->K,
              j->b ? j->b + n0 : NULL, j->y + m0 * j->ldy + n0, j->ldy);
}

/* Rows per block: single-threaded OpenBLAS runs 256-row slices of a
 * [4096, 1536] x [1536, 512]^T product as fast as the whole product
 * (98 vs 97 GFLOP/s on one core). */
#define LINEAR_ROWS 256
/* Blocks wanted per product, so that a few threads share them evenly. */
#define LINEAR_MIN_BLOCKS 8

void attn_linear_threads(int32_t threads, int64_t M, int64_t N, int64_t K,
                         const float *x, int64_t ldx, const float *w,
                         const float *b, float *y, int64_t ldy) {
  linear_job j = {M, N, K, ldx, ldy, LINEAR_ROWS, N, 1, x, w, b, y};
  /* Few rows: cut the columns too, in multiples of 64, at least 128. The
   * blocks depend on the shapes only. */
  int64_t row_blocks = (M + j.mr - 1) / j.mr;
  if (row_blocks < LINEAR_MIN_BLOCKS) {
    int64_t want = (LINEAR_MIN_BLOCKS + row_blocks - 1) / row_blocks;
    int64_t nc = (N + want - 1) / want;
    nc = (nc + 63) / 64 * 64;
    j.nc = nc < 128 ? 128 : nc;
    if (j.nc > N)
      j.nc = N;
  }
  j.col_blocks = (N + j.nc - 1) / j.nc;
  /* The same blocks for any thread count (1: all in this thread), so the
   * result never depends on it. Starting and joining a thread costs about
   * 60 us here: each thread gets at least 4 million multiply-adds. */
  int64_t items = row_blocks * j.col_blocks;
  double useful = (double)M * (double)N * (double)K / 4e6;
  if ((double)threads > useful)
    threads = useful < 1.0 ? 1 : (int32_t)useful;
  attn_parallel_for(threads < 1 ? 1 : threads, items, linear_item, &j);
}

void attn_project(bool serial, int32_t threads, int64_t M, int64_t N, int64_t K,
                  const float *x, int64_t ldx, const float *w, const float *b,
                  float *y, int64_t ldy) {
  if (serial)
    attn_linear_threads(threads, M, N, K, x, ldx, w, b, y, ldy);
  else
    attn_linear(M, N, K, x, ldx, w, b, y, ldy);
}
