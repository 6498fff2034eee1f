#!/usr/bin/env bash
# Builds the debian-guest image (driver "qemu") from packages installed on this machine:
# the Debian kernel, and an initramfs of busybox-static, the virtio NIC modules and ./init.
#
#   build.sh [-o OUT.tar]      stage, then pack with `gci image build` (default ./debian-guest.tar)
#   build.sh --stage DIR       only write the image directory (vmlinuz, initrd.img) into DIR
#
# KERNEL_VERSION picks the kernel (default: the newest with both /boot/vmlinuz-<v> and
# /lib/modules/<v>). Same inputs, same bytes: fixed mtimes and owners, sorted cpio, gzip -n.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$HERE/../../.." && pwd)"
OUT="debian-guest.tar"
STAGE=""
while [ $# -gt 0 ]; do
  case "$1" in
    -o | --output) OUT="$2"; shift 2 ;;
    --stage) STAGE="$2"; shift 2 ;;
    -h | --help) sed -n '2,10p' "$0"; exit 0 ;;
    *) echo "build.sh: unknown argument \"$1\"; see build.sh --help" >&2; exit 2 ;;
  esac
done

die() { echo "build.sh: $*" >&2; exit 1; }
for tool in cpio gzip find sort; do
  command -v "$tool" >/dev/null || die "\"$tool\" is not installed; run: apt-get install -y cpio gzip findutils coreutils"
done
BUSYBOX=/bin/busybox
[ -x "$BUSYBOX" ] && "$BUSYBOX" --list | grep -x httpd >/dev/null ||
  die "$BUSYBOX (static, with httpd) is missing; run: apt-get install -y busybox-static"

if [ -z "${KERNEL_VERSION:-}" ]; then
  for dir in $(ls -d /lib/modules/*/ 2>/dev/null | sort -V); do
    v="$(basename "$dir")"
    [ -r "/boot/vmlinuz-$v" ] && KERNEL_VERSION="$v"
  done
fi
[ -n "${KERNEL_VERSION:-}" ] ||
  die "no kernel with both /boot/vmlinuz-<version> and /lib/modules/<version>; run: apt-get install -y linux-image-amd64"
KERNEL="/boot/vmlinuz-$KERNEL_VERSION"
MODDIR="/lib/modules/$KERNEL_VERSION"
[ -r "$KERNEL" ] || die "kernel $KERNEL is not readable; run as root or pick another with KERNEL_VERSION"
[ -r "$MODDIR/modules.dep" ] || die "$MODDIR/modules.dep is missing; run: depmod $KERNEL_VERSION"

WORK="$(mktemp -d)"
trap 'rm -rf "$WORK"' EXIT
INITRAMFS="$WORK/initramfs"
mkdir -p "$INITRAMFS"/{bin,sbin,dev,proc,sys,tmp,etc/gci,lib/modules,www}

# busybox and a link per applet init uses (ash needs sh; the rest are called by name).
cp "$BUSYBOX" "$INITRAMFS/bin/busybox"
for applet in sh mount insmod ip cat echo mkdir hostname httpd wget sleep; do
  ln -s busybox "$INITRAMFS/bin/$applet"
done
install -m 0755 "$HERE/init" "$INITRAMFS/init"

# The virtio NIC: virtio_pci finds the device, virtio_net drives it. Each module follows the
# modules it needs (from modules.dep), built-in ones (modules.builtin) are skipped.
declare -A seen=()
order=()
add_module() {
  local name="$1" path deps dep
  path="$(awk -v n="$name" -F: '{ f = $1; sub(/.*\//, "", f); sub(/\.ko(\.(xz|zst|gz))?$/, "", f); if (f == n) { print $1; exit } }' "$MODDIR/modules.dep")"
  if [ -z "$path" ]; then
    grep -qE "/$name\.ko\$" "$MODDIR/modules.builtin" 2>/dev/null && return 0
    die "kernel module $name is neither in $MODDIR/modules.dep nor built in"
  fi
  [ -n "${seen[$path]:-}" ] && return 0
  seen[$path]=1
  deps="$(grep -E "^$path:" "$MODDIR/modules.dep" | cut -d: -f2)"
  for dep in $deps; do
    dep="$(basename "$dep")"
    add_module "${dep%%.ko*}"
  done
  order+=("$path")
}
add_module virtio_pci
add_module virtio_net

: >"$INITRAMFS/etc/gci/modules"
for path in "${order[@]}"; do
  name="$(basename "$path")"
  case "$name" in
    *.ko) cp "$MODDIR/$path" "$INITRAMFS/lib/modules/$name" ;;
    *.ko.xz) xz -dc "$MODDIR/$path" >"$INITRAMFS/lib/modules/${name%.xz}" ;;
    *.ko.zst) zstd -qdc "$MODDIR/$path" >"$INITRAMFS/lib/modules/${name%.zst}" ;;
    *.ko.gz) gzip -dc "$MODDIR/$path" >"$INITRAMFS/lib/modules/${name%.gz}" ;;
    *) die "unexpected module file $path" ;;
  esac
  echo "${name%.ko*}.ko" >>"$INITRAMFS/etc/gci/modules"
done

# Reproducible: every mtime 0, owner root, entries sorted, no gzip name or time.
chmod -R u+rwX,go+rX,go-w "$INITRAMFS"
find "$INITRAMFS" -exec touch -h -d @0 {} +
DEST="${STAGE:-$WORK/image}"
mkdir -p "$DEST"
[ -z "$(ls -A "$DEST")" ] || die "stage directory $DEST is not empty; give a new or empty one"
(cd "$INITRAMFS" && find . -mindepth 1 | LC_ALL=C sort | cpio --quiet -o -H newc -R 0:0 --reproducible) |
  gzip -n -9 >"$DEST/initrd.img"
cp "$KERNEL" "$DEST/vmlinuz"
chmod 0644 "$DEST/vmlinuz" "$DEST/initrd.img"
[ -n "$STAGE" ] && exit 0

[ -f "$ROOT/dist/provider/cli/main.js" ] || die "the gci command is not built; run: npm run build (in $ROOT)"
node "$ROOT/bin/gci" image build "$DEST" -o "$OUT" --manifest "$HERE/manifest.json"
