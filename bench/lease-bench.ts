// `npm run bench:lease`: the ownership lease across hosts. Mount latency with and without
// contention, moving a volume between hosts, takeover after a kill -9 (real daemons, real loop
// devices), and a 50-daemon / 2,000-volume scale simulation. Prints figures beside their
// baselines and as ratios; asserts nothing. Needs root. See bench/README.md.
import { exitWith, intFromEnv, out, progress, runBench } from './lib/bench-run.js';
import { run } from './lib/proc.js';
import { max, median, min, ms, percentile, ratio, table } from './lib/stats.js';
import { mountBench, type MountBenchResult } from './lease-mount.js';
import { printHostLeaseReads, scaleBench, type ScaleBenchResult } from './lease-scale.js';

const settings = {
  runs: intFromEnv('BENCH_LEASE_RUNS', 10),
  moveRuns: intFromEnv('BENCH_LEASE_MOVE_RUNS', 6),
  takeoverRuns: intFromEnv('BENCH_LEASE_TAKEOVER_RUNS', 3),
  hosts: intFromEnv('BENCH_LEASE_HOSTS', 50),
  perHost: intFromEnv('BENCH_LEASE_PER_HOST', 40),
  steadySeconds: intFromEnv('BENCH_LEASE_STEADY_SECONDS', 20),
  skipMount: process.env.BENCH_LEASE_SKIP_MOUNT === '1',
  skipScale: process.env.BENCH_LEASE_SKIP_SCALE === '1',
  deadlineSeconds: intFromEnv('BENCH_DEADLINE_SECONDS', 300),
};

const sec = (v: number) => (Number.isFinite(v) ? v.toFixed(2) : '-');

async function preflight(): Promise<void> {
  if (process.getuid?.() !== 0) throw new Error('the lease bench needs root (loop devices, mounts)');
  const tools = ['setpriv', 'setsid', 'losetup', 'mkfs.ext4', 'fsck', 'blkid', 'mount', 'umount', 'xfs_io'];
  const missing: string[] = [];
  for (const tool of tools) await run(['sh', '-c', `command -v ${tool}`], { timeoutMs: 5_000 }).catch(() => missing.push(tool));
  if (missing.length) throw new Error(`missing: ${missing.join(', ')} (apt-get install util-linux e2fsprogs xfsprogs)`);
}

function printMount(r: MountBenchResult): void {
  const l = r.lease;
  out(`1. Mount latency, real daemons on real loop devices (${r.size} ext4, already formatted; ${r.freeMount.length} runs each)`);
  out(`   h1, h2: two \`ballast serve\` sharing one loop root (shared: true), lease seconds ${l.seconds}, renew_every ${l.renew_every},`);
  out(`   fence_after ${l.fence_after}, mount_wait ${l.mount_wait}. Baseline: a single-host daemon (shared: false, no lease) on its own root.`);
  out();
  const row = (name: string, s: number[], base: number[]) => [name, ms(median(s)), ms(percentile(s, 90)), ms(min(s)), ms(max(s)), ratio(median(s), median(base))];
  out(
    table(
      ['', 'median', 'p90', 'min', 'max', 'ratio (median)'],
      [
        row('baseline: Mount, single host', r.baselineMount, r.baselineMount),
        row('no contention: Mount on h1 of a free volume', r.freeMount, r.baselineMount),
        row('contention: h2 Mount returns after h1 Unmount returns', r.contendedMount, r.baselineMount),
        row('  (h1 Unmount itself, releasing last)', r.contendedUnmount, r.baselineMount),
      ],
    ),
  );
  out(`   (ms; ratio = figure / baseline median. contention vs no contention: ${ratio(median(r.contendedMount), median(r.freeMount))}.`);
  out('    h2\'s Mount was already waiting; a waiting Mount retries the lease once a second (acquireWaiting), and h1 released');
  out('    at a different point of that second each round, so about half a second of waiting is expected on top of a Mount)');
  out();
}

function printMove(r: MountBenchResult): void {
  out(`2. Move a volume between hosts: Unmount on h1, then Mount on h2 (${r.move.length} runs each, interleaved)`);
  out('   No dockerd at this level: plugin calls only, no container stop or start (those are the same on both sides).');
  out();
  const row = (name: string, s: number[]) => [name, ms(median(s)), ms(min(s)), ms(max(s)), ratio(median(s), median(r.sameHost)), ratio(median(s), median(r.baselineSameHost))];
  out(
    table(
      ['', 'median', 'min', 'max', 'vs same host', 'vs single host'],
      [
        row('move: Unmount h1 + Mount h2', r.move),
        row('same host: Unmount h1 + Mount h1', r.sameHost),
        row('single host (no lease): Unmount + Mount', r.baselineSameHost),
      ],
    ),
  );
  out('   (ms, wall time of the two calls back to back)');
  out();
}

