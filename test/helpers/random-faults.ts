import { spawn, type ChildProcess } from 'node:child_process';
import { mkdir, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { runScenario, scenarioScript } from '../lab/vm-scenario.js';

// The host side of the randomized fault runs in the VM lab (test/integration/vm/*-random-faults):
// two VMs each run a scenario script that ends in random-faults.mjs's agent; the coordinator
// (the same .mjs, run here) draws the steps from the seed and drives them; the checker (again the
// .mjs) reads the volumes' images. Reproduce a run with BALLAST_RANDOM_FAULTS_SEED=<seed>;
// BALLAST_RANDOM_FAULTS_STEPS sets the number of steps.

const SCRIPT = join(process.cwd(), 'test', 'integration', 'vm', 'scripts', 'random-faults.mjs');

export interface FaultRunSummary {
  seed: number;
  steps: number;
  stepsMs: number;
  faults: Record<string, number>;
  takeovers: number;
  sessions: Array<{ session: string; vm: string; volume: string }>;
  stuckWriters: string[];
  /** Unmount calls that returned an Err (retried at the end), and volumes no retry could unmount. */
  unmountErrors: string[];
  leftMounted: string[];
  /** Per VM, at the end: "<ballast mounts> <loop devices> <iSCSI sessions> <dm maps>". */
  attachedAtEnd: Record<string, string>;
  trace: string[];
}

export interface VolumeCheck {
  lines: number;
  malformed: number;
  sessionsOnDisk: number;
  interleavings: string[];
  lost: string[];
  acked: number;
  fsckBeforeReplay: number;
  fsckRepair: number;
  fsckAfter: number;
  fsckOutput: string;
}

export interface FaultCheck {
  volumes: Record<string, VolumeCheck>;
  doubleMounts: number;
  lostAcked: number;
  ackedTotal: number;
  fencedWriters: number;
}

export interface FaultRun {
  summary: FaultRunSummary;
  check: FaultCheck;
  wallMs: number;
}

export const faultSeed = (fallback: number) => Number(process.env.BALLAST_RANDOM_FAULTS_SEED ?? fallback);
export const faultSteps = (fallback: number) => Number(process.env.BALLAST_RANDOM_FAULTS_STEPS ?? fallback);

/** Runs random-faults.mjs in a role; `running` holds the child until it exits (to stop it on failure). */
function node(args: string[], env: Record<string, string>, onLine?: (line: string) => void, running?: Set<ChildProcess>): Promise<string> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [SCRIPT, ...args], { env: { ...process.env, ...env }, stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    let err = '';
    let partial = '';
    child.stdout.on('data', (d: Buffer) => {
      out += d.toString();
      partial += d.toString();
      for (let nl = partial.indexOf('\n'); nl >= 0; nl = partial.indexOf('\n')) {
        onLine?.(partial.slice(0, nl));
        partial = partial.slice(nl + 1);
      }
    });
    child.stderr.on('data', (d: Buffer) => (err += d.toString()));
    running?.add(child);
    child.once('exit', () => running?.delete(child));
    child.once('error', reject);
    child.once('close', (code) => (code === 0 ? resolve(out) : reject(new Error(`random-faults.mjs ${args[0]} exited ${code}:\n${err}\n${out.slice(-4000)}`))));
  });
}

/** Starts the VMs vm1 and vm2 (and any others the lab needs), calling onStart with each qemu's PID. */
export type FaultVms = (onStart: (vm: string, pid: number) => void) => Promise<unknown>;

/**
 * Runs both VMs (the scenario script `${scenario}.sh`, or `vms` when the lab has its own, as FC's
 * three) and the coordinator, then the checker on the images. `images` maps each volume to its
 * image file as this host sees it once the VMs ended. `arrayRestart` runs beside the coordinator
 * when it asks for one.
 */
