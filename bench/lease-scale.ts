// Lease bench figure 4: a scale simulation toward large clusters. 50 `ballast serve` processes
// (own host ids, state dirs and sockets, no dockerd) share one loop root (`shared: true`) with
// 2,000 volumes, 40 held by each host. No loop devices: the ownership records are written
// through the LoopDriver API by this process, as each holder's Mount would have written them.
// Then: metadata writes per second at steady state, host-lease reads per round (the daemons'
// own, counted by inotify, and one observer of the beacon scheme beside one of the old scheme,
// in the same run), and how long after a kill -9 every volume of the dead host is takeable.
import { watch, type FSWatcher } from 'node:fs';
import { readdir, readFile } from 'node:fs/promises';
import { hostname } from 'node:os';
import { join } from 'node:path';
import { LoopDriver } from '../src/drivers/loop-driver.js';
import { silentLogger } from '../src/log.js';
import { HostLeaseKeeper } from '../src/ownership/host-lease.js';
import { HostMonitor } from '../src/ownership/host-monitor.js';
import { OwnershipLease } from '../src/ownership/lease.js';
import type { HostIdentity, OwnershipRecord } from '../src/ownership/types.js';
import { CleanupStack } from './lib/cleanup.js';
import { createLeaseDaemon, startLeaseDaemon, type LeaseDaemon, type LeaseTiming } from './lib/ballast.js';
import { measureObservers, type HostLeaseReads } from './lib/host-lease-reads.js';
import { OpenCounter, type OpenCounts } from './lib/open-counter.js';
import { callOk, callPlugin } from './lib/plugin-client.js';
import { sleep } from './lib/proc.js';

export { printHostLeaseReads, type HostLeaseReads } from './lib/host-lease-reads.js';

export const SCALE_LEASE: LeaseTiming = { seconds: 20, renew_every: 2, fence_after: 12, mount_wait: 60 };

export interface ScaleBenchOptions {
  hosts: number;
  perHost: number;
  steadySeconds: number;
  /** How many daemons start at once (2 cores: more only queues). */
  startWidth: number;
  log: (line: string) => void;
}

export interface ScaleBenchResult {
  hosts: number;
  volumes: number;
  lease: LeaseTiming;
  startSeconds: number;
  createSeconds: number;
  holdSeconds: number;
  rssMiB: number;
  steady: {
    seconds: number;
    hostLeaseWrites: number;
    volumeRecordWrites: number;
    /** inotify renames onto .hosts/<id>.json in the same window: a cross-check of the renewSeq count. */
    hostLeaseRenamesSeen: number;
    /** heartbeat.json in each daemon's own state dir (local disk, not the shared root). */
    localHeartbeatWrites: number;
    /** Sum over the daemons of their /proc/PID/io deltas in the window. */
    daemonIo: { syscr: number; rchar: number; syscw: number; wchar: number };
    /** Mean size of a host lease file, to turn bytes read into file reads. */
    leaseBytes: number;
    aliveAfter: number;
  };
  reads: HostLeaseReads;
  takeover: {
    victim: string;
    /** Seconds the observer had watched the victim's host lease before the kill. */
    watchedBefore: number;
    /** Seconds between the victim's last renewal (renewedAtWall) and the kill. */
    lastRenewalBeforeKill: number;
    /** Seconds from the kill until the bench's observer judged the first / the last of its volumes takeable. */
    observerFirst: number;
    observerLast: number;
    observerTakeable: number;
    /** A surviving daemon (it reads every host lease each renewal round): Ballast.Release (force) of each volume, from the kill on. */
    releaserFirst: number;
    releaserLast: number;
    released: number;
    releaseCalls: number;
    /** The refusal a user sees while the dead host's lease has not expired yet. */
    firstRefusal: string;
    /** The victim's watchdog, killed by its PID (none is expected: nothing was mounted). */
    watchdog: string;
  };
}

const volumeName = (i: number) => `sv-${String(i).padStart(4, '0')}`;
const hostIdOf = (k: number) => `s${String(k).padStart(2, '0')}`;

/** Runs `count` calls of `fn` with at most `width` in flight. */
async function pool(count: number, width: number, fn: (i: number) => Promise<void>): Promise<void> {
  let next = 0;
  await Promise.all(
    Array.from({ length: width }, async () => {
      for (let i = next++; i < count; i = next++) await fn(i);
    }),
  );
}

type Io = NonNullable<ReturnType<LeaseDaemon['io']>>;

