import { readFileSync } from 'node:fs';
import { mountsUnder } from '../../test/helpers/cleanup.js';
import { abortCommands, run } from './proc.js';

type Step = { what: string; fn: () => Promise<unknown> | unknown };

/**
 * Undo steps, run last-in first-out. Each step runs once, even if run() is called again (a
 * signal handler and a finally block may both call it); a failing step is reported and the
 * rest still run.
 */
/** Every cleanup failure of the run, for the final report. */
export const cleanupProblems: string[] = [];

/** Stacks not yet run, newest last: a signal handler runs them all. */
const liveStacks: CleanupStack[] = [];

let aborting = false;
const lateSteps: Promise<unknown>[] = [];

/**
 * Runs every stack not yet run, newest first (for SIGINT/SIGTERM and the watchdog). The bench
 * code keeps going meanwhile: a step pushed after this started (a process started a moment
 * too late) is run at once, and waited for here.
 */
export async function runAllCleanups(): Promise<void> {
  aborting = true;
  abortCommands();
  for (const stack of [...liveStacks].reverse()) await stack.run();
  await new Promise((resolve) => setTimeout(resolve, 1_000));
  for (const stack of [...liveStacks].reverse()) await stack.run();
  await Promise.allSettled(lateSteps);
}

export class CleanupStack {
  private readonly steps: Step[] = [];
  private running: Promise<string[]> | undefined;

  constructor() {
    liveStacks.push(this);
  }

  push(what: string, fn: () => Promise<unknown> | unknown): void {
    if (!aborting) {
      this.steps.push({ what, fn });
      return;
    }
    lateSteps.push(
      (async () => fn())().catch((err: unknown) => cleanupProblems.push(`${what}: ${err instanceof Error ? err.message : String(err)}`)),
    );
  }

  run(): Promise<string[]> {
    this.running ??= (async () => {
      const failures: string[] = [];
      for (let step = this.steps.pop(); step; step = this.steps.pop()) {
        try {
          await step.fn();
        } catch (err) {
          failures.push(`${step.what}: ${err instanceof Error ? err.message : String(err)}`);
        }
      }
      this.running = undefined;
      cleanupProblems.push(...failures);
      const at = liveStacks.indexOf(this);
      if (at >= 0 && this.steps.length === 0) liveStacks.splice(at, 1);
      return failures;
    })();
    return this.running;
  }
}

/** Loop devices whose backing file is under `dir` (a bounded `losetup --list`). */
export async function loopDevicesUnder(dir: string): Promise<string[]> {
  const { stdout } = await run(['losetup', '--json', '--list', '--output', 'NAME,BACK-FILE'], { timeoutMs: 10_000, cleanup: true });
  if (!stdout.trim()) return [];
  const rows = (JSON.parse(stdout) as { loopdevices: { name: string; 'back-file': string | null }[] }).loopdevices;
  return rows
    .filter((r) => (r['back-file'] ?? '').replace(/ \(deleted\)$/, '').startsWith(`${dir}/`))
    .map((r) => r.name);
}

/**
 * Like test/helpers/cleanup.ts cleanUpUnder, but every command is bounded and the mounts can
 * be those of another mount namespace (`nsPid`: a process in it). Only mounts whose mount
 * point is under `dir` and loop devices whose backing file is under `dir` are touched.
 */
export async function cleanUpUnder(dir: string, nsPid?: number): Promise<{ mounts: string[]; loops: string[] }> {
  if (nsPid === -1) return { mounts: [], loops: [] }; // no process left in that namespace: it is gone, and its mounts with it
  const mountinfo = nsPid === undefined ? '/proc/self/mountinfo' : `/proc/${nsPid}/mountinfo`;
  let mounts: string[] = [];
  try {
    readFileSync(mountinfo);
    mounts = mountsUnder(dir, mountinfo).reverse();
  } catch {
    mounts = []; // the namespace is gone: so are its mounts
  }
  const prefix = nsPid === undefined ? [] : ['nsenter', `--mount=/proc/${nsPid}/ns/mnt`];
  for (const mountPoint of mounts) await run([...prefix, 'umount', '-l', mountPoint], { timeoutMs: 30_000, cleanup: true });
  const loops = nsPid === undefined ? await loopDevicesUnder(dir) : [];
  for (const device of loops) await run(['losetup', '-d', device], { timeoutMs: 30_000, cleanup: true });
  return { mounts, loops };
}
