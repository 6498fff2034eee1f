#!/usr/bin/env bash
# Builds the process-web image (driver "process"): a root directory with busybox-static, an
# entrypoint (bin/serve) that serves HTTP on $PORT_80, and a CGI that answers who it is.
#
#   build.sh [-o OUT.tar]      stage, then pack with `gci image build` (default ./process-web.tar)
#   build.sh --stage DIR       only write the image's root directory into DIR
#
# Same inputs, same digest: `gci image build` fixes mtimes, owners and order.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$HERE/../../.." && pwd)"
OUT="process-web.tar"
STAGE=""
while [ $# -gt 0 ]; do
  case "$1" in
    -o | --output) OUT="$2"; shift 2 ;;
    --stage) STAGE="$2"; shift 2 ;;
    -h | --help) sed -n '2,9p' "$0"; exit 0 ;;
    *) echo "build.sh: unknown argument \"$1\"; see build.sh --help" >&2; exit 2 ;;
  esac
done

die() { echo "build.sh: $*" >&2; exit 1; }
BUSYBOX=/bin/busybox
[ -x "$BUSYBOX" ] && "$BUSYBOX" --list | grep -x httpd >/dev/null ||
  die "$BUSYBOX (static, with httpd) is missing; run: apt-get install -y busybox-static"

WORK="$(mktemp -d)"
trap 'rm -rf "$WORK"' EXIT
DEST="${STAGE:-$WORK/root}"
mkdir -p "$DEST"
[ -z "$(ls -A "$DEST")" ] || die "stage directory $DEST is not empty; give a new or empty one"

# The process driver mounts its own /dev, /proc and a writable /tmp; the directories stay empty.
mkdir -p "$DEST"/{bin,dev,proc,tmp,www/cgi-bin}
cp "$BUSYBOX" "$DEST/bin/busybox"
for applet in sh httpd wget sleep kill printf; do
  ln -s busybox "$DEST/bin/$applet"
done
install -m 0755 "$HERE/serve" "$DEST/bin/serve"
install -m 0755 "$HERE/index.cgi" "$DEST/www/cgi-bin/index.cgi"
[ -n "$STAGE" ] && exit 0

[ -f "$ROOT/dist/provider/cli/main.js" ] || die "the gci command is not built; run: npm run build (in $ROOT)"
node "$ROOT/bin/gci" image build "$DEST" -o "$OUT" --manifest "$HERE/manifest.json"
