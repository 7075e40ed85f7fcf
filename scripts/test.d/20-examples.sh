#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# What a newcomer runs first (issue 13), and the sources' format:
#
#   0. Every C source and header is clang-formatted (.clang-format).
#   1. The README's first program: extracted from README.md as printed,
#      identical to the one on the documentation's overview page
#      (docs/manual/overview.md), clang-formatted, compiled as C11 with
#      warnings as errors against the built library, and run.
#   2. The demo (examples/attention_demo.c with the trained model in
#      examples/translation): for sentences of every shape the grammar has,
#      the translation is right and each target word's largest attention
#      weight falls on the source word it translates (the alignment the
#      adjective-noun reordering predicts); the cross-attention rows sum to
#      one.
#   3. The demo refuses a missing, truncated, corrupt or non-finite weight
#      file, printing the library's own message (attn_last_error()).
#
# Build tree: build/ci (shared with 10-unit.sh).
set -euo pipefail
cd "${ATTN_ROOT:-$(dirname "$0")/../..}"
bash scripts/deps.sh clang-format python3

tmp="$(mktemp -d /tmp/attn-examples.XXXXXX)"
trap 'rm -rf "$tmp"' EXIT
die() {
  echo "examples: $*" >&2
  exit 1
}
# The unit stage's build tree, configured the same way: nothing to rebuild.
build=build/ci
cmake -S . -B "$build" -DCMAKE_BUILD_TYPE=Release -DATTN_WERROR=ON >/dev/null
cmake --build "$build" -j"$(nproc)" --target attn attention_demo >/dev/null

echo "--- examples: every C source is clang-formatted (.clang-format)"
unformatted="$(find include src tests examples bench bindings debian -name '*.[ch]' \
  -exec clang-format --style=file:.clang-format --dry-run {} + 2>&1 |
  grep -o '^[^:]*:[0-9]*:' | sort -u || true)"
[ -z "$unformatted" ] || die "not clang-formatted: $unformatted"

echo "--- examples: the README's first program"
# The first ```c block of a Markdown file.
first_c_block() {
  awk '/^```c$/ { inside = 1; next } inside && /^```$/ { exit }
       inside { print }' "$1"
}
first_c_block README.md >"$tmp/first.c"
[ -s "$tmp/first.c" ] || die "no C program in README.md"
grep -q 'int main' "$tmp/first.c" || die "README's first C block has no main()"
first_c_block docs/manual/overview.md >"$tmp/overview.c"
diff -u "$tmp/first.c" "$tmp/overview.c" ||
  die "README.md and docs/manual/overview.md show different first programs"
clang-format --style=file:.clang-format "$tmp/first.c" | diff -u "$tmp/first.c" - ||
  die "the README's program is not clang-formatted"
cc -std=c11 -Wall -Wextra -Wpedantic -Werror -Iinclude -o "$tmp/first" \
  "$tmp/first.c" -L"$build" -lattn
LD_LIBRARY_PATH="$build" "$tmp/first" | tee "$tmp/first.out"
grep -q '^token 4 of row 0 attends to tokens 0..4 with weights' "$tmp/first.out" ||
  die "the README's program printed something unexpected"

echo "--- examples: the demo's alignments"
demo="$build/examples/attention_demo"
"$demo" >"$tmp/demo.out"
cat "$tmp/demo.out"
# expect SOURCE TRANSLATION ALIGNMENT: the demo's lines for that sentence.
expect() {
  "$demo" "$1" >"$tmp/one.out" || die "the demo failed on '$1'"
  grep -qx "translation:  $2" "$tmp/one.out" ||
    die "'$1': $(grep '^translation:' "$tmp/one.out"), want '$2'"
  grep -qx "alignment:    $3" "$tmp/one.out" ||
    die "'$1': $(grep '^alignment:' "$tmp/one.out"), want '$3'"
  # Rows of the cross-attention table sum to one (two decimals each).
  awk '/^cross-attention/ { t = 1; getline; next } t && NF > 1 && $1 != "alignment:" {
         s = 0; for (i = 2; i <= NF; i++) if ($i != ".") s += $i
         if (s < 0.96 || s > 1.04) { print "row " $1 " sums to " s; bad = 1 } }
       END { exit bad }' "$tmp/one.out" || die "'$1': a row does not sum to one"
}
expect "the cat sleeps" "le chat dort" "le<-the chat<-cat dort<-sleeps"
expect "a small bird runs" "un oiseau petit court" \
  "un<-a oiseau<-bird petit<-small court<-runs"
expect "the big black dog sees a small cat" \
  "le chien grand noir voit un chat petit" \
  "le<-the chien<-dog grand<-big noir<-black voit<-sees un<-a chat<-cat petit<-small"
expect "a dog likes the happy old horse" \
  "un chien aime le cheval content vieux" \
  "un<-a chien<-dog aime<-likes le<-the cheval<-horse content<-happy vieux<-old"
expect "the red fish eats a mouse" "le poisson rouge mange un souris" \
  "le<-the poisson<-fish rouge<-red mange<-eats un<-a souris<-mouse"
# Every example the demo prints by itself aligns as well.
[ "$(grep -c '^alignment:' "$tmp/demo.out")" -ge 2 ] || die "demo printed no alignment"
"$demo" --encoder "a cat runs" >"$tmp/encoder.out"
grep -q '^encoder self-attention, head 3$' "$tmp/encoder.out" ||
  die "--encoder does not print the encoder's heads"
if "$demo" "the unicorn sleeps" >/dev/null 2>"$tmp/err"; then
  die "accepted an unknown word"
fi
grep -q "unknown word 'unicorn'" "$tmp/err" || die "no message for an unknown word"

echo "--- examples: bad weight files"
weights=examples/translation/attention.safetensors
# refuse NAME FILE MESSAGE: the demo must fail on FILE and print the
# library's message, which contains MESSAGE.
refuse() {
  if "$demo" --weights "$2" >"$tmp/out" 2>"$tmp/err"; then
    die "the demo accepted a $1 weight file"
  fi
  grep -qF "$3" "$tmp/err" || die "$1 file: expected '$3' in: $(cat "$tmp/err")"
  echo "examples: $1 file refused: $(cat "$tmp/err")"
}
refuse missing "$tmp/none.safetensors" "cannot open weight file"
head -c 20000 "$weights" >"$tmp/truncated.safetensors"
refuse truncated "$tmp/truncated.safetensors" "file is not in the expected format"
cp "$weights" "$tmp/corrupt.safetensors"
printf '{"not":' | dd of="$tmp/corrupt.safetensors" bs=1 seek=8 conv=notrunc 2>/dev/null
refuse corrupt "$tmp/corrupt.safetensors" "file is not in the expected format"
/usr/bin/python3 - "$weights" "$tmp/nan.safetensors" <<'EOF'
import struct, sys
data = bytearray(open(sys.argv[1], "rb").read())
(n,) = struct.unpack_from("<Q", data)
struct.pack_into("<f", data, 8 + n + 4 * 10, float("nan"))
open(sys.argv[2], "wb").write(data)
EOF
refuse non-finite "$tmp/nan.safetensors" "data contain NaN or infinity"
echo "--- examples: all checks passed"
