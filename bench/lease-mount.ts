// Lease bench figures 1-3: Mount latency with and without contention, moving a volume between
// two hosts, and takeover after a kill -9, through real `ballast serve` daemons on real loop
// devices. Two daemons (h1, h2) share one loop root with `shared: true` and a short lease; a
// third one (h0, `shared: false`, its own root) is the single-host baseline. No dockerd.
import { readdir, readFile, rmdir } from 'node:fs/promises';
import { join } from 'node:path';
import { mountsUnder } from '../test/helpers/cleanup.js';
import { CleanupStack, cleanUpUnder, loopDevicesUnder } from './lib/cleanup.js';
import { createLeaseDaemon, startLeaseDaemon, type LeaseDaemon, type LeaseTiming } from './lib/ballast.js';
import { callOk, callPlugin } from './lib/plugin-client.js';
import { run, sleep } from './lib/proc.js';

export const SHORT_LEASE: LeaseTiming = { seconds: 4, renew_every: 0.5, fence_after: 2.5, mount_wait: 20 };

export interface MountBenchOptions {
  runs: number;
  moveRuns: number;
  takeoverRuns: number;
  size: string;
  log: (line: string) => void;
}

export interface TakeoverRun {
  /** ms from the kill -9 until h2's Mount returned without Err. */
  killToMount: number;
  /** ms from the kill -9 until the watchdog's fenced.json timestamp (wall clock, same machine). */
  killToFence?: number;
  /** ms from the kill -9 until the watchdog's FENCING log line. */
  killToFenceLog?: number;
  /** VolumeDriver.Mount calls h2 needed (each waits up to mount_wait by itself). */
  mountCalls: number;
  /** Errors of the calls that failed, if any. */
  errors: string[];
  /** h2 could read back what h1 wrote before the kill. */
  dataReadBack: string;
}

export interface MountBenchResult {
  lease: LeaseTiming;
  size: string;
  /** Mount of a free, already formatted volume: h0 (no lease) and h1 (shared root, lease). */
  baselineMount: number[];
  freeMount: number[];
  /** h2's waiting Mount: from h1's Unmount returning to h2's Mount returning. */
  contendedMount: number[];
  /** How long h1's Unmount took in those rounds (it releases the lease last). */
  contendedUnmount: number[];
  move: number[];
  sameHost: number[];
  baselineSameHost: number[];
  takeover: TakeoverRun[];
  watchdogSeen: boolean;
  /** FENCING lines in h1's and h2's logs outside the takeover runs: none expected. */
  unexpectedFences: string[];
}

const mount = (d: LeaseDaemon, name: string, id: string, timeoutMs = 60_000) =>
  callOk<{ Mountpoint: string }>(d.socket, 'VolumeDriver.Mount', { Name: name, ID: id }, timeoutMs);
const unmount = (d: LeaseDaemon, name: string, id: string) => callOk(d.socket, 'VolumeDriver.Unmount', { Name: name, ID: id }, 60_000);

async function timed(fn: () => Promise<unknown>): Promise<number> {
  const t0 = performance.now();
  await fn();
  return performance.now() - t0;
}

