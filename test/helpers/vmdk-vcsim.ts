import { randomBytes } from 'node:crypto';
import type { NewVolume } from '../../src/drivers/types.js';
import { VsphereClient } from '../../src/drivers/vsphere/client.js';
import { Inventory } from '../../src/drivers/vsphere/inventory.js';
import { VsphereFault, type MoRef } from '../../src/drivers/vsphere/soap.js';
import { VmDisks } from '../../src/drivers/vsphere/vm-disks.js';
import { VmdkDriver, type Vsphere } from '../../src/drivers/vsphere/vmdk-driver.js';
import type { Initiator } from '../../src/export.js';
import { silentLogger } from '../../src/log.js';
import { HostLeaseKeeper } from '../../src/ownership/host-lease.js';
import { HostMonitor } from '../../src/ownership/host-monitor.js';
import { OwnershipLease } from '../../src/ownership/lease.js';
import type { Vcsim } from '../lab/vcsim.js';

// One ballast host's vmdk driver and ownership machinery on a vcsim, for the vmdk round-trip and
// revision-claim tests that play several hosts (one per simulated VM) in one process.

export const MiB = 1024 ** 2;
const timing = { leaseSeconds: 20, renewEverySeconds: 2 };

export function connect(sim: Vcsim): Vsphere {
  const client = new VsphereClient({ url: sim.url, username: sim.username, password: sim.password, timeoutMs: 20_000 }, silentLogger());
  return { client, inventory: new Inventory(client), disks: new VmDisks(client, silentLogger()) };
}

export const volume = (name: string, sizeBytes = 64 * MiB): NewVolume => ({ name, profile: 'default', sizeBytes, fstype: 'ext4', mkfsOpts: [], mountOpts: [], readonly: false });
export const newFolder = () => `rt-${randomBytes(3).toString('hex')}`;

/**
 * VmDisks as a real vCenter behaves: attaching a disk another (running) VM has open is refused,
 * the file being locked. vcsim attaches it a second time instead.
 */
class LockingVmDisks extends VmDisks {
  constructor(
    client: VsphereClient,
    private readonly datastoreRef: () => Promise<MoRef>,
  ) {
    super(client, silentLogger());
  }

  override async attach(vm: MoRef, fileName: string, datastore?: MoRef) {
    const others = (await this.findAnywhere([], await this.datastoreRef(), fileName)).filter((d) => d.vm.value !== vm.value);
    if (others.length) throw new VsphereFault('GenericVmConfigFault', `Failed to lock the file ${fileName}`, {});
    return super.attach(vm, fileName, datastore);
  }
}

/** Host `h<index>` on VM `index` of the vcsim, its volumes in `folder` on the first datastore. */
export function vmdkHost(sim: Vcsim, index: number, folder: string, options: { locking?: boolean } = {}) {
  const vsphere = connect(sim);
  if (options.locking) vsphere.disks = new LockingVmDisks(vsphere.client, async () => (await vsphere.inventory.datastore(sim.datastores[0]!.name)).ref);
  const datastore = sim.datastores[0]!.name;
  const driver = new VmdkDriver(vsphere, datastore, { vcenter: { url: sim.url, user: sim.username, password_file: '/dev/null', timeout_seconds: 20 }, datastore, folder, provisioning: 'thin' }, silentLogger());
  const identity = { hostId: `h${index}`, bootId: 'b1', hostname: `h${index}` };
  const keeper = new HostLeaseKeeper(driver, identity, timing, silentLogger());
  const lease = new OwnershipLease(driver, identity, silentLogger(), { store: driver, keeper, monitor: new HostMonitor(timing.leaseSeconds) });
  const initiator: Initiator = { hostId: identity.hostId, vmUuid: sim.vms[index]!.uuid };
  return { vsphere, driver, keeper, lease, initiator };
}
