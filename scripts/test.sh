#!/usr/bin/env bash
# Command 2: install what ballast and its tests need, then run the whole suite:
# unit tests, protocol tests, and the integration tests (root: real loop devices,
# filesystems and a private dockerd). Ends with one summary line "tests: N passed, N failed".
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install-deps.sh
report=$(mktemp /tmp/ballast-jest-XXXXXX.json)
trap 'rm -f "$report"' EXIT
status=0
# Two workers on a 2-CPU machine (jest's default is one fewer than the CPUs): most suites wait on
# dockerd, leases and VMs rather than compute, and each VM test's qemu uses one CPU.
NODE_OPTIONS=--experimental-vm-modules npx jest --ci --maxWorkers=2 --json --outputFile="$report" "$@" || status=$?
node -e '
  const r = JSON.parse(require("fs").readFileSync(process.argv[1], "utf8"));
  if (r.numTotalTests === 0) { console.log("tests: no test ran"); process.exit(1); }
  console.log(`tests: ${r.numPassedTests} passed, ${r.numFailedTests} failed`);
' "$report" || status=1
exit "$status"
