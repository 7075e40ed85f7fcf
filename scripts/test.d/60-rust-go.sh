#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# Rust and Go bindings (issue 12), with Debian 12's toolchains (rustc 1.63,
# Go 1.19: the oldest the bindings support) and nothing from a registry:
#
#   libattn built with CMake (build/rust-go) and installed into
#   build/rust-go/prefix, found through its attn.pc (PKG_CONFIG_PATH);
#   Rust: cargo test of attn-sys (declarations against the header) and attn
#     (torch fixture of tests/data, reference, misuse, threads), warnings
#     as errors, rustdoc with warnings (broken links) as errors, the
#     translate example, attn-sys found through ATTN_LIB_DIR in the build
#     tree as well, a static libattn (ATTN_STATIC=1), and a
#     crate outside the tree using attn;
#   Go: gofmt, go vet, go test -race under GODEBUG=cgocheck=2, the example,
#     and a module outside the tree using the package through a replace.
set -euo pipefail
cd "${ATTN_ROOT:-$(dirname "$0")/../..}"
root="$PWD"

bash scripts/deps.sh cargo rustc golang-go

# Debian's toolchains come first, ahead of any rustup or Go installed by
# hand, so that CI proves the oldest supported versions.
export PATH="/usr/bin:$PATH"
export CARGO_TARGET_DIR="$root/build/rust-go/cargo"
export GOFLAGS=-mod=mod GOPROXY=off GOTOOLCHAIN=local
# Go's build cache does not notice that pkg-config's answer changed (a
# package built against another libattn prefix is reused with its old -L),
# so the stage keeps a cache of its own next to a prefix that stays put.
export GOCACHE="$root/build/rust-go/gocache"
rustc --version
cargo --version
go version

tmp="$(mktemp -d /tmp/attn-rust-go.XXXXXX)"
trap 'rm -rf "$tmp"' EXIT
step() { echo "--- rust-go: $*"; }
die() {
  echo "rust-go: $*" >&2
  exit 1
}

prefix="$root/build/rust-go/prefix"
step "libattn (Release, shared) installed into $prefix"
cmake -S . -B build/rust-go -DCMAKE_BUILD_TYPE=Release -DATTN_BUILD_TESTS=OFF \
  -DATTN_BUILD_EXAMPLES=OFF -DATTN_BUILD_BENCH=OFF \
  -DCMAKE_INSTALL_PREFIX="$prefix" >/dev/null
cmake --build build/rust-go -j"$(nproc)"
cmake --install build/rust-go >/dev/null
export PKG_CONFIG_PATH="$prefix/lib/pkgconfig"
export LD_LIBRARY_PATH="$prefix/lib"
pkg-config --modversion attn

# --------------------------------------------------------------------------
step "Rust: cargo test (found through pkg-config)"
(cd bindings/rust && RUSTFLAGS="-D warnings" cargo test --offline --workspace)

step "Rust: rustdoc, warnings (broken links) as errors"
(cd bindings/rust && RUSTDOCFLAGS="-D warnings" cargo doc --offline --no-deps --workspace)

step "Rust: the translate example"
(cd bindings/rust && RUSTFLAGS="-D warnings" cargo run --offline --example translate) \
  | tee "$tmp/translate-rust.txt"
grep -q -- '-> cat' "$tmp/translate-rust.txt" || die "translate: chat does not attend to cat"

step "Rust: attn-sys found through ATTN_LIB_DIR (the CMake build tree)"
(cd bindings/rust && env -u PKG_CONFIG_PATH ATTN_LIB_DIR="$root/build/rust-go" \
  LD_LIBRARY_PATH="$root/build/rust-go" cargo test --offline -p attn-sys)

step "Rust: ATTN_STATIC=1 links libattn.a (pkg-config --static)"
cmake -S . -B build/rust-go-static -DCMAKE_BUILD_TYPE=Release \
  -DBUILD_SHARED_LIBS=OFF -DATTN_BUILD_TESTS=OFF -DATTN_BUILD_EXAMPLES=OFF \
  -DATTN_BUILD_BENCH=OFF -DCMAKE_INSTALL_PREFIX="$tmp/static" >/dev/null
cmake --build build/rust-go-static -j"$(nproc)" >/dev/null
cmake --install build/rust-go-static >/dev/null
(cd bindings/rust && PKG_CONFIG_PATH="$tmp/static/lib/pkgconfig" ATTN_STATIC=1 \
  CARGO_TARGET_DIR="$root/build/rust-go/cargo-static" \
  cargo test --offline -p attn --test torch_parity)
for t in "$root"/build/rust-go/cargo-static/debug/deps/torch_parity-*; do
  [ -x "$t" ] || continue
  if objdump -p "$t" | grep -q 'NEEDED.*libattn'; then
    die "ATTN_STATIC=1 still links libattn.so"
  fi
done

# readme_block NAME: the code block after "<!-- readme: NAME -->" in
# README.md, so that the README's examples are the programs built here.
readme_block() {
  awk -v tag="<!-- readme: $1 -->" '
    $0 == tag { found = 1; next }
    found && /^```/ { if (inside) exit; inside = 1; next }
    inside { print }' README.md
}

step "Rust: a crate outside the tree (README's example)"
mkdir -p "$tmp/rust-consumer/src"
cat >"$tmp/rust-consumer/Cargo.toml" <<EOF
[package]
name = "consumer"
version = "0.0.0"
edition = "2021"

[dependencies]
attn = { path = "$root/bindings/rust/attn" }

[workspace]
EOF
readme_block rust-consumer >"$tmp/rust-consumer/src/main.rs"
(cd "$tmp/rust-consumer" && CARGO_TARGET_DIR="$tmp/rust-consumer/target" \
  cargo run --offline -q)

# --------------------------------------------------------------------------
step "Go: gofmt, vet, test -race under cgocheck=2"
(
  cd bindings/go
  unformatted="$(gofmt -l .)"
  [ -z "$unformatted" ] || die "gofmt would change: $unformatted"
  go vet ./...
  GODEBUG=cgocheck=2 go test -race -count=1 -timeout 600s ./...
  go run ./examples/translate | tee "$tmp/translate-go.txt"
)
grep -q -- '-> cat' "$tmp/translate-go.txt" || die "Go translate: chat does not attend to cat"
diff <(tail -n +2 "$tmp/translate-rust.txt") <(tail -n +2 "$tmp/translate-go.txt") ||
  die "the Rust and Go examples print different tables"

step "Go: a module outside the tree (README's example)"
mkdir -p "$tmp/go-consumer"
cat >"$tmp/go-consumer/go.mod" <<EOF
module consumer

go 1.19

require libattn/attn v0.0.0

replace libattn/attn => $root/bindings/go
EOF
readme_block go-consumer >"$tmp/go-consumer/main.go"
(cd "$tmp/go-consumer" && go run .)

step "Rust and Go bindings passed"
