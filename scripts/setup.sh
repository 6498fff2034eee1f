#!/usr/bin/env bash
# One idempotent set-up for everything GCI needs; both README commands run it first.
#   1. Debian packages: QEMU, a guest kernel, busybox, etcd, jq, python3-grpcio (a gRPC client that is not ours),
#      util-linux and systemd (unshare, nsenter and the socket forwarders of the process sandbox)
#   2. npm dependencies (npm ci, skipped when package-lock.json is unchanged)
#   3. the Pulumi engine, built from its Go modules into a cache outside the checkout,
#      keyed by version: $GCI_CACHE (default ~/.cache/gci)/engine-v<version>/bin
# The first run on a new machine takes several minutes (the engine build alone is about
# 5 minutes on 2 cores); later runs check and return in seconds.
set -euo pipefail

ENGINE_VERSION=3.274.1
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
CACHE="${GCI_CACHE:-$HOME/.cache/gci}"
ENGINE_BIN="$CACHE/engine-v$ENGINE_VERSION/bin"
GRPCURL_VERSION=1.9.4
GRPCURL_BIN="$CACHE/grpcurl-v$GRPCURL_VERSION/bin"
APT_PACKAGES=(qemu-system-x86 qemu-utils linux-image-amd64 busybox-static cpio curl etcd-server etcd-client jq python3-grpcio iproute2 procps strace util-linux systemd)

step() { printf '\033[1m[setup]\033[0m %s\n' "$*" >&2; }

install_debian_packages() {
  local missing=()
  for pkg in "${APT_PACKAGES[@]}"; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
  done
  if [ ${#missing[@]} -eq 0 ]; then return; fi
  step "installing Debian packages: ${missing[*]}"
  local sudo=""
  [ "$(id -u)" -eq 0 ] || sudo="sudo"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
}

install_npm_dependencies() {
  local stamp="$ROOT/node_modules/.gci-lock-sha256"
  local want
  want="$(sha256sum "$ROOT/package-lock.json" | cut -d' ' -f1)"
  if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then return; fi
  step "installing npm dependencies (npm ci)"
  (cd "$ROOT" && npm ci --no-audit --no-fund --loglevel=error)
  echo "$want" >"$stamp"
}

build_engine() {
  if [ -x "$ENGINE_BIN/pulumi" ] && [ "$("$ENGINE_BIN/pulumi" version 2>/dev/null)" = "v$ENGINE_VERSION" ]; then return; fi
  command -v go >/dev/null || { echo "setup: Go is required to build the Pulumi engine; install Go 1.26+ and rerun" >&2; exit 1; }
  step "building the pulumi CLI v$ENGINE_VERSION from its Go module (first time only; ~5 minutes on 2 cores)"
  mkdir -p "$ENGINE_BIN"
  local tmp="$ENGINE_BIN/pulumi.tmp.$$"
  (cd "$ROOT/scripts/engine" && GOFLAGS=-mod=mod go build -trimpath \
    -ldflags "-s -w -X github.com/pulumi/pulumi/sdk/v3/go/common/version.Version=v$ENGINE_VERSION" \
    -o "$tmp" github.com/pulumi/pulumi/pkg/v3/cmd/pulumi)
  mv "$tmp" "$ENGINE_BIN/pulumi"
}

# grpcurl, a gRPC client that is not ours: tests list images through server reflection with it.
build_grpcurl() {
  [ -x "$GRPCURL_BIN/grpcurl" ] && return
  step "building grpcurl v$GRPCURL_VERSION from its Go module (first time only; ~1 minute)"
  GOBIN="$GRPCURL_BIN" GOFLAGS=-mod=mod go install "github.com/fullstorydev/grpcurl/cmd/grpcurl@v$GRPCURL_VERSION"
}

# The two Node.js plugins the CLI launches, both GCI's shim (scripts/engine-shim) under their
# plugin names, next to the CLI: pulumi-language-nodejs runs programs (the Go host's module is not
# served here); pulumi-resource-pulumi-nodejs serves dynamic resources, import included. The shim
# finds this checkout's build from $GCI_ENGINE_HOSTS or the project's folder, so one copy serves all.
install_plugins() {
  local name
  for name in pulumi-language-nodejs pulumi-resource-pulumi-nodejs; do
    cmp -s "$ROOT/scripts/engine-shim" "$ENGINE_BIN/$name" 2>/dev/null ||
      install -m 0755 "$ROOT/scripts/engine-shim" "$ENGINE_BIN/$name"
  done
}

install_debian_packages
install_npm_dependencies
build_engine
install_plugins
build_grpcurl
step "ready: pulumi $("$ENGINE_BIN/pulumi" version) in $ENGINE_BIN"
