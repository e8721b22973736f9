// PowerFlex's data path in the VM lab, driven by powerflex-nvme.sh through attach-coproc.mjs:
// the PowerFlex simulator (dist-sim, npm run build:sim) with nvmet as its data plane on
// $PF_PORTALS, this checkout's powerflex driver and ownership lease for two hosts (this VM,
// "vm-a", with its real host NQN; "vm-b", which never connects), and the NvmeTcpAttacher.
//   create NAME SIZE_GIB [IOPS MIBPS]  IOPS and MiB/s: the volume's io limits (reads and writes alike)
//   attach NAME            lease, export and attach as vm-a -> device, nguid, mapped, limits (the mapping's, "iops/KiBps")
//   detach NAME DEVICE     detach, unexport and release as vm-a
//   map NAME / unmap NAME  lease and export only (no attach) -> nqn, portals, nguid; unexport and release
//   detach-only NAME DEVICE  detach as vm-a, whose lease moved on (fenced)
//   takeover NAME          vm-a stops renewing; vm-b takes the lease and exports -> mapped (the
//                          new namespace held back: nvmet would show it to vm-a too)
//   expose                 makes the held-back namespace
//   release-b NAME         vm-b unexports and releases
//   snapshot NAME SNAP     -> pf_name, ancestor_ok (the PowerFlex snapshot's ancestor is the volume)
//   clone NAME SOURCE SNAP|- SIZE_GIB  from SOURCE@SNAP, or SOURCE as it is now -> size_kb, ancestor_ok
//   snapshot-rm NAME SNAP  -> volumes (left on the array)
//   destroy NAME           -> volumes (left on the array), files (left in the image dir)
//   stop                   takes the simulator's nvmet configuration down
import { readdirSync } from 'node:fs';
import { importBuilt, serveCommands, src } from './attach-coproc.mjs';

const { PowerFlexSim } = await import(`${src}/dist-sim/powerflex.js`);
const { NvmetDataPlane } = await import(`${src}/dist-sim/nvmet-data-plane.js`);
const { PowerFlexArray } = await importBuilt('drivers/powerflex/array.js');
const { PowerFlexClient } = await importBuilt('drivers/powerflex/client.js');
const { powerflexDriver, subsystemNqnOf } = await importBuilt('drivers/powerflex/powerflex-driver.js');
const { snapshotPowerflexName } = await importBuilt('drivers/powerflex/snapshots.js');
const { NvmeTcpAttacher } = await importBuilt('attach/nvme/nvme-attacher.js');
const { HostLeaseKeeper } = await importBuilt('ownership/host-lease.js');
const { HostMonitor } = await importBuilt('ownership/host-monitor.js');
const { OwnershipLease } = await importBuilt('ownership/lease.js');
const { CommandRunner } = await importBuilt('exec.js');
const { createLogger } = await importBuilt('log.js');

const log = createLogger('debug', `${process.env.BALLAST_VM_LOGS ?? '/tmp'}/powerflex-nvme.log`);
const imageDir = process.env.PF_IMAGES;
const portals = process.env.PF_PORTALS.split(',');
const dataPlane = new NvmetDataPlane({ imageDir, portals, firstPortId: 11 });
const sim = new PowerFlexSim({ apiVersion: 4, username: 'admin', password: 'pf-lab', sdtIps: portals.map((p) => p.split(':')[0]), sdtPort: Number(portals[0].split(':')[1]), dataPlane });
await sim.start();
await dataPlane.start(sim.systemId, subsystemNqnOf(sim.systemId));

const timing = { leaseSeconds: 20, renewEverySeconds: 2 };
let now = 0;
const clock = () => now;
const backend = { url: sim.url, api_version: 4, user: 'admin', password_file: '/unused', protection_domain: 'pd1', storage_pool: 'pool1', provisioning: 'thin', metadata_root: `${imageDir}/meta`, timeout_seconds: 30 };
const attacher = new NvmeTcpAttacher(new CommandRunner(log), log, { commandTimeoutMs: 30_000, deviceWaitMs: 15_000 });

