import { Mutex } from 'async-mutex';
import { BackendUnavailable } from '../../errors.js';
import type { Logger } from '../../log.js';
import type { RetrieveGroup, VsphereClient } from './client.js';
import { asArray, textOf, typeOf, VsphereFault, type MoRef, type SoapNode, type SoapObject } from './soap.js';

/** A virtual disk as one VM has it. */
export interface AttachedDisk {
  vm: MoRef;
  key: number;
  controllerKey: number;
  unitNumber: number;
  /** "[datastore] ballast/pgdata/disk.vmdk". */
  fileName: string;
  capacityKb: number;
  label: string;
  /** The disk's UUID as vCenter reports it in the backing (32 hex digits), when it does. */
  uuid?: string;
}

interface ScsiController {
  key: number;
  busNumber: number;
  usedUnits: Set<number>;
}

/** A VM may have four SCSI controllers; each takes 15 disks (unit 7 is the controller itself). */
const MAX_SCSI_CONTROLLERS = 4;
const SCSI_UNITS = [0, 1, 2, 3, 4, 5, 6, 8, 9, 10, 11, 12, 13, 14, 15];
const isScsiController = (type: string | undefined) => /SCSIController$|LsiLogic|BusLogic/.test(type ?? '');

const DEVICES = 'config.hardware.device';

/**
 * Adds and removes virtual disks on VMs with ReconfigVM_Task. Disks are "independent
 * persistent": a VM snapshot neither includes nor reverts them (what vDVS did too). Removing a
 * disk never deletes its file. One reconfiguration of a VM at a time from this process, so two
 * attaches never pick the same free slot.
 *
 * Each VM's device list is kept as vCenter returned it in the poll that saw ballast's last change
 * (read in the same round trip as the task's end), so the next attach picks its slot without
 * asking. It is a hint: someone else may have changed the VM since. A change vCenter refuses is
 * tried once more on a list read afresh; a disk the list says is attached is looked up afresh
 * before it is trusted; and every change's result is checked on the list that comes back with it.
 */
export class VmDisks {
  private readonly locks = new Map<string, Mutex>();
  private readonly known = new Map<string, SoapNode>();

  constructor(
    private readonly client: VsphereClient,
    private readonly log: Logger,
  ) {}

  /** The VMs among `vms` that have `fileName` attached, with the disk as each has it (asked now). */
  async find(vms: MoRef[], fileName: string): Promise<AttachedDisk[]> {
    const unique = [...new Map(vms.map((vm) => [vm.value, vm])).values()];
    const read = await this.client.retrieve([{ objects: unique, paths: [DEVICES] }]);
    return this.disksIn(read, unique, fileName);
  }

  /**
   * Where `fileName` is attached among `vms` and, with `datastore`, every VM vCenter lists on
   * that datastore: one round trip.
   */
  async findAnywhere(vms: MoRef[], datastore: MoRef | undefined, fileName: string): Promise<AttachedDisk[]> {
    const read = await this.client.retrieve(lookups(vms, datastore));
    return this.disksIn(read, [], fileName);
  }

  /** The disk on `vm` as the kept device list has it; undefined when the list says it is not there or there is no list. */
  keptDisk(vm: MoRef, fileName: string): { disk?: AttachedDisk; kept: boolean } {
    const devices = this.known.get(vm.value);
    if (devices === undefined) return { kept: false };
    const disk = disksOf(vm, devices).find((d) => d.fileName === fileName);
    return { kept: true, ...(disk ? { disk } : {}) };
  }

  /** Forgets what ballast knows of the VM's devices: the next change reads them first. */
  forget(vm: MoRef): void {
    this.known.delete(vm.value);
  }

  /**
   * Attaches an existing disk file to `vm` in the first free SCSI slot, adding a paravirtual
   * controller when all are full. With `datastore`, the poll that sees the change done also asks
   * every VM on that datastore (same round trip): the disk found on another VM is returned in
   * `elsewhere` for the caller to take away. `attached` is false when the VM had it already.
   */
  async attach(vm: MoRef, fileName: string, datastore?: MoRef): Promise<{ disk: AttachedDisk; elsewhere: AttachedDisk[]; attached: boolean }> {
    return this.lockOf(vm).runExclusive(async () => {
      let fresh = !this.known.has(vm.value);
      for (;;) {
        const devices = await this.devicesOf(vm);
        const already = disksOf(vm, devices).find((d) => d.fileName === fileName);
        if (already) {
          if (fresh) return { disk: already, attached: false, elsewhere: datastore ? (await this.findAnywhere([], datastore, fileName)).filter((d) => d.vm.value !== vm.value) : [] };
          this.known.delete(vm.value); // someone else's change, or ours before a restart: look again
          fresh = true;
          continue;
        }
        try {
          const read = await this.reconfigure(vm, addDisk(vm, devices, fileName, this.log), `attach ${fileName} to VM ${vm.value}`, datastore);
          const disk = this.disksIn(read, [vm], fileName).find((d) => d.vm.value === vm.value);
          if (!disk) throw new BackendUnavailable(`vCenter reported ${fileName} attached to VM ${vm.value}, but the VM does not list it`);
          const elsewhere = datastore ? this.disksIn(read, [], fileName).filter((d) => d.vm.value !== vm.value) : [];
          return { disk, elsewhere, attached: true };
        } catch (err) {
          // A slot or controller taken behind ballast's back: once more, on the VM as it is now.
          if (fresh || !(err instanceof VsphereFault)) throw err;
          this.log.info('attach refused on the kept device list; reading the VM again', { vm: vm.value, fault: err.faultType });
          this.known.delete(vm.value);
          fresh = true;
        }
      }
    });
  }

