#!/usr/bin/env bash
# ABI check of a freshly built libattn.so against the released baseline
# abi/libattn.so.<SONAME major>.abi. Fails on any change that can break a
# program built against the baseline: a removed function, a changed
# signature, a changed type layout. Allowed (abi/attn.abignore): new
# functions, and fields appended to the structs that start with
# struct_size.
#
#   abi/check.sh BUILD_DIR/libattn.so
#
# The library must be built with debug information (RelWithDebInfo or
# Debug), since libabigail reads the types from DWARF. docs/ABI.md says
# when and how the baseline may change.
set -euo pipefail
abidir="$(cd "$(dirname "$0")" && pwd)"
root="$(dirname "$abidir")"
lib="$1"
soname="$(objdump -p "$lib" | awk '$1 == "SONAME" { print $2 }')"
baseline="$abidir/$soname.abi"
suppressions="$abidir/attn.abignore"
if [ ! -f "$baseline" ]; then
  echo "abi-check: no baseline $baseline for SONAME $soname." >&2
  echo "abi-check: a new SONAME needs a new baseline: scripts/abi-update.sh" >&2
  exit 1
fi
if ! readelf -S "$lib" | grep -q '\.debug_info'; then
  echo "abi-check: $lib has no debug information; build it with -g" >&2
  exit 1
fi
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
fail=0

# 1. libabigail's comparison, with the allowed changes suppressed. Any exit
# status but 0 is a failure: 4 is an ABI change abidiff cannot prove
# incompatible (a struct that grew in the middle, say), 8 and 12 are
# incompatible changes (a removed function).
status=0
abidiff --headers-dir2 "$root/include/attn" --suppressions "$suppressions" \
  "$baseline" "$lib" >"$tmp/report" || status=$?
if [ "$status" -ne 0 ]; then
  cat "$tmp/report"
  echo "abi-check: abidiff reports ABI changes against $baseline" \
    "(exit status $status)" >&2
  fail=1
fi

# 2. The suppression for appended fields is broader than its name: this
# libabigail also lets a retyped field through. So, for every struct that
# the suppression covers, the baseline's fields (offset, name, type) must
# reappear unchanged, in order, at the start of the new layout.
abidw --headers-dir "$root/include/attn" --drop-private-types \
  --no-corpus-path --no-comp-dir-path --no-elf-needed --short-locs \
  --type-id-style hash --out-file "$tmp/new.abi" "$lib"
structs="$(sed -n 's/^[[:space:]]*name_regexp = \^(\(.*\))\$$/\1/p' \
  "$suppressions" | tail -n 1 | tr '|' ' ')"
fields() { # fields FILE STRUCT: "offset name type-id" per data member
  awk -v want="$2" '
    $1 == "<class-decl" && index($0, "name='\''" want "'\''") &&
      !/\/>[[:space:]]*$/ { inside = 1 }
    inside && /<data-member/ {
      match($0, /layout-offset-in-bits='\''[0-9]+'\''/)
      off = substr($0, RSTART + 23, RLENGTH - 24)
    }
    inside && /<var-decl/ {
      match($0, /name='\''[^'\'']*'\''/); name = substr($0, RSTART + 6, RLENGTH - 7)
      match($0, /type-id='\''[^'\'']*'\''/); type = substr($0, RSTART + 9, RLENGTH - 10)
      print off, name, type
    }
    inside && /<\/class-decl>/ { exit }' "$1"
}
for s in $structs; do
  fields "$baseline" "$s" >"$tmp/old.$s"
  fields "$tmp/new.abi" "$s" >"$tmp/new.$s"
  n="$(wc -l <"$tmp/old.$s")"
  if [ "$n" -eq 0 ]; then
    continue # not reachable from the baseline's functions
  fi
  if ! head -n "$n" "$tmp/new.$s" | cmp -s - "$tmp/old.$s"; then
    echo "abi-check: the released fields of struct $s changed" \
      "(offset name type-id; - baseline, + now):" >&2
    diff "$tmp/old.$s" <(head -n "$n" "$tmp/new.$s") >&2 || true
    fail=1
  fi
done

if [ "$fail" -ne 0 ]; then
  echo "abi-check: FAILED. If the change is intended, read docs/ABI.md." >&2
  exit 1
fi
echo "abi-check: $lib is ABI compatible with $(basename "$baseline")"
