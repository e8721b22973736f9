// `npm run bench:arrays`: the powerflex, dellsc and scbe backends against their simulators on
// loopback (test/simulators/), records on a local metadata root. Per backend and operation
// (create, attach, detach, destroy): wall time and REST round trips of ballast's driver (lease
// included), beside the least a plugin must ask the array for, made by hand through the same
// client. The simulators answer in microseconds, so the round trips are what carries to a real
// array (SC's asynchronous tasks are polled after 100 and 200 ms, by hand too). Attach is the
// array side only: the NVMe/TCP and iSCSI logins are the attachers'. Asserts nothing.
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { DellScArray } from '../src/drivers/dellsc/array.js';
import { DellScClient } from '../src/drivers/dellsc/client.js';
import { dellscDriver } from '../src/drivers/dellsc/dellsc-driver.js';
import type { MappedArrayDriver } from '../src/drivers/mapped-array.js';
import { PowerFlexArray } from '../src/drivers/powerflex/array.js';
import { PowerFlexClient } from '../src/drivers/powerflex/client.js';
import { powerflexDriver } from '../src/drivers/powerflex/powerflex-driver.js';
import { ScbeClient } from '../src/drivers/scbe/client.js';
import { scbeDriver } from '../src/drivers/scbe/scbe-driver.js';
import type { Initiator } from '../src/export.js';
import { silentLogger } from '../src/log.js';
import { HostLeaseKeeper } from '../src/ownership/host-lease.js';
import { HostMonitor } from '../src/ownership/host-monitor.js';
import { OwnershipLease } from '../src/ownership/lease.js';
import { DellScSim } from '../test/simulators/dellsc.js';
import { PowerFlexSim } from '../test/simulators/powerflex.js';
import { ScbeSim } from '../test/simulators/scbe.js';
import { comparison, measure, type Sample } from './lib/api-calls.js';
import { exitWith, intFromEnv, out, progress, runBench } from './lib/bench-run.js';

const RUNS = intFromEnv('BENCH_ARRAYS_RUNS', 20);
const OPS = ['create', 'attach', 'detach', 'destroy'] as const;
type Op = (typeof OPS)[number];
type Samples = Record<Op, Sample[]>;
const GiB = 2 ** 30;
const PASSWORD = 'bench';
const IQN = 'iqn.2026-12.dev.ballast:bench';
const NQN = 'nqn.2014-08.org.nvmexpress:uuid:00000000-0000-4000-8000-00000000beef';

/** One simulated array: ballast's driver on it, and the same four operations by hand. */
interface Subject {
  title: string;
  calls: Map<string, number>;
  driver: MappedArrayDriver<unknown>;
  initiator: Initiator;
  byHand: { calls: Map<string, number>; run: (i: number, record: (op: Op, body: () => Promise<unknown>) => Promise<void>) => Promise<void> };
  stop: () => Promise<void>;
}

async function powerflex(root: string): Promise<Subject> {
  const sim = new PowerFlexSim({ apiVersion: 4, username: 'admin', password: PASSWORD });
  await sim.start();
  const client = new PowerFlexClient({ url: sim.url, apiVersion: 4, username: 'admin', password: PASSWORD, timeoutMs: 30_000 }, silentLogger());
  const pool = { protectionDomain: 'pd1', storagePool: 'pool1' };
  const backend = { url: sim.url, api_version: 4 as const, user: 'admin', password_file: '/unused', protection_domain: 'pd1', storage_pool: 'pool1', provisioning: 'thin' as const, metadata_root: root, timeout_seconds: 30 };
  const hand = new PowerFlexClient({ url: sim.url, apiVersion: 4, username: 'admin', password: PASSWORD, timeoutMs: 30_000 }, silentLogger());
  const array = new PowerFlexArray(hand);
  const { domainId, poolId } = await array.ids(pool);
  const hostId = await array.hostFor(NQN, 'bl-bench-host');
  return {
    title: 'powerflex (PowerFlex gateway simulator, 8 GiB volumes)',
    calls: client.calls,
    driver: powerflexDriver(new PowerFlexArray(client), backend, new Map(), silentLogger()) as MappedArrayDriver<unknown>,
    initiator: { hostId: 'bench-host', nqn: NQN },
    byHand: {
      calls: hand.calls,
      run: async (i, record) => {
        let id = '';
        const action = (what: string, body: object) => hand.call('POST', `/api/instances/Volume::${id}/action/${what}`, what, body);
        await record('create', async () => {
          const body = { name: `hand-${i}`, storagePoolId: poolId, protectionDomainId: domainId, volumeType: 'ThinProvisioned', volumeSizeInKb: String(8 * 1024 * 1024) };
          id = (await hand.call<{ id: string }>('POST', '/api/types/Volume/instances', 'create', body)).id;
        });
        await record('attach', () => action('addMappedHost', { hostId, accessMode: 'ReadWrite', allowMultipleMappings: 'FALSE' }));
        await record('detach', () => action('removeMappedHost', { hostId }));
        await record('destroy', () => action('removeVolume', { removeMode: 'ONLY_ME' }));
      },
    },
    stop: () => sim.stop(),
  };
}