export async function runFaultScenario(options: {
  scenario: string;
  backend: 'nfs' | 'iscsi' | 'fc';
  vms?: FaultVms;
  seed: number;
  steps: number;
  volumes: string[];
  images: (volume: string) => string;
  env: Record<string, string>;
  vmTimeoutMs: number;
  memoryMb: number;
  share: string;
  arrayRestart?: () => Promise<void>;
}): Promise<FaultRun> {
  const { share } = options;
  const started = Date.now();
  for (const dir of ['cmd', 'res', 'acks', 'out']) await mkdir(join(share, dir), { recursive: true });
  const pids: Record<string, number | undefined> = {};
  const scratch = await mkdtemp(join(tmpdir(), 'ballast-faults-check-'));
  let coordinating = true;
  const running = new Set<ChildProcess>();
  let restarter: Promise<void> | undefined;
  try {
    // no_timer_check: on a loaded host the emulated kernel's boot-time IO-APIC timer check can
    // fail and panic ("IO-APIC + timer doesn't work!"), seen with four VMs on two CPUs.
    const common = { shareDir: share, network: true, memoryMb: options.memoryMb, timeoutMs: options.vmTimeoutMs, env: options.env, kernelArgs: ['no_timer_check'] };
    const onStart = (name: string, pid: number) => {
      pids[name] = pid;
      void writeFile(join(share, `${name}.qemu-pid`), String(pid));
    };
    const vm = (name: string) =>
      runScenario(scenarioScript(options.scenario), { ...common, name, onStart: (pid) => onStart(name, pid) });
    // Once they ended, their PIDs are no longer ours to signal.
    const runs = (options.vms ? options.vms(onStart) : Promise.all([vm('vm1'), vm('vm2')])).finally(() => {
      for (const name of Object.keys(pids)) pids[name] = undefined;
    });
    runs.catch(() => undefined);

    const restartFile = join(share, 'array-restart');
    if (options.arrayRestart) {
      await writeFile(restartFile, '0 done');
      restarter = (async () => {
        let seen = '0 done';
        while (coordinating) {
          const text = (await readFile(restartFile, 'utf8')).trim();
          if (text !== seen && !text.endsWith('done')) {
            await options.arrayRestart!();
            await writeFile(restartFile, `${text} done`);
            seen = `${text} done`;
          }
          await new Promise((r) => setTimeout(r, 200));
        }
      })();
    }
    const coordinator = node(['coordinate'], {
      ...options.env,
      SHARE: share,
      BACKEND: options.backend,
      VOLUMES: options.volumes.join(','),
      BALLAST_RANDOM_FAULTS_SEED: String(options.seed),
      BALLAST_RANDOM_FAULTS_STEPS: String(options.steps),
      ...(options.arrayRestart ? { ARRAY_RESTART_FILE: restartFile } : {}),
    }, (line) => process.stdout.write(`[${options.backend} faults] ${line}\n`), running);
    // Whichever fails first: a VM (its console says why) or the coordinator.
    const vmsEnded = runs.then(async () => {
      await new Promise((r) => setTimeout(r, 10_000).unref()); // the coordinator's exit may trail the VMs'
      throw new Error('the VMs ended before the coordinator');
    });
    vmsEnded.catch(() => undefined);
    await Promise.race([coordinator, vmsEnded]);
    coordinating = false;
    await restarter;
    await runs;
    const summary = JSON.parse(await readFile(join(share, 'summary.json'), 'utf8')) as FaultRunSummary;
    const images = Object.fromEntries(options.volumes.map((v) => [v, options.images(v)]));
    const check = JSON.parse((await node(['check'], { SHARE: share, SCRATCH: scratch, IMAGES: JSON.stringify(images) })).trim().split('\n').pop()!) as FaultCheck;
    return { summary, check, wallMs: Date.now() - started };
  } finally {
    coordinating = false;
    for (const child of running) child.kill('SIGKILL');
    // On failure a VM may still run, perhaps frozen: wake and stop both (qemu's own PIDs).
    for (const pid of Object.values(pids)) {
      if (!pid) continue;
      try {
        process.kill(pid, 'SIGCONT');
        process.kill(pid, 'SIGKILL');
      } catch {
        // exited
      }
    }
    await rm(scratch, { recursive: true, force: true });
  }
}

/** The lines a test prints: seed, steps, faults by kind, and what the checker found. */
export function describeRun(name: string, run: FaultRun): string {
  const { summary, check } = run;
  const perVolume = Object.entries(check.volumes).map(([v, c]) =>
    `  ${v}: ${c.lines} lines from ${c.sessionsOnDisk} sessions, ${c.acked} acknowledged; interleavings ${c.interleavings.length}${c.interleavings.length ? ` ${JSON.stringify(c.interleavings.slice(0, 5))}` : ''}; ` +
    `lost ${c.lost.length ? JSON.stringify(c.lost.slice(0, 5)) : 'none'}; malformed ${c.malformed}; e2fsck -fn ${c.fsckBeforeReplay}, -fy ${c.fsckRepair}, -fn after ${c.fsckAfter}${c.fsckOutput ? `: ${JSON.stringify(c.fsckOutput.slice(0, 300))}` : ''}`);
  return [
    `${name}: seed ${summary.seed} (BALLAST_RANDOM_FAULTS_SEED), ${summary.steps} steps in ${(summary.stepsMs / 1000).toFixed(0)} s, whole run ${(run.wallMs / 1000).toFixed(0)} s`,
    `  faults by kind: ${JSON.stringify(summary.faults)}; takeovers ${summary.takeovers}; mount sessions ${summary.sessions.length}; writers fenced (stopped by an error) ${check.fencedWriters}; stuck writers ${summary.stuckWriters.length}; Unmount errors ${summary.unmountErrors.length}${summary.unmountErrors.length ? ` ${JSON.stringify(summary.unmountErrors.slice(0, 3))}` : ''}; left mounted ${summary.leftMounted.length}`,
    `  double mounts found: ${check.doubleMounts}; lost acknowledged writes: ${check.lostAcked} (of ${check.ackedTotal} acknowledged)`,
    ...perVolume,
    '  trace:',
    ...summary.trace.map((l) => `    ${l}`),
  ].join('\n');
}

/** What every randomized fault run must show, whatever the backend: the checks of `run()` once it is set. */
export function itHeldUnderFaults(run: () => FaultRun, steps: number): void {
  it('ran the steps, with mounts, unmounts and takeovers or moves', () => {
    expect(run().summary.steps).toBe(steps);
    for (const kind of ['mount', 'unmount']) expect(run().summary.faults[kind]).toBeGreaterThan(0);
    expect(run().summary.takeovers + (run().summary.faults.move ?? 0)).toBeGreaterThan(0);
  });

  it('every volume could be unmounted in the end, and neither host keeps anything attached', () => {
    expect(run().summary.leftMounted).toEqual([]);
    expect(run().summary.attachedAtEnd).toEqual({ vm1: '0 0 0 0', vm2: '0 0 0 0' });
  });

  it('no two hosts ever wrote one volume: sessions never interleave on disk (double mounts 0)', () => {
    expect(run().check.doubleMounts).toBe(0);
    for (const c of Object.values(run().check.volumes)) expect(c.malformed).toBe(0);
  });

  it('no acknowledged (fsynced) line is missing from the images (lost acknowledged writes 0)', () => {
    expect(run().check.ackedTotal).toBeGreaterThan(0);
    expect(run().check.lostAcked).toBe(0);
  });

  it('each image is a consistent filesystem once its journal is replayed', () => {
    for (const c of Object.values(run().check.volumes)) expect(c.fsckAfter).toBe(0);
  });
}
