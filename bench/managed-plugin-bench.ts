// `npm run bench:managed-plugin`: ballast as a managed plugin beside the socket plugin, in one
// private dockerd: `docker run` with an existing volume of each (ratio), the plugin's create and
// enable times, and its rootfs size. Figures only, nothing asserted.
import { execFileSync } from 'node:child_process';
import { mkdir, mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { REPO_ROOT } from '../test/lab/ballast.js';
import { startPrivateDocker } from './lib/ballast.js';
import { CleanupStack } from './lib/cleanup.js';
import { run } from './lib/proc.js';
import { max, median, min, ms, ratio, table } from './lib/stats.js';

const RUNS = Number(process.env.BALLAST_BENCH_RUNS ?? 15);
const MANAGED = 'ballast-managed:latest';
const log = (line: string) => process.stderr.write(`${line}\n`);

async function main(): Promise<void> {
  const root = await mkdtemp(join(tmpdir(), 'ballast-bench-managed-'));
  const cleanup = new CleanupStack();
  try {
    const h = await startPrivateDocker(join(root, 'docker'), cleanup, log);
    const timed = (argv: string[], timeoutMs = 120_000) => h.timed(argv, { timeoutMs });

    log('building the plugin directory (scripts/build-plugin.sh)...');
    const pluginDir = join(root, 'plugin');
    const build = await run([join(REPO_ROOT, 'scripts/build-plugin.sh'), pluginDir], { timeoutMs: 900_000 });
    const rootfsMb = Number(execFileSync('du', ['-sm', join(pluginDir, 'rootfs')], { encoding: 'utf8' }).split('\t')[0]);
    const dirs = { etc: join(root, 'etc'), loop: join(root, 'loop'), state: join(root, 'state') };
    for (const d of Object.values(dirs)) await mkdir(d, { recursive: true });

    const createMs = await timed(['plugin', 'create', MANAGED, pluginDir], 300_000);
    cleanup.push('remove the managed plugin', () => h.ok(['plugin', 'rm', '-f', MANAGED], { timeoutMs: 120_000 }));
    await h.ok(['plugin', 'set', MANAGED, `config.source=${dirs.etc}`, `loop-root.source=${dirs.loop}`, `state.source=${dirs.state}`, `docker-socket.source=${h.dockerSocket}`]);
    const enableMs = await timed(['plugin', 'enable', '--timeout', '120', MANAGED], 150_000);

    const volumes = { socket: 'bench-socket-plugin', managed: 'bench-managed-plugin' } as const;
    cleanup.push('remove the bench volumes', () => h.ok(['volume', 'rm', '-f', volumes.socket, volumes.managed], { timeoutMs: 120_000 }));
    await h.ok(['volume', 'create', '-d', 'ballast', '--opt', 'size=256M', volumes.socket]);
    await h.ok(['volume', 'create', '-d', MANAGED, '--opt', 'size=256M', volumes.managed]);
    type Kind = keyof typeof volumes;
    const dockerRun = (kind: Kind) => timed(['run', '--rm', '--network', 'none', '-v', `${volumes[kind]}:/data`, 'busybox:local', 'true']);
    const first = { socket: await dockerRun('socket'), managed: await dockerRun('managed') }; // mkfs
    const samples: Record<Kind, number[]> = { socket: [], managed: [] };
    log(`timing ${RUNS} docker runs with each volume, interleaved...`);
    for (let i = 0; i < RUNS; i++) {
      for (const kind of (i % 2 ? ['managed', 'socket'] : ['socket', 'managed']) as Kind[]) samples[kind].push(await dockerRun(kind));
    }

    const cell = (s: number[]) => `${ms(median(s))} (${ms(min(s))}-${ms(max(s))})`;
    process.stdout.write(`\nballast managed plugin vs socket plugin (dockerd ${(await h.ok(['version', '--format', '{{.Server.Version}}'])).trim()}, ${RUNS} runs each)\n`);
    process.stdout.write(
      `${table(
        ['', 'managed plugin', 'socket plugin', 'ratio'],
        [
          ['docker run, existing volume: median (min-max)', cell(samples.managed), cell(samples.socket), ratio(median(samples.managed), median(samples.socket))],
          ['first docker run (mkfs), 1 sample', ms(first.managed), ms(first.socket), ratio(first.managed, first.socket)],
        ],
      )}\n`,
    );
    process.stdout.write(`   plugin dir build ${ms(build.ms)} ms, docker plugin create ${ms(createMs)} ms, enable ${ms(enableMs)} ms, rootfs ${rootfsMb} MB\n`);
  } finally {
    const failures = await cleanup.run();
    if (failures.length) log(`cleanup problems: ${failures.join('; ')}`);
    await rm(root, { recursive: true, force: true });
  }
}

main().catch((err: unknown) => {
  process.stderr.write(`bench failed: ${err instanceof Error ? err.stack : String(err)}\n`);
  process.exitCode = 1;
});