async function dellsc(root: string): Promise<Subject> {
  const ssn = 64702;
  const target = { iqn: 'iqn.2002-03.com.compellent:bench', address: '127.0.0.1', port: 3260 };
  const plane = { created: async () => {}, removed: async () => {}, mapped: async () => {}, unmapped: async () => {}, target: () => target };
  const sim = new DellScSim({ username: 'Admin', password: PASSWORD, ssn, dataPlane: plane });
  await sim.start();
  const client = new DellScClient({ url: sim.url, username: 'Admin', password: PASSWORD, apiVersion: '4.0', timeoutMs: 30_000 }, silentLogger());
  const backend = { url: sim.url, user: 'Admin', password_file: '/unused', ssn, folder: 'ballast', metadata_root: root, multipath: true, reservations: true, api_version: '4.0', timeout_seconds: 30 };
  const hand = new DellScClient({ url: sim.url, username: 'Admin', password: PASSWORD, apiVersion: '4.0', timeoutMs: 30_000 }, silentLogger());
  const array = new DellScArray(hand, ssn, 'ballast');
  const folder = await array.folderId('ScVolumeFolder');
  const server = await array.serverFor(IQN, 'bench-host');
  return {
    title: 'dellsc (Dell Storage Manager simulator, 1 GiB volumes)',
    calls: client.calls,
    driver: dellscDriver(new DellScArray(client, ssn, 'ballast'), backend, new Map(), silentLogger()) as MappedArrayDriver<unknown>,
    initiator: { hostId: 'bench-host', iqn: IQN },
    byHand: {
      calls: hand.calls,
      run: async (i, record) => {
        let id = '';
        let profile = '';
        await record('create', async () => {
          id = (await hand.call<{ instanceId: string }>('POST', 'StorageCenter/ScVolume', 'create', { Name: `hand-${i}`, Size: '1 GB', StorageCenter: ssn, VolumeFolder: folder }, { async: true })).instanceId;
        });
        await record('attach', async () => {
          await hand.call('POST', `StorageCenter/ScVolume/${id}/MapToServer`, 'map', { server, Advanced: { MapToDownServerHbas: true } }, { async: true });
          profile = (await hand.call<{ instanceId: string }[]>('GET', `StorageCenter/ScVolume/${id}/MappingProfileList`, 'mappings'))[0]!.instanceId;
        });
        await record('detach', () => hand.call('DELETE', `StorageCenter/ScMappingProfile/${profile}`, 'unmap', undefined, { async: true }));
        await record('destroy', () => hand.call('DELETE', `StorageCenter/ScVolume/${id}`, 'delete', undefined, { async: true }));
      },
    },
    stop: () => sim.stop(),
  };
}

