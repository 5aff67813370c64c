#!/usr/bin/env bash
# Installs the Debian 12 packages stateguard builds, tests and benchmarks with.
# Only what is missing is installed; run as root (or with sudo available).
set -euo pipefail

packages=(
  build-essential cmake pkg-config make git
  libssl-dev openssl
  libcpp-httplib-dev nlohmann-json3-dev libyaml-cpp-dev libsimdjson-dev libjemalloc-dev
  libtomlplusplus-dev
  libgrpc++-dev protobuf-compiler-grpc libprotobuf-dev libnghttp2-dev
  libblkid-dev
  e2fsprogs xfsprogs btrfs-progs util-linux cryptsetup xz-utils
  googletest libgtest-dev libgmock-dev
  clang libclang-rt-14-dev clang-format
  curl wrk nginx-light
  golang-go golang-github-masterminds-sprig-dev golang-gopkg-yaml.v2-dev
  etcd-server
  prometheus  # promtool only: monitoring_test checks the shipped alerts' PromQL with it
  # A FUSE file whose reads fail on command (tests/support/eio_disk), under a loop device: the
  # I/O-error replays on a real block device, where the kernel has no dm-error/dm-flakey.
  libfuse3-dev fuse3
)

missing=()
for p in "${packages[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
    missing+=("$p")
  fi
done

if [ ${#missing[@]} -eq 0 ]; then
  exit 0
fi

echo "stateguard: installing missing Debian packages: ${missing[*]}"
SUDO=""
if [ "$(id -u)" -ne 0 ]; then
  SUDO="sudo"
fi
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"