interface Snapshot {
  at: number;
  /** Mean size in bytes of a .hosts/<id>.json file. */
  leaseBytes: number;
  io: Map<string, Io>;
  hosts: Map<string, { generation: number; renewSeq: number }>;
  revisions: Map<string, number>;
  beats: Map<string, number>;
}

/** Reads every host lease, every volume's metadata revision and every daemon's heartbeat. */
async function snapshot(root: string, names: string[], daemons: LeaseDaemon[]): Promise<Snapshot> {
  const started = performance.now();
  const io = new Map<string, Io>();
  for (const d of daemons) {
    const counters = d.io();
    if (counters) io.set(d.hostId, counters);
  }
  const hosts = new Map<string, { generation: number; renewSeq: number }>();
  const leaseDir = join(root, '.hosts');
  let leaseBytes = 0;
  for (const entry of await readdir(leaseDir)) {
    if (entry.startsWith('.') || !entry.endsWith('.json')) continue;
    const text = await readFile(join(leaseDir, entry), 'utf8');
    leaseBytes += Buffer.byteLength(text);
    const lease = JSON.parse(text) as { generation: number; renewSeq: number };
    hosts.set(entry.slice(0, -5), { generation: lease.generation, renewSeq: lease.renewSeq });
  }
  const revisions = new Map<string, number>();
  await pool(names.length, 32, async (i) => {
    const name = names[i]!;
    const meta = JSON.parse(await readFile(join(root, name, 'meta.json'), 'utf8')) as { revision: number };
    revisions.set(name, meta.revision);
  });
  const beats = new Map<string, number>();
  for (const d of daemons) {
    const beat = await readFile(join(d.stateDir, 'heartbeat.json'), 'utf8').then((t) => (JSON.parse(t) as { seq: number }).seq, () => undefined);
    if (beat !== undefined) beats.set(d.hostId, beat);
  }
  // The middle of the read: the counts are taken over the time between two middles.
  return { at: (started + performance.now()) / 2, leaseBytes: leaseBytes / Math.max(1, hosts.size), io, hosts, revisions, beats };
}

