#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# Packaging and ABI (issue 3). Builds libattn the ways users get it, installs
# each build into a temporary prefix and checks it from the outside:
#
#   shared (OpenBLAS, with debug info): exported symbols = public API,
#     SONAME/VERSION, ABI against abi/ (abidiff), API reference (Doxygen,
#     warnings are errors), C consumer via pkg-config, C++17 consumer via
#     find_package(attn CONFIG)
#   static (BUILD_SHARED_LIBS=OFF, absolute CMAKE_INSTALL_LIBDIR): symbol
#     prefix hygiene, both consumers linking statically
#   generic BLAS (ATTN_BLAS=generic): links libblas.so.3 only, and runs with
#     whichever libblas.so.3 the loader is given
#   Debian: dpkg-buildpackage (runs the test suite; builds libattn0,
#     libattn-dev with libattn.a and the manual pages, libattn-doc,
#     python3-attn), lintian, install the packages, build the consumers
#     against them, check the packaged documentation, run the autopkgtests
#     (debian/tests) with the null runner, remove the packages again
#
# Build trees: build/pkg, build/pkg-static, build/pkg-generic. Everything
# else goes to a temporary directory that is removed at the end.
set -euo pipefail
cd "${ATTN_ROOT:-$(dirname "$0")/../..}"
root="$PWD"

bash scripts/deps.sh libblas-dev abigail-tools doxygen debhelper lintian \
  dpkg-dev pkgconf g++ dh-python python3-all python3-setuptools \
  pybuild-plugin-pyproject autopkgtest man-db

# Installing and removing packages needs root: through sudo when not root,
# as scripts/deps.sh does. env passes DEBIAN_FRONTEND on through sudo.
SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO=sudo

tmp="$(mktemp -d /tmp/attn-packaging.XXXXXX)"
installed_debs=0
cleanup() {
  if [ "$installed_debs" -eq 1 ]; then
    $SUDO apt-get -o DPkg::Lock::Timeout=300 purge -y -qq libattn-dev libattn0 \
      libattn-doc python3-attn >/dev/null || true
  fi
  # autopkgtest's output directory belongs to root when it ran through sudo.
  $SUDO rm -rf "$tmp"
}
trap cleanup EXIT
step() { echo "--- packaging: $*"; }
die() {
  echo "packaging: $*" >&2
  exit 1
}
jobs="$(nproc)"
common=(-DATTN_WERROR=ON -DATTN_BUILD_TESTS=OFF -DATTN_BUILD_EXAMPLES=OFF
  -DATTN_BUILD_BENCH=OFF)
version="$(sed -n 's/^project(attn VERSION \([0-9.]*\).*/\1/p' CMakeLists.txt)"
[ -n "$version" ] || die "cannot read the project version from CMakeLists.txt"

# consumers NAME LIBDIR [--static]: the C consumer through pkg-config
# (LIBDIR/pkgconfig/attn.pc) and the C++ consumer through the CMake package
# (LIBDIR/cmake/attn), both built against the libattn installed there.
consumers() {
  local name="$1" libdir="$2"
  shift 2 # the rest: pkg-config options
  PKG_CONFIG_PATH="$libdir/pkgconfig" \
    bash tests/consumers/c/build.sh "$tmp/c-$name" "$@"
  cmake -S tests/consumers/cxx -B "$tmp/cxx-$name" -DCMAKE_BUILD_TYPE=Release \
    -Dattn_DIR="$libdir/cmake/attn" >/dev/null
  cmake --build "$tmp/cxx-$name" -j"$jobs" >/dev/null
  "$tmp/cxx-$name/consumer_cxx"
}

# --------------------------------------------------------------------------
step "shared library (OpenBLAS, RelWithDebInfo)"
cmake -S . -B build/pkg -DCMAKE_BUILD_TYPE=RelWithDebInfo \
  -DBUILD_SHARED_LIBS=ON -DATTN_BLAS=openblas -DATTN_BUILD_DOCS=ON \
  -DCMAKE_INSTALL_PREFIX="$tmp/shared" "${common[@]}" >/dev/null