export async function mountBench(root: string, options: MountBenchOptions): Promise<MountBenchResult> {
  const cleanup = new CleanupStack();
  const dir = join(root, 'mount');
  const shared = join(dir, 'shared');
  cleanup.push(`unmount and detach what is left under ${dir}`, () => cleanUpUnder(dir));
  const spec = (hostId: string, isShared: boolean) => ({
    dir: join(dir, hostId),
    hostId,
    loopRoot: isShared ? shared : join(dir, hostId, 'loop'),
    shared: isShared,
    lease: SHORT_LEASE,
    logLevel: 'info' as const,
  });
  try {
    const h0 = await createLeaseDaemon(spec('h0', false), cleanup);
    const h1 = await createLeaseDaemon(spec('h1', true), cleanup);
    const h2 = await createLeaseDaemon(spec('h2', true), cleanup);
    options.log('starting ballast h0 (single host), h1 and h2 (shared loop root)...');
    await Promise.all([h0, h1, h2].map((d) => startLeaseDaemon(d)));

    const opts = { size: options.size, fstype: 'ext4' };
    await callOk(h1.socket, 'VolumeDriver.Create', { Name: 'lat', Opts: opts });
    await callOk(h0.socket, 'VolumeDriver.Create', { Name: 'lat', Opts: opts });
    // Untimed first Mount of each (mkfs), so every timed Mount finds a formatted volume.
    for (const d of [h1, h0]) {
      await mount(d, 'lat', 'warm');
      await unmount(d, 'lat', 'warm');
    }

    // ---- 1a. Mount of a free volume: h1 (lease) vs h0 (no lease), interleaved ----------------
    options.log(`timing Mount of a free volume on h1 and on the baseline, ${options.runs} runs each...`);
    const baselineMount: number[] = [];
    const freeMount: number[] = [];
    for (let i = 0; i < options.runs; i += 1) {
      const pair: [LeaseDaemon, number[]][] = [
        [h1, freeMount],
        [h0, baselineMount],
      ];
      for (const [d, samples] of i % 2 ? pair.reverse() : pair) {
        samples.push(await timed(() => mount(d, 'lat', `free-${i}`)));
        await unmount(d, 'lat', `free-${i}`);
      }
    }

    // ---- 1b. Contention: h2's Mount waits while h1 holds the volume ---------------------------
    options.log(`timing ${options.runs} contended Mounts (h2 waits while h1 holds the volume)...`);
    const contendedMount: number[] = [];
    const contendedUnmount: number[] = [];
    for (let i = 0; i < options.runs; i += 1) {
      await mount(h1, 'lat', `hold-${i}`);
      const waiting = callPlugin<{ Mountpoint?: string; Err?: string }>(h2.socket, 'VolumeDriver.Mount', { Name: 'lat', ID: `wait-${i}` }, 60_000).then((reply) => ({
        reply,
        at: performance.now(),
      }));
      // h2's waiting Mount retries every second; releasing at a different point of that second
      // each round spreads the samples over its whole cycle.
      await sleep(1_050 + (1_000 * i) / options.runs);
      const t0 = performance.now();
      await unmount(h1, 'lat', `hold-${i}`);
      const released = performance.now();
      const { reply, at } = await waiting;
      if (reply.status !== 200 || reply.body.Err) throw new Error(`h2's waiting Mount failed: ${reply.body.Err ?? reply.status}`);
      contendedUnmount.push(released - t0);
      contendedMount.push(at - released);
      await unmount(h2, 'lat', `wait-${i}`);
    }

    // ---- 2. Move: Unmount on h1, then Mount on h2; vs Unmount + Mount on one host ------------
    options.log(`timing ${options.moveRuns} moves h1 -> h2 and as many Unmount+Mount on one host...`);
    const move: number[] = [];
    const sameHost: number[] = [];
    const baselineSameHost: number[] = [];
    const cycle = async (from: LeaseDaemon, to: LeaseDaemon, i: number, samples: number[]) => {
      await mount(from, 'lat', `m-${i}`);
      samples.push(
        await timed(async () => {
          await unmount(from, 'lat', `m-${i}`);
          await mount(to, 'lat', `m2-${i}`);
        }),
      );
      await unmount(to, 'lat', `m2-${i}`);
    };
    for (let i = 0; i < options.moveRuns; i += 1) {
      const order: (() => Promise<void>)[] = [() => cycle(h1, h2, i, move), () => cycle(h1, h1, i, sameHost), () => cycle(h0, h0, i, baselineSameHost)];
      for (let k = 0; k < order.length; k += 1) await order[(k + i) % order.length]!();
    }

    // ---- 3. Takeover: kill -9 h1 while it holds a volume; h2 Mounts at once ------------------
    options.log(`takeover: ${options.takeoverRuns} runs of kill -9 h1 while it has a volume mounted (each ~${SHORT_LEASE.seconds + 2} s)...`);
    const takeover: TakeoverRun[] = [];
    let watchdogSeen = true;
    for (let run = 0; run < options.takeoverRuns; run += 1) {
      const name = `take-${run}`;
      await callOk(h1.socket, 'VolumeDriver.Create', { Name: name, Opts: opts });
      const mp1 = (await mount(h1, name, 'on-h1')).body.Mountpoint;
      const marker = `written on h1 before the kill, run ${run}`;
      // fsync'd before the kill, so it is on the image whatever happens to h1's page cache.
      await writeSynced(join(mp1, 'marker'), marker);
      const watchdog = await h1.waitForWatchdog();
      if (watchdog === undefined) watchdogSeen = false;
      // Let h1 renew a few times first, so the kill falls at a random point of its renew cycle.
      await sleep(SHORT_LEASE.renew_every * 1000 * (2 + Math.random()));
      const killedWall = Date.now();
      const t0 = performance.now();
      await h1.stop('SIGKILL');
      const errors: string[] = [];
      let mountCalls = 0;
      let mp2 = '';
      while (!mp2) {
        mountCalls += 1;
        const reply = await callPlugin<{ Mountpoint?: string; Err?: string }>(h2.socket, 'VolumeDriver.Mount', { Name: name, ID: 'on-h2' }, 60_000);
        if (reply.status === 200 && !reply.body.Err) mp2 = reply.body.Mountpoint ?? '';
        else {
          errors.push(reply.body.Err ?? `HTTP ${reply.status}`);
          if (performance.now() - t0 > 40_000) break;
          await sleep(100);
        }
      }
      const killToMount = mp2 ? performance.now() - t0 : NaN;
      const fenced = JSON.parse(await readFile(join(h1.stateDir, 'fenced.json'), 'utf8').catch(() => '{}')) as Record<string, { at: string }>;
      const fenceLine = (await h1.logs()).find((l) => l.process === 'fence-watchdog' && String(l.message).startsWith('FENCING') && l.volume === name);
      const dataReadBack = mp2 ? await readFile(join(mp2, 'marker'), 'utf8').then((t) => (t === marker ? 'yes' : `no: ${JSON.stringify(t)}`), (e: Error) => `no: ${e.message}`) : 'no mount';
      takeover.push({
        killToMount,
        killToFence: fenced[name] ? Date.parse(fenced[name].at) - killedWall : undefined,
        killToFenceLog: fenceLine ? Date.parse(String(fenceLine.timestamp)) - killedWall : undefined,
        mountCalls,
        errors,
        dataReadBack,
      });
      // The watchdog stays up during the measurement; now it goes, by its PID.
      await h1.stopWatchdog();
      if (mp2) await unmount(h2, name, 'on-h2');
      // h1 died with the volume mounted: take its mount and loop device down by hand (only
      // what lives under h1's dirs and the shared root), then start it again for the next run.
      await unmountAndDetach(h1.mountRoot, shared);
      if (run + 1 < options.takeoverRuns) await startLeaseDaemon(h1);
    }

    // Everything else was unmounted through the protocol: nothing may be left.
    const left = { mounts: mountsUnder(dir), loops: await loopDevicesUnder(dir) };
    if (left.mounts.length || left.loops.length) throw new Error(`left behind: mounts [${left.mounts.join(', ')}], loop devices [${left.loops.join(', ')}]`);
    const unexpectedFences: string[] = [];
    for (const d of [h1, h2]) {
      for (const line of await d.logs()) {
        if (!String(line.message).startsWith('FENCING')) continue;
        if (line.process === 'fence-watchdog' && String(line.volume).startsWith('take-')) continue; // the takeover runs' own fences
        unexpectedFences.push(`${d.hostId} ${String(line.timestamp)} volume ${String(line.volume)}: ${String(line.reason)}`);
      }
    }
    return { lease: SHORT_LEASE, size: options.size, baselineMount, freeMount, contendedMount, contendedUnmount, move, sameHost, baselineSameHost, takeover, watchdogSeen, unexpectedFences };
  } finally {
    const failures = await cleanup.run();
    if (failures.length) options.log(`cleanup problems: ${failures.join('; ')}`);
  }
}

