#!/usr/bin/env bash
# Warnings-as-errors build and the CMocka suite, then the same suite under
# AddressSanitizer and UBSan (Debug; UBSan findings abort the test, since
# the build uses -fno-sanitize-recover=all).
#
# A test that hangs fails after --timeout seconds instead of stalling CI; an
# empty suite (a broken tests/CMakeLists.txt) is an error, not a pass. The
# whole stage takes a few minutes on 2 cores, most of it the sanitizer
# build of the reference comparisons.
set -euo pipefail
bash scripts/deps.sh
cmake -S . -B build/ci -DCMAKE_BUILD_TYPE=Release -DATTN_WERROR=ON
cmake --build build/ci -j"$(nproc)"
ctest --test-dir build/ci --output-on-failure --no-tests=error \
  --timeout 300 -j2
cmake -S . -B build/asan -DCMAKE_BUILD_TYPE=Debug -DATTN_WERROR=ON \
  -DATTN_SANITIZE=ON -DATTN_BUILD_BENCH=OFF
cmake --build build/asan -j"$(nproc)"
ASAN_OPTIONS=detect_leaks=1 UBSAN_OPTIONS=print_stacktrace=1 \
  ctest --test-dir build/asan --output-on-failure --no-tests=error \
  --timeout 900 -j2
