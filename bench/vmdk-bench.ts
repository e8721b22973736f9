// `npm run bench:vmdk`: the vmdk backend against vcsim. Per operation (create, attach, detach,
// destroy, and reattach: an attach by another host, which reads the record afresh): wall time
// and vSphere round trips of ballast's driver (lease included), beside the
// bare vSphere calls the operation needs at least, made by hand through the same client and
// session. vcsim answers in microseconds and runs tasks at once, so the ratio of round trips is
// the figure that carries over to a real vCenter; see bench/README.md. Asserts nothing.
import { randomBytes } from 'node:crypto';
import { VsphereClient } from '../src/drivers/vsphere/client.js';
import { Inventory } from '../src/drivers/vsphere/inventory.js';
import { moref } from '../src/drivers/vsphere/soap.js';
import { VmDisks } from '../src/drivers/vsphere/vm-disks.js';
import { VmdkDriver, type Vsphere } from '../src/drivers/vsphere/vmdk-driver.js';
import { silentLogger } from '../src/log.js';
import { HostLeaseKeeper } from '../src/ownership/host-lease.js';
import { HostMonitor } from '../src/ownership/host-monitor.js';
import { OwnershipLease } from '../src/ownership/lease.js';
import { startVcsim } from '../test/lab/vcsim.js';
import { exitWith, intFromEnv, out, progress, runBench } from './lib/bench-run.js';
import { median, ms, ratio, table } from './lib/stats.js';

const RUNS = intFromEnv('BENCH_VMDK_RUNS', 20);
const MiB = 1024 ** 2;
const OPS = ['create', 'attach', 'detach', 'reattach', 'destroy'] as const;
type Op = (typeof OPS)[number];

interface Sample {
  ms: number;
  calls: number;
  byMethod: Map<string, number>;
}

/** Published vDVS component times on real ESX (research/anchors.md, vDVS #1553). */
const VDVS_MS: Record<Op, string> = { create: '1560 (VmdkOps.Create)', attach: '660', detach: '620', reattach: '660', destroy: 'n/p' };

async function measure(client: VsphereClient, body: () => Promise<unknown>): Promise<Sample> {
  const before = new Map(client.calls);
  const started = performance.now();
  await body();
  const elapsed = performance.now() - started;
  const byMethod = new Map<string, number>();
  for (const [method, count] of client.calls) {
    const delta = count - (before.get(method) ?? 0);
    if (delta > 0) byMethod.set(method, delta);
  }
  return { ms: elapsed, calls: [...byMethod.values()].reduce((a, b) => a + b, 0), byMethod };
}

function connect(url: string, username: string, password: string): Vsphere {
  const client = new VsphereClient({ url, username, password, timeoutMs: 30_000 }, silentLogger());
  return { client, inventory: new Inventory(client), disks: new VmDisks(client, silentLogger()) };
}

