#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# Installing where users install (issue 13): libattn is installed every way
# CMake offers, and each time a C consumer is built from nothing but
# PKG_CONFIG_PATH, as a user with a private prefix would:
#
#   1. cmake --install --prefix DIR (configured for the default /usr/local)
#   2. -DCMAKE_INSTALL_PREFIX=DIR with a multiarch libdir (lib/<triplet>)
#   3. DESTDIR staging, the consumer built against the staged tree
#   4. the tree of 1 moved elsewhere as a whole
#   5. --prefix with ATTN_PKGCONFIG_RELOCATABLE=OFF (an absolute prefix in
#      the file, as the Debian packages have it)
#   6. an absolute CMAKE_INSTALL_LIBDIR outside the prefix, with --prefix:
#      the libdir stays absolute, the headers follow --prefix
#
# For each, the consumer must take attn.h from the installed tree (the
# compiler's own record of the headers it read, `cc -M`) and the loader
# must resolve libattn.so.0 inside it (ldd); a system copy of either fails
# the stage. The check is itself checked: pointed at a decoy copy it must
# refuse. Also: pkg-config --cflags carries no dependency's include
# directory, and the documentation (ATTN_BUILD_DOCS) installs into
# share/doc/attn and share/man/man3.
#
# Build tree: build/install. Everything else goes to a temporary directory.
set -euo pipefail
cd "${ATTN_ROOT:-$(dirname "$0")/../..}"
bash scripts/deps.sh pkgconf doxygen man-db

tmp="$(mktemp -d /tmp/attn-install.XXXXXX)"
trap 'rm -rf "$tmp"' EXIT
die() {
  echo "install-prefix: $*" >&2
  exit 1
}
step() { echo "--- install-prefix: $*"; }
build=build/install
configure() {
  cmake -S . -B "$build" -DCMAKE_BUILD_TYPE=Release -DATTN_WERROR=ON \
    -DATTN_BUILD_TESTS=OFF -DATTN_BUILD_EXAMPLES=OFF -DATTN_BUILD_BENCH=OFF \
    "$@" >/dev/null
}

