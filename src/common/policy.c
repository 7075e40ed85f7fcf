/* SPDX-License-Identifier: MIT */
/* The thread cost model (policy.h).
 *
 * Figures measured on the project's machines (2-core AMD EPYC, Zen 4;
 * docs/PERFORMANCE.md): one core runs the library's blocked products at
 * 60-90 GFLOP/s and streams 10-20 GB/s from memory; handing a job to a
 * sleeping pool worker and waiting for it costs 10-30 us end to end. A
 * thread beyond the first must bring at least MIN_NS_PER_THREAD of work,
 * a few times its hand-over, so that a second thread never makes a short
 * call slower. The rates are the low ends, so that work is rather
 * overestimated (threads are cheap to have asleep, and an underestimate
 * would leave cores idle on long calls). */
#include "common/policy.h"

#define FLOPS_PER_NS 60.0
#define BYTES_PER_NS 10.0
#define MIN_NS_PER_THREAD 50000.0

double attn_cost_flops(double flops) { return flops / FLOPS_PER_NS; }

double attn_cost_bytes(double bytes) { return bytes / BYTES_PER_NS; }

int32_t attn_threads_for(int32_t max, int64_t items, double ns) {
  double n = ns / MIN_NS_PER_THREAD;
  if ((double)max < n)
    n = max;
  if ((double)items < n)
    n = (double)items;
  return n < 1.0 ? 1 : (int32_t)n;
}