async function host(hostId, nqn) {
  const client = new PowerFlexClient({ url: sim.url, apiVersion: 4, username: 'admin', password: 'pf-lab', timeoutMs: 30_000 }, log);
  const driver = powerflexDriver(new PowerFlexArray(client), backend, new Map(), log);
  const identity = { hostId, bootId: 'b1', hostname: hostId };
  const keeper = new HostLeaseKeeper(driver, identity, timing, log, clock);
  const lease = new OwnershipLease(driver, identity, log, { store: driver, keeper, monitor: new HostMonitor(timing.leaseSeconds, clock) });
  await keeper.register();
  return { driver, keeper, lease, initiator: { hostId, nqn } };
}
const a = await host('vm-a', (await attacher.identify()).nqn);
const b = await host('vm-b', 'nqn.2014-08.org.nvmexpress:uuid:00000000-0000-4000-8000-0000000000bb');
const exports = new Map();
const mapped = (name) => (sim.volumeByName(`bl-${name}`)?.mappedHosts ?? []).map((id) => sim.hosts.get(id)?.name).join(',') || 'none';
const context = { hostId: 'vm-a', generation: 1 };
const MiB = 2 ** 20;
const newVolume = (name, gib) => ({ name, profile: 'default', sizeBytes: Number(gib) * 2 ** 30, fstype: 'ext4', mkfsOpts: [], mountOpts: [], readonly: false });
const limitsOf = (name) => [...(sim.volumeByName(`bl-${name}`)?.limits.values() ?? [])].map((l) => `${l.iopsLimit}/${l.bandwidthLimitInKbps}`).join(',') || 'none';

await serveCommands(log, {
  create: async (name, gib, iops, mibps) => {
    const ioLimits = iops ? { readIops: Number(iops), writeIops: Number(iops), readBps: Number(mibps) * MiB, writeBps: Number(mibps) * MiB } : undefined;
    await a.driver.create({ ...newVolume(name, gib), ...(ioLimits ? { ioLimits } : {}) });
    return { size_kb: sim.volumeByName(`bl-${name}`).sizeInKb };
  },
  snapshot: async (name, snap) => {
    const record = (await a.driver.read(name)).value;
    await a.driver.snapshots.createSnapshot(record, snap);
    const made = sim.volumeByName(snapshotPowerflexName(name, snap));
    return { pf_name: made.name, ancestor_ok: made.ancestorVolumeId === sim.volumeByName(`bl-${name}`).id ? 1 : 0 };
  },
  clone: async (name, source, snap, gib) => {
    await a.driver.snapshots.createFrom(newVolume(name, gib), snap === '-' ? { volume: source } : { volume: source, snapshot: snap });
    const made = sim.volumeByName(`bl-${name}`);
    const ancestor = snap === '-' ? sim.volumeByName(`bl-${source}`) : sim.volumeByName(snapshotPowerflexName(source, snap));
    return { size_kb: made.sizeInKb, ancestor_ok: made.ancestorVolumeId === ancestor.id ? 1 : 0 };
  },
  'snapshot-rm': async (name, snap) => {
    await a.driver.snapshots.removeSnapshot(name, snap);
    return { volumes: sim.volumes.size };
  },
  attach: async (name) => {
    await a.lease.acquire(name);
    const exp = await a.driver.export(name, a.initiator);
    exports.set(name, exp);
    return { device: await attacher.attach(exp, context), nguid: exp.nguid, mapped: mapped(name), limits: limitsOf(name) };
  },
  detach: async (name, device) => {
    await attacher.detach(exports.get(name), device, context);
    await a.driver.unexport(name, a.initiator);
    await a.lease.release(name);
    return { mapped: mapped(name) };
  },
  map: async (name) => {
    await a.lease.acquire(name);
    const exp = await a.driver.export(name, a.initiator);
    return { nqn: exp.subsystemNqn, portals: exp.portals.join(','), nguid: exp.nguid };
  },
  unmap: async (name) => {
    await a.driver.unexport(name, a.initiator);
    await a.lease.release(name);
    return {};
  },
  'detach-only': async (name, device) => {
    await attacher.detach(exports.get(name), device, context);
    return {};
  },
  takeover: async (name) => {
    await b.keeper.renew();
    await b.lease.acquire(name).catch(() => undefined); // first sight of vm-a's lease: refused
    now += timing.leaseSeconds + 1; // vm-a never renews again (seconds)
    const record = await b.lease.acquire(name);
    dataPlane.hold = true;
    await b.driver.export(name, b.initiator);
    return { generation: record.generation, mapped: mapped(name) };
  },
  expose: async () => {
    await dataPlane.expose();
    return {};
  },
  'release-b': async (name) => {
    await b.driver.unexport(name, b.initiator);
    await b.lease.release(name);
    return { mapped: mapped(name) };
  },
  destroy: async (name) => {
    await a.driver.destroy(name);
    return { volumes: sim.volumes.size, files: readdirSync(imageDir).filter((f) => f.endsWith('.img')).length };
  },
  stop: async () => {
    await dataPlane.stop();
    await sim.stop();
    return {};
  },
});
