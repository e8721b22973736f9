// Figures 1 and 2: the plugin protocol over ballast's real Unix socket, and Create + first
// Mount of a 1 GiB ext4 volume through ballast versus the same steps by hand.
import { mkdir, readFile, rm } from 'node:fs/promises';
import { join } from 'node:path';
import type { ChildProcess } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { CleanupStack } from './lib/cleanup.js';
import { startBallast } from './lib/ballast.js';
import { logEntries } from './lib/daemon-log.js';
import { callOk, callPlugin } from './lib/plugin-client.js';
import { run, sleep, spawnLong, stopChild } from './lib/proc.js';
import { MKFS_EXT4 } from './lib/mkfs.js';

export interface PluginBenchOptions {
  volumes: number;
  gets: number;
  lists: number;
  createMountRuns: number;
  log: (line: string) => void;
}

export interface LatencySamples {
  ballast: number[];
  baseline: number[];
  ballastBytes: number;
  baselineBytes: number;
}

export interface CreateMountSamples {
  ballastCreate: number[];
  ballastMount: number[];
  handTruncate: number[];
  handAttachFormatMount: number[];
  handSteps: Record<'truncate' | 'losetup' | 'mkfs' | 'mount', number[]>;
  /** Where ballast's Mount and Unmount spend their time: each step's ms per timed run, from its log. */
  ballastMountSteps: Record<string, number[]>;
  ballastUnmountSteps: Record<string, number[]>;
}

export interface PluginBenchResult {
  volumes: number;
  createSeconds: number;
  get: LatencySamples;
  list: LatencySamples;
  createMount: CreateMountSamples;
}

const volumeName = (i: number) => `bench-${String(i).padStart(4, '0')}`;

/** Starts the baseline server as its own process (as ballast is) and waits for its "ready". */
async function startBaseline(dir: string, cleanup: CleanupStack): Promise<{ socket: string; child: ChildProcess }> {
  const socket = join(dir, 'baseline.sock');
  const logFile = join(dir, 'baseline.log');
  const script = fileURLToPath(new URL('./baseline-server.js', import.meta.url));
  const child = spawnLong([process.execPath, script, socket], logFile);
  cleanup.push('stop the baseline server', () => stopChild(child, 5_000));
  const deadline = Date.now() + 10_000;
  while (Date.now() < deadline) {
    if (child.exitCode !== null) throw new Error(`baseline server exited with ${child.exitCode}`);
    if ((await readFile(logFile, 'utf8').catch(() => '')).includes('ready')) return { socket, child };
    await sleep(20);
  }
  throw new Error('baseline server did not start within 10 s');
}

/** Runs `count` calls of `fn` with at most `width` in flight. */
async function pool(count: number, width: number, fn: (i: number) => Promise<void>): Promise<void> {
  let next = 0;
  await Promise.all(
    Array.from({ length: width }, async () => {
      for (let i = next++; i < count; i = next++) await fn(i);
    }),
  );
}

async function isMounted(mountPoint: string): Promise<string | undefined> {
  const info = await readFile('/proc/self/mountinfo', 'utf8');
  for (const line of info.split('\n')) {
    const fields = line.split(' ');
    if (fields[4] !== mountPoint) continue;
    const sep = fields.indexOf('-', 6);
    return fields[sep + 1];
  }
  return undefined;
}