cmake --build build/pkg -j"$jobs"
cmake --install build/pkg >/dev/null
libdir="$tmp/shared/lib" # GNUInstallDirs' choice for a prefix outside /usr
lib="$libdir/libattn.so.$version"
[ -f "$lib" ] || die "no $lib installed"
soname="$(objdump -p "$lib" | awk '$1 == "SONAME" { print $2 }')"
[[ "$soname" =~ ^libattn\.so\.[0-9]+$ ]] || die "unexpected SONAME '$soname'"
[ "$(readlink "$(dirname "$lib")/$soname")" = "libattn.so.$version" ] ||
  die "$soname does not point to libattn.so.$version"
echo "packaging: $soname -> libattn.so.$version"
if objdump -p "$lib" | grep -qE 'R(UN)?PATH'; then
  die "the installed library carries an RPATH"
fi

step "exported symbols"
bash scripts/check-exports.sh "$lib"

step "the exports check catches a leak and a missing function"
# Relink the same objects with a helper leaked through the version script,
# then without one public function: the check must name both.
objs=(build/pkg/CMakeFiles/attn_objects.dir/src/*/*.o)
printf 'int attn_leaked_helper(void);\nint attn_leaked_helper(void) { return 1; }\n' \
  >"$tmp/leak.c"
cc -c -fPIC -o "$tmp/leak.o" "$tmp/leak.c"
# A tree from before src/ was split into folders compiles the objects in
# the attn target itself.
[ -e "${objs[0]}" ] || objs=(build/pkg/CMakeFiles/attn.dir/src/*.o)
sed 's/^  local:/    attn_leaked_helper;\n  local:/' src/libattn.map >"$tmp/leak.map"
cc -shared -o "$tmp/libattn-leak.so" "${objs[@]}" "$tmp/leak.o" \
  -Wl,--version-script="$tmp/leak.map"
sed '/^    attn_mask_init_sized;$/d' src/libattn.map >"$tmp/short.map"
cc -shared -o "$tmp/libattn-short.so" "${objs[@]}" \
  -Wl,--version-script="$tmp/short.map"
for case in leak:attn_leaked_helper short:attn_mask_init_sized; do
  if bash scripts/check-exports.sh "$tmp/libattn-${case%:*}.so" 2>"$tmp/err"; then
    die "check-exports accepted a library with a ${case%:*} (${case#*:})"
  fi
  grep -q "${case#*:}" "$tmp/err" || die "check-exports did not name ${case#*:}"
done
echo "packaging: check-exports refuses both"

step "ABI against the baseline"
bash abi/check.sh build/pkg/libattn.so

step "API reference (Doxygen, warnings are errors)"
cmake --build build/pkg --target docs

step "attn.pc and the CMake package"
pc="$libdir/pkgconfig/attn.pc"
# Relocation and --prefix installs are checked by 35-install-prefix.sh.
# shellcheck disable=SC2016 # ${prefix} is meant literally
grep -qx 'prefix=${pcfiledir}/../..' "$pc" || die "attn.pc: prefix not found from the file"
# shellcheck disable=SC2016
grep -qx 'libdir=${prefix}/lib' "$pc" || die "attn.pc: libdir not under \${prefix}"
# shellcheck disable=SC2016
grep -qx 'includedir=${prefix}/include' "$pc" || die "attn.pc: bad includedir"
PKG_CONFIG_PATH="$(dirname "$pc")" pkg-config --validate attn
# A consumer's compile flags are attn's include directory alone (no
# dependency's), while --static adds every library a static link needs.
cflags="$(PKG_CONFIG_PATH="$(dirname "$pc")" pkg-config --cflags attn)"
# shellcheck disable=SC2086,SC2116 # echo drops the flags' extra spaces
[ "$(echo $cflags)" = "-I$libdir/pkgconfig/../../include" ] ||
  die "pkg-config --cflags attn gives '$cflags'"
static_libs="$(PKG_CONFIG_PATH="$(dirname "$pc")" pkg-config --static --libs attn)"
for lib in -lattn -lopenblas -lcjson -lm; do
  [[ " $static_libs " == *" $lib "* ]] ||
    die "pkg-config --static --libs attn lacks $lib: $static_libs"
done
# The version file accepts requests for the same major version, up to the
# installed one.
version_ok() { # version_ok REQUESTED -> TRUE or FALSE
  local major minor
  IFS=. read -r major minor <<<"$1"
  cat >"$tmp/version-check.cmake" <<EOF
set(PACKAGE_FIND_VERSION $1)
set(PACKAGE_FIND_VERSION_MAJOR $major)
set(PACKAGE_FIND_VERSION_MINOR $minor)
set(PACKAGE_FIND_VERSION_PATCH 0)
include("$libdir/cmake/attn/attnConfigVersion.cmake")
message("\${PACKAGE_VERSION_COMPATIBLE}")
EOF
  cmake -P "$tmp/version-check.cmake" 2>&1
}
for request in 0.0:TRUE "${version%.*}:TRUE" 1.0:FALSE 0.99:FALSE; do
  got="$(version_ok "${request%:*}")"
  [ "$got" = "${request#*:}" ] ||
    die "find_package(attn ${request%:*}): compatible=$got, want ${request#*:}"
done

step "consumers of the shared library"
consumers shared "$libdir"

# --------------------------------------------------------------------------
step "static library, absolute CMAKE_INSTALL_LIBDIR outside the prefix"
cmake -S . -B build/pkg-static -DCMAKE_BUILD_TYPE=Release \
  -DBUILD_SHARED_LIBS=OFF -DATTN_BLAS=openblas \
  -DCMAKE_INSTALL_PREFIX="$tmp/static" \
  -DCMAKE_INSTALL_LIBDIR="$tmp/static-libdir/lib64" "${common[@]}" >/dev/null
cmake --build build/pkg-static -j"$jobs"
cmake --install build/pkg-static >/dev/null
[ -f "$tmp/static-libdir/lib64/libattn.a" ] || die "no libattn.a in the libdir"
grep -qx "libdir=$tmp/static-libdir/lib64" \
  "$tmp/static-libdir/lib64/pkgconfig/attn.pc" ||
  die "attn.pc: absolute libdir not kept"
bash scripts/check-exports.sh "$tmp/static-libdir/lib64/libattn.a"
consumers static "$tmp/static-libdir/lib64" --static
for exe in "$tmp/c-static/consumer_c" "$tmp/cxx-static/consumer_cxx"; do
  if objdump -p "$exe" | grep -q 'NEEDED.*libattn'; then
    die "$exe links libattn dynamically"
  fi
done

# --------------------------------------------------------------------------
step "generic BLAS (libblas.so.3)"
cmake -S . -B build/pkg-generic -DCMAKE_BUILD_TYPE=Release \
  -DBUILD_SHARED_LIBS=ON -DATTN_BLAS=generic \
  -DCMAKE_INSTALL_PREFIX="$tmp/generic" "${common[@]}" >/dev/null
cmake --build build/pkg-generic -j"$jobs"
cmake --install build/pkg-generic >/dev/null
glib="$tmp/generic/lib/libattn.so.$version"
needed="$(objdump -p "$glib" | awk '$1 == "NEEDED" { print $2 }')"
echo "$needed" | grep -qx 'libblas.so.3' || die "generic build does not need libblas.so.3"
if echo "$needed" | grep -q openblas; then
  die "generic build links OpenBLAS directly"
fi
bash scripts/check-exports.sh "$glib"
consumers generic "$tmp/generic/lib"
# Any libblas.so.3 serves: the reference BLAS, put first on the loader's
# path here, as update-alternatives would make it the system's choice.
ref_blas="/usr/lib/$(gcc -print-multiarch)/blas"
if [ -f "$ref_blas/libblas.so.3" ]; then
  # ldd's output is taken whole first: grep -q stopping early would make
  # ldd die of SIGPIPE, which pipefail reports as a failure.
  resolved="$(LD_LIBRARY_PATH="$(dirname "$glib"):$ref_blas" \
    ldd "$tmp/c-generic/consumer_c")"
  grep -q "libblas.so.3 => $ref_blas/libblas.so.3" <<<"$resolved" ||
    die "the reference libblas.so.3 was not picked up"
  echo "packaging: with the reference BLAS from $ref_blas:"
  LD_LIBRARY_PATH="$(dirname "$glib"):$ref_blas" "$tmp/c-generic/consumer_c"
fi

# --------------------------------------------------------------------------
step "Debian packages"
# Built from a copy, so that the tree stays clean and the .debs land in $tmp.
mkdir -p "$tmp/deb/src"
tar -C "$root" --exclude=./build --exclude=./.git --exclude='./obj-*' \
  --exclude='./debian/libattn0' --exclude='./debian/libattn-dev' \
  --exclude='./debian/libattn-doc' --exclude='./debian/python3-attn' \
  --exclude='./debian/tmp' --exclude='./debian/.debhelper' \
  --exclude='./.pybuild' --exclude='__pycache__' -cf - . |
  tar -C "$tmp/deb/src" -xf -
# The system's tools only, as on a Debian build machine: pybuild must find
# Debian's python3, not an interpreter that PATH puts first.
deb_env=(env PATH=/usr/sbin:/usr/bin:/sbin:/bin)
(cd "$tmp/deb/src" && "${deb_env[@]}" dpkg-buildpackage -us -uc -b -j"$jobs") \
  >"$tmp/deb/build.log" 2>&1 || {
  tail -n 80 "$tmp/deb/build.log"
  die "dpkg-buildpackage failed"
}
grep -E '^[0-9]+% tests passed|dpkg-gensymbols: warning' "$tmp/deb/build.log" || true
changes="$(ls "$tmp"/deb/libattn_*.changes)"
# Errors fail; every warning left must be overridden, with its reason, in
# debian/*.lintian-overrides.
lintian --fail-on error,warning "$changes"

step "install the packages and build against them"
if dpkg-query -W -f='${Status}' libattn0 2>/dev/null | grep -q "ok installed"; then
  die "libattn0 is already installed on this machine; remove it first"
fi
installed_debs=1
debs=("$tmp"/deb/libattn0_*.deb "$tmp"/deb/libattn-dev_*.deb
  "$tmp"/deb/libattn-doc_*.deb "$tmp"/deb/python3-attn_*.deb)
$SUDO env DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=300 \
  install -y -qq "${debs[@]}" >/dev/null
multiarch="/usr/lib/$(gcc -print-multiarch)"
bash scripts/check-exports.sh "$multiarch/$soname"
bash scripts/check-exports.sh "$multiarch/libattn.a"
# /usr/include is the compiler's own: nothing to add.
cflags="$(env -u PKG_CONFIG_PATH pkg-config --cflags attn)"
[ -z "${cflags// /}" ] || die "packaged attn.pc: --cflags gives '$cflags'"
env -u PKG_CONFIG_PATH bash tests/consumers/c/build.sh "$tmp/c-debian"
objdump -p "$tmp/c-debian/consumer_c" | grep -q 'NEEDED.*libattn.so.0' ||
  die "the consumer does not use the packaged library"
cmake -S tests/consumers/cxx -B "$tmp/cxx-debian" >/dev/null
cmake --build "$tmp/cxx-debian" >/dev/null
"$tmp/cxx-debian/consumer_cxx"

step "packaged documentation"
[ -s /usr/share/doc/libattn-doc/html/index.html ] || die "no HTML reference"
# A function's page is a link to attn.h(3), which man -w names instead.
for page in libattn:libattn attn_masks:attn_masks attn_config:attn_config \
  attn_forward:attn.h; do
  man -w "${page%:*}" 2>/dev/null | grep -qx "/usr/share/man/man3/${page#*:}.3.gz" ||
    die "man ${page%:*}: no page in section 3"
done
MANWIDTH=80 man 3 attn_forward >"$tmp/attn_forward.txt" 2>/dev/null
grep -q 'query \[B, Lq, E\]' "$tmp/attn_forward.txt" ||
  die "man attn_forward does not show its documentation"
[ -s /usr/share/doc/libattn0/changelog.gz ] || die "no upstream changelog"

step "autopkgtest (debian/tests) against the built packages"
# The null runner uses this machine as the testbed: the tests' Depends
# come from the packages just built (and the archive), which it publishes
# to apt as root.
$SUDO "${deb_env[@]}" autopkgtest --no-built-binaries \
  --output-dir "$tmp/autopkgtest" "${debs[@]}" "$tmp/deb/src/" -- null \
  >"$tmp/autopkgtest.log" 2>&1 || {
  tail -n 60 "$tmp/autopkgtest.log"
  die "autopkgtest failed"
}
cat "$tmp/autopkgtest/summary"
[ "$(grep -c ' PASS$' "$tmp/autopkgtest/summary")" -eq 2 ] ||
  die "autopkgtest: not every test passed"

step "all packaging checks passed"