  /** Removes the disk from its VM; the file stays. A disk already gone is not an error. */
  async detach(disk: AttachedDisk): Promise<void> {
    await this.lockOf(disk.vm).runExclusive(async () => {
      try {
        await this.reconfigure(disk.vm, [{ operation: 'remove', device: deviceSpec(disk) }], `detach ${disk.fileName} from VM ${disk.vm.value}`);
      } catch (err) {
        if (!(err instanceof VsphereFault)) throw err;
        // Perhaps detached (or moved) behind ballast's back: look again.
        const now = disksOf(disk.vm, await this.devicesOf(disk.vm, true)).find((d) => d.fileName === disk.fileName);
        if (!now) return;
        await this.reconfigure(disk.vm, [{ operation: 'remove', device: deviceSpec(now) }], `detach ${disk.fileName} from VM ${disk.vm.value}`);
      }
    });
  }

  /** Detaches `fileName` from `vm` wherever the VM has it; false when it was not attached there. */
  async detachFile(vm: MoRef, fileName: string): Promise<boolean> {
    let { disk } = this.keptDisk(vm, fileName);
    // Not there by the kept list: asked afresh, in case someone attached it behind ballast's back.
    disk ??= disksOf(vm, await this.lockOf(vm).runExclusive(() => this.devicesOf(vm, true))).find((d) => d.fileName === fileName);
    if (!disk) return false;
    await this.detach(disk);
    return true;
  }

  /** Grows an attached disk (a disk in use by a VM is resized through that VM). */
  async resize(disk: AttachedDisk, sizeBytes: number): Promise<void> {
    const capacityKb = Math.ceil(sizeBytes / 1024);
    if (capacityKb <= disk.capacityKb) return;
    await this.lockOf(disk.vm).runExclusive(() =>
      this.reconfigure(disk.vm, [{ operation: 'edit', device: { ...deviceSpec(disk), capacityInKB: capacityKb } }], `grow ${disk.fileName} to ${capacityKb} KiB`),
    );
  }

  private async devicesOf(vm: MoRef, fresh = false): Promise<SoapNode> {
    if (!fresh && this.known.has(vm.value)) return this.known.get(vm.value);
    const props = (await this.client.retrieve([{ objects: [vm], paths: [DEVICES] }])).get(vm.value);
    if (!props) throw new VsphereFault('ManagedObjectNotFound', `VirtualMachine ${vm.value} does not exist`, {});
    this.known.set(vm.value, props[DEVICES]);
    return props[DEVICES];
  }

  /** The change, then one poll that also reads the VM's devices (and, with `datastore`, every VM's there): kept for the next change. */
  private async reconfigure(vm: MoRef, deviceChange: SoapObject[], what: string, datastore?: MoRef): Promise<Map<string, Record<string, SoapNode>>> {
    try {
      const read = await this.client.runTaskThenRead('ReconfigVM_Task', vm, { spec: { deviceChange } }, what, lookups([vm], datastore));
      this.keep(read);
      return read;
    } catch (err) {
      this.known.delete(vm.value);
      throw err;
    }
  }

  /** Disks of `fileName` in a retrieve's answer (the VMs in it, by id), keeping each VM's device list. */
  private disksIn(read: Map<string, Record<string, SoapNode>>, vms: MoRef[], fileName: string): AttachedDisk[] {
    this.keep(read);
    const found: AttachedDisk[] = [];
    for (const [id, props] of read) {
      if (!(DEVICES in props)) continue;
      const vm = vms.find((v) => v.value === id) ?? { type: 'VirtualMachine', value: id };
      found.push(...disksOf(vm, props[DEVICES]).filter((d) => d.fileName === fileName));
    }
    return found;
  }

