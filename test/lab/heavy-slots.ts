import { mkdirSync, readdirSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { join, relative } from 'node:path';
import { isHeavySuite as isHeavyPath } from '../heavy-suites.mjs';
import { REPO_ROOT } from './ballast.js';
import { sleep } from './command.js';
import { pidLockHeld, releasePidLock, tryPidLock } from './pid-lock.js';

// At most two heavy suites at a time (test/heavy-suites.json: the emulated VMs, qemu without KVM,
// and the package builds). Each keeps a CPU busy, so two fill the 2-CPU CI machine and a third
// would only slow all three down. The other suites mostly wait (on dockerd, daemons, leases):
// at the end of a run, when only they were left, two at a time left the CPUs 20-40% idle. So jest
// runs three workers (scripts/test.sh) with the heavy suites first (test/long-suites-first.mjs):
// a heavy suite takes one of two slots (lock files naming the holder's PID) before its own hooks,
// in the run's order, and a light one starts only once a slot is free and no heavy suite waits,
// i.e. beside at most one heavy suite. Both hooks are registered for every integration suite by
// jest.config.js (setupFilesAfterEnv).

const SLOTS = ['/run/ballast-test-heavy-slot-0.pid', '/run/ballast-test-heavy-slot-1.pid'];
/**
 * Heavy suites waiting for a slot: one file each, named by the suite's place in the run's order
 * (the sequencer writes ORDER), then by when it began to wait. The first takes the next free slot.
 * (First come first served, the suites the workers start together at the beginning took the slots
 * in whatever order they came, the FC fault run third; and without a queue, the suite a worker had
 * just started took a freed slot before one that had waited for minutes polled again.)
 */
const QUEUE = '/run/ballast-test-heavy-queue';
const ORDER = '/run/ballast-test-order.json';
/** The workers start their first suites within a second or two: at the start of a run, all of them queue first. */
const START_SETTLE_MS = 3_000;
mkdirSync(QUEUE, { recursive: true });

export const isHeavySuite = (testPath: string): boolean => isHeavyPath(relative(REPO_ROOT, testPath));

async function waitFor(what: string, waitMs: number, ready: () => boolean): Promise<void> {
  const deadline = Date.now() + waitMs;
  while (!ready()) {
    if (Date.now() > deadline) throw new Error(`${what} (${SLOTS.join(', ')}) within ${waitMs / 1000} s`);
    await sleep(1_000);
  }
}

/** The waiting heavy suites' files, first first, without those of dead processes. */
function waiting(): string[] {
  return readdirSync(QUEUE).sort().filter((name) => {
    const pid = Number(name.split('-')[2]);
    try {
      process.kill(pid, 0);
      return true;
    } catch {
      rmSync(join(QUEUE, name), { force: true });
      return false;
    }
  });
}

/** This suite's place in the run's order, and whether the run started just now. */
function placeInRun(testPath: string): { place: number; starting: boolean } {
  try {
    const order = JSON.parse(readFileSync(ORDER, 'utf8')) as string[];
    const place = order.indexOf(testPath);
    return { place: place < 0 ? order.length : place, starting: Date.now() - statSync(ORDER).mtimeMs < 120_000 };
  } catch {
    return { place: 99_999, starting: false }; // run without the sequencer
  }
}

/** A heavy suite: holds a slot from before its own hooks until its end. */
export function holdHeavySlot(testPath: string, waitMs = 1_800_000): void {
  let held: string | undefined;
  beforeAll(async () => {
    const { place, starting } = placeInRun(testPath);
    const ticket = `${String(place).padStart(5, '0')}-${String(Date.now()).padStart(15, '0')}-${process.pid}`;
    writeFileSync(join(QUEUE, ticket), '');
    try {
      if (starting) await sleep(START_SETTLE_MS);
      await waitFor('no heavy-suite slot came free', waitMs, () => waiting()[0] === ticket && (held = SLOTS.find((slot) => tryPidLock(slot))) !== undefined);
    } finally {
      rmSync(join(QUEUE, ticket), { force: true });
    }
  }, waitMs + 10_000);
  afterAll(() => {
    if (held) releasePidLock(held);
  });
}

/** A light suite: starts once at most one heavy suite runs and none waits; takes nothing. */
export function waitForFreeSlot(waitMs = 1_800_000): void {
  beforeAll(() => waitFor('heavy suites kept both slots', waitMs, () => waiting().length === 0 && SLOTS.some((slot) => !pidLockHeld(slot))), waitMs + 10_000);
}
