#!/usr/bin/env bash
# The demo: set-up, build, then a stack through the real pulumi CLI (see README.md).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
bash scripts/setup.sh
npm run --silent build
node bin/gci doctor
node bin/gci stack up --dir examples/datacenter --stack demo
echo
echo "Stack outputs:"
node bin/gci stack output --dir examples/datacenter --stack demo
echo
echo "To remove it: node bin/gci stack destroy --dir examples/datacenter --stack demo"