  private keep(read: Map<string, Record<string, SoapNode>>): void {
    for (const [id, props] of read) if (DEVICES in props) this.known.set(id, props[DEVICES]);
  }

  private lockOf(vm: MoRef): Mutex {
    let lock = this.locks.get(vm.value);
    if (!lock) this.locks.set(vm.value, (lock = new Mutex()));
    return lock;
  }
}

/** The VMs' devices, and those of every VM on `datastore`. */
function lookups(vms: MoRef[], datastore: MoRef | undefined): RetrieveGroup[] {
  const groups: RetrieveGroup[] = [{ objects: vms, paths: [DEVICES] }];
  if (datastore) groups.push({ objects: [datastore], paths: [], traverse: { path: 'vm', type: 'VirtualMachine', paths: [DEVICES] } });
  return groups;
}

/** The device changes that add `fileName` in the first free slot (and a controller when every slot is taken). */
function addDisk(vm: MoRef, devices: SoapNode, fileName: string, log: Logger): SoapObject[] {
  const slot = freeSlot(devices);
  const changes: SoapObject[] = [];
  let controllerKey: number;
  if (slot) {
    controllerKey = slot.controllerKey;
  } else {
    const buses = new Set(controllersOf(devices).map((c) => c.busNumber));
    const busNumber = [0, 1, 2, 3].find((b) => !buses.has(b));
    if (busNumber === undefined || buses.size >= MAX_SCSI_CONTROLLERS) {
      throw new BackendUnavailable(`VM ${vm.value} has no free SCSI slot (${MAX_SCSI_CONTROLLERS} controllers with ${SCSI_UNITS.length} disks each are in use)`);
    }
    controllerKey = -100;
    changes.push({ operation: 'add', device: { $type: 'ParaVirtualSCSIController', key: controllerKey, busNumber, sharedBus: 'noSharing' } });
    log.info('adding a paravirtual SCSI controller: every slot is taken', { vm: vm.value, busNumber });
  }
  changes.push({
    operation: 'add',
    device: {
      $type: 'VirtualDisk',
      key: -101,
      backing: { $type: 'VirtualDiskFlatVer2BackingInfo', fileName, diskMode: 'independent_persistent' },
      controllerKey,
      unitNumber: slot?.unitNumber ?? 0,
    },
  });
  return changes;
}

/** What vCenter needs to name an existing disk in a device change. */
function deviceSpec(disk: AttachedDisk): SoapObject {
  return {
    $type: 'VirtualDisk',
    key: disk.key,
    deviceInfo: { label: disk.label, summary: '' },
    backing: { $type: 'VirtualDiskFlatVer2BackingInfo', fileName: disk.fileName, diskMode: 'independent_persistent' },
    controllerKey: disk.controllerKey,
    unitNumber: disk.unitNumber,
  };
}

function devicesOf(devices: SoapNode): SoapNode[] {
  return asArray(devices?.VirtualDevice);
}

function disksOf(vm: MoRef, devices: SoapNode): AttachedDisk[] {
  return devicesOf(devices)
    .filter((d) => typeOf(d) === 'VirtualDisk' && d.backing?.fileName !== undefined)
    .map((d) => ({
      vm,
      key: Number(textOf(d.key)),
      controllerKey: Number(textOf(d.controllerKey)),
      unitNumber: Number(textOf(d.unitNumber)),
      fileName: textOf(d.backing.fileName),
      capacityKb: Number(textOf(d.capacityInKB) || 0),
      label: textOf(d.deviceInfo?.label),
      ...uuidOf(d.backing?.uuid),
    }));
}

function uuidOf(node: SoapNode): { uuid?: string } {
  const hex = textOf(node).replace(/[\s-]/g, '').toLowerCase();
  return /^[0-9a-f]{32}$/.test(hex) ? { uuid: hex } : {};
}

function controllersOf(devices: SoapNode): ScsiController[] {
  const all = devicesOf(devices);
  return all
    .filter((d) => isScsiController(typeOf(d)))
    .map((c) => {
      const key = Number(textOf(c.key));
      const usedUnits = new Set(all.filter((d) => Number(textOf(d.controllerKey)) === key && d.unitNumber !== undefined).map((d) => Number(textOf(d.unitNumber))));
      return { key, busNumber: Number(textOf(c.busNumber)), usedUnits };
    })
    .sort((a, b) => a.busNumber - b.busNumber);
}

function freeSlot(devices: SoapNode): { controllerKey: number; unitNumber: number } | undefined {
  for (const controller of controllersOf(devices)) {
    const unitNumber = SCSI_UNITS.find((u) => !controller.usedUnits.has(u));
    if (unitNumber !== undefined) return { controllerKey: controller.key, unitNumber };
  }
  return undefined;
}
