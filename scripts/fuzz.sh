#!/usr/bin/env bash
# Runs the libFuzzer targets of tests/fuzz, one after the other, each for
# SECONDS (default 60) on one core, under ASan and UBSan:
#
#   scripts/fuzz.sh [-t SECONDS] [-b BUILD_DIR] [TARGET...]
#
# Targets: fuzz_safetensors fuzz_forward fuzz_decode (default: all). Each
# starts from its seeds in tests/fuzz/corpus/<target> and from what earlier
# runs found in BUILD_DIR/corpus/<target> (default build/fuzz), and adds
# new inputs there; the seeds in the tree are never changed. A crash, a
# sanitizer report or a failed check stops the script with the input saved
# as BUILD_DIR/crash-*; rerun it with BUILD_DIR/tests/fuzz/<target> FILE.
# The last line per target gives its executions, for docs/RELIABILITY.md.
set -euo pipefail
cd "$(dirname "$0")/.."
seconds=60
build=build/fuzz
while getopts "t:b:" opt; do
  case $opt in
  t) seconds=$OPTARG ;;
  b) build=$OPTARG ;;
  *) exit 2 ;;
  esac
done
shift $((OPTIND - 1))
targets=("$@")
[ ${#targets[@]} -gt 0 ] || targets=(fuzz_safetensors fuzz_forward fuzz_decode)

if [ ! -x "$build/tests/fuzz/${targets[0]}" ] || [ -n "${FUZZ_REBUILD:-}" ]; then
  cmake -S . -B "$build" -DCMAKE_C_COMPILER=clang \
    -DCMAKE_BUILD_TYPE=RelWithDebInfo -DATTN_FUZZ=ON -DATTN_WERROR=ON \
    -DATTN_BUILD_TESTS=OFF -DATTN_BUILD_BENCH=OFF -DATTN_BUILD_EXAMPLES=OFF \
    >/dev/null
fi
cmake --build "$build" -j"$(nproc)" --target "${targets[@]}" >/dev/null

# Huge sizes must fail with ATTN_ERR_NO_MEMORY, not abort the sanitizer's
# allocator; leaks are errors.
export ASAN_OPTIONS=allocator_may_return_null=1:detect_leaks=1
export UBSAN_OPTIONS=print_stacktrace=1
export FUZZ_VERBOSE=1
total=0
for t in "${targets[@]}"; do
  mkdir -p "$build/corpus/$t"
  log="$build/$t.log"
  if ! "$build/tests/fuzz/$t" -max_total_time="$seconds" -max_len=8192 \
      -timeout=30 -rss_limit_mb=4096 -print_final_stats=1 \
      -artifact_prefix="$build/" "$build/corpus/$t" "tests/fuzz/corpus/$t" \
      >"$log" 2>&1; then
    tail -n 40 "$log" >&2
    echo "fuzz: $t failed; the input is in $build/crash-* (log: $log)" >&2
    exit 1
  fi
  execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log")
  checks=$(grep -h "calls checked" "$log" | tail -n 1 || true)
  total=$((total + execs))
  echo "fuzz: $t: $execs inputs in ${seconds}s, no failure ($checks)"
done
echo "fuzz: $total inputs in all"
