#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# Benchmark smoke test (issue 4): builds the benchmark programs and runs them
# on tiny sizes. Checks that they run and report well-formed results; no
# timing is asserted (CI machines are shared and noisy).
#
#   1. bench_forward --preset smoke (self, causal, cross with kdim/vdim,
#      masks, averaged weights; 1, 2 and all threads), each case in its own
#      process: exit status 0, one JSON line per case with ok=true and
#      positive times and memory, plus the reference sgemm line.
#   2. bench_core on a tiny core, tiled and plain paths, the packed core
#      and the cblas one; bench_start.
#   3. The same with the generic BLAS build (ATTN_BLAS=generic) run against
#      Debian's reference BLAS, where OpenBLAS's thread functions do not
#      exist: the library and the benchmark must not depend on them. The
#      threading and softmax tests run there too.
#   4. bench_pool (thread start-up against a pool hand-over, woken or
#      polling),
#      bench/compare_builds.py (before/after of two builds; here the same
#      build on both sides, forward and decode), bench/ab_decode and
#      bench/ab_forward (two builds' decoding steps or forward passes
#      alternating in one process; the same build twice) on tiny sizes.
#   5. bench/compare_torch.py on one tiny case when Debian's python3 has
#      torch (it is not installed for this stage: it is large).
#
# Build trees: build/ci (shared with 10-unit.sh), build/bench-generic.
set -euo pipefail
cd "${ATTN_ROOT:-$(dirname "$0")/../..}"
bash scripts/deps.sh libblas-dev python3
tmp="$(mktemp -d /tmp/attn-bench.XXXXXX)"
trap 'rm -rf "$tmp"' EXIT
jobs="$(nproc)"

# check_json FILE CASES: every case line ok with sane numbers, and the
# reference line present.
check_json() {
  python3 - "$1" "$2" <<'EOF'
import json, sys
lines = [json.loads(l) for l in open(sys.argv[1]) if l.startswith("{")]
cases = [l for l in lines if "case" in l]
refs = [l for l in lines if l.get("reference_sgemm")]
want = int(sys.argv[2])
assert len(cases) == want, f"{len(cases)} case lines, want {want}"
for c in cases:
    assert c["ok"] is True, c
    assert 0 < c["min_ms"] <= c["median_ms"] <= c["max_ms"], c
    assert c["gflops"] > 0 and c["peak_rss_mib"] > 0 and c["reps"] >= 1, c
    assert c["fraction"] is None or c["fraction"] > 0, c
assert len(refs) == 1 and refs[0]["median_gflops"] > 0, refs
print(f"bench smoke: {len(cases)} cases ok")
EOF
}

smoke() { # smoke BUILD_DIR NAME
  local dir="$1" name="$2"
  "$dir/bench/bench_forward" --preset smoke --reps 2 --warmup 1 \
    --ref-size 64 --json "$tmp/$name.json"
  check_json "$tmp/$name.json" 5
  # B L E H qblock kblock rows threads causal reps: library choice, whole
  # rows, the plain path; causal with 2 threads.
  "$dir/bench/bench_core" 2 40 32 4 0 0 0 1 0 2
  "$dir/bench/bench_core" 2 40 32 4 16 -1 8 2 1 2
  "$dir/bench/bench_core" 2 40 32 4 0 -2 0 1 0 2
  "$dir/bench/bench_core" 2 40 32 4 0 0 0 2 1 2 0 cblas
  "$dir/bench/bench_start"
}

echo "--- bench smoke: OpenBLAS build"
cmake -S . -B build/ci -DCMAKE_BUILD_TYPE=Release -DATTN_WERROR=ON >/dev/null
cmake --build build/ci -j"$jobs" --target bench_forward bench_core bench_decode \
  bench_pool bench_start ab_decode ab_forward bench_linear
