import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { randomBytes } from 'node:crypto';
import type { CinderBackendConfig } from '../../src/config/schema.js';
import { CinderClient, type CinderAuth } from '../../src/drivers/cinder/client.js';
import { CinderDriver, cinderName } from '../../src/drivers/cinder/cinder-driver.js';
import { VolumeAlreadyExists, type NewVolume } from '../../src/drivers/types.js';
import { BackendUnavailable, InvalidRequest, LeaseHeld } from '../../src/errors.js';
import type { IscsiExport } from '../../src/export.js';
import { silentLogger } from '../../src/log.js';
import { HostLeaseKeeper } from '../../src/ownership/host-lease.js';
import { HostMonitor } from '../../src/ownership/host-monitor.js';
import { OwnershipLease } from '../../src/ownership/lease.js';
import { existsSync } from 'node:fs';
import { labProcesses, startCinderLab, type CinderLab } from '../lab/cinder.js';
import { BallastProcess } from '../lab/ballast.js';
import { callOk, callPlugin } from '../helpers/plugin-client.js';
import { inquiry, readCapacity } from '../lab/tgtd.js';
import { runInPriorityLane } from '../lab/priority-lane.js';

// The cinder backend against a real Cinder (Debian's cinder-api, -scheduler, -volume and
// RabbitMQ on loopback, test/lab/cinder.ts): volumes, metadata, attachments and their
// reservation as the arbiter, host leases, takeover. What Cinder holds is checked through the
// API directly (lab.request), not through the driver; each export is logged in to with
// libiscsi (a userspace initiator: this kernel has no iSCSI initiator) with the CHAP secret
// Cinder returned. The kernel attach of an iSCSI export is the iscsi attacher's (VM lab).

const T = 120_000;
const GiB = 2 ** 30;
const timing = { leaseSeconds: 20, renewEverySeconds: 2 };

let lab: CinderLab;
let stopped = false;

const backendConfig = (timeoutSeconds = 60): CinderBackendConfig => ({ url: lab.url, auth: { type: 'noauth', project_id: lab.projectId }, multipath: false, reservations: true, timeout_seconds: timeoutSeconds });

function newDriver(options: { url?: string; auth?: CinderAuth; timeoutSeconds?: number } = {}): CinderDriver {
  const backend = { ...backendConfig(options.timeoutSeconds), ...(options.url ? { url: options.url } : {}) };
  const client = new CinderClient({ url: backend.url, auth: options.auth ?? { kind: 'noauth', projectId: lab.projectId }, timeoutMs: backend.timeout_seconds * 1000 }, silentLogger());
  return new CinderDriver(client, backend, new Map([['gold', { volumeType: '__DEFAULT__' }], ['missing', { volumeType: 'no-such-type' }]]), '127.0.0.1', silentLogger());
}

const volume = (name: string, sizeBytes = 64 * 2 ** 20, profile = 'default'): NewVolume => ({ name, profile, sizeBytes, fstype: 'ext4', mkfsOpts: [], mountOpts: [], readonly: false });
const unique = (prefix: string) => `${prefix}-${randomBytes(3).toString('hex')}`;

class FakeClock {
  constructor(public now = 0) {}
  read = () => this.now;
}

/** One ballast host: its own client and driver, host lease and ownership lease. */
async function host(index: number, clock = new FakeClock()) {
  const driver = newDriver();
  await driver.start();
  const identity = { hostId: `h${index}`, bootId: 'b1', hostname: `host-${index}` };
  const keeper = new HostLeaseKeeper(driver, identity, timing, silentLogger(), clock.read);
  const monitor = new HostMonitor(timing.leaseSeconds, clock.read);
  const lease = new OwnershipLease(driver, identity, silentLogger(), { store: driver, keeper, monitor });
  await keeper.register();
  return { driver, keeper, monitor, lease, clock, initiator: { hostId: identity.hostId, iqn: `iqn.2026-12.dev.ballast:h${index}` } };
}

