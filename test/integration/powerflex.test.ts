import { Writable } from 'node:stream';
import winston from 'winston';
import { randomBytes } from 'node:crypto';
import { readdir, readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { PowerFlexArray } from '../../src/drivers/powerflex/array.js';
import { PowerFlexClient } from '../../src/drivers/powerflex/client.js';
import { powerflexName, subsystemNqnOf } from '../../src/drivers/powerflex/powerflex-driver.js';
import { VolumeAlreadyExists } from '../../src/drivers/types.js';
import { BackendUnavailable, LeaseHeld, VolumeInUse } from '../../src/errors.js';
import type { NvmeTcpExport } from '../../src/export.js';
import { createLogger, silentLogger } from '../../src/log.js';
import { closedPort, FakeClock, LEASE_TIMING as timing } from '../helpers/lease-host.js';
import { GiB, host, mappedNqns, newDriver, PASSWORD, root, sim, unique, usePowerFlexSim, volume } from '../helpers/powerflex-lab.js';
import { BallastProcess } from '../lab/ballast.js';
import { callOk, callPlugin } from '../helpers/plugin-client.js';
import { PowerFlexSim } from '../simulators/powerflex.js';

// The powerflex backend against the PowerFlex simulator (test/simulators/powerflex.ts) on
// loopback, with the records in a temporary metadata root: provisioning, the single mapping as
// the array's lock, takeover unmapping the former holder, both login styles, expired sessions,
// and every fault a clear error with nothing left behind. Snapshots, clones and IO limits are in
// powerflex-snapshots.test.ts. The NVMe/TCP data path behind the simulator is the VM lab's
// (vm/nvme-tcp.test.ts, with nvmet).

usePowerFlexSim();

describe('powerflex backend against the PowerFlex simulator', () => {
  it('creates a volume of whole 8 GiB steps under a name of at most 31 characters, lists, grows and deletes it', async () => {
    const driver = newDriver();
    await driver.checkHealth();
    const name = unique('pf');
    const record = await driver.create(volume(name, 3 * GiB));
    expect(record).toMatchObject({ name, sizeBytes: 3 * GiB, ownership: { state: 'free' } });
    expect(sim.volumeByName(`bl-${name}`)).toMatchObject({ sizeInKb: 8 * 1024 * 1024, volumeType: 'ThinProvisioned', mappedHosts: [] });
    expect((await driver.list()).map((v) => v.name)).toContain(name);
    await expect(driver.create(volume(name))).rejects.toBeInstanceOf(VolumeAlreadyExists);
    await driver.grow(name, 10 * GiB);
    expect(sim.volumeByName(`bl-${name}`)!.sizeInKb).toBe(16 * 1024 * 1024);
    expect((await driver.read(name))!.value.sizeBytes).toBe(10 * GiB);
    await driver.destroy(name);
    expect(sim.volumeByName(`bl-${name}`)).toBeUndefined();
    expect(await driver.read(name)).toBeUndefined();
    await driver.destroy(name); // a missing volume: nothing to do
  });

  it('gives long names distinct PowerFlex names of 31 characters', async () => {
    const driver = newDriver();
    const long = `${'x'.repeat(40)}-${randomBytes(2).toString('hex')}`;
    const names = [`${long}-one`, `${long}-two`];
    for (const name of names) await driver.create(volume(name));
    const pf = names.map(powerflexName);
    expect(pf.map((n) => n.length)).toEqual([31, 31]);
    expect(pf[0]).not.toBe(pf[1]);
    for (const name of names) expect(sim.volumeByName(powerflexName(name))).toBeDefined();
    for (const name of names) await driver.destroy(name);
  });

  it('exports to the holder only: one mapping at a time, the NVMe namespace named by volume and system id, portals from the SDTs', async () => {
    const a = await host(1);
    const b = await host(2, a.clock);
    const name = unique('map');
    await a.driver.create(volume(name));
    await a.lease.acquire(name);
    const exp = (await a.driver.export(name, a.initiator)) as NvmeTcpExport;
    const id = sim.volumeByName(powerflexName(name))!.id;
    expect(exp).toEqual({ transport: 'nvme-tcp', subsystemNqn: subsystemNqnOf(sim.systemId), portals: ['127.0.0.1:4420', '127.0.0.2:4420'], nguid: `${id}${sim.systemId}` });
    expect(mappedNqns(name)).toEqual([a.initiator.nqn]);
    expect(sim.hosts.size).toBeGreaterThanOrEqual(1);
    // A second host: refused by the lease, and by the array itself (error 306) were it to try.
    await expect(b.lease.acquire(name)).rejects.toBeInstanceOf(LeaseHeld);
    await expect(b.driver.export(name, b.initiator)).rejects.toThrow(`volume ${name} is not leased to host h2`);
    const bArray = new PowerFlexArray(new PowerFlexClient({ url: sim.url, apiVersion: 4, username: 'admin', password: PASSWORD, timeoutMs: 10_000 }, silentLogger()));
    expect(await bArray.mapOnly(id, powerflexName(name), await bArray.hostFor(b.initiator.nqn, 'bl-h2'))).toBe(false);
    expect(mappedNqns(name)).toEqual([a.initiator.nqn]);
    // Export again (a remount): still one mapping. Then unexport and release.
    await a.driver.export(name, a.initiator);
    expect(mappedNqns(name)).toEqual([a.initiator.nqn]);
    await expect(a.driver.destroy(name)).rejects.toBeInstanceOf(VolumeInUse);
    await a.driver.unexport(name, a.initiator);
    expect(mappedNqns(name)).toEqual([]);
    await a.lease.release(name);
    await a.driver.destroy(name);
    expect(sim.volumeByName(powerflexName(name))).toBeUndefined();
  });

  it('takeover after the holder stops renewing unmaps the former holder at the array before mapping the new one', async () => {
    const clock = new FakeClock();
    const a = await host(3, clock);
    const b = await host(4, clock);
    const name = unique('take');
    await a.driver.create(volume(name));
    await a.lease.acquire(name);
    await a.driver.export(name, a.initiator);
    await b.keeper.renew();
    await expect(b.lease.acquire(name)).rejects.toBeInstanceOf(LeaseHeld); // first sight of a's lease
    clock.now += timing.leaseSeconds + 1; // a never renews again
    expect(await b.lease.acquire(name)).toMatchObject({ state: 'held', generation: 2 });
    expect(mappedNqns(name)).toEqual([a.initiator.nqn]); // the record moved; the array not yet
    await b.driver.export(name, b.initiator);
    expect(mappedNqns(name)).toEqual([b.initiator.nqn]);
    await b.driver.unexport(name, b.initiator);
    await b.lease.release(name);
    await b.driver.destroy(name);
  });

  it('logs in the 3.x way (GET /api/login, Basic user:token), and again once when the gateway expired the session', async () => {
    const v3 = new PowerFlexSim({ apiVersion: 3, username: 'admin', password: PASSWORD });
    await v3.start();
    try {
      const driver = newDriver({ url: v3.url, api_version: 3 });
      const name = unique('v3');
      await driver.create(volume(name));
      v3.expireSessions();
      await driver.grow(name, 9 * GiB);
      expect(v3.requests.filter((r) => r === 'GET /api/login')).toHaveLength(2);
      expect(v3.volumeByName(powerflexName(name))!.sizeInKb).toBe(16 * 1024 * 1024);
      await driver.destroy(name);
      // A 4.x configuration against this 3.x gateway: its login is not there.
      await expect(newDriver({ url: v3.url, api_version: 4 }).create(volume(unique('wrong')))).rejects.toThrow(/did not issue a token \(HTTP 404 from \/rest\/auth\/login\); is backends.powerflex.api_version \(4\) the gateway's\?/);
    } finally {
      await v3.stop();
    }
  });

  it('an expired 4.x session: one login again, and the call succeeds', async () => {
    const driver = newDriver();
    await driver.checkHealth();
    const logins = () => sim.requests.filter((r) => r === 'POST /rest/auth/login').length;
    const before = logins();
    sim.expireSessions();
    await driver.checkHealth(); // cached pool ids: the next call to the array is create's
    const name = unique('exp');
    await driver.create(volume(name));
    expect(logins()).toBe(before + 1);
    await driver.destroy(name);
  });

  it('wrong credentials, an unknown pool or domain, or a size beyond the pool: a clear error and nothing made', async () => {
    const name = unique('bad');
    const log: string[] = [];
    const capture = createLogger('debug').clear().add(new winston.transports.Stream({ stream: new Writable({ write: (chunk: Buffer, _enc, done) => void (log.push(chunk.toString()), done()) }) }));
    await newDriver({}, PASSWORD, capture).checkHealth();
    const refused = await newDriver({}, 'wrong-password', capture).create(volume(name)).catch((e: unknown) => e);
    expect((refused as Error).message).toMatch(/refused user admin: check backends.powerflex.user and its password_file$/);
    await expect(newDriver({ storage_pool: 'nope' }).create(volume(name))).rejects.toThrow('PowerFlex has no storage pool nope in protection domain pd1 (Could not find the storage pool nope); check storage_pool');
    await expect(newDriver({ protection_domain: 'nopd' }).checkHealth()).rejects.toThrow('PowerFlex has no protection domain nopd');
    await expect(newDriver({ storage_pool: 'small' }).create(volume(name, 9 * GiB))).rejects.toThrow(/Not enough free capacity in the storage pool; check the free space of storage pool small in protection domain pd1/);
    expect(sim.volumeByName(powerflexName(name))).toBeUndefined();
    expect((await readdir(root, { recursive: true })).filter((e) => e.includes(name))).toEqual([]);
    expect(log.join('\n')).toContain('"level":"info"'); // the logger did capture the driver's lines
    expect(log.join('\n')).not.toMatch(/wrong-password|pf-secret/);
  });

  it('a gateway that is down, answers 503 or never answers: BackendUnavailable within the bound, nothing made', async () => {
    const port = await closedPort();
    const name = unique('down');
    await expect(newDriver({ url: `http://127.0.0.1:${port}` }).create(volume(name))).rejects.toThrow(/the PowerFlex gateway at http:\/\/127.0.0.1:\d+ is unreachable, could not log in: .*ECONNREFUSED/);
    const driver = newDriver({ timeout_seconds: 1 });
    await driver.checkHealth();
    sim.fault = 'unavailable';
    await expect(driver.create(volume(name))).rejects.toThrow(/failed to create volume bl-down-\w+ \(HTTP 503\)/);
    sim.fault = 'hang';
    const started = performance.now();
    const err = await driver.create(volume(name)).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(BackendUnavailable);
    expect((err as Error).message).toMatch(/no answer within 1 s/);
    expect(performance.now() - started).toBeLessThan(5_000);
    sim.fault = 'none';
    expect(sim.volumeByName(powerflexName(name))).toBeUndefined();
    expect(await driver.read(name)).toBeUndefined();
  });

  it('through the daemon: Create, Get, List and Remove on the protocol with the password from its file; a Mount on a host without NVMe/TCP fails clearly and leaves the volume free and unmapped', async () => {
    const daemon = await BallastProcess.create({
      config: {
        host: { id: 'pf-daemon' },
        backends: { powerflex: { url: sim.url, user: 'admin', password_file: '', protection_domain: 'pd1', storage_pool: 'pool1', metadata_root: join(root, 'daemon'), timeout_seconds: 10 } },
        profiles: { default: { backend: 'powerflex' }, small: { backend: 'powerflex', storage_pool: 'small' } },
      },
    });
    const passwordFile = join(daemon.dir, 'powerflex.password');
    await writeFile(passwordFile, `${PASSWORD}\n`, { mode: 0o600 });
    const config = (await readFile(daemon.configPath, 'utf8')).replace("password_file: ''", `password_file: ${passwordFile}`);
    await writeFile(daemon.configPath, config);
    const name = unique('proto');
    try {
      await daemon.start(60_000);
      await callOk(daemon.socket, 'VolumeDriver.Create', { Name: name, Opts: { size: '2G', profile: 'small' } });
      expect(sim.volumeByName(powerflexName(name))).toMatchObject({ sizeInKb: 8 * 1024 * 1024 });
      expect((await callOk(daemon.socket, 'VolumeDriver.Get', { Name: name })).Volume).toMatchObject({ Name: name, Status: expect.objectContaining({ profile: 'small' }) });
      const listed = (await callOk(daemon.socket, 'VolumeDriver.List')) as { Volumes: { Name: string }[] };
      expect(listed.Volumes.map((v) => v.Name)).toContain(name);
      const mounted = await callPlugin(daemon.socket, 'VolumeDriver.Mount', { Name: name, ID: 'c1' });
      console.log(`Mount without NVMe/TCP on this host: ${mounted.body.Err}`);
      expect(String(mounted.body.Err)).toMatch(/nvme|NVMe/);
      expect(mappedNqns(name)).toEqual([]);
      expect((await callOk(daemon.socket, 'VolumeDriver.Get', { Name: name })).Volume).toMatchObject({ Status: { lease: { state: 'free' }, attachment: 'detached' } });
      await callOk(daemon.socket, 'VolumeDriver.Remove', { Name: name });
      expect(sim.volumeByName(powerflexName(name))).toBeUndefined();
    } finally {
      await daemon.stop();
    }
    expect(JSON.stringify(await daemon.logs())).not.toContain(PASSWORD);
  });
});
