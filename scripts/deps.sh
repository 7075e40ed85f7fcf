#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# Installs what building and testing libattn needs on Debian 12. Extra
# package names may be passed as arguments. Skips apt when all are present.
set -euo pipefail
pkgs=(build-essential cmake pkg-config libopenblas-dev libcmocka-dev
      libcjson-dev "$@")
missing=()
for p in "${pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "ok installed" ||
    missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  SUDO=""
  [ "$(id -u)" -eq 0 ] || SUDO=sudo
  $SUDO apt-get update -qq
  # env: sudo would drop a DEBIAN_FRONTEND set before it.
  $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}"
fi
