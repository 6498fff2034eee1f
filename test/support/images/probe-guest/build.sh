#!/usr/bin/env bash
# Builds the probe-guest image (test only, driver "qemu"): the debian-guest image with the
# virtio disk driver and /probe-init added, which reports on the console what the guest can
# reach (its disk, a host address) and then runs the debian-guest's own /init.
#
#   build.sh --stage DIR       write the image directory (vmlinuz, initrd.img) into DIR
#
# KERNEL_VERSION must name the kernel (test/support/guest.ts passes it, as for debian-guest).
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$HERE/../../../.." && pwd)"
die() { echo "build.sh: $*" >&2; exit 1; }
[ "${1:-}" = "--stage" ] && [ -n "${2:-}" ] || die "usage: build.sh --stage DIR"
STAGE="$2"
[ -n "${KERNEL_VERSION:-}" ] || die "KERNEL_VERSION is not set; set it to a version under /lib/modules"

bash "$ROOT/examples/images/guest/build.sh" --stage "$STAGE"

# The kernel unpacks concatenated archives in order: this one adds files to the guest's.
WORK="$(mktemp -d)"
trap 'rm -rf "$WORK"' EXIT
EXTRA="$WORK/extra"
mkdir -p "$EXTRA/lib/modules"
module="$(modinfo -k "$KERNEL_VERSION" -n virtio_blk)" || die "no virtio_blk module for kernel $KERNEL_VERSION"
case "$module" in
  *.ko) cp "$module" "$EXTRA/lib/modules/virtio_blk.ko" ;;
  *.ko.xz) xz -dc "$module" >"$EXTRA/lib/modules/virtio_blk.ko" ;;
  *.ko.zst) zstd -qdc "$module" >"$EXTRA/lib/modules/virtio_blk.ko" ;;
  *) die "unexpected module file $module" ;;
esac
install -m 0755 "$HERE/init" "$EXTRA/probe-init"
# The guest's /init loads the modules /etc/gci/modules lists, in order: virtio_blk goes last
# (it needs virtio and virtio_ring, which the list already has).
mkdir -p "$EXTRA/etc/gci"
(cd "$WORK" && gzip -dc "$STAGE/initrd.img" | cpio --quiet -i --to-stdout etc/gci/modules) >"$EXTRA/etc/gci/modules"
grep -qx virtio_ring.ko "$EXTRA/etc/gci/modules" || die "the debian-guest initramfs lists no virtio_ring module"
echo virtio_blk.ko >>"$EXTRA/etc/gci/modules"
chmod -R u+rwX,go+rX,go-w "$EXTRA"
find "$EXTRA" -exec touch -h -d @0 {} +
(cd "$EXTRA" && find . -mindepth 1 | LC_ALL=C sort | cpio --quiet -o -H newc -R 0:0 --reproducible) |
  gzip -n -9 >>"$STAGE/initrd.img"
