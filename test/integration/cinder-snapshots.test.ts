import { execFile } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import { createServer, request as httpRequest, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { open, readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { promisify } from 'node:util';
import type { CinderBackendConfig } from '../../src/config/schema.js';
import { CinderClient } from '../../src/drivers/cinder/client.js';
import { CinderDriver, cinderName } from '../../src/drivers/cinder/cinder-driver.js';
import type { NewVolume, VolumeRecord } from '../../src/drivers/types.js';
import { BackendUnavailable, InvalidOption, SnapshotExists, SnapshotNotFound, VolumeNotFound } from '../../src/errors.js';
import type { IscsiExport } from '../../src/export.js';
import { silentLogger } from '../../src/log.js';
import { HostLeaseKeeper } from '../../src/ownership/host-lease.js';
import { HostMonitor } from '../../src/ownership/host-monitor.js';
import { OwnershipLease } from '../../src/ownership/lease.js';
import { startCinderLab, type CinderLab } from '../lab/cinder.js';
import { BALLAST_BIN, BallastProcess } from '../lab/ballast.js';
import { callOk, callPlugin } from '../helpers/plugin-client.js';
import { readCapacity } from '../lab/tgtd.js';
import { runInPriorityLane } from '../lab/priority-lane.js';

// Snapshots and clones on the cinder backend against a real Cinder (test/lab/cinder.ts).
// The lab's volume driver keeps each volume's data in a sparse file, volumes/volume-<id>, and
// copies it for snapshots and clones, so the data of a clone is checked byte for byte there.
// What Cinder holds is read through the API directly (lab.request), not through the driver.

const T = 120_000;
const GiB = 2 ** 30;
const timing = { leaseSeconds: 20, renewEverySeconds: 2 };

let lab: CinderLab;

const backendConfig = (url: string, timeoutSeconds: number): CinderBackendConfig => ({ url, auth: { type: 'noauth', project_id: lab.projectId }, multipath: false, reservations: true, timeout_seconds: timeoutSeconds });

function newDriver(options: { url?: string; timeoutSeconds?: number } = {}): { driver: CinderDriver; client: CinderClient } {
  const backend = backendConfig(options.url ?? lab.url, options.timeoutSeconds ?? 60);
  // Every HTTP call is bounded at 60 s; timeoutSeconds bounds the waits for a status.
  const client = new CinderClient({ url: backend.url, auth: { kind: 'noauth', projectId: lab.projectId }, timeoutMs: 60_000 }, silentLogger());
  return { driver: new CinderDriver(client, backend, new Map(), '127.0.0.1', silentLogger()), client };
}

const volume = (name: string, sizeBytes = GiB): NewVolume => ({ name, profile: 'default', sizeBytes, fstype: 'ext4', mkfsOpts: [], mountOpts: [], readonly: false });
const unique = (prefix: string) => `${prefix}-${randomBytes(3).toString('hex')}`;

/** One ballast host, as the volume manager uses it: driver, host lease, ownership lease. */
async function host(index: number) {
  const { driver, client } = newDriver();
  await driver.start();
  const identity = { hostId: `snap-h${index}`, bootId: 'b1', hostname: `snap-host-${index}` };
  const clock = () => 0;
  const keeper = new HostLeaseKeeper(driver, identity, timing, silentLogger(), clock);
  const lease = new OwnershipLease(driver, identity, silentLogger(), { store: driver, keeper, monitor: new HostMonitor(timing.leaseSeconds, clock) });
  await keeper.register();
  return { driver, client, lease, initiator: { hostId: identity.hostId, iqn: `iqn.2026-12.dev.ballast:snap-h${index}` } };
}

type Snapshot = { id: string; name: string; status: string; size: number; volume_id: string; metadata: Record<string, string> };

async function cinderVolume(name: string): Promise<{ id: string; status: string; size: number; metadata: Record<string, string> }> {
  const reply = await lab.request<{ volumes: { id: string }[] }>('GET', `/volumes/detail?name=${cinderName(name)}`);
  expect(reply.body.volumes).toHaveLength(1);
  return (await lab.request('GET', `/volumes/${reply.body.volumes[0]!.id}`)).body.volume;
}

async function cinderSnapshots(volumeId?: string): Promise<Snapshot[]> {
  return (await lab.request<{ snapshots: Snapshot[] }>('GET', `/snapshots/detail${volumeId ? `?volume_id=${volumeId}` : ''}`)).body.snapshots;
}

async function cinderVolumeCount(): Promise<number> {
  return (await lab.request<{ volumes: unknown[] }>('GET', '/volumes/detail')).body.volumes.length;
}

/** The volume's data, as the lab's driver keeps it. */
const dataFile = (id: string) => join(lab.stateDir, 'volumes', `volume-${id}`);

const digest = (bytes: Buffer) => createHash('sha256').update(bytes).digest('hex');

/** Writes random bytes at each offset into the volume's data; returns their digests (jest's diff of large buffers never ends). */
async function writeData(id: string, offsets: number[]): Promise<string[]> {
  const file = await open(dataFile(id), 'r+');
  try {
    const written: string[] = [];
    for (const offset of offsets) {
      const bytes = randomBytes(64 * 1024);
      await file.write(bytes, 0, bytes.length, offset);
      written.push(digest(bytes));
    }
    await file.sync();
    return written;
  } finally {
    await file.close();
  }
}

async function readData(id: string, offsets: number[]): Promise<string[]> {
  const file = await open(dataFile(id), 'r');
  try {
    return await Promise.all(offsets.map(async (offset) => digest((await file.read(Buffer.alloc(64 * 1024), 0, 64 * 1024, offset)).buffer)));
  } finally {
    await file.close();
  }
}

/**
 * A loopback proxy to the lab's Cinder that shows every read of a snapshot with `status` (a
 * snapshot Cinder never finishes, or fails) while `rewriting`; everything else passes through.
 */
async function statusProxy(status: string): Promise<{ url: string; server: Server; stop: () => void }> {
  const target = new URL(lab.url);
  const server = createServer(async (req, res) => {
    let body = '';
    for await (const chunk of req) body += chunk;
    const upstream = httpRequest({ host: target.hostname, port: target.port, method: req.method, path: req.url, headers: req.headers }, async (reply) => {
      let text = '';
      for await (const chunk of reply) text += chunk;
      if (req.method === 'GET' && /\/snapshots\/[0-9a-f-]{36}$/.test(req.url ?? '') && reply.statusCode === 200) {
        const parsed = JSON.parse(text);
        // Only once Cinder is done creating: a snapshot that fails stops creating first. Told
        // "error" while Cinder still created it, ballast's DELETE came too early, was refused
        // (Cinder deletes no snapshot it is creating), and the snapshot was left behind (a full run).
        if (parsed.snapshot.status !== 'creating') parsed.snapshot.status = status;
        text = JSON.stringify(parsed);
      }
      const headers = { ...reply.headers };
      delete headers['content-length'];
      res.writeHead(reply.statusCode ?? 502, headers).end(text);
    });
    upstream.end(body);
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  return { url: `http://127.0.0.1:${(server.address() as AddressInfo).port}/v3`, server, stop: () => (server.closeAllConnections(), server.close()) };
}

runInPriorityLane();

beforeAll(async () => {
  lab = await startCinderLab();
}, 240_000);

// Cinder's own account of any HTTP 500 it answered (a full run's DELETE of a snapshot seems to have got one).
afterEach(() => {
  const errors = lab?.newApiErrors();
  if (errors) console.log(`cinder-api ERROR lines:\n${errors}`);
});

afterAll(async () => {
  await lab?.stop();
}, 60_000);

describe('cinder snapshots and clones against a real Cinder', () => {
  const OFFSETS = [0, 300 * 2 ** 20, GiB - 64 * 1024];

  it('snapshots a leased volume, clones from the snapshot and from the live volume with their data, lists and removes', async () => {
    const a = await host(1);
    const name = unique('src');
    const record = await a.driver.create(volume(name));
    const src = await cinderVolume(name);
    const before = await writeData(src.id, OFFSETS);

    // As the volume manager does for a volume no host uses: under this host's lease.
    await a.lease.acquire(name);
    expect((await cinderVolume(name)).status).toBe('reserved');
    const snap = await a.driver.snapshots.createSnapshot(record, 's1');
    await a.lease.release(name);
    expect(snap).toMatchObject({ volume: name, name: 's1', sizeBytes: GiB, fstype: 'ext4' });
    expect((await cinderVolume(name)).status).toBe('available'); // the release deleted the completed reservation
    const inCinder = await cinderSnapshots(src.id);
    expect(inCinder).toHaveLength(1);
    expect(inCinder[0]).toMatchObject({ status: 'available', size: 1, volume_id: src.id, name: 'ballast-s1', metadata: { 'ballast.volume': name, 'ballast.snapshot': 's1' } });

    const after = await writeData(src.id, OFFSETS); // the volume changes after the snapshot

    // A clone of the snapshot: a new ballast volume with its own record, larger than its source.
    const fromSnap = unique('from-snap');
    const clone1 = await a.driver.snapshots.createFrom({ ...volume(fromSnap, 2 * GiB) }, { volume: name, snapshot: 's1' });
    expect(clone1).toMatchObject({ name: fromSnap, sizeBytes: 2 * GiB, ownership: { state: 'free', generation: 0 } });
    const c1 = await cinderVolume(fromSnap);
    expect(c1).toMatchObject({ status: 'available', size: 2, metadata: { 'ballast.volume': fromSnap, 'ballast.rev': '0', 'ballast.attachment': '' } });
    expect(await readData(c1.id, OFFSETS)).toEqual(before);

    // A clone of the live volume, under its lease as the manager takes it.
    const fromLive = unique('from-live');
    await a.lease.acquire(name);
    await a.driver.snapshots.createFrom(volume(fromLive), { volume: name });
    await a.lease.release(name);
    const c2 = await cinderVolume(fromLive);
    expect(await readData(c2.id, OFFSETS)).toEqual(after);
    expect(await readData(c2.id, OFFSETS)).not.toEqual(before);

    // Both are volumes ballast lists, on every host, and can lease and export.
    const b = await host(2);
    const listed = (await b.driver.list()).map((v: VolumeRecord) => v.name);
    expect(listed).toEqual(expect.arrayContaining([name, fromSnap, fromLive]));
    for (const clone of [fromSnap, fromLive]) {
      await b.lease.acquire(clone);
      const exp = (await b.driver.export(clone, b.initiator)) as IscsiExport;
      const capacity = await readCapacity(b.initiator.iqn, exp.portals[0]!, exp.iqn, exp.lun, exp.chap);
      expect((capacity.lastLba + 1) * capacity.blockLength).toBe((await b.driver.read(clone))!.value.sizeBytes);
      await b.driver.unexport(clone, b.initiator);
      await b.lease.release(clone);
    }

    // Listed from another host (nothing local): by volume and all together; then removed.
    expect(await b.driver.snapshots.listSnapshots(name)).toEqual([expect.objectContaining({ volume: name, name: 's1', sizeBytes: GiB })]);
    expect((await b.driver.snapshots.listSnapshots()).filter((s) => s.volume === name).map((s) => s.name)).toEqual(['s1']);
    await b.driver.snapshots.removeSnapshot(name, 's1');
    expect(await cinderSnapshots(src.id)).toEqual([]);
    expect(await b.driver.snapshots.listSnapshots(name)).toEqual([]);

    for (const v of [fromSnap, fromLive, name]) await a.driver.destroy(v);
    expect(listedAfter(await b.driver.list(), [name, fromSnap, fromLive])).toEqual([]);
  }, T);

  it('snapshots an attached (in-use) volume with force, and deleting the volume takes its snapshots along', async () => {
    const a = await host(3);
    const name = unique('busy');
    const record = await a.driver.create(volume(name));
    await a.lease.acquire(name);
    await a.driver.export(name, a.initiator);
    const id = (await cinderVolume(name)).id;
    expect((await cinderVolume(name)).status).toBe('in-use');
    await a.driver.snapshots.createSnapshot(record, 'live');
    await a.driver.snapshots.createSnapshot(record, 'live2');
    expect((await cinderSnapshots(id)).map((s) => s.status)).toEqual(['available', 'available']);
    await expect(a.driver.snapshots.createSnapshot(record, 'live')).rejects.toBeInstanceOf(SnapshotExists);
    expect(await cinderSnapshots(id)).toHaveLength(2);
    await a.driver.unexport(name, a.initiator);
    await a.lease.release(name);
    await a.driver.destroy(name);
    expect(await cinderSnapshots(id)).toEqual([]);
    expect((await lab.request('GET', `/volumes/${id}`)).status).toBe(404);
  }, T);

  it('bad input: hostile names refused before any call, missing sources named, nothing left in Cinder', async () => {
    const { driver, client } = newDriver();
    await driver.start();
    const name = unique('bad');
    const record = await driver.create(volume(name));
    const id = (await cinderVolume(name)).id;
    const volumesBefore = await cinderVolumeCount();
    const snapshotsBefore = (await cinderSnapshots()).length;
    const calls = () => [...client.calls.values()].reduce((a, b) => a + b, 0);

    for (const hostile of ['../x', 'a/b', '', '-x', 'x'.repeat(129), 'a b', 'a\0b', 'é']) {
      const made = calls();
      await expect(driver.snapshots.createSnapshot(record, hostile)).rejects.toBeInstanceOf(InvalidOption);
      await expect(driver.snapshots.removeSnapshot(name, hostile)).rejects.toBeInstanceOf(InvalidOption);
      await expect(driver.snapshots.createFrom(volume(unique('c')), { volume: name, snapshot: hostile })).rejects.toBeInstanceOf(InvalidOption);
      expect(calls()).toBe(made);
    }
    await expect(driver.snapshots.createSnapshot({ ...record, name: 'no-such-volume' }, 's')).rejects.toBeInstanceOf(VolumeNotFound);
    await expect(driver.snapshots.removeSnapshot(name, 'nosnap')).rejects.toThrow(/volume .* has no snapshot nosnap/);
    await expect(driver.snapshots.createFrom(volume(unique('c')), { volume: name, snapshot: 'nosnap' })).rejects.toBeInstanceOf(SnapshotNotFound);
    await expect(driver.snapshots.createFrom(volume(unique('c')), { volume: 'no-such-volume' })).rejects.toBeInstanceOf(VolumeNotFound);
    // A clone Cinder cannot make (beyond the backend's 20 GiB) is deleted again.
    await expect(driver.snapshots.createFrom(volume(unique('huge'), 64 * GiB), { volume: name })).rejects.toThrow(/could not get volume .* created|refused/);
    expect(await cinderVolumeCount()).toBe(volumesBefore);
    expect((await cinderSnapshots()).length).toBe(snapshotsBefore);
    expect(await cinderSnapshots(id)).toEqual([]);
    await driver.destroy(name);
  }, T);

  it('a snapshot that never becomes available within the bound, or fails: deleted, and the error names it', async () => {
    const name = unique('slow');
    const { driver } = newDriver();
    await driver.start();
    const record = await driver.create(volume(name));
    const id = (await cinderVolume(name)).id;
    for (const [status, timeoutSeconds, message] of [
      ['creating', 2, /snapshot stuck of volume .* was not created within 2 s \(Cinder status creating\)/],
      ['error', 30, /Cinder could not get snapshot stuck of volume .* created \(status error\)/],
    ] as const) {
      const proxy = await statusProxy(status);
      try {
        const started = performance.now();
        await expect(newDriver({ url: proxy.url, timeoutSeconds }).driver.snapshots.createSnapshot(record, 'stuck')).rejects.toThrow(message);
        expect(performance.now() - started).toBeLessThan((timeoutSeconds + 10) * 1000);
      } finally {
        proxy.stop();
      }
      expect(await cinderSnapshots(id)).toEqual([]); // deleted, and gone before the error came back
    }
    await driver.destroy(name);
  }, T);

  it('through the daemon and the CLI: snapshot create, ls, a clone with --opt from, Remove guarded, rm', async () => {
    const daemon = await BallastProcess.create({
      config: {
        host: { id: 'snap-daemon' },
        lease: { seconds: 20, renew_every: 1, fence_after: 12 },
        backends: { cinder: { url: lab.url, auth: { type: 'noauth', project_id: lab.projectId }, timeout_seconds: 30 } },
        profiles: { default: { backend: 'cinder' } },
      },
    });
    const cli = async (...args: string[]) =>
      promisify(execFile)(process.execPath, [BALLAST_BIN, '--config', daemon.configPath, ...args], { timeout: 60_000 }).then(
        ({ stdout, stderr }) => ({ code: 0, stdout, stderr }),
        (e: { code?: number; stdout?: string; stderr?: string }) => ({ code: e.code ?? -1, stdout: e.stdout ?? '', stderr: e.stderr ?? '' }),
      );
    const name = unique('d');
    const clone = unique('dc');
    try {
      await daemon.start(60_000);
      await callOk(daemon.socket, 'VolumeDriver.Create', { Name: name, Opts: { size: '1G' } });
      const id = (await cinderVolume(name)).id;
      const data = await writeData(id, OFFSETS);
      expect(await cli('snapshot', 'create', name, 'snap1')).toMatchObject({ code: 0 });
      expect((await cinderVolume(name)).status).toBe('available'); // the lease was given back
      expect((await cli('snapshot', 'ls', name)).stdout).toMatch(new RegExp(`^${name}\\s+snap1\\s+1 GiB\\s+ext4\\s`, 'm'));
      await callOk(daemon.socket, 'VolumeDriver.Create', { Name: clone, Opts: { from: `${name}@snap1` } });
      expect(await readData((await cinderVolume(clone)).id, OFFSETS)).toEqual(data);
      const listed = (await callOk(daemon.socket, 'VolumeDriver.List')) as { Volumes: { Name: string }[] };
      expect(listed.Volumes.map((v) => v.Name)).toEqual(expect.arrayContaining([name, clone]));
      expect(String((await callPlugin(daemon.socket, 'VolumeDriver.Remove', { Name: name })).body.Err)).toMatch(/has 1 snapshot\(s\) \(snap1\)/);
      expect((await cli('snapshot', 'create', name, '../etc')).code).not.toBe(0);
      expect(await cli('snapshot', 'rm', name, 'snap1')).toMatchObject({ code: 0 });
      expect(await cinderSnapshots(id)).toEqual([]);
      for (const v of [clone, name]) await callOk(daemon.socket, 'VolumeDriver.Remove', { Name: v });
      expect(await cinderSnapshots()).toEqual([]);
    } finally {
      await daemon.stop();
    }
  }, T);
});

function listedAfter(records: VolumeRecord[], names: string[]): string[] {
  return records.map((r) => r.name).filter((n) => names.includes(n));
}
