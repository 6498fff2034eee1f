#!/usr/bin/env bash
# The test command (`npm test`): set-up, build, type-check, lint, then every test through jest,
# closing with one plain line "N passed, N failed".
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
bash scripts/setup.sh
npm run --silent build
npm run --silent typecheck
npm run --silent lint
mkdir -p .gci
results=.gci/jest-results.json
rm -f "$results"
set +e
npx jest --runInBand --json --outputFile="$results" "$@"
rc=$?
set -e
[ -f "$results" ] && node -e '
  const r = require(process.argv[1]);
  console.log(`${r.numPassedTests} passed, ${r.numFailedTests} failed` + (r.numPendingTests ? `, ${r.numPendingTests} skipped` : ""));
' "$ROOT/$results"
exit $rc