async function main(): Promise<number> {
  return runBench({
    prefix: 'ballast-vmdk-bench',
    title: 'ballast vmdk benchmark (vcsim)',
    intro: [`${RUNS} runs of each operation on 64 MiB thin disks; one vcsim, 2 VMs, 1 datastore, on loopback.`],
    deadlineSeconds: intFromEnv('BENCH_DEADLINE_SECONDS', 600),
    cleanOk: 'vcsim stopped',
    body: async () => {
      const sim = await startVcsim({ vms: 2, datastores: 1 });
      try {
        const vsphere = connect(sim.url, sim.username, sim.password);
        const { client } = vsphere;
        const datastore = sim.datastores[0]!.name;
        const folder = `bench-${randomBytes(3).toString('hex')}`;
        const config = { vcenter: { url: sim.url, user: sim.username, password_file: '/dev/null', timeout_seconds: 30 }, datastore, folder, provisioning: 'thin' as const };
        const driver = new VmdkDriver(vsphere, datastore, config, silentLogger());
        const me = { hostId: 'bench-host', bootId: 'b1', hostname: 'bench-host' };
        const timing = { leaseSeconds: 20, renewEverySeconds: 2 };
        const keeper = new HostLeaseKeeper(driver, me, timing, silentLogger());
        const lease = new OwnershipLease(driver, me, silentLogger(), { store: driver, keeper, monitor: new HostMonitor(timing.leaseSeconds) });
        const initiator = { hostId: me.hostId, vmUuid: sim.vms[0]!.uuid };
        await keeper.register();
        await driver.checkHealth(); // login, inventory lookups: once per daemon, not per operation
        // A second host (own session, VM 2) for "reattach": a volume another host used, whose record it reads afresh.
        const other = connect(sim.url, sim.username, sim.password);
        const otherDriver = new VmdkDriver(other, datastore, config, silentLogger());
        const them = { hostId: 'bench-host-2', bootId: 'b1', hostname: 'bench-host-2' };
        const otherKeeper = new HostLeaseKeeper(otherDriver, them, timing, silentLogger());
        const otherLease = new OwnershipLease(otherDriver, them, silentLogger(), { store: otherDriver, keeper: otherKeeper, monitor: new HostMonitor(timing.leaseSeconds) });
        const otherInitiator = { hostId: them.hostId, vmUuid: sim.vms[1]!.uuid };
        await otherKeeper.register();
        // Each daemon's first attach learns its VM and that VM's devices (a daemon does that once in its life).
        for (const [d, l, i] of [[driver, lease, initiator], [otherDriver, otherLease, otherInitiator]] as const) {
          const warm = `warm-${i.hostId}`;
          await d.create({ name: warm, profile: 'default', sizeBytes: 64 * MiB, fstype: 'ext4', mkfsOpts: [], mountOpts: [], readonly: false });
          await l.acquire(warm);
          await d.export(warm, i);
          await d.unexport(warm, i);
          await l.release(warm);
        }

        const rtt: number[] = [];
        for (let i = 0; i < 50; i++) rtt.push((await measure(client, () => client.call('RetrieveServiceContent', moref('ServiceInstance', 'ServiceInstance')))).ms);

        const ballast: Record<Op, Sample[]> = { create: [], attach: [], detach: [], reattach: [], destroy: [] };
        for (let i = 0; i < RUNS; i++) {
          const name = `v${i}`;
          ballast.create.push(await measure(client, () => driver.create({ name, profile: 'default', sizeBytes: 64 * MiB, fstype: 'ext4', mkfsOpts: [], mountOpts: [], readonly: false })));
          ballast.attach.push(await measure(client, async () => {
            await lease.acquire(name);
            await driver.export(name, initiator);
          }));
          ballast.detach.push(await measure(client, async () => {
            await driver.unexport(name, initiator);
            await lease.release(name);
          }));
          ballast.reattach.push(await measure(other.client, async () => {
            await otherLease.acquire(name);
            await otherDriver.export(name, otherInitiator);
          }));
          await otherDriver.unexport(name, otherInitiator);
          await otherLease.release(name);
          ballast.destroy.push(await measure(client, () => driver.destroy(name)));
        }
        progress('ballast runs done');

        // By hand: the least a plugin must ask vCenter for each operation.
        const { virtualDiskManager } = await client.serviceContent();
        const dc = (await vsphere.inventory.datacenter()).ref;
        const vm = moref('VirtualMachine', sim.vms[1]!.moid);
        const hand: Record<Op, Sample[]> = { create: [], attach: [], detach: [], reattach: [], destroy: [] };
        for (let i = 0; i < RUNS; i++) {
          const file = `[${datastore}] ${folder}-hand/h${i}.vmdk`;
          if (i === 0) await vsphere.client.call('MakeDirectory', (await client.serviceContent()).fileManager, { name: `[${datastore}] ${folder}-hand`, datacenter: dc, createParentDirectories: true });
          hand.create.push(await measure(client, () => client.runTask('CreateVirtualDisk_Task', virtualDiskManager, { name: file, datacenter: dc, spec: { $type: 'FileBackedVirtualDiskSpec', diskType: 'thin', adapterType: 'lsiLogic', capacityKb: 65536 } }, 'create')));
          const controllerKey = 1000; // vcsim VMs: the SCSI controller; units taken one by one
          const attachByHand = () => client.runTask('ReconfigVM_Task', vm, { spec: { deviceChange: [{ operation: 'add', device: { $type: 'VirtualDisk', key: -1, backing: { $type: 'VirtualDiskFlatVer2BackingInfo', fileName: file, diskMode: 'independent_persistent' }, controllerKey, unitNumber: 1, capacityInKB: 65536 } }] } }, 'attach');
          const detachByHand = async () => {
            const [disk] = await vsphere.disks.find([vm], file);
            return measure(client, () => client.runTask('ReconfigVM_Task', vm, { spec: { deviceChange: [{ operation: 'remove', device: { $type: 'VirtualDisk', key: disk!.key, backing: { $type: 'VirtualDiskFlatVer2BackingInfo', fileName: file, diskMode: 'independent_persistent' }, controllerKey: disk!.controllerKey, unitNumber: disk!.unitNumber } }] } }, 'detach'));
          };
          hand.attach.push(await measure(client, attachByHand));
          hand.detach.push(await detachByHand());
          hand.reattach.push(await measure(client, attachByHand));
          await detachByHand();
          hand.destroy.push(await measure(client, () => client.runTask('DeleteVirtualDisk_Task', virtualDiskManager, { name: file, datacenter: dc }, 'delete')));
        }
        progress('by-hand runs done');

        out(`vSphere round trip (RetrieveServiceContent) on vcsim: median ${ms(median(rtt))} ms`);
        out();
        out('Per operation, median of runs (calls = vSphere round trips: SOAP calls and datastore HTTP):');
        const rows = OPS.map((op) => {
          const b = ballast[op];
          const h = hand[op];
          return [op, ms(median(b.map((s) => s.ms))), ms(median(h.map((s) => s.ms))), ratio(median(b.map((s) => s.ms)), median(h.map((s) => s.ms))), String(median(b.map((s) => s.calls))), String(median(h.map((s) => s.calls))), ratio(median(b.map((s) => s.calls)), median(h.map((s) => s.calls))), VDVS_MS[op]];
        });
        out(table(['op', 'ballast ms', 'by hand ms', 'ratio', 'ballast calls', 'by hand calls', 'ratio', 'vDVS on ESX ms'], rows));
        out();
        out('Round trips of the last ballast run, by method:');
        for (const op of OPS) {
          const last = ballast[op][ballast[op].length - 1]!;
          out(`  ${op.padEnd(8)} ${[...last.byMethod].map(([m, n]) => `${m} ${n}`).join(', ')}`);
        }
      } finally {
        await sim.stop();
      }
    },
  });
}

exitWith(main);
