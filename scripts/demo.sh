#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# Builds libattn and runs the demo on a fresh Debian 12 machine: installs
# what is missing, configures, builds, and shows the attention of a small
# trained translator (examples/translation): for each word of the
# translation, which source word it came from.
#
#   bash scripts/demo.sh                       two example sentences
#   bash scripts/demo.sh "the old cat eats a red fish"
#   bash scripts/demo.sh --encoder "a dog sleeps"   also the encoder's heads
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/deps.sh
cmake -S . -B build/demo -DCMAKE_BUILD_TYPE=Release -DATTN_BUILD_TESTS=OFF \
  -DATTN_BUILD_BENCH=OFF >/dev/null
cmake --build build/demo -j"$(nproc)" --target attention_demo >/dev/null
./build/demo/examples/attention_demo "$@"
