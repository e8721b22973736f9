// Jest's test sequencer for the whole suite: the longest suites start first, so that the workers
// finish together. Jest's own order does that only from its cache of earlier runs; on a fresh
// machine it orders by file size, and a short file that drives VMs for ten minutes (the random
// fault runs) started last and ran alone at the end. Seconds as measured in a full CI run on
// 2 CPUs (2026-12-06, fresh clone of d4314a8); refresh them from a run's "PASS ... (N s)" lines
// when a suite's length changes much.
import { writeFileSync } from 'node:fs';
import { relative } from 'node:path';
import TestSequencer from '@jest/test-sequencer';
import { isHeavySuite } from './heavy-suites.mjs';

// The heavy suites (emulated VMs, package builds) before every other: at most two of them run at
// once and a light suite waits for a free slot (test/lab/heavy-slots.ts), so a light suite queued
// among them would hold the third worker idle.
/** Read by test/lab/heavy-slots.ts. */
const ORDER_FILE = '/run/ballast-test-order.json';

const SECONDS = {
  'test/integration/vm/iscsi-daemon.test.ts': 580,
  'test/integration/vm/fc-fabric.test.ts': 427,
  'test/integration/vm/iscsi-random-faults.test.ts': 426,
  'test/integration/vm/nfs-random-faults.test.ts': 337,
  'test/integration/vm/iscsi-two-hosts.test.ts': 332,
  'test/integration/vm/nfs-takeover.test.ts': 307,
  'test/integration/vm/fence-fsync.test.ts': 209,
  'test/integration/vm/nfs-semantics.test.ts': 183,
  'test/integration/vm/lio-array.test.ts': 158,
  'test/integration/vm/cinder-move.test.ts': 150,
  'test/integration/managed-plugin.test.ts': 141,
  'test/integration/vm/nfs-volume-index.test.ts': 123,
  'test/integration/vm/luks.test.ts': 121,
  'test/integration/vm/arrays-iscsi.test.ts': 120,
  'test/integration/vm/nvme-tcp.test.ts': 106,
  'test/integration/vm/iscsi-faults.test.ts': 103,
  'test/integration/backend-failures.test.ts': 77,
  'test/integration/lease-property.test.ts': 75,
  'test/integration/docker/volumes.test.ts': 68,
  'test/integration/vm/vm-lab.test.ts': 63,
  'test/integration/crash-between-steps.test.ts': 58,
  'test/integration/secrets-logs.test.ts': 55,
  'test/integration/iscsi-snapshots.test.ts': 54,
  'test/integration/cinder.test.ts': 51,
  'test/integration/cinder-snapshots.test.ts': 46,
  'test/integration/vm/vmdk-guest.test.ts': 45,
  'test/integration/multihost/move.test.ts': 43,
  'test/integration/lease-takeover.test.ts': 41,
  'test/integration/multihost/crash.test.ts': 34,
  'test/integration/vsphere/vmdk-daemon.test.ts': 33,
  'test/integration/multihost/partition.test.ts': 33,
  'test/integration/protocol-fuzz.test.ts': 32,
};

// Started first, in this order: the FC fault run, in the priority lane (test/lab/priority-lane.ts:
// its three emulated VMs renew leases over SSH and must not miss fence_after), beside the two
// package builds, long and CPU-bound but with no deadline of seconds to miss while the lane has
// the CPU first. (Started last instead, it ran alone at the end with a CPU partly idle.)
const FIRST = [
  'test/integration/vm/fc-random-faults.test.ts',
  'test/integration/plugin-dockerfile.test.ts',
  'test/integration/deb-package.test.ts',
];

export default class LongSuitesFirst extends TestSequencer {
  sort(tests) {
    const seconds = (test) => {
      const path = relative(test.context.config.rootDir, test.path);
      return FIRST.includes(path) ? 1e7 - FIRST.indexOf(path) : (isHeavySuite(path) ? 1e6 : 0) + (SECONDS[path] ?? 0);
    };
    // Jest's order (cached durations, else file size) among the suites not listed.
    const jestOrder = new Map(super.sort([...tests]).map((test, i) => [test.path, i]));
    const sorted = [...tests].sort((a, b) => seconds(b) - seconds(a) || jestOrder.get(a.path) - jestOrder.get(b.path));
    // The heavy suites wait for their slots in this order, not in the order the workers happened to
    // start them (test/lab/heavy-slots.ts).
    writeFileSync(ORDER_FILE, JSON.stringify(sorted.map((test) => test.path)));
    return sorted;
  }
}
