import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { execFile } from 'node:child_process';
import { promisify } from 'node:util';
import { BallastProcess, BALLAST_BIN } from '../lab/ballast.js';
import { cleanUpUnder } from '../helpers/cleanup.js';
import { callOk, callPlugin } from '../helpers/plugin-client.js';
import { requireRootAndTools } from '../helpers/root.js';
import { Writer } from '../helpers/writer.js';
import { runInPriorityLane } from '../lab/priority-lane.js';

// Two ballast daemons ("hosts" a and b, no dockerd) share one loop root, with a short lease.
// Real loop devices, real filesystems, real process kills: the host-lease takeover and the
// fence (filesystem shutdown by the daemon or its watchdog) for real.
requireRootAndTools('losetup', 'mkfs.ext4', 'mount', 'xfs_io');
runInPriorityLane();

const LEASE = { seconds: 4, renew_every: 0.5, fence_after: 2.5, mount_wait: 20 };

describe('takeover between two hosts sharing a loop root', () => {
  let dir: string;
  let a: BallastProcess;
  let b: BallastProcess;
  let writer: Writer | undefined;

  const host = (id: string) =>
    BallastProcess.create({
      dir: join(dir, id),
      config: { host: { id }, backends: { loop: { root: join(dir, 'shared'), shared: true } }, lease: LEASE },
    });

  beforeEach(async () => {
    dir = await mkdtemp(join(tmpdir(), 'ballast-takeover-'));
    a = await host('a');
    b = await host('b');
    await a.start();
    await b.start();
  });

  afterEach(async () => {
    writer?.stop();
    for (const d of [a, b]) {
      if (!d) continue;
      d.child?.kill('SIGCONT');
      await d.stop('SIGKILL');
      await d.stopWatchdog();
    }
    cleanUpUnder(dir);
    await rm(dir, { recursive: true, force: true });
  });

  /** a mounts v and writes fsynced lines to it until the test stops it. */
  async function writingOnA(): Promise<{ mpA: string }> {
    await callOk(a.socket, 'VolumeDriver.Create', { Name: 'v', Opts: { size: '32M' } });
    const mpA = (await callOk(a.socket, 'VolumeDriver.Mount', { Name: 'v', ID: 'on-a' })).Mountpoint!;
    writer = new Writer(join(mpA, 'log'), join(dir, 'ack-a.json'), 'a');
    await writer.waitFor((s) => s.seq >= 20, 10_000, 'a to write 20 lines');
    return { mpA };
  }

  /**
   * When a last renewed its host lease (wall clock: both "hosts" share this machine's clock,
   * so the test may compare it; ballast itself never compares clocks across hosts).
   */
  async function lastRenewalOfA(): Promise<number> {
    const lease = JSON.parse(await readFile(join(dir, 'shared', '.hosts', 'a.json'), 'utf8')) as { renewedAtWall: string };
    return Date.parse(lease.renewedAtWall);
  }

  /** Every line a acknowledged is on the volume as b sees it, and nothing a wrote after its fence. */
  async function checkOnB(lastAcked: number): Promise<string[]> {
    const mpB = (await callOk(b.socket, 'VolumeDriver.Path', { Name: 'v' })).Mountpoint!;
    const lines = (await readFile(join(mpB, 'log'), 'utf8')).trim().split('\n');
    const fromA = lines.filter((l) => l.startsWith('a ')).map((l) => Number(l.slice(2)));
    expect(fromA.slice(0, lastAcked)).toEqual(Array.from({ length: lastAcked }, (_, i) => i + 1));
    return lines;
  }

  it('after a crash (kill -9), b takes over only once a\'s lease expired; a was fenced first and writes nothing after', async () => {
    await writingOnA();
    await a.stop('SIGKILL');
    const killedAt = Date.now();
    const lastRenewal = await lastRenewalOfA();
    const denied = await callPlugin(b.socket, 'VolumeDriver.Mount', { Name: 'v', ID: 'early' }, 60_000);
    // mount_wait (20 s) exceeds the lease (4 s): the waiting Mount itself succeeds after the expiry.
    expect(denied.body.Err).toBe('');
    const tookOverAfter = Date.now() - killedAt;
    expect(Date.now() - lastRenewal).toBeGreaterThanOrEqual(LEASE.seconds * 1000); // never before the lease expired
    const stoppedA = await writer!.waitFor((s) => s.error !== undefined, 1_000, 'a\'s writes to fail');
    expect(stoppedA.error).toBe('EIO');
    expect(stoppedA.at).toBeLessThan(killedAt + tookOverAfter); // fenced before the takeover
    const before = await checkOnB(stoppedA.seq);
    // a comes back: it learns it lost v, refuses to mount it, and writes nothing more.
    await a.start();
    const refused = await callPlugin(a.socket, 'VolumeDriver.Mount', { Name: 'v', ID: 'again' });
    expect(refused.body.Err).toMatch(/volume v was fenced on this host/);
    await new Promise((r) => setTimeout(r, 1_500));
    expect(await checkOnB(stoppedA.seq)).toEqual(before);
    const get = await callOk(b.socket, 'VolumeDriver.Get', { Name: 'v' });
    expect(get.Volume).toMatchObject({ Status: { lease: { state: 'held', holder: expect.stringMatching(/^host b \(/), generation: 2 } } });
    await callOk(a.socket, 'VolumeDriver.Unmount', { Name: 'v', ID: 'on-a' }); // Docker on a cleans up
    await callOk(b.socket, 'VolumeDriver.Unmount', { Name: 'v', ID: 'early' });
  });

  it('a hung daemon (SIGSTOP) is fenced by its watchdog before b takes over, and does not write after SIGCONT', async () => {
    await writingOnA();
    a.child!.kill('SIGSTOP');
    const lastRenewal = await lastRenewalOfA();
    const mount = await callPlugin(b.socket, 'VolumeDriver.Mount', { Name: 'v', ID: 'on-b' }, 60_000);
    expect(mount.body.Err).toBe('');
    const tookOverAt = Date.now();
    expect(tookOverAt - lastRenewal).toBeGreaterThanOrEqual(LEASE.seconds * 1000);
    const fenced = await writer!.waitFor((s) => s.error !== undefined, 1_000, 'a\'s writes to fail');
    expect(fenced.error).toBe('EIO');
    expect(fenced.at).toBeLessThan(tookOverAt);
    const watchdogSaid = JSON.parse(await readFile(join(a.stateDir, 'fenced.json'), 'utf8')) as Record<string, { reason: string }>;
    expect(watchdogSaid.v?.reason).toMatch(/renewed no lease/);
    const before = await checkOnB(fenced.seq);
    a.child!.kill('SIGCONT');
    await new Promise((r) => setTimeout(r, 2_000));
    expect(await checkOnB(fenced.seq)).toEqual(before);
    const status = await callOk(a.socket, 'VolumeDriver.Get', { Name: 'v' });
    expect(status.Volume).toMatchObject({ Status: { fenced: expect.stringMatching(/watchdog/) } });
    await callOk(b.socket, 'VolumeDriver.Unmount', { Name: 'v', ID: 'on-b' });
    await callOk(a.socket, 'VolumeDriver.Unmount', { Name: 'v', ID: 'on-a' });
  });

  /** Runs the operator command against a daemon's config; resolves with exit code and output. */
  async function ballastCli(d: BallastProcess, ...args: string[]): Promise<{ code: number; out: string }> {
    try {
      const { stdout } = await promisify(execFile)(process.execPath, [BALLAST_BIN, '--config', d.configPath, ...args], { timeout: 30_000 });
      return { code: 0, out: stdout };
    } catch (err) {
      const e = err as { code?: number; stdout?: string; stderr?: string };
      return { code: e.code ?? -1, out: `${e.stdout ?? ''}${e.stderr ?? ''}` };
    }
  }

  it('operator commands: inspect shows every host lease; release --force is refused while the holder renews, allowed once it is dead', async () => {
    await callOk(a.socket, 'VolumeDriver.Create', { Name: 'v', Opts: { size: '32M' } });
    await callOk(a.socket, 'VolumeDriver.Mount', { Name: 'v', ID: 'on-a' });
    const inspect = JSON.parse((await ballastCli(b, 'volume', 'inspect', 'v')).out) as { status: { lease: { holder: string } }; hostLeases: { hostId: string }[] };
    expect(inspect.status.lease.holder).toMatch(/^host a /);
    expect(inspect.hostLeases.map((h) => h.hostId).sort()).toEqual(['a', 'b']);
    const refused = await ballastCli(b, 'volume', 'release', 'v', '--force');
    expect(refused.code).toBe(1);
    expect(refused.out).toMatch(/ballast: release v: volume v is in use on host a .*lease renewed/);
    expect((await ballastCli(b, 'volume', 'release', 'v')).out).toMatch(/give --force if that host is known to be dead/);
    await a.stop('SIGKILL');
    await a.stopWatchdog(); // as if the whole host died
    await new Promise((r) => setTimeout(r, (LEASE.seconds + 0.5) * 1000));
    const released = await ballastCli(b, 'volume', 'release', 'v', '--force');
    expect(released.code).toBe(0);
    expect(released.out).toMatch(/v: lease \{"state":"free","generation":2\}/);
    await callOk(b.socket, 'VolumeDriver.Mount', { Name: 'v', ID: 'on-b' });
    await callOk(b.socket, 'VolumeDriver.Unmount', { Name: 'v', ID: 'on-b' });
  });

  it('a live holder keeps its volume: b\'s Mount fails after mount_wait naming it, and a\'s data is untouched', async () => {
    await b.stop();
    const impatient = await BallastProcess.create({
      dir: join(dir, 'b2'),
      config: { host: { id: 'b' }, backends: { loop: { root: join(dir, 'shared'), shared: true } }, lease: { ...LEASE, mount_wait: 2 } },
    });
    b = impatient;
    await b.start();
    await writingOnA();
    const started = Date.now();
    const denied = await callPlugin(b.socket, 'VolumeDriver.Mount', { Name: 'v', ID: 'x' });
    expect(denied.body.Err).toMatch(/volume v is in use on host a \(.*\) \(lease renewed \d s ago\); it moves when a releases it/);
    expect(Date.now() - started).toBeLessThan(6_000);
    expect(writer!.status().error).toBeUndefined();
    const seq = writer!.status().seq;
    await writer!.waitFor((s) => s.seq > seq + 10, 5_000, 'a to keep writing');
    writer!.stop();
    await callOk(a.socket, 'VolumeDriver.Unmount', { Name: 'v', ID: 'on-a' });
  });
});
