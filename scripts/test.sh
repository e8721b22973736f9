#!/usr/bin/env bash
# Command 2: install what ballast and its tests need, then run the whole suite:
# unit tests, protocol tests, and the integration tests (root: real loop devices,
# filesystems and a private dockerd). Ends with one summary line "tests: N passed, N failed".
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install-deps.sh
# BALLAST_TEST_REPORTS=<dir> keeps jest's JSON reports there (per-suite start and end times).
if [ -n "${BALLAST_TEST_REPORTS:-}" ]; then
  reports=$BALLAST_TEST_REPORTS && mkdir -p "$reports"
else
  reports=$(mktemp -d /tmp/ballast-jest-XXXXXX) && trap 'rm -rf "$reports"' EXIT
fi
status=0
jest() { NODE_OPTIONS=--experimental-vm-modules npx jest --ci --json "$@" || status=$?; }
if [ $# -gt 0 ]; then
  jest --outputFile="$reports/given.json" "$@"
else
  # Three workers on a 2-CPU machine, but never more than two heavy suites at once (emulated VMs,
  # package builds: test/lab/heavy-slots.ts), which start first (test/long-suites-first.mjs): the
  # CPUs are then busy nearly all the run, and the short suites that mostly wait (dockerd, daemons,
  # leases) run three at a time at the end. The suites whose margins are a second or two (short
  # leases, the FC fault run, the real Cinder) run in the priority lane (test/lab/priority-lane.ts):
  # beside the others, but ahead of them for the CPU.
  jest --maxWorkers=3 --outputFile="$reports/all.json"
fi
node -e '
  const fs = require("fs");
  const rs = fs.readdirSync(process.argv[1]).map((f) => JSON.parse(fs.readFileSync(`${process.argv[1]}/${f}`, "utf8")));
  const sum = (k) => rs.reduce((n, r) => n + r[k], 0);
  if (sum("numTotalTests") === 0) { console.log("tests: no test ran"); process.exit(1); }
  console.log(`tests: ${sum("numPassedTests")} passed, ${sum("numFailedTests")} failed`);
' "$reports" || status=1
exit "$status"