/** The Cinder volume behind a ballast volume, as the API shows it. */
async function cinderVolume(name: string): Promise<{ id: string; status: string; size: number; metadata: Record<string, string>; volume_type: string }> {
  const reply = await lab.request<{ volumes: { id: string; name: string; status: string }[] }>('GET', `/volumes/detail?name=${cinderName(name)}`);
  expect(reply.body.volumes).toHaveLength(1);
  return (await lab.request('GET', `/volumes/${reply.body.volumes[0]!.id}`)).body.volume;
}

async function attachments(volumeId: string): Promise<{ id: string; status: string }[]> {
  return (await lab.request<{ attachments: { id: string; status: string }[] }>('GET', `/attachments?volume_id=${volumeId}`)).body.attachments;
}

/** A loopback HTTP server answering every request with `status`, or never when status is 0. */
async function edge(status: number): Promise<{ url: string; server: Server; requests: () => number }> {
  let requests = 0;
  const server = createServer((_req, res) => {
    requests += 1;
    if (status) res.writeHead(status, { 'content-type': 'application/json' }).end(JSON.stringify({ computeFault: { message: 'The server has either erred or is incapable of performing the requested operation.', code: status } }));
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  return { url: `http://127.0.0.1:${(server.address() as AddressInfo).port}/v3`, server, requests: () => requests };
}

runInPriorityLane();

beforeAll(async () => {
  lab = await startCinderLab();
}, 240_000);

// Cinder's own account of any HTTP 500 it answered (full runs got one on the first create), after
// each test while the lab still runs (the last test stops it and removes its logs).
afterEach(() => {
  const errors = lab?.newApiErrors();
  if (errors) console.log(`cinder-api ERROR lines:\n${errors}`);
});

afterAll(async () => {
  if (!stopped) await lab?.stop();
}, 60_000);

describe('cinder backend against a real Cinder', () => {
  it('creates in GiB with the record in metadata, reads, lists only ballast\'s volumes, extends and deletes', async () => {
    const driver = newDriver();
    const name = unique('web');
    const record = await driver.create(volume(name, 1.5 * GiB, 'gold'));
    expect(record).toMatchObject({ name, profile: 'gold', sizeBytes: 2 * GiB, ownership: { state: 'free', generation: 0 } });
    const inCinder = await cinderVolume(name);
    expect(inCinder).toMatchObject({ status: 'available', size: 2, volume_type: '__DEFAULT__', metadata: { 'ballast.volume': name, 'ballast.profile': 'gold', 'ballast.rev': '0' } });
    await expect(driver.create(volume(name))).rejects.toBeInstanceOf(VolumeAlreadyExists);

    // Another tenant's (or a person's) volume in the same project is never listed.
    const foreign = await lab.request('POST', '/volumes', { volume: { name: unique('not-ballast'), size: 1 } });
    expect(foreign.status).toBe(202);
    const listed = (await newDriver().list()).map((v) => v.name);
    expect(listed).toContain(name);
    expect(listed.some((n) => n.startsWith('not-ballast'))).toBe(false);

    expect((await driver.grow(name, 3 * GiB)).sizeBytes).toBe(3 * GiB);
    expect((await cinderVolume(name)).size).toBe(3);
    await driver.destroy(name);
    expect(await driver.read(name)).toBeUndefined();
    await driver.destroy(name); // deleting a missing volume succeeds
  }, T);

  it('leases through the attachment reservation: export gives the target with Cinder\'s CHAP secret, unexport and release free it', async () => {
    const a = await host(1);
    const name = unique('db');
    await a.driver.create(volume(name));
    const held = await a.lease.acquire(name);
    expect(held).toMatchObject({ state: 'held', generation: 1, holder: { hostId: 'h1' } });
    const id = (await cinderVolume(name)).id;
    expect((await cinderVolume(name)).status).toBe('reserved');
    const exp = (await a.driver.export(name, a.initiator)) as IscsiExport;
    expect(exp).toMatchObject({ transport: 'iscsi', portals: [lab.iscsiPortal], reservations: true });
    expect(exp.iqn).toContain(id);
    expect(exp.chap?.username).toBeTruthy();
    expect(exp.chap?.password).toBeTruthy();
    expect((await cinderVolume(name)).status).toBe('in-use');
    expect(await attachments(id)).toHaveLength(1);
    // The export logs in for real, with Cinder's CHAP secret, and shows the volume's size; without it, refused.
    const capacity = await readCapacity(a.initiator.iqn, exp.portals[0]!, exp.iqn, exp.lun, exp.chap);
    expect((capacity.lastLba + 1) * capacity.blockLength).toBe(GiB);
    expect((await inquiry(a.initiator.iqn, exp.portals[0]!, exp.iqn, exp.lun)).exitCode).not.toBe(0);

    // Another host sees it held, with the holder alive.
    const b = await host(2);
    await expect(b.lease.acquire(name)).rejects.toBeInstanceOf(LeaseHeld);
    await expect(b.driver.export(name, b.initiator)).rejects.toBeInstanceOf(LeaseHeld);

    await a.driver.unexport(name, a.initiator);
    expect(await attachments(id)).toHaveLength(0);
    expect((await inquiry(a.initiator.iqn, exp.portals[0]!, exp.iqn, exp.lun, exp.chap)).exitCode).not.toBe(0); // the target is gone
    await a.lease.release(name);
    expect((await cinderVolume(name)).status).toBe('available');
    expect((await b.lease.acquire(name)).generation).toBe(2);
    await b.lease.release(name);
    await b.driver.destroy(name);
  }, T);

  it('eight hosts acquiring at once: exactly one holds the volume, the others are told who does', async () => {
    const hosts = [];
    for (let i = 10; i < 18; i += 1) hosts.push(await host(i));
    const name = unique('race');
    await hosts[0]!.driver.create(volume(name));
    const results = await Promise.allSettled(hosts.map((h) => h.lease.acquire(name)));
    const winners = results.flatMap((r, i) => (r.status === 'fulfilled' ? [i] : []));
    expect(winners).toHaveLength(1);
    for (const r of results) if (r.status === 'rejected') expect(`${(r.reason as Error).constructor.name}: ${(r.reason as Error).message}`).toMatch(new RegExp(`^${LeaseHeld.name}: `));
    const inCinder = await cinderVolume(name);
    expect(inCinder.metadata['ballast.holder']).toMatch(new RegExp(`^h${10 + winners[0]!} `));
    expect(await attachments(inCinder.id)).toHaveLength(1);
    expect(inCinder.metadata['ballast.attachment']).toBe((await attachments(inCinder.id))[0]!.id);
    await hosts[winners[0]!]!.lease.release(name);
    await hosts[0]!.driver.destroy(name);
  }, T);

  it('takes a volume over from a holder whose host lease stopped: its reservation is deleted, the generation rises', async () => {
    const clock = new FakeClock();
    const a = await host(20, clock);
    const b = await host(21, clock);
    const name = unique('move');
    await a.driver.create(volume(name));
    await a.lease.acquire(name);
    await a.driver.export(name, a.initiator);
    const id = (await cinderVolume(name)).id;
    const [old] = await attachments(id);

    await expect(b.lease.acquire(name)).rejects.toBeInstanceOf(LeaseHeld); // first sight of a's lease
    clock.now += timing.leaseSeconds + 1; // a never renews again
    const taken = await b.lease.acquire(name);
    expect(taken).toMatchObject({ state: 'held', generation: 2, holder: { hostId: 'h21' } });
    const now = await attachments(id);
    expect(now).toHaveLength(1);
    expect(now[0]!.id).not.toBe(old!.id);
    const exp = (await b.driver.export(name, b.initiator)) as IscsiExport;
    expect((await inquiry(b.initiator.iqn, exp.portals[0]!, exp.iqn, exp.lun, exp.chap)).exitCode).toBe(0);
    // The former holder, back, cannot attach it any more.
    await expect(a.driver.export(name, a.initiator)).rejects.toBeInstanceOf(LeaseHeld);
    await b.driver.unexport(name, b.initiator);
    await b.lease.release(name);
    await b.driver.destroy(name);
  }, T);

  it('an operator\'s forced release of a dead holder deletes every attachment, an orphan reservation included', async () => {
    const clock = new FakeClock();
    const a = await host(30, clock);
    const b = await host(31, clock);
    const name = unique('force');
    await a.driver.create(volume(name));
    await a.lease.acquire(name);
    await a.driver.export(name, a.initiator);
    const id = (await cinderVolume(name)).id;
    await expect(b.lease.forceRelease(name)).rejects.toBeInstanceOf(LeaseHeld); // a renews: refused
    clock.now += timing.leaseSeconds + 1;
    expect(await b.lease.forceRelease(name)).toMatchObject({ state: 'free', generation: 2 });
    expect(await attachments(id)).toEqual([]);
    expect((await cinderVolume(name)).status).toBe('available');

    // A reservation nobody recorded (a host that died between reserving and writing): a Mount
    // is refused naming it and how to delete it; once deleted, the volume is taken.
    const orphan = await lab.request<{ attachment: { id: string } }>('POST', '/attachments', { attachment: { volume_uuid: id } });
    expect(orphan.status).toBe(200);
    const err = await b.lease.acquire(name).catch((e: unknown) => e);
    expect((err as Error).message).toContain(`attachment ${orphan.body.attachment.id}`);
    expect((err as Error).message).toContain('openstack volume attachment delete');
    await lab.request('DELETE', `/attachments/${orphan.body.attachment.id}`);
    expect(await b.lease.acquire(name)).toMatchObject({ state: 'held', generation: 3 });
    await b.lease.release(name);
    await b.driver.destroy(name);
  }, T);

  it('a volume in a state only an administrator can clear, and a grow while attached: refused, saying so', async () => {
    const a = await host(32);
    const name = unique('stuck');
    await a.driver.create(volume(name));
    await a.lease.acquire(name);
    await a.driver.export(name, a.initiator);
    await expect(a.driver.grow(name, 3 * GiB)).rejects.toThrow(/is in-use in Cinder; grow it while no container uses it/);
    await a.driver.unexport(name, a.initiator);
    await a.lease.release(name);
    const id = (await cinderVolume(name)).id;
    expect((await lab.request('POST', `/volumes/${id}/action`, { 'os-reset_status': { status: 'maintenance' } })).status).toBe(202);
    await expect(a.lease.acquire(name)).rejects.toThrow(/Cinder cannot reserve volume stuck-\w+: .*maintenance.*an administrator may need to reset its state/);
    await lab.request('POST', `/volumes/${id}/action`, { 'os-reset_status': { status: 'available' } });
    await a.driver.destroy(name);
  }, T);

  it('a size beyond the backend\'s capacity: a clear error, and no volume left behind', async () => {
    const driver = newDriver();
    const name = unique('huge');
    await expect(driver.create(volume(name, 500 * GiB))).rejects.toThrow(/could not get volume ballast-huge-\w+ created \(status error\)/);
    expect((await lab.request<{ volumes: unknown[] }>('GET', `/volumes/detail?name=${cinderName(name)}`)).body.volumes).toEqual([]);
  }, T);

  it('an unknown volume type: Cinder\'s refusal, naming what to check', async () => {
    await expect(newDriver().create(volume(unique('typo'), GiB, 'missing'))).rejects.toThrow(/Cinder refused to create volume .*no-such-type|volume_type/);
    await expect(newDriver().create(volume(unique('typo'), GiB, 'missing'))).rejects.toBeInstanceOf(InvalidRequest);
  }, T);

  it('Cinder down: BackendUnavailable naming the endpoint within the bound, and working again once it is back', async () => {
    const driver = newDriver({ timeoutSeconds: 5 });
    const name = unique('down');
    await driver.create(volume(name));
    await lab.stopApi();
    try {
      const t0 = performance.now();
      const err = await driver.read(name).catch((e: unknown) => e);
      expect(err).toBeInstanceOf(BackendUnavailable);
      expect((err as Error).message).toContain(`Cinder at ${lab.url} is unreachable`);
      expect(performance.now() - t0).toBeLessThan(6_000);
    } finally {
      await lab.startApi();
    }
    expect((await driver.read(name))?.value.name).toBe(name);
    await driver.destroy(name);
  }, T);

  it('Cinder answering 503, or never answering: BackendUnavailable within the bound, each call made once', async () => {
    const failing = await edge(503);
    const silent = await edge(0);
    try {
      await expect(newDriver({ url: failing.url }).read('v')).rejects.toThrow(/failed to find volume ballast-v \(HTTP 503\): The server has either erred/);
      expect(failing.requests()).toBe(1);
      const t0 = performance.now();
      await expect(newDriver({ url: silent.url, timeoutSeconds: 1 }).read('v')).rejects.toThrow(/unreachable, could not find volume ballast-v: no answer within 1 s/);
      expect(performance.now() - t0).toBeLessThan(3_000);
    } finally {
      failing.server.close();
      silent.server.closeAllConnections();
      silent.server.close();
    }
  }, T);

  it('through the daemon: Create, Get, List and Remove on the protocol, its host lease renewing in Cinder, secrets nowhere in the log', async () => {
    const daemon = await BallastProcess.create({
      config: {
        host: { id: 'daemon-h1' },
        lease: { seconds: 20, renew_every: 1, fence_after: 12 },
        backends: { cinder: { url: lab.url, auth: { type: 'noauth', project_id: lab.projectId }, timeout_seconds: 30 } },
        profiles: { default: { backend: 'cinder' }, gold: { backend: 'cinder', volume_type: '__DEFAULT__' } },
      },
    });
    const name = unique('proto');
    try {
      await daemon.start(60_000);
      await callOk(daemon.socket, 'VolumeDriver.Create', { Name: name, Opts: { size: '2G', profile: 'gold' } });
      const got = await callOk(daemon.socket, 'VolumeDriver.Get', { Name: name });
      expect(got.Volume).toMatchObject({ Name: name, Status: expect.objectContaining({ profile: 'gold' }) });
      const listed = (await callOk(daemon.socket, 'VolumeDriver.List')) as { Volumes: { Name: string }[] };
      expect(listed.Volumes.map((v) => v.Name)).toContain(name);
      expect((await cinderVolume(name)).size).toBe(2);
      const bad = await callPlugin(daemon.socket, 'VolumeDriver.Create', { Name: unique('bad'), Opts: { size: '2G', colour: 'blue' } });
      expect(bad.body.Err).toMatch(/colour/);

      // The daemon's host lease is a key of ballast_host_leases' metadata, and it moves.
      const leases = await lab.request<{ volumes: { id: string }[] }>('GET', '/volumes/detail?name=ballast_host_leases');
      const leaseVolume = leases.body.volumes[0]!.id;
      const seq = async () => JSON.parse((await lab.request('GET', `/volumes/${leaseVolume}/metadata`)).body.metadata['host.daemon-h1']).s as number;
      const first = await seq();
      await new Promise((r) => setTimeout(r, 2_500));
      expect(await seq()).toBeGreaterThan(first);

      await callOk(daemon.socket, 'VolumeDriver.Remove', { Name: name });
      expect((await lab.request<{ volumes: unknown[] }>('GET', `/volumes/detail?name=${cinderName(name)}`)).body.volumes).toEqual([]);
    } finally {
      await daemon.stop();
    }
    const log = JSON.stringify(await daemon.logs());
    expect(log).toContain(name);
    expect(log).not.toMatch(/auth_password|X-Auth-Token/i);
  }, T);

  it('the lab itself: stopping it leaves no process it started and no state dir', async () => {
    const { stateDir } = lab;
    expect(labProcesses(stateDir).length).toBeGreaterThan(5);
    stopped = true;
    await lab.stop();
    expect(labProcesses(stateDir)).toEqual([]);
    expect(existsSync(stateDir)).toBe(false);
  }, 60_000);
});
