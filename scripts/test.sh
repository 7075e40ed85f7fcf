#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# Runs every test of libattn on a fresh Debian 12 machine: installs what is
# missing, then runs each stage in scripts/test.d in order. Stop at the first
# failure.
set -euo pipefail
cd "$(dirname "$0")/.."
export ATTN_ROOT="$PWD"
for stage in scripts/test.d/*.sh; do
  echo "=== ${stage##*/}"
  bash "$stage"
done
echo "=== all stages passed"