function printTakeover(r: MountBenchResult): void {
  const l = r.lease;
  out(`3. Takeover: kill -9 of h1's daemon while it has the volume mounted; h2 calls Mount at once (${r.takeover.length} runs)`);
  out(`   Configured: lease.seconds ${l.seconds} s, fence_after ${l.fence_after} s, renew_every ${l.renew_every} s; h2's Mount waits by itself (mount_wait ${l.mount_wait} s).`);
  out('   h1\'s fence watchdog (a separate process) is left running through the measurement, then killed by its PID.');
  out();
  const rows = r.takeover.map((t, i) => [
    String(i + 1),
    t.killToFenceLog === undefined ? '-' : sec(t.killToFenceLog / 1000),
    t.killToFence === undefined ? 'never' : sec(t.killToFence / 1000),
    sec(t.killToMount / 1000),
    t.killToFence === undefined ? '-' : sec((t.killToMount - t.killToFence) / 1000),
    String(t.mountCalls),
    t.dataReadBack,
  ]);
  const takes = r.takeover.map((t) => t.killToMount);
  const fences = r.takeover.flatMap((t) => (t.killToFence === undefined ? [] : [t.killToFence]));
  const starts = r.takeover.flatMap((t) => (t.killToFenceLog === undefined ? [] : [t.killToFenceLog]));
  const margins = r.takeover.flatMap((t) => (t.killToFence === undefined ? [] : [t.killToMount - t.killToFence]));
  rows.push(['median', sec(median(starts) / 1000), sec(median(fences) / 1000), sec(median(takes) / 1000), sec(median(margins) / 1000), '', '']);
  out(
    table(
      ['run', 'fence started (FENCING log)', 'fence done (fenced.json)', 'h2 Mount ok', 'fence done -> takeover', 'Mount calls', "h1's data on h2"],
      rows,
    ),
  );
  out(`   (seconds after the kill -9; takeover / lease.seconds: ${ratio(median(takes) / 1000, l.seconds)}. The lease runs from h1's last renewal, up to renew_every`);
  out('    before the kill, so a takeover can come up to that much sooner than lease.seconds after the kill. The fence times are the watchdog\'s wall-clock stamps');
  out('    minus the kill\'s, one machine: it logs FENCING, runs xfs_io shutdown -f (which flushes the log first), then stamps fenced.json.');
  out(`    h1's fence watchdog ${r.watchdogSeen ? 'was running in every run' : 'was NOT found in some run'})`);
  for (const [i, t] of r.takeover.entries()) {
    for (const e of new Set(t.errors)) out(`   run ${i + 1}: a Mount call failed: ${e}`);
  }
  out();
  if (r.unexpectedFences.length) {
    out(`   NOTE: h1/h2 logged ${r.unexpectedFences.length} FENCING line(s) outside the takeover runs (none expected; see bench/README.md):`);
    for (const f of r.unexpectedFences.slice(0, 5)) out(`     ${f}`);
    out();
  }
}

