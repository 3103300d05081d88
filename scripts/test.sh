#!/usr/bin/env bash
# The README's test command (npm test): unit tests, simulator seeds, then integration tests
# against real five-process clusters. Ends with a plain "N passed, N failed" line.
set -uo pipefail
cd "$(dirname "$0")/.."
log=$(mktemp)
trap 'rm -f "$log"' EXIT
# Integration tests each start their own cluster on free ports; run files one at a time so
# two clusters never compete for the two cores.
node --import tsx --test --test-concurrency=1 --test-force-exit --test-reporter=tap \
  test/unit/*.test.ts test/sim/*.test.ts test/integration/*.test.ts 2>&1 | tee "$log"
status=${PIPESTATUS[0]}
pass=$(grep -E '^# pass ' "$log" | tail -1 | awk '{print $3}')
fail=$(grep -E '^# fail ' "$log" | tail -1 | awk '{print $3}')
echo "${pass:-0} passed, ${fail:-0} failed"
exit "$status"
