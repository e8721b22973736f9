import request from 'supertest';
import { rename, rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { LoopDriver } from '../../../src/drivers/loop-driver.js';
import { CommandRunner } from '../../../src/exec.js';
import { silentLogger } from '../../../src/log.js';
import { metrics } from '../../../src/metrics/registry.js';
import { HostLeaseKeeper } from '../../../src/ownership/host-lease.js';
import { HostMonitor } from '../../../src/ownership/host-monitor.js';
import { OwnershipLease } from '../../../src/ownership/lease.js';
import type { HostLeaseStore } from '../../../src/ownership/types.js';
import { createApp } from '../../../src/plugin/app.js';
import { managerFixture, type ManagerFixture } from '../../helpers/manager-fixture.js';
import { valueOf } from './samples.js';

// The hooks in the daemon's code record into the one registry `ballast serve` exposes.

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
const LEASE = { seconds: 1.4, renew_every: 0.05, fence_after: 0.3, mount_wait: 0 };
const shared = (dir: string) => ({ backends: { loop: { root: join(dir, 'loop'), shared: true } }, lease: LEASE });
const backendUp = () => valueOf(metrics, 'ballast_backend_up', { profile: 'default', backend: 'loop' });

/** Polls until `read` gives `want` (the upkeep runs on its own timer), or returns what it last gave. */
async function eventually<T>(read: () => Promise<T>, want: T, timeoutMs = 2_000): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  let last = await read();
  while (last !== want && Date.now() < deadline) {
    await sleep(20);
    last = await read();
  }
  return last;
}

const post = (app: ReturnType<typeof createApp>, method: string, body: object) =>
  request(app).post(`/${method}`).set('Content-Type', '').send(JSON.stringify(body));

