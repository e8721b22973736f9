import { execFileSync } from 'node:child_process';
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { BallastProcess } from '../lab/ballast.js';
import { cleanUpUnder } from '../helpers/cleanup.js';
import { callOk, callPlugin } from '../helpers/plugin-client.js';
import { requireRootAndTools } from '../helpers/root.js';
import { Writer } from '../helpers/writer.js';
import { runInPriorityLane } from '../lab/priority-lane.js';

// A randomized, seeded sequence of mounts, unmounts, crashes (kill -9), restarts and pauses
// across 3 daemons sharing one loop root, with real loop devices and filesystems. While a host
// has a volume mounted, a writer appends fsynced lines tagged with that mount session. The
// checker then proves, from the volume's own content, that
//   - no acknowledged (fsynced) line of any session was lost, and
//   - sessions never interleave: once a later session wrote, no earlier one wrote again,
// which is what "never two hosts writing one volume" means on disk. Reproduce a failure with
// BALLAST_PROPERTY_SEED=<seed printed in the test name>.
requireRootAndTools('losetup', 'mkfs.ext4', 'mount', 'xfs_io', 'e2fsck');
runInPriorityLane();

const SEED = Number(process.env.BALLAST_PROPERTY_SEED ?? 20261122);
const STEPS = Number(process.env.BALLAST_PROPERTY_STEPS ?? 120);
const LEASE = { seconds: 2, renew_every: 0.25, fence_after: 1, mount_wait: 0 };
const HOSTS = ['h1', 'h2', 'h3'];
const VOLUMES = ['p1', 'p2'];

/** mulberry32: a tiny, well-known seeded PRNG. */
function rng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

interface Session {
  tag: string;
  host: string;
  volume: string;
  writer: Writer;
}

