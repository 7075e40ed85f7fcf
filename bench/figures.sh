#!/bin/bash
# SPDX-License-Identifier: MIT
# Reruns the measurements behind the figures of docs/PERFORMANCE.md, in
# one go, and keeps every program's output in OUT:
#   bash bench/figures.sh [BUILD] [OUT]     (defaults: build, figures)
# BUILD is a Release build of this tree (cmake -S . -B build && cmake
# --build build -j). The ONNX Runtime and PyTorch comparisons run when
# node/npm with Debian's python3-onnx, and python3-torch, are installed
# (apt-get install -y nodejs npm python3-onnx python3-numpy python3-torch);
# otherwise they are skipped with a note. Every comparison runs ROUNDS
# interleaved rounds (default 9; the median of per-round ratios then
# moves less from run to run on a shared host than with 5). It takes
# about 30 minutes on 2 CPUs.
# Run it on a machine doing nothing else: every figure is a ratio to a
# reference measured in the same run, but a busy machine widens spreads.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
build=${1:-build}
out=${2:-figures}
bench=$build/bench
rounds=${ROUNDS:-9}
mkdir -p "$out"
py=/usr/bin/python3

{
  echo "libattn commit: $(git -C "$here" rev-parse --short HEAD 2>/dev/null ||
    echo unknown)"
  lscpu | grep -E 'Model name|^CPU\(s\)|Thread|L1d|L2|L3|Flags' | cut -c1-120
  dpkg-query -W -f '${Package} ${Version}\n' 'libopenblas0*' 2>/dev/null || true
  uptime
} | tee "$out/machine.txt"

# shellcheck disable=SC2054 # the commas belong to bench_forward's case strings
cases=(--preset targets
  name=B16-L128-E1024-H16,B=16,L=128,E=1024,H=16
  name=B4-L256-E256-H4,B=4,L=256,E=256,H=4)

echo "== forward passes against the sgemm ($rounds rounds)"
"$bench/bench_forward" --rounds "$rounds" --min-time 0.3 "${cases[@]}" |
  tee "$out/forward.txt"
"$py" "$here/forward_ratios.py" causal-B1-L4096/self-B1-L4096 \
  self-B1-L4096-t1/self-B1-L4096-t2 <"$out/forward.txt" |
  tee "$out/forward_ratios.txt"

echo "== the two attention cores in whole forward passes ($rounds rounds)"
"$bench/bench_forward" --rounds "$rounds" --min-time 0.3 --ref-size 1024 \
  name=packed-B8-L64,B=8,L=64,core=packed name=blas-B8-L64,B=8,L=64,core=blas \
  name=packed-L4096,B=1,L=4096,core=packed \
  name=blas-L4096,B=1,L=4096,core=blas \
  name=packed-Lq4,B=8,Lq=4,Lk=1024,core=packed \
  name=blas-Lq4,B=8,Lq=4,Lk=1024,core=blas | tee "$out/cores.txt"
"$py" "$here/forward_ratios.py" packed-B8-L64/blas-B8-L64 \
  packed-L4096/blas-L4096 packed-Lq4/blas-Lq4 <"$out/cores.txt" |
  tee "$out/cores_ratios.txt"

echo "== projection blocks ($rounds rounds)"
"$bench/bench_linear" --rounds "$rounds" --min-time 0.3 \
  512x1536x512 512x512x512 1024x1536x512 4096x1024x768 4096x1536x512 \
  2048x3072x1024 | tee "$out/linear.txt"

echo "== the attention core alone, causal against not ($rounds rounds)"
for _ in $(seq "$rounds"); do
  for causal in 0 1; do
    "$bench/bench_core" 1 4096 512 8 0 0 0 2 $causal 3
  done
done | tee "$out/core.txt"
"$py" - "$out/core.txt" <<'PY' | tee "$out/core_ratio.txt"
import re, statistics, sys
t = {0: [], 1: []}
for line in open(sys.argv[1]):
    m = re.search(r"causal=(\d).*median_ms=([0-9.]+)", line)
    if m:
        t[int(m.group(1))].append(float(m.group(2)))
r = [c / n for c, n in zip(t[1], t[0])]
print(f"core alone, causal / not: {statistics.median(r):.3f} "
      f"({min(r):.3f}-{max(r):.3f}) over {len(r)} rounds")
PY

if command -v npm >/dev/null && "$py" -c 'import onnx, numpy' 2>/dev/null; then
  echo "== ONNX Runtime ($rounds rounds)"
  "$py" "$here/compare_ort.py" --bench "$bench/bench_forward" \
    --rounds "$rounds" --min-time 0.3 | tee "$out/ort.txt"
else
  echo "ONNX Runtime comparison skipped: needs npm and python3-onnx" |
    tee "$out/ort.txt"
fi

if "$py" -c 'import torch' 2>/dev/null; then
  echo "== PyTorch ($rounds rounds)"
  "$py" "$here/compare_torch.py" --bench "$bench/bench_forward" \
    --rounds "$rounds" \
    --min-time 0.3 --torch-threads 0 \
    --case name=self-B8-L64,B=8,L=64 --case name=self-B4-L256,B=4,L=256 \
    --case name=self-B2-L1024,B=2,L=1024 \
    --case name=self-B1-L4096,B=1,L=4096 \
    --case name=causal-B1-L4096,B=1,L=4096,causal=1 \
    --case name=cross-B4-Lq256-Lk1024,B=4,Lq=256,Lk=1024,kdim=768,vdim=768 \
    --case name=B16-L128-E1024-H16,B=16,L=128,E=1024,H=16 \
    --case name=B4-L256-E256-H4,B=4,L=256,E=256,H=4 | tee "$out/torch.txt"
else
  echo "PyTorch comparison skipped: needs python3-torch" | tee "$out/torch.txt"
fi

echo "== grouped-query decoding steps against the memory bandwidth"
"$bench/bench_decode" --contexts 4096,16384 --batches 1,8 --kv-heads 2 \
  --no-full | tee "$out/decode.txt"
uptime | tee -a "$out/machine.txt"
