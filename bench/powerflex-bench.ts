// `npm run bench:powerflex`: the powerflex backend against the PowerFlex simulator on loopback
// (test/simulators/powerflex.ts), records on a local metadata root. Per operation (create,
// attach, detach, destroy): wall time and gateway round trips of ballast's driver (lease
// included), beside the least a plugin must ask the gateway for, made by hand through the same
// client. The simulator answers in microseconds, so the round trips are the figure that carries
// to a real gateway; attach is the array side only (the NVMe/TCP connect is the attacher's, in
// the VM lab). Asserts nothing.
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { PowerFlexArray } from '../src/drivers/powerflex/array.js';
import { PowerFlexClient } from '../src/drivers/powerflex/client.js';
import { powerflexDriver } from '../src/drivers/powerflex/powerflex-driver.js';
import { silentLogger } from '../src/log.js';
import { HostLeaseKeeper } from '../src/ownership/host-lease.js';
import { HostMonitor } from '../src/ownership/host-monitor.js';
import { OwnershipLease } from '../src/ownership/lease.js';
import { PowerFlexSim } from '../test/simulators/powerflex.js';
import { comparison, measure, type Sample } from './lib/api-calls.js';
import { exitWith, intFromEnv, out, progress, runBench } from './lib/bench-run.js';

const RUNS = intFromEnv('BENCH_POWERFLEX_RUNS', 20);
const OPS = ['create', 'attach', 'detach', 'destroy'] as const;
type Op = (typeof OPS)[number];
const PASSWORD = 'bench';
const POOL = { protectionDomain: 'pd1', storagePool: 'pool1' };

async function main(): Promise<number> {
  return runBench({
    prefix: 'ballast-powerflex-bench',
    title: 'ballast powerflex benchmark (the PowerFlex simulator on loopback)',
    intro: [`${RUNS} runs of each operation on 8 GiB volumes; records on a local metadata root.`],
    deadlineSeconds: intFromEnv('BENCH_DEADLINE_SECONDS', 300),
    cleanOk: 'simulator stopped',
    body: async () => {
      const sim = new PowerFlexSim({ apiVersion: 4, username: 'admin', password: PASSWORD });
      await sim.start();
      const root = await mkdtemp(join(tmpdir(), 'ballast-powerflex-bench-'));
      try {
        const client = new PowerFlexClient({ url: sim.url, apiVersion: 4, username: 'admin', password: PASSWORD, timeoutMs: 30_000 }, silentLogger());
        const backend = { url: sim.url, api_version: 4 as const, user: 'admin', password_file: '/unused', protection_domain: POOL.protectionDomain, storage_pool: POOL.storagePool, provisioning: 'thin' as const, metadata_root: root, timeout_seconds: 30 };
        const driver = powerflexDriver(new PowerFlexArray(client), backend, new Map(), silentLogger());
        await driver.start();
        const me = { hostId: 'bench-host', bootId: 'b1', hostname: 'bench-host' };
        const timing = { leaseSeconds: 20, renewEverySeconds: 2 };
        const keeper = new HostLeaseKeeper(driver, me, timing, silentLogger());
        const lease = new OwnershipLease(driver, me, silentLogger(), { store: driver, keeper, monitor: new HostMonitor(timing.leaseSeconds) });
        const initiator = { hostId: me.hostId, nqn: 'nqn.2014-08.org.nvmexpress:uuid:00000000-0000-4000-8000-00000000beef' };
        await keeper.register();

        const ballast: Record<Op, Sample[]> = { create: [], attach: [], detach: [], destroy: [] };
        for (let i = 0; i < RUNS; i++) {
          const name = `bench-${i}`;
          ballast.create.push(await measure(client.calls, () => driver.create({ name, profile: 'default', sizeBytes: 8 * 2 ** 30, fstype: 'ext4', mkfsOpts: [], mountOpts: [], readonly: false })));
          ballast.attach.push(await measure(client.calls, async () => {
            await lease.acquire(name);
            await driver.export(name, initiator);
          }));
          ballast.detach.push(await measure(client.calls, async () => {
            await driver.unexport(name, initiator);
            await lease.release(name);
          }));
          ballast.destroy.push(await measure(client.calls, () => driver.destroy(name)));
        }
        progress('ballast runs done');

        // By hand: the least a plugin asks the gateway for, knowing the pool, host and volume ids:
        // create; map to the host; unmap; remove. No record, lease or lookup by name.
        const byHand = new PowerFlexClient({ url: sim.url, apiVersion: 4, username: 'admin', password: PASSWORD, timeoutMs: 30_000 }, silentLogger());
        const array = new PowerFlexArray(byHand);
        const { domainId, poolId } = await array.ids(POOL);
        const hostId = await array.hostFor(initiator.nqn, 'bl-bench-host');
        const hand: Record<Op, Sample[]> = { create: [], attach: [], detach: [], destroy: [] };
        for (let i = 0; i < RUNS; i++) {
          let id = '';
          const action = (what: string, body: object) => byHand.call('POST', `/api/instances/Volume::${id}/action/${what}`, what, body);
          hand.create.push(await measure(byHand.calls, async () => {
            const body = { name: `hand-${i}`, storagePoolId: poolId, protectionDomainId: domainId, volumeType: 'ThinProvisioned', volumeSizeInKb: String(8 * 1024 * 1024) };
            id = (await byHand.call<{ id: string }>('POST', '/api/types/Volume/instances', 'create', body)).id;
          }));
          hand.attach.push(await measure(byHand.calls, () => action('addMappedHost', { hostId, accessMode: 'ReadWrite', allowMultipleMappings: 'FALSE' })));
          hand.detach.push(await measure(byHand.calls, () => action('removeMappedHost', { hostId })));
          hand.destroy.push(await measure(byHand.calls, () => action('removeVolume', { removeMode: 'ONLY_ME' })));
        }
        progress('by-hand runs done');

        out('Per operation, median of runs (calls = gateway round trips):');
        out(comparison(OPS, ballast, hand));
        out();
        out(`Round trips of all ${RUNS} ballast runs (and the start), by call:`);
        for (const [call, n] of [...client.calls].sort((a, b) => b[1] - a[1])) out(`  ${String(n).padStart(5)}  ${call}`);
      } finally {
        await sim.stop();
        await rm(root, { recursive: true, force: true });
      }
    },
  });
}

exitWith(main);