export async function pluginBench(root: string, options: PluginBenchOptions): Promise<PluginBenchResult> {
  const cleanup = new CleanupStack();
  const dir = join(root, 'plugin');
  await mkdir(dir, { recursive: true });
  try {
    const ballast = await startBallast(join(dir, 'ballast'), cleanup);
    const socket = ballast.socket;
    const baseline = await startBaseline(dir, cleanup);

    // ---- 1. 1,000 volumes, then Get and List latency -------------------------------------
    const n = options.volumes;
    options.log(`creating ${n} volumes through VolumeDriver.Create (8 in flight)...`);
    const createStarted = performance.now();
    await pool(n, 8, async (i) => void (await callOk(socket, 'VolumeDriver.Create', { Name: volumeName(i), Opts: {} })));
    const createSeconds = (performance.now() - createStarted) / 1000;

    const get = async (sock: string, i: number, check: boolean) => {
      const name = volumeName((i * 7919) % n);
      const reply = await callPlugin<{ Volume?: { Name?: string }; Err?: string }>(sock, 'VolumeDriver.Get', { Name: name }, 10_000);
      if (reply.status !== 200) throw new Error(`Get ${name} on ${sock}: HTTP ${reply.status}`);
      if (check && (reply.body.Err || reply.body.Volume?.Name !== name)) throw new Error(`Get ${name}: ${JSON.stringify(reply.body).slice(0, 300)}`);
      return reply;
    };
    const list = async (sock: string, check: boolean) => {
      const reply = await callPlugin<{ Volumes?: unknown[]; Err?: string }>(sock, 'VolumeDriver.List', {}, 30_000);
      if (reply.status !== 200) throw new Error(`List on ${sock}: HTTP ${reply.status}`);
      if (check && (reply.body.Err || reply.body.Volumes?.length !== n + 0)) {
        throw new Error(`List returned ${reply.body.Volumes?.length} volumes, expected ${n}: ${reply.body.Err ?? ''}`);
      }
      return reply;
    };

    // The baseline sends ballast's own reply bytes: what is left is ballast's work.
    const setBaselineReply = async (method: string, body: unknown) => {
      const reply = await callPlugin(baseline.socket, `Baseline.Reply/${method}`, body as object);
      if (reply.status !== 200) throw new Error(`baseline: setting the ${method} reply: HTTP ${reply.status}`);
    };
    await setBaselineReply('VolumeDriver.Get', (await get(socket, 0, true)).body);
    await setBaselineReply('VolumeDriver.List', (await list(socket, true)).body);

    options.log(`timing ${options.gets} Get and ${options.lists} List calls on each server (interleaved blocks)...`);
    // Warm-up (JIT, page cache), not recorded.
    for (let i = 0; i < 200; i++) {
      await get(socket, i, true);
      await get(baseline.socket, i, false);
    }
    for (let i = 0; i < 5; i++) {
      await list(socket, true);
      await list(baseline.socket, false);
    }
    const getSamples: LatencySamples = { ballast: [], baseline: [], ballastBytes: 0, baselineBytes: 0 };
    const rounds = 4;
    for (let r = 0; r < rounds; r++) {
      const per = Math.ceil(options.gets / rounds);
      for (const target of r % 2 ? ['baseline', 'ballast'] as const : ['ballast', 'baseline'] as const) {
        for (let i = r * per; i < (r + 1) * per; i++) {
          const reply = await get(target === 'ballast' ? socket : baseline.socket, i, target === 'ballast');
          getSamples[target].push(reply.ms);
          getSamples[`${target}Bytes`] = reply.bytes;
        }
      }
    }
    const listSamples: LatencySamples = { ballast: [], baseline: [], ballastBytes: 0, baselineBytes: 0 };
    const listRounds = 5;
    for (let r = 0; r < listRounds; r++) {
      const per = Math.ceil(options.lists / listRounds);
      for (const target of r % 2 ? ['baseline', 'ballast'] as const : ['ballast', 'baseline'] as const) {
        for (let i = 0; i < per; i++) {
          const reply = await list(target === 'ballast' ? socket : baseline.socket, target === 'ballast');
          listSamples[target].push(reply.ms);
          listSamples[`${target}Bytes`] = reply.bytes;
        }
      }
    }

    // ---- 2. Create + first Mount of a 1 GiB ext4 volume, ballast vs by hand ------------------
    options.log(`timing Create + first Mount of a 1 GiB ext4 volume, ${options.createMountRuns} runs each (interleaved)...`);
    const cm: CreateMountSamples = {
      ballastCreate: [],
      ballastMount: [],
      handTruncate: [],
      handAttachFormatMount: [],
      handSteps: { truncate: [], losetup: [], mkfs: [], mount: [] },
      ballastMountSteps: {},
      ballastUnmountSteps: {},
    };
    const viaBallast = async (i: number) => {
      const name = `cm-${i}`;
      const id = `bench-mount-${i}`;
      const t0 = performance.now();
      await callOk(socket, 'VolumeDriver.Create', { Name: name, Opts: { size: '1G', fstype: 'ext4' } }, 60_000);
      const t1 = performance.now();
      const mount = await callOk<{ Mountpoint: string }>(socket, 'VolumeDriver.Mount', { Name: name, ID: id }, 120_000);
      const t2 = performance.now();
      const fstype = await isMounted(mount.body.Mountpoint);
      if (fstype !== 'ext4') throw new Error(`ballast said ${name} is mounted at ${mount.body.Mountpoint}, but the kernel shows ${fstype ?? 'nothing'} there`);
      cm.ballastCreate.push(t1 - t0);
      cm.ballastMount.push(t2 - t1);
      // Untimed teardown.
      await callOk(socket, 'VolumeDriver.Unmount', { Name: name, ID: id }, 60_000);
      await callOk(socket, 'VolumeDriver.Remove', { Name: name }, 60_000);
    };
    const byHand = async (i: number) => {
      const hand = join(dir, 'hand', `h${i}`);
      await mkdir(hand, { recursive: true });
      const file = join(hand, 'disk.img');
      const target = join(hand, 'mnt');
      const t0 = performance.now();
      await run(['truncate', '-s', '1G', file], { timeoutMs: 30_000 });
      const t1 = performance.now();
      const device = (await run(['losetup', '-f', '--show', file], { timeoutMs: 30_000 })).stdout.trim();
      if (!/^\/dev\/loop\d+$/.test(device)) throw new Error(`losetup printed ${JSON.stringify(device)}`);
      const t2 = performance.now();
      try {
        await run([...MKFS_EXT4, '-L', `hand-${i}`, device], { timeoutMs: 100_000 });
        const t3 = performance.now();
        await mkdir(target);
        await run(['mount', '-t', 'ext4', device, target], { timeoutMs: 30_000 });
        const t4 = performance.now();
        cm.handTruncate.push(t1 - t0);
        cm.handAttachFormatMount.push(t4 - t1);
        cm.handSteps.truncate.push(t1 - t0);
        cm.handSteps.losetup.push(t2 - t1);
        cm.handSteps.mkfs.push(t3 - t2);
        cm.handSteps.mount.push(t4 - t3);
        await run(['umount', target], { timeoutMs: 30_000 });
      } finally {
        await run(['losetup', '-d', device], { timeoutMs: 30_000 });
      }
      await rm(hand, { recursive: true, force: true });
    };
    // One untimed warm-up of each path (first spawn of each tool, first loop device).
    await viaBallast(999);
    await byHand(999);
    for (let i = 0; i < options.createMountRuns; i++) {
      if (i % 2) {
        await byHand(i);
        await viaBallast(i);
      } else {
        await viaBallast(i);
        await byHand(i);
      }
    }
    await collectSteps(ballast.logPath, cm);
    return { volumes: n, createSeconds, get: getSamples, list: listSamples, createMount: cm };
  } finally {
    const failures = await cleanup.run();
    if (failures.length) options.log(`cleanup problems: ${failures.join('; ')}`);
  }
}

/** The stepsMs of the timed runs' Mount ('volume mounted') and Unmount ('volume torn down') log lines. */
async function collectSteps(logPath: string, cm: CreateMountSamples): Promise<void> {
  for (const entry of logEntries(await readFile(logPath, 'utf8'))) {
    if (typeof entry.volume !== 'string' || !/^cm-\d+$/.test(entry.volume) || entry.volume === 'cm-999') continue;
    const into = entry.message === 'volume mounted' ? cm.ballastMountSteps : entry.message === 'volume torn down' ? cm.ballastUnmountSteps : undefined;
    if (!into) continue;
    for (const { step, ms } of entry.stepsMs as { step: string; ms: number }[]) (into[step] ??= []).push(ms);
  }
}
