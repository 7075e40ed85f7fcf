#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# Records the ABI of the current tree as the released one. Run it on
# purpose only: when a release is cut, or when docs/ABI.md says the
# baseline must move. It regenerates, from a RelWithDebInfo build in
# build/pkg-abi:
#
#   abi/libattn.so.<N>.abi        libabigail dump (abidw) that abi/check.sh
#                                 compares new builds against
#   abi/attn.abignore             its name_regexp line: the structs that
#                                 start with struct_size (fields may be
#                                 appended to those)
#   debian/libattn<N>.symbols     Debian symbols file; symbols already
#                                 listed keep their version, new ones get
#                                 the library's current version
#
# It refuses to record a library whose exports do not match the public
# header and version script (scripts/check-exports.sh), and one that lost a
# symbol of the previous record unless ATTN_ABI_BREAK=1 is set (an
# incompatible change: bump the SONAME first, see docs/ABI.md).
# Afterwards: review `git diff abi debian`, then commit both.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
build="$root/build/pkg-abi"
cd "$root"

cmake -S . -B "$build" -DCMAKE_BUILD_TYPE=RelWithDebInfo \
  -DBUILD_SHARED_LIBS=ON -DATTN_BUILD_TESTS=OFF -DATTN_BUILD_EXAMPLES=OFF \
  -DATTN_BUILD_BENCH=OFF -DATTN_BUILD_DOCS=OFF >/dev/null
cmake --build "$build" -j"$(nproc)" >/dev/null
lib="$build/libattn.so"
bash scripts/check-exports.sh "$lib"

soname="$(objdump -p "$lib" | awk '$1 == "SONAME" { print $2 }')"
major="${soname##*.so.}"
realname="$(basename "$(readlink -f "$lib")")"
version="${realname#libattn.so.}" # the file is named after the full version
if [ -z "$major" ] || [ -z "$version" ] || [ "$version" = "$realname" ]; then
  echo "abi-update: cannot read SONAME and version of $lib" >&2
  exit 1
fi
echo "abi-update: $soname, version $version"

# 1. The libabigail dump. Private types (defined outside include/attn) are
# dropped, and nothing machine-specific (paths, DT_NEEDED, which BLAS) is
# kept, so any machine regenerates the same file.
abidw --headers-dir include/attn --drop-private-types --no-corpus-path \
  --no-comp-dir-path --no-elf-needed --short-locs --type-id-style hash \
  --out-file "abi/$soname.abi" "$lib"

# 2. The structs that may grow: every struct whose first field is
# size_t struct_size in a public header.
structs="$(for h in include/attn/*.h; do
  cc -w -fpreprocessed -dD -E -P -x c "$h"
done | tr '\n' ' ' |
  grep -oE 'struct[[:space:]]+[A-Za-z_][A-Za-z0-9_]*[[:space:]]*\{[[:space:]]*size_t[[:space:]]+struct_size[[:space:]]*;' |
  sed -E 's/^struct[[:space:]]+([A-Za-z0-9_]+).*/\1/' | sort -u | paste -sd '|')"
if [ -z "$structs" ]; then
  echo "abi-update: no struct_size struct found in include/attn" >&2
  exit 1
fi
sed -i -E 's/^([[:space:]]*name_regexp = )\^\(.*\)\$$/\1^('"$structs"')$/' \
  abi/attn.abignore
grep -qF "name_regexp = ^($structs)\$" abi/attn.abignore || {
  echo "abi-update: could not update the struct list in abi/attn.abignore" >&2
  exit 1
}

# 3. The Debian symbols file: the exported symbols with their version node,
# plus the nodes themselves, each with the first version that had it.
symbols="debian/libattn$major.symbols"
declare -A since=()
if [ -f "$symbols" ]; then
  while read -r sym ver; do
    since["$sym"]="$ver"
  done < <(grep '^ ' "$symbols" | awk '{ print $1, $2 }')
fi
nm -D --defined-only --with-symbol-versions "$lib" | awk '
  $2 == "A" { print $3 "@" $3; next }
  NF >= 3 { n = $3; sub(/@@/, "@", n); print n }' | sort -u >"$build/symbols.now"
lost=0
for sym in "${!since[@]}"; do
  if ! grep -qxF -- "$sym" "$build/symbols.now"; then
    echo "abi-update: $sym was exported and is gone: an ABI break" >&2
    lost=1
  fi
done
if [ "$lost" -ne 0 ] && [ "${ATTN_ABI_BREAK:-0}" != 1 ]; then
  echo "abi-update: refusing; bump the SONAME (docs/ABI.md) or set" \
    "ATTN_ABI_BREAK=1 before the first release" >&2
  exit 1
fi
{
  echo "libattn.so.$major libattn$major #MINVER#"
  echo "* Build-Depends-Package: libattn-dev"
  while read -r sym; do
    echo " $sym ${since[$sym]:-$version}"
  done <"$build/symbols.now"
} >"$symbols.new"
mv "$symbols.new" "$symbols"

echo "abi-update: wrote abi/$soname.abi, abi/attn.abignore, $symbols"
bash abi/check.sh "$lib"
if git rev-parse --is-inside-work-tree >/dev/null 2>&1; then
  git --no-pager diff --stat -- abi debian
fi