export async function scaleBench(root: string, options: ScaleBenchOptions): Promise<ScaleBenchResult> {
  const cleanup = new CleanupStack();
  const dir = join(root, 'scale');
  const shared = join(dir, 'shared');
  const lease = SCALE_LEASE;
  const bootId = (await readFile('/proc/sys/kernel/random/boot_id', 'utf8')).trim();
  const log = silentLogger();
  const driver = new LoopDriver({ root: shared, shared: true }, log);
  let watcher: FSWatcher | undefined;
  cleanup.push('close the inotify watch', () => watcher?.close());
  try {
    // ---- 50 daemons ----------------------------------------------------------------------------
    const daemons: LeaseDaemon[] = [];
    for (let k = 0; k < options.hosts; k += 1) {
      const hostId = hostIdOf(k);
      daemons.push(await createLeaseDaemon({ dir: join(dir, hostId), hostId, loopRoot: shared, shared: true, lease, logLevel: 'warn' }, cleanup));
    }
    // Runs first (last in): all at once rather than one after another; the per-daemon steps
    // registered by create() then find nothing left to stop.
    cleanup.push(`stop the ${options.hosts} daemons`, async () => {
      options.log(`stopping ${options.hosts} daemons...`);
      await Promise.all(daemons.map((d) => d.stop()));
      await Promise.all(daemons.map((d) => d.stopWatchdog()));
    });
    options.log(`starting ${options.hosts} ballast daemons (${options.startWidth} at a time)...`);
    const t0 = performance.now();
    await pool(daemons.length, options.startWidth, async (k) => startLeaseDaemon(daemons[k]!, 60_000));
    const startSeconds = (performance.now() - t0) / 1000;
    const creator = daemons[0]!;

    // ---- 2,000 volumes through one daemon's socket ----------------------------------------------
    const total = options.hosts * options.perHost;
    const names = Array.from({ length: total }, (_, i) => volumeName(i));
    options.log(`creating ${total} volumes through ${creator.hostId}'s VolumeDriver.Create (8 in flight)...`);
    const t1 = performance.now();
    await pool(total, 8, async (i) => void (await callOk(creator.socket, 'VolumeDriver.Create', { Name: names[i], Opts: { size: '16M' } }, 60_000)));
    const createSeconds = (performance.now() - t1) / 1000;

    // ---- each host holds 40: ownership records written as its Mount would (no loop device) ----
    options.log(`writing ${total} ownership records (${options.perHost} held by each host) through the LoopDriver API...`);
    const t2 = performance.now();
    const holders = new Map<string, { hostId: string; bootId: string; hostname: string; hostGeneration: number }>();
    for (const d of daemons) {
      const hostLease = await driver.readHostLease(d.hostId);
      if (!hostLease) throw new Error(`no host lease for ${d.hostId} under ${shared}/.hosts`);
      holders.set(d.hostId, { hostId: d.hostId, bootId, hostname: hostname(), hostGeneration: hostLease.generation });
    }
    const ownerOf = (i: number) => daemons[Math.floor(i / options.perHost)]!.hostId;
    await pool(total, 8, async (i) => {
      const name = names[i]!;
      const current = await driver.readOwnership(name);
      if (!current) throw new Error(`volume ${name} is missing`);
      const next: OwnershipRecord = { state: 'held', holder: holders.get(ownerOf(i))!, generation: current.value.generation + 1, updatedAt: new Date().toISOString() };
      await driver.writeOwnership(name, current.revision, next);
    });
    const holdSeconds = (performance.now() - t2) / 1000;

    // ---- the observer: watches the victim's volumes from before the kill -------------------------
    const victimIndex = Math.min(17, options.hosts - 1);
    const victim = daemons[victimIndex]!;
    const releaser = daemons[victimIndex === 0 ? 1 : 0]!;
    const victimVolumes = names.filter((_, i) => ownerOf(i) === victim.hostId);
    const me: HostIdentity = { hostId: 'bench-observer', bootId, hostname: hostname() };
    const monitor = new HostMonitor(lease.seconds);
    // Never registered: the observer only reads. OwnershipLease wants a keeper for its own generation.
    const keeper = new HostLeaseKeeper(driver, me, { leaseSeconds: lease.seconds, renewEverySeconds: lease.renew_every }, log);
    const observer = new OwnershipLease(driver, me, log, { store: driver, keeper, monitor });
    let killedAt = Infinity;
    const takeableAt = new Map<string, number>();
    let observing = true;
    const watchStarted = performance.now();
    const observe = (async () => {
      while (observing) {
        for (const name of victimVolumes) {
          if (takeableAt.has(name)) continue;
          const current = await driver.readOwnership(name);
          const record = current?.value;
          if (!record) continue;
          // Freed (by the releasing daemon) counts as takeable too; the observer saw it first anyway.
          const dead = record.state !== 'held' || record.holder.hostId !== victim.hostId || (await observer.assess(record))?.dead;
          if (dead) {
            const now = performance.now();
            if (now < killedAt) throw new Error(`observer judged ${name} takeable while ${victim.hostId} was alive`);
            takeableAt.set(name, now);
          }
        }
        if (takeableAt.size === victimVolumes.length) return;
        await sleep(200);
      }
    })();
    observe.catch(() => undefined); // rethrown by the await below; not an unhandled rejection meanwhile
    cleanup.push('stop the observer', async () => {
      observing = false;
      await observe.catch(() => undefined);
    });

    // ---- steady state: metadata writes per second --------------------------------------------
    await sleep(lease.renew_every * 1000);
    let renames = 0;
    let counting = false;
    watcher = watch(join(shared, '.hosts'), (_event, file) => {
      if (counting && file && /^[^.].*\.json$/.test(String(file))) renames += 1;
    });
    const opens = await OpenCounter.watch(join(shared, '.hosts'));
    cleanup.push('stop the inotify open counter', () => opens.close());
    options.log(`steady state: counting metadata writes and host-lease reads for ${options.steadySeconds} s...`);
    const before = await snapshot(shared, names, daemons);
    counting = true;
    opens.start();
    const openStarted = performance.now();
    await sleep(options.steadySeconds * 1000);
    counting = false;
    const openCounts: OpenCounts = await opens.stop();
    const openSeconds = (performance.now() - openStarted) / 1000;
    const after = await snapshot(shared, names, daemons);
    watcher.close();
    await opens.close();
    let hostLeaseWrites = 0;
    for (const [id, b] of after.hosts) {
      const a = before.hosts.get(id);
      if (a && a.generation === b.generation) hostLeaseWrites += b.renewSeq - a.renewSeq;
    }
    let volumeRecordWrites = 0;
    for (const [name, rev] of after.revisions) volumeRecordWrites += rev - (before.revisions.get(name) ?? rev);
    const daemonIo = { syscr: 0, rchar: 0, syscw: 0, wchar: 0 };
    for (const [id, b] of after.io) {
      const a = before.io.get(id);
      if (!a) continue;
      for (const k of ['syscr', 'rchar', 'syscw', 'wchar'] as const) daemonIo[k] += b[k] - a[k];
    }
    let localHeartbeatWrites = 0;
    for (const [id, seq] of after.beats) localHeartbeatWrites += seq - (before.beats.get(id) ?? seq);
    const rssMiB = daemons.reduce((sum, d) => sum + d.rssKiB(), 0) / 1024;
    const aliveAfter = daemons.filter((d) => d.child && d.child.exitCode === null && d.child.signalCode === null).length;
    const victimRecord = `${victim.hostId}.json`;
    const recordOpens = Object.entries(openCounts.fileOpens).filter(([file]) => /^[^.].*\.json$/.test(file));
    const reads: HostLeaseReads = {
      hosts: options.hosts,
      renewEvery: lease.renew_every,
      daemons: {
        seconds: openSeconds,
        listings: Math.max(0, openCounts.dirOpens - hostLeaseWrites),
        recordReads: recordOpens.filter(([file]) => file !== victimRecord).reduce((sum, [, n]) => sum + n, 0),
        victimRecordReads: openCounts.fileOpens[victimRecord] ?? 0,
        overflow: openCounts.overflow,
      },
      observers: { rounds: 0, beacons: { firstRound: 0, perRound: 0, movedPerRound: 0, hostsListed: 0 }, old: { firstRound: 0, perRound: 0, movedPerRound: 0, hostsListed: 0 } },
    };
    options.log(`host-lease reads: one beacon observer and one old-scheme observer on the live root, 6 rounds ${lease.renew_every} s apart...`);
    reads.observers = await measureObservers(shared, 6, lease.renew_every);

    // ---- kill -9 one host; time until every one of its volumes is takeable --------------------
    options.log(`kill -9 ${victim.hostId}; waiting until its ${victimVolumes.length} volumes are takeable (lease ${lease.seconds} s)...`);
    // A random point of its renew cycle.
    await sleep(Math.random() * lease.renew_every * 1000);
    const watchedBefore = (performance.now() - watchStarted) / 1000;
    const victimWatchdog = victim.watchdogPid();
    const killedWall = Date.now();
    killedAt = performance.now();
    await victim.stop('SIGKILL');
    // Wall clocks of one machine: fine here, never compared by ballast itself.
    const lastLease = await driver.readHostLease(victim.hostId);
    const lastRenewalBeforeKill = lastLease ? (killedWall - Date.parse(lastLease.renewedAtWall)) / 1000 : NaN;
    const watchdog = victimWatchdog === undefined ? 'none was running' : `pid ${victimWatchdog} killed: ${await victim.stopWatchdog()}`;
    // A surviving daemon, as the host a container is rescheduled to, breaks the dead host's hold on each volume.
    const releasedAt = new Map<string, number>();
    let releaseCalls = 0;
    let firstRefusal = '';
    const deadline = killedAt + (lease.seconds + 40) * 1000;
    while (releasedAt.size < victimVolumes.length && performance.now() < deadline) {
      for (const name of victimVolumes) {
        if (releasedAt.has(name)) continue;
        releaseCalls += 1;
        const reply = await callPlugin<{ Err?: string }>(releaser.socket, 'Ballast.Release', { Name: name }, 30_000);
        if (reply.status === 200 && !reply.body.Err) releasedAt.set(name, performance.now());
        else firstRefusal ||= reply.body.Err ?? `HTTP ${reply.status}`;
      }
      if (releasedAt.size < victimVolumes.length) await sleep(250);
    }
    observing = false;
    await observe;
    const seconds = (t: number) => (t - killedAt) / 1000;
    const observed = [...takeableAt.values()].map(seconds);
    const released = [...releasedAt.values()].map(seconds);
    return {
      hosts: options.hosts,
      volumes: total,
      lease,
      startSeconds,
      createSeconds,
      holdSeconds,
      rssMiB,
      steady: {
        seconds: (after.at - before.at) / 1000,
        hostLeaseWrites,
        volumeRecordWrites,
        hostLeaseRenamesSeen: renames,
        localHeartbeatWrites,
        daemonIo,
        leaseBytes: after.leaseBytes,
        aliveAfter,
      },
      reads,
      takeover: {
        victim: victim.hostId,
        watchedBefore,
        lastRenewalBeforeKill,
        observerFirst: Math.min(...observed),
        observerLast: Math.max(...observed),
        observerTakeable: observed.length,
        releaserFirst: released.length ? Math.min(...released) : NaN,
        releaserLast: released.length ? Math.max(...released) : NaN,
        released: released.length,
        releaseCalls,
        firstRefusal,
        watchdog,
      },
    };
  } finally {
    const failures = await cleanup.run();
    if (failures.length) options.log(`cleanup problems: ${failures.join('; ')}`);
  }
}
