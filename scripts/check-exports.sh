#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# Checks that libattn exports exactly its public API.
#
#   scripts/check-exports.sh [--headers DIR] [--map FILE] LIBRARY
#
# For a shared library (libattn.so*): the dynamic symbols it defines must be
# exactly the functions declared ATTN_API in DIR/*.h (default include/attn),
# each bound to a version node of the version script FILE (default
# src/libattn.map), which in turn must list exactly those functions. Data
# symbols, internal helpers (attn_fail, ...) and anything from linked-in
# code are refused.
#
# For a static library (libattn.a): every declared function must be defined
# and every global symbol must carry the attn_ prefix, so that static users
# get no name clashes.
#
# Prints every disagreement, then exits 1 if there was any.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
headers="$root/include/attn"
map="$root/src/libattn.map"
while [ $# -gt 1 ]; do
  case "$1" in
  --headers) headers="$2"; shift 2 ;;
  --map) map="$2"; shift 2 ;;
  *) break ;;
  esac
done
if [ $# -ne 1 ]; then
  echo "usage: $0 [--headers DIR] [--map FILE] LIBRARY" >&2
  exit 2
fi
lib="$1"
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
fail=0
problem() {
  echo "check-exports: $*" >&2
  fail=1
}

# Functions declared ATTN_API: strip comments with the preprocessor (macros
# are left alone), drop directives (joined with their continuation lines),
# cut the text into declarations at each ';' and take the identifier before
# the first '(' of each ATTN_API one.
for h in "$headers"/*.h; do
  cc -w -fpreprocessed -dD -E -P -x c "$h"
done | sed -e ':a' -e '/\\$/{N;s/\\\n/ /;ba' -e '}' |
  grep -v '^[[:space:]]*#' | tr '\n' ' ' | tr ';' '\n' |
  grep -w ATTN_API |
  sed -n 's/^[^(]*[^A-Za-z0-9_]\([A-Za-z_][A-Za-z0-9_]*\)[[:space:]]*(.*/\1/p' |
  sort -u >"$tmp/declared"
if [ ! -s "$tmp/declared" ]; then
  problem "no ATTN_API function found in $headers/*.h"
fi
while read -r name; do
  case "$name" in
  attn_*) ;;
  *) problem "ATTN_API function '$name' lacks the attn_ prefix" ;;
  esac
done <"$tmp/declared"

case "$lib" in
*.a)
  nm --defined-only --extern-only "$lib" |
    awk 'NF == 3 { print $2, $3 }' | sort -u >"$tmp/globals"
  awk '{ print $2 }' "$tmp/globals" | sort -u >"$tmp/defined"
  while read -r name; do
    problem "$lib: declared function $name is not defined"
  done < <(comm -23 "$tmp/declared" "$tmp/defined")
  while read -r name; do
    problem "$lib: global symbol $name lacks the attn_ prefix"
  done < <(grep -v '^attn_' "$tmp/defined" || true)
  ;;
*)
  # Names and version nodes of the version script.
  awk '
    { sub(/\/\*.*\*\//, "") }
    /\/\*/ { incomment = 1 }
    incomment { if (/\*\//) incomment = 0; next }
    /^[[:space:]]*[A-Za-z_][A-Za-z0-9_.]*[[:space:]]*\{/ {
      n = $1; sub(/\{.*/, "", n); print "node", n; section = ""; next
    }
    /global:/ { section = "global" }
    /local:/ { section = "local" }
    {
      line = $0; sub(/^.*(global|local):/, "", line)
      while (match(line, /[^[:space:];{}]+[[:space:]]*;/)) {
        s = substr(line, RSTART, RLENGTH); sub(/[[:space:]]*;$/, "", s)
        if (section == "global") print "name", s
        line = substr(line, RSTART + RLENGTH)
      }
    }' "$map" >"$tmp/map"
  awk '$1 == "node" { print $2 }' "$tmp/map" | sort -u >"$tmp/nodes"
  awk '$1 == "name" { print $2 }' "$tmp/map" | sort >"$tmp/listed.all"
  sort -u "$tmp/listed.all" >"$tmp/listed"
  while read -r name; do
    problem "$map: $name is listed more than once"
  done < <(uniq -d "$tmp/listed.all")
  while read -r name; do
    case "$name" in
    *[*?[]*) problem "$map: pattern '$name' in a global section; list names" ;;
    esac
  done <"$tmp/listed"
  while read -r name; do
    problem "$name is declared ATTN_API but not in $map:" \
      "add the line '$name;' to the newest version node"
  done < <(comm -23 "$tmp/declared" "$tmp/listed")
  while read -r name; do
    problem "$map lists $name, which no public header declares ATTN_API"
  done < <(comm -13 "$tmp/declared" "$tmp/listed" | grep -v '[*?[]' || true)

  # What the library exports: "TYPE NAME VERSION" per defined dynamic symbol.
  nm -D --defined-only --with-symbol-versions "$lib" | awk '
    NF >= 3 {
      n = $3; v = ""
      if (index(n, "@")) { v = n; sub(/^[^@]*@+/, "", v); sub(/@.*/, "", n) }
      print $2, n, v
    }' >"$tmp/exports"
  : >"$tmp/exported"
  while read -r type name version; do
    if [ "$type" = A ] && grep -qx -- "$name" "$tmp/nodes"; then
      continue # the version node's own marker symbol
    fi
    echo "$name" >>"$tmp/exported"
    case "$type" in
    T | i) ;;
    *) problem "$lib exports $name as a non-function (nm type $type)" ;;
    esac
    if [ -z "$version" ]; then
      problem "$lib exports $name without a version node"
    elif ! grep -qx -- "$version" "$tmp/nodes"; then
      problem "$lib exports $name@$version, a node not in $map"
    fi
  done <"$tmp/exports"
  sort -u -o "$tmp/exported" "$tmp/exported"
  while read -r name; do
    problem "$lib exports $name, which is not a public ATTN_API function"
  done < <(comm -13 "$tmp/declared" "$tmp/exported")
  while read -r name; do
    problem "$lib does not export $name, declared ATTN_API (not implemented?)"
  done < <(comm -23 "$tmp/declared" "$tmp/exported")
  ;;
esac

if [ "$fail" -ne 0 ]; then
  exit 1
fi
echo "check-exports: $lib provides exactly the $(wc -l <"$tmp/declared")" \
  "public functions"
