#!/usr/bin/env bash
# The Pulumi half of the demo: on a running world (`gci world up`), runs examples/platform
# (registers the datacenters, exports the catalog) and examples/app (an image in us-1, VM
# groups in regions eu and ap) through the real pulumi CLI, fetches every VM's URL and prints
# which region answered, which transfers happened and how long each step took.
#
#   examples/app/demo.sh [--stack NAME] [--image FILE]
#
# GCI_WORLD names the world folder (default .gci/world); --image defaults to the
# process-web image (examples/images/process-web), built on the way.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
GCI="node $ROOT/bin/gci"
STACK="demo"
IMAGE=""
while [ $# -gt 0 ]; do
  case "$1" in
    --stack) STACK="$2"; shift 2 ;;
    --image) IMAGE="$2"; shift 2 ;;
    -h | --help) sed -n '2,10p' "$0"; exit 0 ;;
    *) echo "demo.sh: unknown argument \"$1\"; see demo.sh --help" >&2; exit 2 ;;
  esac
done
export GCI_WORLD="${GCI_WORLD:-$ROOT/.gci/world}"
command -v jq >/dev/null || { echo "demo.sh: jq is missing; run: apt-get install -y jq" >&2; exit 1; }
[ -f "$GCI_WORLD/world.json" ] || { echo "demo.sh: no world in $GCI_WORLD; start one: node bin/gci world up" >&2; exit 1; }

declare -a TIMES=()
t0=$(date +%s.%N)
lap() { local now; now=$(date +%s.%N); TIMES+=("$(printf '%-46s %6.1f s' "$1" "$(awk "BEGIN{print $now - $t0}")")"); t0=$now; }
step() { printf '\n\033[1m== %s\033[0m\n' "$*"; }

if [ -z "$IMAGE" ]; then
  step "the process-web image (examples/images/process-web)"
  IMAGE="$ROOT/.gci/demo/process-web.tar"
  mkdir -p "$(dirname "$IMAGE")"
  bash "$ROOT/examples/images/process-web/build.sh" -o "$IMAGE"
  lap "image build"
fi

step "platform stack: register the world's datacenters, export the catalog"
$GCI stack up --dir "$ROOT/examples/platform" --stack "$STACK" -c "worldDir=$GCI_WORLD"
lap "pulumi up (platform)"

APP=(--dir "$ROOT/examples/app" --stack "$STACK" -c "platformStack=organization/gci-platform/$STACK" -c "imageFile=$IMAGE")
step "app stack, preview: the transfers it will cause, before any byte moves"
$GCI stack preview "${APP[@]}" --json >"$ROOT/.gci/demo/preview.json"
jq -r '.plannedTransfers[]? | "  planned: \(.resource): \(.source) -> \(.destination), \(.bytes) bytes"' "$ROOT/.gci/demo/preview.json"
lap "pulumi preview (app)"

step "app stack, up: upload to us-1, VM groups in eu and ap pull the image and boot"
$GCI stack up "${APP[@]}" --json >"$ROOT/.gci/demo/up.json"
lap "pulumi up (app)"

step "every VM's URL"
jq -r '.outputs.vms[] | .region as $r | .urls[] | "\($r) \(.)"' "$ROOT/.gci/demo/up.json" | while read -r region url; do
  printf '  %-4s %-28s %s\n' "$region" "$url" "$(curl -fsS --max-time 10 "$url" | tr '\n' ' ' | cut -c1-90)"
done
lap "fetch every URL"

step "summary"
jq -r '.outputs.transfers[] | "  transfer: \(.source) -> \(.destination), \(.bytes) bytes in \(.seconds) s"' "$ROOT/.gci/demo/up.json"
jq -r '.outputs.vms[] | "  \(.region): \(.ids | length) VMs in \(.datacenter)"' "$ROOT/.gci/demo/up.json"
printf '%s\n' "${TIMES[@]}"
echo
echo "The stacks and the world keep running. Remove the VMs: node bin/gci stack destroy --dir examples/app --stack $STACK;"
echo "stop the world: node bin/gci world down"
