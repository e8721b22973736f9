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
  # Two jest runs side by side. The heavy one, two workers: the VM suites (qemu without KVM) and
  # the package builds keep both CPUs busy. The light one, one worker: every other suite, mostly
  # waiting on dockerd, daemons and leases. Run after the heavy suites, they left the CPUs a third
  # idle for the last 15 minutes (the run of 06fbd26); beside them they use what the VMs leave.
  # The suites whose margins are a second or two (short leases, the FC fault run, the real Cinder)
  # run in the priority lane (test/lab/priority-lane.ts), one at a time, ahead of everything else.
  # Order: test/long-suites-first.mjs. The light run's output follows the heavy run's.
  heavy=(test/integration/vm/ test/integration/plugin-dockerfile.test.ts test/integration/deb-package.test.ts test/integration/managed-plugin.test.ts)
  light_log=$(mktemp /tmp/ballast-jest-light-XXXXXX)
  (
    status=0
    jest --maxWorkers=1 --testPathIgnorePatterns "$(IFS='|'; echo "${heavy[*]}")" --outputFile="$reports/light.json"
    exit "$status"
  ) >"$light_log" 2>&1 &
  light=$!
  jest --maxWorkers=2 --outputFile="$reports/heavy.json" "${heavy[@]}"
  wait "$light" || status=$?
  cat "$light_log" && rm -f "$light_log"
fi
node -e '
  const fs = require("fs");
  const rs = fs.readdirSync(process.argv[1]).map((f) => JSON.parse(fs.readFileSync(`${process.argv[1]}/${f}`, "utf8")));
  const sum = (k) => rs.reduce((n, r) => n + r[k], 0);
  if (sum("numTotalTests") === 0) { console.log("tests: no test ran"); process.exit(1); }
  console.log(`tests: ${sum("numPassedTests")} passed, ${sum("numFailedTests")} failed`);
' "$reports" || status=1
exit "$status"
