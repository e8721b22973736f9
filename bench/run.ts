// `npm run bench`: ballast's benchmark. Prints figures beside their baselines and as ratios;
// asserts nothing. Needs root, docker.io (dockerd), busybox-static and e2fsprogs. See bench/README.md.
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { MKFS_EXT4 } from './lib/mkfs.js';
import { exitWith, intFromEnv, out, progress, runBench } from './lib/bench-run.js';
import { run } from './lib/proc.js';
import { max, median, min, ms, percentile, ratio, table } from './lib/stats.js';
import { pluginBench, type PluginBenchResult } from './plugin-bench.js';
import { dockerBench, type DockerBenchResult } from './docker-bench.js';

const REPO = fileURLToPath(new URL('../../', import.meta.url));

const settings = {
  volumes: intFromEnv('BENCH_VOLUMES', 1000),
  gets: intFromEnv('BENCH_GETS', 2000),
  lists: intFromEnv('BENCH_LISTS', 50),
  createMountRuns: intFromEnv('BENCH_CREATE_MOUNT_RUNS', 5),
  dockerRuns: intFromEnv('BENCH_DOCKER_RUNS', 10),
  skipDocker: process.env.BENCH_SKIP_DOCKER === '1',
  /** The whole run is abandoned (and cleaned up) after this many seconds. */
  deadlineSeconds: intFromEnv('BENCH_DEADLINE_SECONDS', 480),
};


async function preflight(): Promise<void> {
  if (process.getuid?.() !== 0) throw new Error('the bench needs root (loop devices, mounts, dockerd)');
  const tools = ['setpriv', 'setsid', 'losetup', 'mkfs.ext4', 'mount', 'umount', 'truncate', 'tar', 'unshare', 'nsenter', ...(settings.skipDocker ? [] : ['dockerd', 'docker'])];
  const missing: string[] = [];
  for (const tool of tools) {
    await run(['sh', '-c', `command -v ${tool}`], { timeoutMs: 5_000 }).catch(() => missing.push(tool));
  }
  if (!settings.skipDocker) await run(['test', '-x', '/bin/busybox'], { timeoutMs: 5_000 }).catch(() => missing.push('/bin/busybox (busybox-static)'));
  if (missing.length) throw new Error(`missing: ${missing.join(', ')} (scripts/install-deps.sh, apt-get install docker.io busybox-static e2fsprogs)`);
}

/** Warns when bench/lib/mkfs.ts no longer matches the mkfs.ext4 argv in src/attach/filesystem.ts. */
async function mkfsDrift(): Promise<string | undefined> {
  const source = await readFile(join(REPO, 'src/attach/filesystem.ts'), 'utf8').catch(() => '');
  const line = /^\s*ext4:\s*\[(.*)\],?\s*$/m.exec(source)?.[1];
  if (!line) return 'could not find the ext4 mkfs argv in src/attach/filesystem.ts to compare with';
  const theirs = [...line.matchAll(/'([^']*)'/g)].map((m) => m[1]);
  if (theirs.join(' ') !== MKFS_EXT4.join(' ')) return `src/attach/filesystem.ts runs "${theirs.join(' ')}" but the bench's by-hand mkfs is "${MKFS_EXT4.join(' ')}"`;
  return undefined;
}

function printProtocol(r: PluginBenchResult): void {
  out(`1. Plugin protocol over the Unix socket, ${r.volumes} volumes existing`);
  out(`   (volumes made with VolumeDriver.Create, 8 in flight, in ${r.createSeconds.toFixed(1)} s; one connection per call, as with dockerd;`);
  out('    baseline: a plain node:http server on a Unix socket sending the bytes of ballast\'s own Get and List replies, its own process, same client)');
  out();
  const row = (name: string, s: PluginBenchResult['get']) => {
    const [b50, b99, x50, x99] = [percentile(s.ballast, 50), percentile(s.ballast, 99), percentile(s.baseline, 50), percentile(s.baseline, 99)];
    return [name, String(s.ballast.length), ms(b50), ms(b99), ms(x50), ms(x99), ratio(b50, x50), ratio(b99, x99), String(s.ballastBytes)];
  };
  out(
    table(
      ['call', 'calls', 'ballast p50', 'ballast p99', 'baseline p50', 'baseline p99', 'ratio p50', 'ratio p99', 'reply bytes'],
      [row('VolumeDriver.Get', r.get), row('VolumeDriver.List', r.list)],
    ),
  );
  out('   (ms; ratio = ballast / baseline; both send the same reply bytes)');
  out();
}

