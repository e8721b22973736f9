import { getPriority, setPriority } from 'node:os';
import { sleep } from './command.js';
import { releasePidLock, tryPidLock } from './pid-lock.js';

// The priority lane: the suites whose margins are a second or two (short leases and fence
// deadlines, three emulated VMs renewing leases over SSH, the real Cinder's services) run
// ahead of whatever the other jest worker runs. The whole suite is CPU-bound on 2 CPUs (mostly
// emulated VMs); these suites used to run alone after it, leaving a CPU idle. In the lane they
// run beside the others and get the CPU first: the test process takes a lower nice value
// before the suite starts anything, and every process the suite spawns (daemons, qemu,
// Cinder's services) inherits it. (Nice orders processes within one session's autogroup, the
// kernel's sched_autogroup: one the suite starts in a session of its own, detached, has a group
// and its CPU share to itself anyway. So has anything run beside CI from another shell: it takes
// half the CPUs from the whole run.) One lane suite at a time, so that two never squeeze each
// other: the lane is a lock file naming the holder's PID (pid-lock.ts).

const LOCK = '/run/ballast-test-priority-lane.pid';
/** Lower is sooner; -10 gives a process about 9 times the CPU share of one at 0. */
const LANE_NICE = -10;

async function takeLane(waitMs: number): Promise<void> {
  const deadline = Date.now() + waitMs;
  while (!tryPidLock(LOCK)) {
    if (Date.now() > deadline) throw new Error(`the priority lane (${LOCK}) stayed taken for ${waitMs / 1000} s`);
    await sleep(1_000);
  }
}

/**
 * Call first in a suite file, before its other hooks: the suite waits for the lane, then runs
 * at LANE_NICE (this jest worker and everything it spawns from now on) until its end.
 */
export function runInPriorityLane(waitMs = 900_000): void {
  let before: number | undefined;
  beforeAll(async () => {
    await takeLane(waitMs);
    before = getPriority();
    setPriority(LANE_NICE); // the calling thread: jest runs the suite and spawns from it
  }, waitMs + 10_000);
  afterAll(() => {
    if (before === undefined) return; // never took the lane
    setPriority(before);
    releasePidLock(LOCK);
  });
}