describe(`lease property: ${STEPS} random steps across 3 hosts (seed ${SEED})`, () => {
  let dir: string;
  const daemons = new Map<string, BallastProcess>();
  const sessions: Session[] = [];

  beforeAll(async () => {
    dir = await mkdtemp(join(tmpdir(), 'ballast-property-'));
    for (const id of HOSTS) {
      const d = await BallastProcess.create({
        dir: join(dir, id),
        config: { host: { id }, backends: { loop: { root: join(dir, 'shared'), shared: true } }, lease: LEASE, log: { level: 'info', file: join(dir, id, 'ballast.log') } },
      });
      await d.start();
      daemons.set(id, d);
    }
    for (const v of VOLUMES) await callOk(daemons.get('h1')!.socket, 'VolumeDriver.Create', { Name: v, Opts: { size: '24M' } });
  });

  afterAll(async () => {
    for (const s of sessions) s.writer.stop();
    for (const d of daemons.values()) {
      await d.stop('SIGKILL');
      await d.stopWatchdog();
    }
    cleanUpUnder(dir);
    await rm(dir, { recursive: true, force: true });
  });

  it('never lets two hosts write one volume, and loses no acknowledged write', async () => {
    const random = rng(SEED);
    const pick = <T>(items: readonly T[]): T => items[Math.floor(random() * items.length)]!;
    const crashed = new Set<string>();
    const open = new Map<string, Session>(); // `${host}/${volume}` -> session mounted there
    const trace: string[] = [];
    let counter = 0;

    for (let step = 0; step < STEPS; step += 1) {
      const roll = random();
      const host = pick(HOSTS);
      const volume = pick(VOLUMES);
      const daemon = daemons.get(host)!;
      const key = `${host}/${volume}`;
      if (crashed.has(host)) {
        if (roll < 0.5) {
          await daemon.start();
          crashed.delete(host);
          trace.push(`${step} restart ${host}`);
        }
        continue;
      }
      if (roll < 0.4 && !open.has(key)) {
        const tag = `s${++counter}-${host}`;
        const reply = await callPlugin(daemon.socket, 'VolumeDriver.Mount', { Name: volume, ID: tag });
        trace.push(`${step} mount ${key} ${reply.body.Err ? `refused: ${reply.body.Err.slice(0, 80)}` : 'ok'}`);
        if (!reply.body.Err) {
          const writer = new Writer(join(reply.body.Mountpoint!, 'log'), join(dir, `ack-${tag}.json`), tag);
          const session = { tag, host, volume, writer };
          sessions.push(session);
          open.set(key, session);
        }
      } else if (roll < 0.7 && open.has(key)) {
        const session = open.get(key)!;
        await session.writer.stopAndWait();
        const reply = await callPlugin(daemon.socket, 'VolumeDriver.Unmount', { Name: volume, ID: session.tag });
        expect(reply.body.Err).toBe('');
        open.delete(key);
        trace.push(`${step} unmount ${key}`);
      } else if (roll < 0.8) {
        await daemon.stop('SIGKILL'); // its watchdog lives on and fences
        crashed.add(host);
        trace.push(`${step} crash ${host}`);
      } else {
        const ms = 200 + Math.floor(random() * 1800);
        await new Promise((r) => setTimeout(r, ms));
        trace.push(`${step} wait ${ms} ms`);
      }
    }

    // Whatever the random steps did, end with one crash under a running writer, so that every
    // run exercises the watchdog's fence (the random crashes alone sometimes hit no writer).
    final: for (const host of HOSTS.filter((h) => !crashed.has(h))) {
      for (const volume of VOLUMES.filter((v) => !open.has(`${host}/${v}`))) {
        const tag = `s${++counter}-${host}-final`;
        const reply = await callPlugin(daemons.get(host)!.socket, 'VolumeDriver.Mount', { Name: volume, ID: tag });
        if (reply.body.Err) continue;
        const writer = new Writer(join(reply.body.Mountpoint!, 'log'), join(dir, `ack-${tag}.json`), tag);
        const session = { tag, host, volume, writer };
        sessions.push(session);
        open.set(`${host}/${volume}`, session);
        await new Promise((r) => setTimeout(r, 300));
        await daemons.get(host)!.stop('SIGKILL');
        crashed.add(host);
        await new Promise((r) => setTimeout(r, LEASE.fence_after * 1000 + 1_500));
        trace.push(`final: mount ${host}/${volume}, crash ${host}, wait`);
        break final;
      }
    }

    // Settle: stop every writer, bring every host back, unmount everything.
    for (const s of sessions) s.writer.stop();
    for (const host of crashed) await daemons.get(host)!.start();
    for (const [key, session] of open) {
      const [host, volume] = key.split('/') as [string, string];
      await callPlugin(daemons.get(host)!.socket, 'VolumeDriver.Unmount', { Name: volume, ID: session.tag });
    }

    const report = `seed ${SEED}; trace:\n${trace.join('\n')}`;
    for (const volume of VOLUMES) {
      // Read the volume from a fresh mount, after the lease of every earlier holder lapsed.
      let reply = await callPlugin(daemons.get('h1')!.socket, 'VolumeDriver.Mount', { Name: volume, ID: 'checker' });
      for (let i = 0; i < 20 && reply.body.Err; i += 1) {
        await new Promise((r) => setTimeout(r, 500));
        reply = await callPlugin(daemons.get('h1')!.socket, 'VolumeDriver.Mount', { Name: volume, ID: 'checker' });
      }
      expect(reply.body.Err).toBe('');
      const content = await readFile(join(reply.body.Mountpoint!, 'log'), 'utf8').catch(() => '');
      await callOk(daemons.get('h1')!.socket, 'VolumeDriver.Unmount', { Name: volume, ID: 'checker' });
      const lines = content.split('\n').filter(Boolean).map((l) => l.split(' ') as [string, string]);

      // Sessions appear in contiguous blocks: a session that was followed by another never reappears.
      const finished = new Set<string>();
      let current = '';
      for (const [tag] of lines) {
        if (tag === current) continue;
        if (finished.has(tag)) throw new Error(`volume ${volume}: session ${tag} wrote again after ${current} had written: two writers at once\n${report}`);
        if (current) finished.add(current);
        current = tag;
      }
      // Every acknowledged line is there, in order.
      for (const s of sessions.filter((x) => x.volume === volume)) {
        const acked = s.writer.status().seq;
        const seqs = lines.filter(([tag]) => tag === s.tag).map(([, seq]) => Number(seq));
        if (seqs.slice(0, acked).join(',') !== Array.from({ length: acked }, (_, i) => i + 1).join(',')) {
          throw new Error(`volume ${volume}: session ${s.tag} acknowledged ${acked} lines but the volume holds ${seqs.length}\n${report}`);
        }
      }
      // And the filesystem itself is consistent.
      const image = join(dir, 'shared', volume, 'disk.img');
      expect(() => execFileSync('e2fsck', ['-fn', image], { stdio: 'pipe', timeout: 60_000 })).not.toThrow();
    }
    // The run must have exercised what it claims: takeovers after crashes, and fences.
    const fenced = sessions.filter((x) => x.writer.status().error === 'EIO').length;
    const hostsPerVolume = VOLUMES.map((v) => new Set(sessions.filter((x) => x.volume === v).map((x) => x.host)).size);
    process.stdout.write(`lease property (seed ${SEED}): ${sessions.length} mount sessions, ${fenced} fenced, hosts per volume ${hostsPerVolume.join('/')}\n`);
    expect(fenced).toBeGreaterThan(0);
    expect(Math.max(...hostsPerVolume)).toBeGreaterThan(1);
  });
});
