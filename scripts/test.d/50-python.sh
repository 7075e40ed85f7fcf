#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# Python binding: builds libattn, installs bindings/python offline into a
# throwaway virtual environment (which sees Debian's numpy, torch,
# matplotlib and pytest), runs its pytest suite against that installed copy
# (parity with Debian's python3-torch, the README's checkpoint conversions,
# signatures and typing included), then the plot example, then retrains the
# demo's toy translator and runs it through the binding.
set -euo pipefail
bash scripts/deps.sh python3 python3-numpy python3-torch python3-pytest \
  python3-matplotlib python3-setuptools python3-wheel python3-pip python3-venv

py=/usr/bin/python3
build=build/python
cmake -S . -B "$build" -DCMAKE_BUILD_TYPE=Release -DATTN_BUILD_TESTS=OFF \
  -DATTN_BUILD_EXAMPLES=OFF -DATTN_BUILD_BENCH=OFF
cmake --build "$build" -j"$(nproc)"
export ATTN_LIBRARY="$PWD/$build/libattn.so"
export ATTN_REQUIRE_TORCH=1

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

# Install from a clean copy, so that build leftovers in the checkout can
# neither leak into the package nor be left behind by the build.
cp -r bindings/python "$work/src"
rm -rf "$work/src/build" "$work/src"/*.egg-info
"$py" -m venv --system-site-packages "$work/venv"
venv_py="$work/venv/bin/python"
"$venv_py" -m pip install --quiet --no-build-isolation --no-index \
  --no-cache-dir "$work/src"

# The tests must exercise the installed package, not the source tree.
(cd "$work" && "$venv_py" -c '
import os, sys, attn
where = os.path.realpath(attn.__file__)
assert where.startswith(os.path.realpath(sys.prefix)), where
print("attn from", where, "| libattn", attn.library_version, "at",
      attn.library_path)')

# pytest exits 0 with everything skipped and 5 with nothing collected:
# count what ran from the JUnit report instead of trusting the status alone.
"$venv_py" -m pytest -q -p no:cacheprovider -rs \
  --junitxml="$work/junit.xml" bindings/python/tests
"$venv_py" - "$work/junit.xml" <<'EOF'
import sys
import xml.etree.ElementTree as ET
root = ET.parse(sys.argv[1]).getroot()
suite = root if root.tag == "testsuite" else root.find("testsuite")
n = {k: int(suite.get(k, 0)) for k in ("tests", "failures", "errors",
                                       "skipped")}
print("python tests:", n)
if n["failures"] or n["errors"] or n["skipped"] or n["tests"] < 450:
    sys.exit("python suite incomplete: every test must run and pass")
EOF

# Smoke test of the example: it writes both pictures.
"$venv_py" bindings/python/examples/plot_attention.py --out "$work/plots"
for png in attention_cross.png attention_self.png; do
  head -c 8 "$work/plots/$png" | od -An -c | grep -q 'P   N   G' ||
    { echo "example did not write $png" >&2; exit 1; }
done
# The demo's training script (examples/translation/train.py): trained again
# here, its model must translate and align every held-out sentence (the
# script's exit status) and, run through the binding, the example sentence.
# Files identical to the committed ones are reported, not required: another
# CPU or torch build may round differently.
"$py" examples/translation/train.py --out "$work/model" | tail -n 3
"$venv_py" bindings/python/examples/translation_attention.py \
  --model "$work/model" --out "$work/translation.png" >"$work/translation.txt"
grep -qx 'alignment:    le<-the chien<-dog grand<-big noir<-black voit<-sees un<-a chat<-cat petit<-small' \
  "$work/translation.txt" || { cat "$work/translation.txt" >&2; exit 1; }
for f in attention.safetensors embeddings.txt; do
  if cmp -s "$work/model/$f" "examples/translation/$f"; then
    echo "retrained $f: identical to the committed file"
  else
    echo "retrained $f: differs from the committed file (same results)"
  fi
done
echo "python binding: ok"
