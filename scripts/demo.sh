#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# Builds libattn and runs the demo on a fresh Debian 12 machine: installs
# what is missing, configures, builds, and prints what each word attends to.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/deps.sh
cmake -S . -B build/demo -DCMAKE_BUILD_TYPE=Release -DATTN_BUILD_TESTS=OFF \
  -DATTN_BUILD_BENCH=OFF
cmake --build build/demo -j"$(nproc)" --target attention_demo
./build/demo/examples/attention_demo
