import { Mutex } from 'async-mutex';
import { BackendUnavailable } from '../../errors.js';
import type { Logger } from '../../log.js';
import type { VsphereClient } from './client.js';
import { asArray, textOf, typeOf, type MoRef, type SoapNode, type SoapObject } from './soap.js';

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

/**
 * Adds and removes virtual disks on VMs with ReconfigVM_Task. Disks are "independent
 * persistent": a VM snapshot neither includes nor reverts them (what vDVS did too). Removing a
 * disk never deletes its file. One reconfiguration of a VM at a time from this process, so two
 * attaches never pick the same free slot.
 */
export class VmDisks {
  private readonly locks = new Map<string, Mutex>();

  constructor(
    private readonly client: VsphereClient,
    private readonly log: Logger,
  ) {}

  /** The VMs among `vms` that have `fileName` attached, with the disk as each has it. */
  async find(vms: MoRef[], fileName: string): Promise<AttachedDisk[]> {
    const unique = [...new Map(vms.map((vm) => [vm.value, vm])).values()];
    const found: AttachedDisk[] = [];
    for (const [id, props] of await this.client.properties(unique, ['config.hardware.device'])) {
      const vm = unique.find((v) => v.value === id)!;
      found.push(...disksOf(vm, props['config.hardware.device']).filter((d) => d.fileName === fileName));
    }
    return found;
  }

  /** Attaches an existing disk file to `vm` in the first free SCSI slot, adding a paravirtual controller when all are full. */
  async attach(vm: MoRef, fileName: string): Promise<AttachedDisk> {
    return this.lockOf(vm).runExclusive(async () => {
      const devices = await this.devices(vm);
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
        this.log.info('adding a paravirtual SCSI controller: every slot is taken', { vm: vm.value, busNumber });
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
      await this.reconfigure(vm, changes, `attach ${fileName} to VM ${vm.value}`);
      const disk = disksOf(vm, await this.devices(vm)).find((d) => d.fileName === fileName);
      if (!disk) throw new BackendUnavailable(`vCenter reported ${fileName} attached to VM ${vm.value}, but the VM does not list it`);
      return disk;
    });
  }

  /** Removes the disk from its VM; the file stays. */
  async detach(disk: AttachedDisk): Promise<void> {
    await this.lockOf(disk.vm).runExclusive(() => this.reconfigure(disk.vm, [{ operation: 'remove', device: deviceSpec(disk) }], `detach ${disk.fileName} from VM ${disk.vm.value}`));
  }

  /** Grows an attached disk (a disk in use by a VM is resized through that VM). */
  async resize(disk: AttachedDisk, sizeBytes: number): Promise<void> {
    const capacityKb = Math.ceil(sizeBytes / 1024);
    if (capacityKb <= disk.capacityKb) return;
    await this.lockOf(disk.vm).runExclusive(() =>
      this.reconfigure(disk.vm, [{ operation: 'edit', device: { ...deviceSpec(disk), capacityInKB: capacityKb } }], `grow ${disk.fileName} to ${capacityKb} KiB`),
    );
  }

  private async devices(vm: MoRef): Promise<SoapNode> {
    return (await this.client.propertiesOf(vm, ['config.hardware.device']))['config.hardware.device'];
  }

  private async reconfigure(vm: MoRef, deviceChange: SoapObject[], what: string): Promise<void> {
    await this.client.runTask('ReconfigVM_Task', vm, { spec: { deviceChange } }, what);
  }

  private lockOf(vm: MoRef): Mutex {
    let lock = this.locks.get(vm.value);
    if (!lock) this.locks.set(vm.value, (lock = new Mutex()));
    return lock;
  }
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
    }));
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