function printScale(r: ScaleBenchResult): void {
  const l = r.lease;
  const s = r.steady;
  const t = r.takeover;
  const perSecond = (s.hostLeaseWrites + s.volumeRecordWrites) / s.seconds;
  const goal = r.hosts / l.renew_every;
  const naive = r.volumes / l.renew_every;
  out(`4. Scale simulation: ${r.hosts} \`ballast serve\` processes (own host ids, state dirs, sockets; no dockerd), one shared loop root,`);
  out(`   ${r.volumes} volumes held (${r.volumes / r.hosts} per host), lease seconds ${l.seconds}, renew_every ${l.renew_every}, fence_after ${l.fence_after}, log level warn.`);
  out(`   Started in ${r.startSeconds.toFixed(1)} s (${(r.rssMiB / r.hosts).toFixed(0)} MiB resident each, ${(r.rssMiB / 1024).toFixed(1)} GiB in all); volumes created through one daemon's socket in`);
  out(`   ${r.createSeconds.toFixed(1)} s; ownership records written through the LoopDriver API (no loop devices) in ${r.holdSeconds.toFixed(1)} s.`);
  out();
  out(`   Metadata writes on the shared root at steady state, over ${s.seconds.toFixed(1)} s (${s.aliveAfter}/${r.hosts} daemons alive at the end):`);
  out(
    table(
      ['', 'writes', 'per second', 'ratio'],
      [
        ['host leases (renewSeq increments in .hosts/*.json)', String(s.hostLeaseWrites), (s.hostLeaseWrites / s.seconds).toFixed(1), ''],
        ['ownership records (revision increments of <vol>/meta.json)', String(s.volumeRecordWrites), (s.volumeRecordWrites / s.seconds).toFixed(1), ''],
        ['all', String(s.hostLeaseWrites + s.volumeRecordWrites), perSecond.toFixed(1), ''],
        [`goal: one per host per renew interval (${r.hosts} / ${l.renew_every} s)`, '', goal.toFixed(1), `${ratio(perSecond, goal)} of it`],
        [`naive: one per volume per renew interval (${r.volumes} / ${l.renew_every} s)`, '', naive.toFixed(1), `${ratio(perSecond, naive)} of it`],
      ],
    ),
  );
  out(`   (cross-check: inotify saw ${s.hostLeaseRenamesSeen} renames onto .hosts/*.json in the window; each daemon also wrote its local heartbeat.json`);
  out(`    ${s.localHeartbeatWrites} times, ${(s.localHeartbeatWrites / s.seconds).toFixed(1)}/s, in its own state dir, not on the shared root)`);
  const io = s.daemonIo;
  const readPerSecond = io.rchar / s.seconds;
  out(`   Reads: each daemon lists .hosts once per round and reads a host's lease file only for a new host or generation, or a host`);
  out(`   without a beacon (4a): about ${r.hosts} / ${l.renew_every} s = ${(r.hosts / l.renew_every).toFixed(0)} reads/s in all, where reading every lease file cost ${r.hosts}^2 / ${l.renew_every} s = ${((r.hosts * r.hosts) / l.renew_every).toFixed(0)}.`);
  out(`   Measured: the ${r.hosts} daemons read ${(readPerSecond / 1024).toFixed(0)} KiB/s (/proc/PID/io rchar, listings included).`);
  out();
  out(`   kill -9 of ${t.victim} (${r.volumes / r.hosts} volumes); its fence watchdog: ${t.watchdog}. Seconds from the kill until its volumes are takeable:`);
  out(
    table(
      ['', 'first volume', 'every volume', 'volumes', 'lease.seconds', 'ratio (every / lease)'],
      [
        [`observer watching since ${t.watchedBefore.toFixed(0)} s before the kill (HostMonitor + OwnershipLease.assess)`, sec(t.observerFirst), sec(t.observerLast), String(t.observerTakeable), String(l.seconds), ratio(t.observerLast, l.seconds)],
        [`surviving daemon s00 breaking each hold (Ballast.Release --force, ${t.releaseCalls} calls)`, sec(t.releaserFirst), sec(t.releaserLast), String(t.released), String(l.seconds), ratio(t.releaserLast, l.seconds)],
      ],
    ),
  );
  out('   (dead = renewSeq has not moved for lease.seconds on the observer\'s own monotonic clock: lease.seconds after the last');
  out(`    renewal it saw. ${t.victim} last renewed ${sec(t.lastRenewalBeforeKill)} s before the kill, so expect ~${sec(l.seconds - t.lastRenewalBeforeKill)} s plus how late the observer saw that`);
  out(`    renewal: the bench's observer polls about 5 times a second, a daemon reads the host leases once a round (${l.renew_every} s).)`);
  if (t.firstRefusal) out(`   refused meanwhile with: ${t.firstRefusal}`);
  out();
}

async function main(): Promise<number> {
  await preflight();
  return runBench({
    prefix: 'ballast-lease',
    title: 'ballast lease benchmark',
    intro: ['Figures only, nothing asserted. A ratio is figure / baseline. Several "hosts" are daemons on this one machine.'],
    deadlineSeconds: settings.deadlineSeconds,
    cleanOk: 'daemons and watchdogs stopped by PID, nothing mounted or attached under the work dir, work dir removed',
    body: async (root) => {
      if (settings.skipMount) out('1-3. skipped (BENCH_LEASE_SKIP_MOUNT=1)\n');
      else {
        const r = await mountBench(root, { runs: settings.runs, moveRuns: settings.moveRuns, takeoverRuns: settings.takeoverRuns, size: '1G', log: progress });
        printMount(r);
        printMove(r);
        printTakeover(r);
      }
      if (settings.skipScale) out('4. skipped (BENCH_LEASE_SKIP_SCALE=1)');
      else {
        const scale = await scaleBench(root, { hosts: settings.hosts, perHost: settings.perHost, steadySeconds: settings.steadySeconds, startWidth: 4, log: progress });
        printScale(scale);
        printHostLeaseReads(scale.reads);
      }
    },
  });
}

exitWith(main);
