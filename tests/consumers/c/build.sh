#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# Builds the C consumer with the flags pkg-config gives for attn, as a user
# would, and runs it:
#   tests/consumers/c/build.sh OUTDIR [pkg-config options, e.g. --static]
# PKG_CONFIG_PATH selects which installed libattn is used. The program is
# C11 and compiled with -Wall -Wextra -Wpedantic -Werror.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
out="$1"
shift
mkdir -p "$out"
flags="$(pkg-config "$@" --cflags --libs attn)"
echo "consumer_c: cc ... $flags"
# shellcheck disable=SC2086 # the flags are meant to be split
${CC:-cc} -std=c11 -Wall -Wextra -Wpedantic -Werror -O2 \
  -o "$out/consumer_c" "$here/main.c" $flags
# A prefix outside the loader's path is found through LD_LIBRARY_PATH.
libdir="$(pkg-config --variable=libdir attn)"
LD_LIBRARY_PATH="$libdir${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}" "$out/consumer_c"