# consumer NAME PCDIR PREFIX [LIBROOT]: builds tests/consumers/c/main.c
# with the flags of the attn.pc in PCDIR, in an environment with no other
# search path, and checks that attn.h came from under PREFIX and libattn from
# under LIBROOT (default PREFIX). Returns 1 (with the reason on stderr)
# otherwise.
consumer() {
  local name="$1" pcdir="$2" want want_lib
  want="$(realpath "$3")"
  want_lib="$(realpath "${4:-$3}")"
  local out="$tmp/consumer-$name"
  mkdir -p "$out"
  local -a clean_env=(env -u CPATH -u C_INCLUDE_PATH -u LIBRARY_PATH
    -u LD_LIBRARY_PATH -u PKG_CONFIG_LIBDIR -u PKG_CONFIG_SYSROOT_DIR
    PKG_CONFIG_PATH="$pcdir")
  local cflags libs libdir
  cflags="$("${clean_env[@]}" pkg-config --cflags attn)"
  libs="$("${clean_env[@]}" pkg-config --libs attn)"
  libdir="$("${clean_env[@]}" pkg-config --variable=libdir attn)"
  # shellcheck disable=SC2086 # the flags are meant to be split
  "${clean_env[@]}" cc -std=c11 -Wall -Wextra -Wpedantic -Werror -O2 \
    $cflags -M -MT x tests/consumers/c/main.c >"$out/deps"
  local header
  header="$(tr ' \\' '\n\n' <"$out/deps" | grep '/attn/attn\.h$' | head -1)"
  [ -n "$header" ] || { echo "$name: attn.h not among the headers read" >&2; return 1; }
  header="$(realpath "$header")"
  if [[ "$header" != "$want"/* ]]; then
    echo "$name: attn.h taken from $header, not from under $want" >&2
    return 1
  fi
  # shellcheck disable=SC2086
  "${clean_env[@]}" cc -std=c11 -Wall -Wextra -Wpedantic -Werror -O2 \
    -o "$out/consumer_c" tests/consumers/c/main.c $cflags $libs \
    -Wl,-rpath,"$libdir"
  local lib
  lib="$("${clean_env[@]}" ldd "$out/consumer_c" | awk '$1 == "libattn.so.0" { print $3 }')"
  [ -n "$lib" ] && [ "$lib" != "not" ] ||
    { echo "$name: the loader finds no libattn.so.0" >&2; return 1; }
  lib="$(realpath "$lib")"
  if [[ "$lib" != "$want_lib"/* ]]; then
    echo "$name: libattn.so.0 resolves to $lib, not under $want_lib" >&2
    return 1
  fi
  "${clean_env[@]}" "$out/consumer_c" >"$out/run.log" ||
    { cat "$out/run.log" >&2; echo "$name: the consumer failed" >&2; return 1; }
  echo "install-prefix: $name: attn.h from $header, libattn from $lib"
}

# The cflags a shared-library consumer gets: the include directory alone.
only_include_dir() { # only_include_dir PCDIR
  local flags
  flags="$(PKG_CONFIG_PATH="$1" pkg-config --cflags attn)"
  # shellcheck disable=SC2086
  set -- $flags
  [ $# -eq 1 ] && [[ "$1" == -I* ]] ||
    die "pkg-config --cflags attn gives '$flags', want only -I<includedir>"
}

# ---------------------------------------------------------------------------
step "cmake --install --prefix (configured for the default prefix)"
configure -DCMAKE_INSTALL_PREFIX=/usr/local -DCMAKE_INSTALL_LIBDIR=lib \
  -DATTN_BUILD_DOCS=ON -DATTN_PKGCONFIG_RELOCATABLE=ON
cmake --build "$build" -j"$(nproc)" >/dev/null
cmake --install "$build" --prefix "$tmp/prefix" >/dev/null
pc="$tmp/prefix/lib/pkgconfig"
grep -q "$tmp" "$pc/attn.pc" && die "attn.pc names the install directory"
only_include_dir "$pc"
PKG_CONFIG_PATH="$pc" pkg-config --validate attn
consumer prefix "$pc" "$tmp/prefix"

step "the check refuses a decoy copy"
# A tree like the installed one, and an attn.pc that points at it instead:
# the consumer builds and runs, but from the wrong copy, which the check
# must name.
cp -a "$tmp/prefix" "$tmp/decoy"
mkdir -p "$tmp/decoy-pc"
sed "s|^prefix=.*|prefix=$tmp/decoy|" "$pc/attn.pc" >"$tmp/decoy-pc/attn.pc"
if consumer decoy "$tmp/decoy-pc" "$tmp/prefix" 2>"$tmp/decoy.err"; then
  die "the check accepted a consumer built against $tmp/decoy"
fi
grep -q "attn.h taken from $tmp/decoy/" "$tmp/decoy.err" ||
  die "the check did not name the decoy: $(cat "$tmp/decoy.err")"
rm -rf "$tmp/decoy" "$tmp/decoy-pc"

step "documentation installed with the library"
doc="$tmp/prefix/share/doc/attn"
for f in html/index.html CHANGELOG.md README.md LICENSE; do
  [ -s "$doc/$f" ] || die "no $doc/$f"
done
man3="$tmp/prefix/share/man/man3"
for page in libattn attn_masks attn_threads attn_errors attn_layers \
  attn_decoding attn.h attn_forward attn_layer_load_safetensors \
  attn_config attn_mask attn_options; do
  [ -s "$man3/$page.3" ] || die "no man page $page(3)"
done
# Only the library's names: a page per struct field (batch.3, scale.3, ...)
# would clash with other packages.
stray="$(find "$man3" -name '*.3' ! -name 'attn*' ! -name 'ATTN_*' \
  ! -name 'libattn.3' -printf '%f ')"
[ -z "$stray" ] || die "man pages outside the attn namespace: $stray"
# Every page renders without warnings (from the man directory, where the
# function pages' ".so man3/attn.h.3" resolve), and a function's page
# reaches its documentation.
for page in "$man3"/*.3; do
  (cd "$tmp/prefix/share/man" &&
    MANWIDTH=80 man --warnings -E UTF-8 -l "man3/${page##*/}") \
    >"$tmp/man.txt" 2>"$tmp/man.err" || die "man cannot render $page"
  [ ! -s "$tmp/man.err" ] || die "man warns on $page: $(cat "$tmp/man.err")"
done
(cd "$tmp/prefix/share/man" && MANWIDTH=80 man -l man3/attn_forward.3) \
  >"$tmp/attn_forward.txt"
grep -q 'query \[B, Lq, E\]' "$tmp/attn_forward.txt" ||
  die "attn_forward(3) lacks its documentation"
echo "install-prefix: $(find "$man3" -name '*.3' | wc -l) man pages"

# ---------------------------------------------------------------------------
step "-DCMAKE_INSTALL_PREFIX with a multiarch libdir"
triplet="$(gcc -print-multiarch)"
configure -DCMAKE_INSTALL_PREFIX="$tmp/multiarch" \
  -DCMAKE_INSTALL_LIBDIR="lib/$triplet" -DATTN_BUILD_DOCS=OFF
cmake --build "$build" -j"$(nproc)" >/dev/null
cmake --install "$build" >/dev/null
pc="$tmp/multiarch/lib/$triplet/pkgconfig"
# shellcheck disable=SC2016 # ${pcfiledir} is meant literally
grep -qx 'prefix=${pcfiledir}/../../..' "$pc/attn.pc" ||
  die "attn.pc: prefix not found from the file: $(grep ^prefix= "$pc/attn.pc")"
consumer multiarch "$pc" "$tmp/multiarch"

step "DESTDIR staging"
configure -DCMAKE_INSTALL_PREFIX=/usr/local -DCMAKE_INSTALL_LIBDIR=lib
cmake --build "$build" -j"$(nproc)" >/dev/null
DESTDIR="$tmp/stage" cmake --install "$build" >/dev/null
[ -f "$tmp/stage/usr/local/lib/pkgconfig/attn.pc" ] || die "nothing staged"
consumer destdir "$tmp/stage/usr/local/lib/pkgconfig" "$tmp/stage/usr/local"

step "a moved installation"
mv "$tmp/prefix" "$tmp/moved"
consumer moved "$tmp/moved/lib/pkgconfig" "$tmp/moved"

step "--prefix with an absolute prefix in the file (distributions' choice)"
configure -DCMAKE_INSTALL_PREFIX=/usr/local -DCMAKE_INSTALL_LIBDIR=lib \
  -DATTN_PKGCONFIG_RELOCATABLE=OFF
cmake --build "$build" -j"$(nproc)" >/dev/null
cmake --install "$build" --prefix "$tmp/fixed" >/dev/null
grep -qx "prefix=$tmp/fixed" "$tmp/fixed/lib/pkgconfig/attn.pc" ||
  die "attn.pc does not name --prefix: $(grep ^prefix= "$tmp/fixed/lib/pkgconfig/attn.pc")"
consumer fixed "$tmp/fixed/lib/pkgconfig" "$tmp/fixed"

step "absolute libdir outside the prefix, with --prefix"
configure -DCMAKE_INSTALL_PREFIX=/usr/local \
  -DCMAKE_INSTALL_LIBDIR="$tmp/abs-libdir/lib64" -DATTN_PKGCONFIG_RELOCATABLE=ON
cmake --build "$build" -j"$(nproc)" >/dev/null
cmake --install "$build" --prefix "$tmp/abs-prefix" >/dev/null
pc="$tmp/abs-libdir/lib64/pkgconfig"
grep -qx "libdir=$tmp/abs-libdir/lib64" "$pc/attn.pc" || die "absolute libdir lost"
grep -qx "prefix=$tmp/abs-prefix" "$pc/attn.pc" ||
  die "attn.pc does not follow --prefix: $(grep ^prefix= "$pc/attn.pc")"
[ -f "$tmp/abs-prefix/include/attn/attn.h" ] || die "headers not under --prefix"
consumer absolute-libdir "$pc" "$tmp/abs-prefix" "$tmp/abs-libdir"

step "all install checks passed"
