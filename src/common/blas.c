/* SPDX-License-Identifier: MIT */
/* Holding OpenBLAS's threads out of the library's way (blas.h).
 *
 * OpenBLAS (pthreads build) runs a big product on its own thread pool, and
 * its idle pool threads then keep spinning for about 0.1 s (2^28 TSC
 * cycles) waiting for the next product. Library threads started in that
 * window share the cores with them: measured on 2 cores, two threads of
 * plain arithmetic right after a threaded sgemm took 66 ms instead of 34.
 * Under ATTN_BLAS_HOLD, OpenBLAS is set to one thread while calls run and
 * the projections are split over the library's own threads instead. The
 * thread controls are looked up at run time: a build against a generic
 * CBLAS has none of them, and then the BLAS is left alone. */
#define _GNU_SOURCE /* RTLD_DEFAULT, RTLD_NOLOAD */
#include "common/blas.h"

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
static int users;   /* holds running */
static int restore; /* the count to put back, or 0 */

bool attn_blas_hold(void) {
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

void attn_blas_release(void) {
  pthread_mutex_lock(&users_lock);
  if (--users == 0 && restore) {
    /* Not 1 any more: the program set a count of its own; keep it. */
    if (get_threads() == 1)
      set_threads(restore);
    restore = 0;
  }
  pthread_mutex_unlock(&users_lock);
}