describe('the metrics hooks', () => {
  let f: ManagerFixture | undefined;
  beforeEach(() => metrics.reset());
  afterEach(async () => {
    await f?.cleanup();
    f = undefined;
  });

  it('records protocol calls, attach, detach, mkfs, fsck, the lease state and backend health through a lifecycle', async () => {
    f = await managerFixture();
    const app = createApp(f.manager, silentLogger());
    const calls = (method: string, outcome: string) => valueOf(metrics, 'ballast_protocol_call_duration_seconds', { method, outcome }, '_count');
    const lease = (state: string) => valueOf(metrics, 'ballast_volume_lease_state', { volume: 'v', state });

    expect((await post(app, 'VolumeDriver.Create', { Name: 'v', Opts: { size: '32M' } })).body).toEqual({ Err: '' });
    expect(await lease('free')).toBe(1);
    expect(await valueOf(metrics, 'ballast_backend_up', { profile: 'default', backend: 'loop' })).toBe(1);
    expect((await post(app, 'VolumeDriver.Mount', { Name: 'v', ID: 'c1' })).body.Err).toBe('');
    expect(await lease('held_here')).toBe(1);
    expect(await lease('free')).toBeUndefined();
    expect((await post(app, 'VolumeDriver.Mount', { Name: 'nosuch', ID: 'c2' })).body.Err).toMatch(/nosuch/);
    expect((await post(app, 'VolumeDriver.Unmount', { Name: 'v', ID: 'c1' })).body).toEqual({ Err: '' });
    expect(await lease('free')).toBe(1);
    f.host.ext4Superblock.set('/dev/loop1', 'Filesystem state:         not clean\n');
    expect((await post(app, 'VolumeDriver.Mount', { Name: 'v', ID: 'c3' })).body.Err).toBe(''); // fsck this time: not clean
    expect((await post(app, 'VolumeDriver.Unmount', { Name: 'v', ID: 'c3' })).body).toEqual({ Err: '' });
    expect((await post(app, 'VolumeDriver.Remove', { Name: 'v' })).body).toEqual({ Err: '' });

    expect(await calls('VolumeDriver.Create', 'ok')).toBe(1);
    expect(await calls('VolumeDriver.Mount', 'ok')).toBe(2);
    expect(await calls('VolumeDriver.Mount', 'err')).toBe(1);
    expect(await calls('VolumeDriver.Unmount', 'ok')).toBe(2);
    expect(await calls('VolumeDriver.Remove', 'ok')).toBe(1);
    expect(await valueOf(metrics, 'ballast_attach_duration_seconds', { transport: 'loop', outcome: 'ok' }, '_count')).toBe(2);
    expect(await valueOf(metrics, 'ballast_detach_duration_seconds', { transport: 'loop', outcome: 'ok' }, '_count')).toBe(2);
    expect(await valueOf(metrics, 'ballast_filesystem_operation_duration_seconds', { operation: 'mkfs', fstype: 'ext4', outcome: 'ok' }, '_count')).toBe(1);
    expect(await valueOf(metrics, 'ballast_filesystem_operation_duration_seconds', { operation: 'fsck', fstype: 'ext4', outcome: 'ok' }, '_count')).toBe(1);
    for (const state of ['free', 'held_here', 'held_elsewhere']) expect(await lease(state)).toBeUndefined(); // removed with the volume
  });

  it('counts a body that is not JSON as a failed call', async () => {
    f = await managerFixture();
    const app = createApp(f.manager, silentLogger());
    await request(app).post('/VolumeDriver.Create').set('Content-Type', '').send('{not json');
    expect(await valueOf(metrics, 'ballast_protocol_call_duration_seconds', { method: 'VolumeDriver.Create', outcome: 'err' }, '_count')).toBe(1);
  });

  it('counts a failed external command by tool and exit code', async () => {
    const runner = new CommandRunner(silentLogger(), 5_000);
    await expect(runner.run(['/bin/sh', '-c', 'exit 3'])).rejects.toThrow();
    await expect(runner.run(['sleep', '5'], { timeoutMs: 100 })).rejects.toThrow();
    await runner.run(['true']);
    expect(await valueOf(metrics, 'ballast_command_failures_total', { tool: 'sh', exit_code: '3' })).toBe(1);
    expect(await valueOf(metrics, 'ballast_command_failures_total', { tool: 'sleep', exit_code: 'timeout' })).toBe(1);
    expect(await valueOf(metrics, 'ballast_command_failures_total', { tool: 'true', exit_code: '0' })).toBeUndefined();
  });

  it('counts a takeover by this host and a fence of a volume another host took', async () => {
    f = await managerFixture(shared);
    await f.manager.create('v', {});
    await f.manager.mount('v', 'c1');
    await f.manager.stop(); // node-a goes silent
    const store = new LoopDriver({ root: join(f.dir, 'loop'), shared: true }, silentLogger());
    const clock = { now: 0 };
    const b = { hostId: 'node-b', bootId: 'b', hostname: 'b' };
    const keeper = new HostLeaseKeeper(store, b, { leaseSeconds: LEASE.seconds, renewEverySeconds: LEASE.renew_every }, silentLogger(), () => clock.now);
    const leaseB = new OwnershipLease(store, b, silentLogger(), { store, keeper, monitor: new HostMonitor(LEASE.seconds, () => clock.now) });
    await expect(leaseB.acquire('v')).rejects.toThrow(/in use on host node-a/);
    expect(await valueOf(metrics, 'ballast_takeovers_total', {})).toBe(0);
    clock.now += LEASE.seconds + 0.1;
    await leaseB.acquire('v');
    expect(await valueOf(metrics, 'ballast_takeovers_total', {})).toBe(1);
    await f.manager.upkeep.tick(); // node-a notices: fence
    expect(await valueOf(metrics, 'ballast_fences_total', {})).toBe(1);
    expect(await valueOf(metrics, 'ballast_backend_up', { profile: 'default', backend: 'loop' })).toBe(1); // its renewals work
    await f.manager.unmount('v', 'c1');
  });

  it('reports a shared backend down while its host-lease writes fail, and up again once they work', async () => {
    f = await managerFixture(shared);
    expect(await eventually(backendUp, 1)).toBe(1);
    const hosts = join(f.dir, 'loop', '.hosts');
    await rename(hosts, `${hosts}.away`);
    await writeFile(hosts, 'not a directory'); // every host-lease write now fails
    expect(await eventually(backendUp, 0)).toBe(0);
    await rm(hosts);
    await rename(`${hosts}.away`, hosts);
    expect(await eventually(backendUp, 1)).toBe(1);
  });

  it('reports a shared backend down while a renewal hangs on the storage, before it ever fails', async () => {
    f = await managerFixture(shared);
    expect(await eventually(backendUp, 1)).toBe(1);
    const driver = [...f.manager.liveness.keys()][0] as unknown as HostLeaseStore;
    let open!: () => void;
    const gate = new Promise<void>((r) => (open = r));
    const write = driver.writeHostLease.bind(driver);
    driver.writeHostLease = async (lease) => {
      await gate; // an NFS server that stopped answering
      return write(lease);
    };
    try {
      expect(await eventually(backendUp, 0)).toBe(0);
    } finally {
      open(); // or stop() would wait for the hung round forever
    }
    expect(await eventually(backendUp, 1)).toBe(1);
  });
});