/**
 * Unmounts (not lazily: the loop device must be free afterwards) every mount under `mounts`
 * and removes its mount point: a mount namespace another process created meanwhile holds a copy
 * of the mount, which keeps the loop device busy, and removing the directory detaches that copy.
 * Then detaches every loop device backed by a file under `images`, waiting (bounded) for the
 * kernel to let go of them.
 */
async function unmountAndDetach(mounts: string, images: string): Promise<void> {
  for (const mountPoint of mountsUnder(mounts).reverse()) {
    await run(['umount', mountPoint], { timeoutMs: 30_000, cleanup: true });
    await rmdir(mountPoint).catch(() => undefined);
  }
  const deadline = Date.now() + 10_000;
  for (;;) {
    const loops = await loopDevicesUnder(images);
    if (!loops.length) return;
    if (Date.now() > deadline) throw new Error(`loop devices still attached after 10 s: ${loops.join(', ')} (mounted in: ${await whoMounts(loops)})`);
    for (const device of loops) await run(['losetup', '-d', device], { timeoutMs: 30_000, cleanup: true }).catch(() => undefined);
    await sleep(100);
  }
}

/** Which processes' mount tables still show these devices (for the error message only). */
async function whoMounts(devices: string[]): Promise<string> {
  const found: string[] = [];
  for (const pid of (await readdir('/proc')).filter((e) => /^\d+$/.test(e))) {
    const info = await readFile(`/proc/${pid}/mountinfo`, 'utf8').catch(() => '');
    for (const line of info.split('\n')) {
      const fields = line.split(' ');
      const source = fields[fields.indexOf('-', 6) + 2];
      if (source && devices.includes(source)) found.push(`pid ${pid} at ${fields[4]}`);
    }
  }
  return found.slice(0, 5).join(', ') || 'no mount table';
}

async function writeSynced(path: string, text: string): Promise<void> {
  const { open } = await import('node:fs/promises');
  const handle = await open(path, 'w');
  try {
    await handle.writeFile(text);
    await handle.sync();
  } finally {
    await handle.close();
  }
}
