#!/usr/bin/env bash
# The test command (`npm test`): set-up, build, type-check, lint, then every test through jest.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
bash scripts/setup.sh
npm run --silent build
npm run --silent typecheck
npm run --silent lint
npx jest --runInBand "$@"