function printCreateMount(r: PluginBenchResult, runs: number): void {
  const c = r.createMount;
  const total = (a: number[], b: number[]) => a.map((v, i) => v + (b[i] ?? NaN));
  const cell = (s: number[]) => `${ms(median(s))} (${ms(min(s))}-${ms(max(s))})`;
  const row = (name: string, a: number[], b: number[]) => [name, cell(a), cell(b), ratio(median(a), median(b))];
  out(`2. Create + first Mount of a 1 GiB ext4 volume: ballast over the socket vs the same steps by hand (${runs} runs each)`);
  out(`   by hand: truncate -s 1G; losetup -f --show; ${MKFS_EXT4.join(' ')} -L NAME; mount`);
  out();
  out(
    table(
      ['', 'ballast median (min-max)', 'by hand median (min-max)', 'ratio'],
      [
        row('Create + first Mount', total(c.ballastCreate, c.ballastMount), total(c.handTruncate, c.handAttachFormatMount)),
        row('  Create   vs truncate', c.ballastCreate, c.handTruncate),
        row('  Mount    vs losetup+mkfs+mount', c.ballastMount, c.handAttachFormatMount),
      ],
    ),
  );
  const steps = c.handSteps;
  out(`   (ms; by hand, median per step: truncate ${ms(median(steps.truncate))}, losetup ${ms(median(steps.losetup))}, mkfs.ext4 ${ms(median(steps.mkfs))}, mount ${ms(median(steps.mount))};`);
  out('    Unmount + Remove and umount + losetup -d are untimed; one untimed warm-up of each path first)');
  const stepLine = (steps: Record<string, number[]>) => Object.entries(steps).map(([step, xs]) => `${step} ${ms(median(xs))}`).join(', ');
  out(`   ballast's Mount, median per step (its log): ${stepLine(c.ballastMountSteps)}`);
  out(`   ballast's Unmount, median per step: ${stepLine(c.ballastUnmountSteps)}`);
  out();
}

function printDocker(r: DockerBenchResult, runs: number): void {
  out(`3. docker run --rm --network none -v VOL:/data busybox:local true (private dockerd ${r.dockerVersion}, ${runs} runs each, interleaved)`);
  out();
  const row = (name: string, f: (s: number[]) => number) => [name, ms(f(r.ballast)), ms(f(r.local)), ratio(f(r.ballast), f(r.local)), ms(f(r.none))];
  out(
    table(
      ['', 'ballast volume', 'local volume', 'ratio', 'no volume'],
      [
        row('median', median),
        row('p90', (s) => percentile(s, 90)),
        row('min', min),
        row('max', max),
        ['first run of the volume (1 sample)', ms(r.ballastFirst), ms(r.localFirst), ratio(r.ballastFirst, r.localFirst), ''],
      ],
    ),
  );
  out('   (ms, wall time of the docker CLI; ratio = ballast volume / local volume; "no volume" is the floor;');
  out(`    the first run formats the ballast volume (mkfs); ballast served ${r.ballastMounts} Mount calls for it, expected ${runs + 1})`);
  out();
}

async function main(): Promise<number> {
  await preflight();
  const drift = await mkfsDrift();
  return runBench({
    prefix: 'ballast-bench',
    title: 'ballast benchmark',
    intro: ['Figures only, nothing asserted. Times in ms; a ratio is ballast / baseline (1.00x = no overhead).', ...(drift ? [`WARNING: ${drift}`] : [])],
    deadlineSeconds: settings.deadlineSeconds,
    cleanOk: 'processes stopped, nothing mounted or attached under the work dir, work dir removed',
    body: async (root) => {
      const plugin = await pluginBench(root, { ...settings, log: progress });
      printProtocol(plugin);
      printCreateMount(plugin, settings.createMountRuns);
      if (settings.skipDocker) out('3. docker run: skipped (BENCH_SKIP_DOCKER=1)');
      else printDocker(await dockerBench(root, { runs: settings.dockerRuns, log: progress }), settings.dockerRuns);
    },
  });
}

exitWith(main);
