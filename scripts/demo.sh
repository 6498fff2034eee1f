#!/usr/bin/env bash
# The demo (`npm run demo`): set-up, a local world of three regions, an image pushed to us-1,
# VMs requested in region eu through us-1 (eu-1 pulls the image, with a progress bar), then
# a Pulumi stack through the real engine. Leaves the world running; see the last line.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
GCI="node $ROOT/bin/gci"
export GCI_WORLD="${GCI_WORLD:-$ROOT/.gci/world}"
DEMO="$ROOT/.gci/demo"
# The demo's stacks keep their Pulumi state beside its world, so each run starts afresh.
export GCI_STATE="$DEMO/state"
declare -a TIMES=()
t0=$(date +%s.%N)
step() { printf '\n\033[1m== %s\033[0m\n' "$*"; }
lap() { local now; now=$(date +%s.%N); TIMES+=("$(printf '%-44s %6.1f s' "$1" "$(awk "BEGIN{print $now - $t0}")")"); t0=$now; }

step "set-up (first time: several minutes, see README)"
bash scripts/setup.sh
npm run --silent build
$GCI doctor
lap "set-up and build"

step "a world: regions us (2 datacenters), eu, ap - one cluster-manager process each"
$GCI world down >/dev/null
rm -rf "$GCI_WORLD" "$DEMO" # a fresh world each run (catalog, stores, logs) and fresh demo stacks
$GCI world up
lap "world up"

step "an image: the recipe examples/images/guest (Debian kernel, busybox initramfs, HTTP on port 80)"
# The guest itself is 9 MiB; 300 MiB of random data make it the size of a real image, so the
# transfer lasts long enough to watch.
mkdir -p "$DEMO"
bash examples/images/guest/build.sh --stage "$DEMO/guest"
head -c 300M /dev/urandom >"$DEMO/guest/data.bin"
$GCI image build "$DEMO/guest" -o "$DEMO/guest.tar" --manifest examples/images/guest/manifest.json
lap "image build"

step "push it to us-1 (region us)"
# (Not `tee /dev/stderr`: when the demo's output goes to a file, that reopens and truncates it.)
$GCI image push "$DEMO/guest.tar" --dc us-1 | tee "$DEMO/push.txt"
DIGEST=$(tail -1 "$DEMO/push.txt" | cut -d' ' -f1)
lap "push to us-1"

step "ask us-1 for 2 VMs in region eu: us-1 forwards, eu-1 finds the image in the catalog, pulls it, boots them"
REQUEST=demo-$(date +%s)
$GCI vm start --image "$DIGEST" --region eu --count 2 --size micro --via us-1 --request-id "$REQUEST"
lap "start in region eu (forward, transfer, boot)"

step "their services answer"
for addr in $($GCI vm ls --json | jq -r --arg r "$REQUEST" '.vms[] | select(.requestId == $r) | .addresses["80"]'); do
  printf 'http://%s/  ->  %s\n' "$addr" "$(curl -s --max-time 10 "http://$addr/")"
done
lap "fetch every VM's URL"

step "the catalog now"
$GCI image ls
$GCI world status
grep -h "\"$REQUEST\"" "$GCI_WORLD"/dcs/us-1/log.jsonl "$GCI_WORLD"/dcs/eu-1/log.jsonl |
  jq -r '"\(.ts)  \(.dc)  \(.event)"' | sort -s -k1,1

step "the same through Pulumi: platform and app stacks (examples/platform, examples/app) on the real engine"
bash examples/app/demo.sh --image "$DEMO/guest.tar"
lap "Pulumi: platform + app stacks, URLs fetched"

step "summary"
printf '%s\n' "${TIMES[@]}"
echo
echo "The world keeps running. Stop it (and its VMs) with: node bin/gci world down"
echo "(The demo stacks' Pulumi state is in $GCI_STATE; the next demo run starts over.)"
