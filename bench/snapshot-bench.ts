// `npm run bench:snapshots`: snapshot and clone of a 1 GiB ext4 volume with 100 MiB written,
// on a loop root without reflink (ext4: a sparse copy) and on one with it (xfs, reflink=1,
// loop-mounted under the work dir). Beside each: the same image copied by hand with cp
// (--sparse=always, or --reflink=always), and copy against reflink. The volume is mounted, as a
// container's would be, so ballast's snapshot includes the freeze. Asserts nothing.
import { randomBytes } from 'node:crypto';
import { mkdir, open, rm } from 'node:fs/promises';
import { join } from 'node:path';
import { callDaemonLines } from '../src/cli/client.js';
import { CleanupStack } from './lib/cleanup.js';
import { startBallast } from './lib/ballast.js';
import { exitWith, intFromEnv, out, progress, runBench } from './lib/bench-run.js';
import { callOk } from './lib/plugin-client.js';
import { run } from './lib/proc.js';
import { median, ms, ratio, table } from './lib/stats.js';

const RUNS = intFromEnv('BENCH_SNAPSHOT_RUNS', 3);
const MiB = 1024 ** 2;
const WRITTEN_MIB = 100;

interface RootFigures {
  snapshot: number[];
  cloneFromSnapshot: number[];
  byHand: number[];
  method: string;
}

async function writeData(mountpoint: string): Promise<void> {
  const handle = await open(join(mountpoint, 'data'), 'w');
  try {
    for (let i = 0; i < WRITTEN_MIB; i++) await handle.write(randomBytes(MiB));
    await handle.sync();
  } finally {
    await handle.close();
  }
}

async function timed(body: () => Promise<unknown>): Promise<number> {
  const started = performance.now();
  await body();
  return performance.now() - started;
}

/** One root: a daemon whose loop root is `dir`, one mounted volume, RUNS snapshots and clones. */
async function measureRoot(dir: string, reflink: boolean): Promise<RootFigures> {
  const cleanup = new CleanupStack();
  try {
    const ballast = await startBallast(join(dir, 'ballast'), cleanup);
    await callOk(ballast.socket, 'VolumeDriver.Create', { Name: 'v', Opts: { size: '1G' } }, 60_000);
    const mountpoint = (await callOk<{ Mountpoint: string }>(ballast.socket, 'VolumeDriver.Mount', { Name: 'v', ID: 'bench' }, 120_000)).body.Mountpoint;
    cleanup.push('unmount v', () => callOk(ballast.socket, 'VolumeDriver.Unmount', { Name: 'v', ID: 'bench' }, 60_000));
    await writeData(mountpoint);
    const figures: RootFigures = { snapshot: [], cloneFromSnapshot: [], byHand: [], method: '' };
    const image = join(ballast.loopRoot, 'v', 'disk.img');
    for (let i = 0; i < RUNS; i++) {
      figures.snapshot.push(
        await timed(async () => {
          const reply = await callDaemonLines<{ Snapshot: { method: string } }>(ballast.socket, 'Ballast.SnapshotCreate', { Volume: 'v', Name: `s${i}` }, () => undefined);
          figures.method = reply.Snapshot.method;
        }),
      );
      figures.cloneFromSnapshot.push(await timed(() => callOk(ballast.socket, 'VolumeDriver.Create', { Name: `c${i}`, Opts: { from: `v@s${i}` } }, 120_000)));
      const copy = join(dir, `hand-${i}.img`);
      figures.byHand.push(await timed(() => run(['cp', reflink ? '--reflink=always' : '--sparse=always', image, copy], { timeoutMs: 120_000 })));
      await rm(copy);
      await callOk(ballast.socket, 'VolumeDriver.Remove', { Name: `c${i}` }, 60_000);
      await callDaemonLines(ballast.socket, 'Ballast.SnapshotRemove', { Volume: 'v', Name: `s${i}` }, () => undefined);
    }
    return figures;
  } finally {
    const failures = await cleanup.run();
    if (failures.length) throw new Error(`cleanup: ${failures.join('; ')}`);
  }
}

async function main(): Promise<number> {
  return runBench({
    prefix: 'ballast-snapshot-bench',
    title: 'ballast snapshot benchmark',
    intro: [`1 GiB ext4 volume, ${WRITTEN_MIB} MiB written, mounted; ${RUNS} runs; medians in ms.`],
    deadlineSeconds: intFromEnv('BENCH_DEADLINE_SECONDS', 600),
    cleanOk: 'daemons stopped, xfs root unmounted',
    body: async (root) => {
      const plain = join(root, 'ext4-root');
      await mkdir(plain);
      progress('ext4 root (no reflink)');
      const copy = await measureRoot(plain, false);

      const xfsImage = join(root, 'xfs.img');
      const xfsRoot = join(root, 'xfs-root');
      await run(['truncate', '-s', '4G', xfsImage], { timeoutMs: 10_000 });
      await run(['mkfs.xfs', '-q', '-m', 'reflink=1', xfsImage], { timeoutMs: 60_000 });
      await mkdir(xfsRoot);
      await run(['mount', '-o', 'loop', xfsImage, xfsRoot], { timeoutMs: 30_000 });
      let reflink: RootFigures;
      try {
        progress('xfs root (reflink)');
        reflink = await measureRoot(xfsRoot, true);
      } finally {
        await run(['umount', xfsRoot], { timeoutMs: 30_000, cleanup: true });
      }

      const row = (what: string, f: RootFigures, hand: string) => [
        what,
        f.method,
        ms(median(f.snapshot)),
        ms(median(f.cloneFromSnapshot)),
        ms(median(f.byHand)),
        hand,
        ratio(median(f.snapshot), median(f.byHand)),
      ];
      out(table(['root', 'method', 'snapshot', 'clone from it', 'by hand', 'by hand is', 'snapshot / by hand'], [
        row('ext4', copy, 'cp --sparse=always'),
        row('xfs', reflink, 'cp --reflink=always'),
      ]));
      out();
      out(`copy against reflink, snapshot: ${ratio(median(copy.snapshot), median(reflink.snapshot))}; clone: ${ratio(median(copy.cloneFromSnapshot), median(reflink.cloneFromSnapshot))}`);
      out('(a ballast snapshot of a mounted volume includes fsfreeze and thaw, and the lease-protected record write)');
    },
  });
}

exitWith(main);
