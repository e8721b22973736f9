// Jest's test sequencer for the whole suite: the longest suites start first, so that both workers
// finish together. Jest's own order does that only from its cache of earlier runs; on a fresh
// machine it orders by file size, and a short file that drives VMs for ten minutes (the random
// fault runs) started last and ran alone at the end. Seconds as measured in a full CI run on
// 2 CPUs (2026-12-06, fresh clone of 5dee348); refresh them from a run's "PASS ... (N s)" lines when a suite's length changes much.
import { relative } from 'node:path';
import TestSequencer from '@jest/test-sequencer';

const SECONDS = {
  'test/integration/vm/iscsi-daemon.test.ts': 538,
  'test/integration/vm/fc-fabric.test.ts': 353,
  'test/integration/vm/nfs-takeover.test.ts': 388,
  'test/integration/vm/iscsi-random-faults.test.ts': 300,
  'test/integration/vm/fence-fsync.test.ts': 207,
  'test/integration/vm/nfs-random-faults.test.ts': 311,
  'test/integration/vm/iscsi-two-hosts.test.ts': 262,
  'test/integration/vm/lio-array.test.ts': 209,
  'test/integration/vm/nfs-semantics.test.ts': 169,
  'test/integration/plugin-dockerfile.test.ts': 301,
  'test/integration/vm/cinder-move.test.ts': 196,
  'test/integration/vm/nvme-tcp.test.ts': 104,
  'test/integration/managed-plugin.test.ts': 129,
  'test/integration/vm/arrays-iscsi.test.ts': 108,
  'test/integration/vm/luks.test.ts': 127,
  'test/integration/vm/iscsi-faults.test.ts': 105,
  'test/integration/deb-package.test.ts': 192,
  'test/integration/vm/nfs-volume-index.test.ts': 155,
  'test/integration/backend-failures.test.ts': 79,
  'test/integration/iscsi-snapshots.test.ts': 35,
  'test/integration/vm/vm-lab.test.ts': 40,
  'test/integration/secrets-logs.test.ts': 78,
};

// Started last: the FC fault run's three emulated VMs renew leases over SSH to one of them, and
// beside another suite's VMs those renewals missed fence_after. Last, it overlaps only the short
// suites at the end of the run (no VMs), and then runs alone. (Run beside the short-lease, Cinder
// and array simulator suites instead, it took 451 s instead of 314 and the real Cinder failed.)
const LAST = new Set(['test/integration/vm/fc-random-faults.test.ts']);

export default class LongSuitesFirst extends TestSequencer {
  sort(tests) {
    const seconds = (test) => {
      const path = relative(test.context.config.rootDir, test.path);
      return LAST.has(path) ? -1 : (SECONDS[path] ?? 0);
    };
    // Jest's order (cached durations, else file size) among the suites not listed.
    const jestOrder = new Map(super.sort([...tests]).map((test, i) => [test.path, i]));
    return [...tests].sort((a, b) => seconds(b) - seconds(a) || jestOrder.get(a.path) - jestOrder.get(b.path));
  }
}