async function scbe(root: string): Promise<Subject> {
  const sim = new ScbeSim({ username: 'ballast', password: PASSWORD, services: { gold: 4096 }, hosts: { 'bench-host': IQN } });
  await sim.start();
  const client = new ScbeClient({ url: sim.url, username: 'ballast', password: PASSWORD, group: 'containers', timeoutMs: 30_000 }, silentLogger());
  const backend = { url: sim.url, user: 'ballast', password_file: '/unused', group: 'containers', service: 'gold', host_name: 'bench-host', iscsi: { target: 'iqn.1986-03.com.ibm:bench', portals: ['127.0.0.1:3260'] }, metadata_root: root, multipath: true, reservations: true, timeout_seconds: 30 };
  const hand = new ScbeClient({ url: sim.url, username: 'ballast', password: PASSWORD, group: 'containers', timeoutMs: 30_000 }, silentLogger());
  const service = (await hand.call<{ id: string }[]>('GET', '/services?name=gold', 'service'))[0]!.id;
  const hostId = (await hand.call<{ id: number }[]>('GET', '/hosts?name=bench-host', 'host'))[0]!.id;
  return {
    title: 'scbe (Spectrum Connect simulator, 1 GiB volumes)',
    calls: client.calls,
    driver: scbeDriver(client, backend, new Map(), silentLogger()) as MappedArrayDriver<unknown>,
    initiator: { hostId: 'bench-host', iqn: IQN },
    byHand: {
      calls: hand.calls,
      run: async (i, record) => {
        let wwn = '';
        await record('create', async () => {
          wwn = (await hand.call<{ scsi_identifier: string }>('POST', '/volumes', 'create', { service, name: `hand-${i}`, size: 1, size_unit: 'gb' })).scsi_identifier;
        });
        await record('attach', () => hand.call('POST', '/mappings', 'map', { volume_id: wwn, host_id: hostId }));
        await record('detach', () => hand.call('DELETE', '/mappings', 'unmap', { volume_id: wwn, host_id: hostId }));
        await record('destroy', () => hand.call('DELETE', `/volumes/${wwn}`, 'delete'));
      },
    },
    stop: () => sim.stop(),
  };
}

const empty = (): Samples => ({ create: [], attach: [], detach: [], destroy: [] });

async function benchOne(subject: Subject): Promise<void> {
  const { driver, initiator, calls } = subject;
  await driver.start();
  const me = { hostId: initiator.hostId, bootId: 'b1', hostname: initiator.hostId };
  const timing = { leaseSeconds: 20, renewEverySeconds: 2 };
  const keeper = new HostLeaseKeeper(driver, me, timing, silentLogger());
  const lease = new OwnershipLease(driver, me, silentLogger(), { store: driver, keeper, monitor: new HostMonitor(timing.leaseSeconds) });
  await keeper.register();
  const ballast = empty();
  const hand = empty();
  for (let i = 0; i < RUNS; i++) {
    const name = `bench-${i}`;
    ballast.create.push(await measure(calls, () => driver.create({ name, profile: 'default', sizeBytes: GiB, fstype: 'ext4', mkfsOpts: [], mountOpts: [], readonly: false })));
    ballast.attach.push(await measure(calls, async () => {
      await lease.acquire(name);
      await driver.export(name, initiator);
    }));
    ballast.detach.push(await measure(calls, async () => {
      await driver.unexport(name, initiator);
      await lease.release(name);
    }));
    ballast.destroy.push(await measure(calls, () => driver.destroy(name)));
    await subject.byHand.run(i, async (op, body) => void hand[op].push(await measure(subject.byHand.calls, body)));
  }
  progress(`${subject.title}: done`);
  out(`${subject.title}, median of ${RUNS} runs (calls = REST round trips):`);
  out(comparison(OPS, ballast, hand));
  out(`  ballast's round trips over all runs, by call: ${[...calls].sort((a, b) => b[1] - a[1]).map(([call, n]) => `${n} ${call}`).join('; ')}`);
  out();
}

async function main(): Promise<number> {
  return runBench({
    prefix: 'ballast-arrays-bench',
    title: 'ballast arrays benchmark (powerflex, dellsc and scbe against their simulators on loopback)',
    intro: [`${RUNS} runs of each operation per backend, ballast and by hand interleaved; records on a local metadata root.`],
    deadlineSeconds: intFromEnv('BENCH_DEADLINE_SECONDS', 300),
    cleanOk: 'simulators stopped',
    body: async (work) => {
      for (const make of [powerflex, dellsc, scbe]) {
        const root = await mkdtemp(join(work, `${make.name}-`));
        const subject = await make(root);
        try {
          await benchOne(subject);
        } finally {
          await subject.stop();
          await rm(root, { recursive: true, force: true });
        }
      }
    },
  });
}

exitWith(main);
