#!/usr/bin/env bash
# Reliability checks beyond the unit suites of 10-unit.sh (which also run
# the allocation-failure sweep, tests/test_alloc_fail.c, with and without
# ASan's leak checker). docs/RELIABILITY.md says what each covers.
#
# 1. The Release suite of build/ci again with OpenBLAS forced to other
#    kernel families (OPENBLAS_CORETYPE): results the tests compare must
#    not depend on the CPU's kernels.
# 2. The suite built against the generic BLAS and run with Debian's
#    reference libblas.so.3 (all but test_threads).
# 3. The thread tests under ThreadSanitizer (Clang).
# 4. Each libFuzzer target for FUZZ_SECONDS (default 45) under ASan and
#    UBSan (scripts/fuzz.sh; longer runs: scripts/fuzz.sh -t SECONDS).
#
# About 7 minutes on 2 cores from scratch, 4 with its builds up to date.
set -euo pipefail
bash scripts/deps.sh clang libclang-rt-14-dev libblas-dev libblas3
jobs=$(nproc)
step() { echo "--- reliability: $*"; }

if [ ! -x build/ci/tests/test_api ]; then
  cmake -S . -B build/ci -DCMAKE_BUILD_TYPE=Release -DATTN_WERROR=ON
  cmake --build build/ci -j"$jobs"
fi
for core in Sandybridge Prescott; do
  step "Release suite with OPENBLAS_CORETYPE=$core"
  OPENBLAS_CORETYPE=$core OPENBLAS_VERBOSE=2 build/ci/tests/test_api 2>&1 |
    grep -i "core:" | head -n 1 || true
  OPENBLAS_CORETYPE=$core ctest --test-dir build/ci --output-on-failure \
    --no-tests=error --timeout 300 -j2
done

step "suite against the reference BLAS (ATTN_BLAS=generic)"
cmake -S . -B build/ci-generic -DCMAKE_BUILD_TYPE=Release -DATTN_WERROR=ON \
  -DATTN_BLAS=generic -DATTN_BUILD_BENCH=OFF -DATTN_BUILD_EXAMPLES=OFF
cmake --build build/ci-generic -j"$jobs"
ref_blas="/usr/lib/$(gcc -print-multiarch)/blas"
LD_LIBRARY_PATH="$ref_blas" ldd build/ci-generic/libattn.so |
  grep -q "libblas.so.3 => $ref_blas/libblas.so.3" ||
  { echo "the reference libblas.so.3 was not picked up" >&2; exit 1; }
# test_threads (thread counts against each other, BLAS-independent) is left
# out: its large products take minutes with the reference BLAS.
LD_LIBRARY_PATH="$ref_blas" ctest --test-dir build/ci-generic \
  --output-on-failure --no-tests=error --timeout 600 -j2 -E '^test_threads$'

step "thread tests under ThreadSanitizer"
cmake -S . -B build/tsan -DCMAKE_C_COMPILER=clang -DCMAKE_BUILD_TYPE=Debug \
  -DCMAKE_C_FLAGS="-fsanitize=thread -O1 -g" \
  -DCMAKE_EXE_LINKER_FLAGS="-fsanitize=thread" -DBUILD_SHARED_LIBS=OFF \
  -DATTN_WERROR=ON -DATTN_BUILD_BENCH=OFF -DATTN_BUILD_EXAMPLES=OFF
tsan_tests=(test_pool test_runtime test_threads test_alloc_fail)
cmake --build build/tsan -j"$jobs" --target "${tsan_tests[@]}"
regex="^($(IFS='|'; echo "${tsan_tests[*]}"))\$"
TSAN_OPTIONS="halt_on_error=1 second_deadlock_stack=1" \
  ctest --test-dir build/tsan -R "$regex" --output-on-failure \
  --no-tests=error --timeout 900 -j1

step "fuzz targets, ${FUZZ_SECONDS:-45} s each"
FUZZ_REBUILD=1 bash scripts/fuzz.sh -t "${FUZZ_SECONDS:-45}" -b build/fuzz-ci