smoke build/ci openblas
# Per-round ratios of two cases (bench/figures.sh's causal and thread
# ratios), and the projection blocks, tiny.
build/ci/bench/bench_forward --rounds 2 --reps 2 --ref-size 64 \
  name=a,B=2,L=16,E=32,H=4 name=b,B=2,L=16,E=32,H=4,causal=1 |
  python3 bench/forward_ratios.py b/a | grep -q '^b / a: .* over 2 rounds'
build/ci/bench/bench_linear --rounds 2 --min-time 0.01 64x128x32 |
  grep -q '^  library ' 
build/ci/bench/bench_pool 50
python3 bench/compare_builds.py --old build/ci/bench/bench_forward \
  --new build/ci/bench/bench_forward --rounds 2 --min-time 0.01 \
  "name=tiny,B=2,L=16,E=32,H=4" | grep -q '^tiny '
python3 bench/compare_builds.py --decode --old build/ci/bench/bench_decode \
  --new build/ci/bench/bench_decode --rounds 2 --contexts 16 --batches 1 \
  --steps 8 --bw-mib 8 --no-full | grep -q '^decode-B1-ctx16 ' 
# Decoding steps on tiny contexts (against the full forward and the measured
# read bandwidth): runs and prints its table.
build/ci/bench/bench_decode --contexts 16,64 --batches 1,2 --steps 8 \
  --bw-mib 8 --full-budget 0
# Two builds' steps alternating in one process (here the same build twice).
build/ci/bench/ab_decode build/ci/libattn.so.0 build/ci/libattn.so.0 2 16 4 \
  | grep -q '^B=2 L=16 kv_heads=2 threads=2: old/new'
# And forward passes: self-attention, then cross with kdim and causal.
build/ci/bench/ab_forward build/ci/libattn.so.0 build/ci/libattn.so.0 3 2 16 16 \
  32 4 | grep -q '^B=2 Lq=16 Lk=16 E=32 H=4 kdim=32 causal=0: old/new'
build/ci/bench/ab_forward build/ci/libattn.so.0 build/ci/libattn.so.0 3 2 8 24 \
  32 4 48 1 | grep -q '^B=2 Lq=8 Lk=24 E=32 H=4 kdim=48 causal=1: old/new'
# The decoder attention features against the plain layer, tiny (issue 14).
cmake --build build/ci -j"$jobs" --target bench_features
build/ci/bench/bench_features --reps 1 --len 40 --embed 64 --heads 4 \
  --kv-heads 2 --cache 48 >"$tmp/features.txt"
grep -q "ratio to plain" "$tmp/features.txt"

echo "--- bench smoke: generic BLAS build, reference BLAS"
cmake -S . -B build/bench-generic -DCMAKE_BUILD_TYPE=Release \
  -DATTN_WERROR=ON -DATTN_BLAS=generic -DATTN_BUILD_EXAMPLES=OFF >/dev/null
cmake --build build/bench-generic -j"$jobs" --target bench_forward \
  bench_core bench_start test_threads test_softmax
refblas="$(dirname "$(find /usr/lib -path '*/blas/libblas.so.3' | head -1)")"
[ -n "$refblas" ] || {
  echo "bench smoke: Debian's reference BLAS (libblas3) is missing" >&2
  exit 1
}
export LD_LIBRARY_PATH="$refblas${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
if ldd build/bench-generic/bench/bench_forward | grep -q openblas; then
  echo "bench smoke: the generic build still loads OpenBLAS" >&2
  exit 1
fi
smoke build/bench-generic generic
ctest --test-dir build/bench-generic --output-on-failure --timeout 600 \
  -R '^test_(threads|softmax)$'
unset LD_LIBRARY_PATH

if /usr/bin/python3 -c 'import torch' 2>/dev/null; then
  echo "--- bench smoke: compare_torch.py"
  /usr/bin/python3 bench/compare_torch.py --bench build/ci/bench/bench_forward \
    --case "name=tiny,B=2,L=16,E=32,H=4" --reps 2 --ref-size 64 \
    --json "$tmp/torch.json"
  grep -q '"summary": "tiny"' "$tmp/torch.json"
else
  echo "--- bench smoke: no torch in /usr/bin/python3, compare_torch.py skipped"
fi
