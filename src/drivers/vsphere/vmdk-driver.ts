import { join } from 'node:path';
import type { VmdkBackendConfig } from '../../config/schema.js';
import { formatSize } from '../../config/size.js';
import { BackendUnavailable, InvalidRequest, LeaseHeld, VolumeNotFound } from '../../errors.js';
import type { Export, Initiator } from '../../export.js';
import type { Logger } from '../../log.js';
import { FileVolumes } from '../file-volumes.js';
import type { VolumeImages } from '../images.js';
import type { NewVolume, VolumeRecord } from '../types.js';
import type { VsphereClient } from './client.js';
import { DatastoreFiles } from './datastore-files.js';
import { vsphereError } from './faults.js';
import type { Datastore, Inventory } from './inventory.js';
import { textOf, type MoRef } from './soap.js';
import { VmDisks, type AttachedDisk } from './vm-disks.js';

/** The vCenter connection the vmdk profiles share. */
export interface Vsphere {
  client: VsphereClient;
  inventory: Inventory;
  disks: VmDisks;
}

const DISK = 'disk.vmdk';
/** Which VM ballast last attached the disk to: where to look first after a crash. */
const ATTACHMENT_NOTE = 'attached.json';

const DISK_TYPES = { thin: 'thin', thick: 'preallocated', eagerZeroedThick: 'eagerZeroedThick' } as const;

/**
 * Volumes as virtual disks in a folder on a vSphere datastore, one directory each (disk.vmdk
 * and meta.json, the record and lease, written by compare-and-swap as for loop and iscsi),
 * host leases in <folder>/.hosts. Exporting a volume attaches its disk to this host's VM;
 * vCenter's attachment state is the authority on which VM has it. A disk still attached to
 * another VM when this host holds the lease (its former holder died) is detached from that VM
 * first: from then on the former holder cannot write to it.
 */
export class VmdkDriver extends FileVolumes {
  readonly kind = 'vmdk';
  readonly transport = 'vmdk' as const;
  private readonly vms = new Map<string, Promise<MoRef>>();

  constructor(
    private readonly vsphere: Vsphere,
    private readonly datastoreName: string,
    private readonly backend: VmdkBackendConfig,
    log: Logger,
  ) {
    const lookup = () => vsphere.inventory.datastore(datastoreName);
    super(
      {
        root: backend.folder,
        shared: true,
        files: new DatastoreFiles(vsphere.client, datastoreName, lookup, join(backend.folder, '.tmp')),
        images: (root) => new VirtualDisks(vsphere, root, datastoreName, lookup, backend.provisioning),
      },
      log,
    );
  }

  override async create(volume: NewVolume): Promise<VolumeRecord> {
    const datastore = await this.datastore();
    const space = await this.vsphere.inventory.space(datastore).catch((err: unknown) => {
      throw vsphereError(`read the free space of datastore ${this.datastoreName}`, err);
    });
    if (!space.accessible) throw new BackendUnavailable(`datastore ${this.datastoreName} is not accessible from vCenter now`);
    // Refused even for thin disks: a VM whose thin disk cannot grow is paused by ESXi.
    if (space.freeBytes < volume.sizeBytes) {
      throw new BackendUnavailable(
        `datastore ${this.datastoreName} has ${formatSize(space.freeBytes)} free; volume ${volume.name} needs ${formatSize(volume.sizeBytes)}: ` +
          'choose a smaller size or a profile on another datastore',
      );
    }
    return super.create(volume);
  }

  async export(name: string, initiator: Initiator): Promise<Export> {
    const vm = await this.vmOf(initiator);
    const record = await this.read(name);
    if (!record) throw new VolumeNotFound(name);
    const ownership = record.value.ownership;
    // Taking a disk from another VM is only right for the host that holds the lease.
    if (ownership.state !== 'held' || ownership.holder.hostId !== initiator.hostId) {
      throw new LeaseHeld(`volume ${name} is not leased to host ${initiator.hostId}; it cannot be attached to its VM`);
    }
    const file = this.imagePath(name);
    let attachedNow: AttachedDisk | undefined;
    try {
      const { mine, noted } = await this.takeFromOthers(name, vm);
      let disk = mine;
      if (!disk) {
        if (noted?.value !== vm.value) await this.noteAttachment(name, vm);
        disk = attachedNow = await this.vsphere.disks.attach(vm, file);
        this.log.info('disk attached', { volume: name, vm: vm.value, file, unit: `${disk.controllerKey}:${disk.unitNumber}` });
      }
      // A grow recorded while the disk was not attached catches up here.
      await this.vsphere.disks.resize(disk, record.value.sizeBytes);
      return { transport: 'vmdk', diskUuid: await this.diskUuid(file), file };
    } catch (err) {
      // Only what this call attached is undone: a disk attached before may be in use here.
      if (attachedNow) await this.vsphere.disks.detach(attachedNow).catch((undoErr: unknown) => this.log.error('detaching after a failed export failed', { volume: name, error: String(undoErr) }));
      throw vsphereError(`attach volume ${name} (${file}) to VM ${vm.value}`, err);
    }
  }

  async unexport(name: string, initiator: Initiator): Promise<void> {
    const vm = await this.vmOf(initiator);
    const file = this.imagePath(name);
    try {
      for (const disk of await this.vsphere.disks.find([vm], file)) await this.vsphere.disks.detach(disk);
    } catch (err) {
      throw vsphereError(`detach volume ${name} (${file}) from VM ${vm.value}`, err);
    }
    this.log.info('disk detached', { volume: name, vm: vm.value, file });
  }

  /** Before a destroy (the record is free): a disk left attached anywhere is detached, or its file could not go. */
  protected override async withdraw(name: string): Promise<void> {
    try {
      for (const disk of await this.vsphere.disks.find((await this.candidateVms(name)).vms, this.imagePath(name))) {
        this.log.warn('detaching a disk left attached to a VM before deleting it', { volume: name, vm: disk.vm.value });
        await this.vsphere.disks.detach(disk);
      }
    } catch (err) {
      throw vsphereError(`detach volume ${name} before deleting it`, err);
    }
  }

  /** An attached disk grows now, through the VM that has it; a detached one at its next export. */
  protected override async resized(name: string, sizeBytes: number): Promise<void> {
    try {
      for (const disk of await this.vsphere.disks.find((await this.candidateVms(name)).vms, this.imagePath(name))) {
        await this.vsphere.disks.resize(disk, sizeBytes);
      }
    } catch (err) {
      throw vsphereError(`grow the disk of volume ${name}`, err);
    }
  }

  /**
   * Where the disk is attached, by vCenter: on `vm` it is returned; on any other VM it is taken
   * away. Also says which VM the note names, so an attach to that VM need not write it again.
   */
  private async takeFromOthers(name: string, vm: MoRef): Promise<{ mine?: AttachedDisk; noted?: MoRef }> {
    const { vms, noted } = await this.candidateVms(name);
    let mine: AttachedDisk | undefined;
    for (const disk of await this.vsphere.disks.find([vm, ...vms], this.imagePath(name))) {
      if (disk.vm.value === vm.value) {
        mine = disk;
        continue;
      }
      this.log.warn('taking the disk from the VM of its former holder', { volume: name, from: disk.vm.value, to: vm.value });
      await this.vsphere.disks.detach(disk);
    }
    return { ...(mine ? { mine } : {}), ...(noted ? { noted } : {}) };
  }

  /**
   * VMs that may have the disk. ballast notes the VM before every attach, so with a note that
   * VM is the only other candidate; without one (a disk never attached, or an older layout)
   * every VM vCenter lists on the datastore is asked, which costs more on a big datastore.
   */
  private async candidateVms(name: string): Promise<{ vms: MoRef[]; noted?: MoRef }> {
    const note = await this.files.readFile(join(this.root, name, ATTACHMENT_NOTE));
    const noted = note === undefined ? undefined : (JSON.parse(note) as { vm?: MoRef }).vm;
    if (noted?.type === 'VirtualMachine') return { vms: [noted], noted };
    return { vms: await this.vsphere.inventory.vmsOn(await this.datastore()) };
  }

  private async noteAttachment(name: string, vm: MoRef): Promise<void> {
    await this.files.writeAtomic(join(this.root, name, ATTACHMENT_NOTE), `${JSON.stringify({ vm, at: new Date().toISOString() })}\n`);
  }

  /** The disk's UUID as the guest sees it in the WWN: 32 lower-case hex digits. */
  private async diskUuid(file: string): Promise<string> {
    const { virtualDiskManager } = await this.vsphere.client.serviceContent();
    const datastore = await this.datastore();
    const uuid = textOf(await this.vsphere.client.call('QueryVirtualDiskUuid', virtualDiskManager, { name: file, datacenter: datastore.datacenter.ref }));
    const hex = uuid.replace(/[\s-]/g, '').toLowerCase();
    if (!/^[0-9a-f]{32}$/.test(hex)) throw new BackendUnavailable(`vCenter returned ${JSON.stringify(uuid)} as the UUID of ${file}`);
    return hex;
  }

  private vmOf(initiator: Initiator): Promise<MoRef> {
    if (!initiator.vmUuid) throw new InvalidRequest(`host ${initiator.hostId} did not say which VM it is; cannot attach disks to it`);
    let vm = this.vms.get(initiator.vmUuid);
    if (!vm) {
      vm = this.vsphere.inventory.vmByBiosUuid(initiator.vmUuid).catch((err: unknown) => {
        this.vms.delete(initiator.vmUuid!);
        throw vsphereError(`find this host's VM`, err);
      });
      this.vms.set(initiator.vmUuid, vm);
    }
    return vm;
  }

  private datastore(): Promise<Datastore> {
    return this.vsphere.inventory.datastore(this.datastoreName).catch((err: unknown) => {
      throw vsphereError(`use datastore ${this.datastoreName}`, err);
    });
  }
}

/** Volume data as VMDK files, `[datastore] <folder>/<name>/disk.vmdk`, made by the VirtualDiskManager. */
class VirtualDisks implements VolumeImages {
  constructor(
    private readonly vsphere: Vsphere,
    private readonly root: string,
    private readonly datastoreName: string,
    private readonly lookup: () => Promise<Datastore>,
    private readonly provisioning: VmdkBackendConfig['provisioning'],
  ) {}

  path(name: string): string {
    return `[${this.datastoreName}] ${join(this.root, name, DISK)}`;
  }

  async create(name: string, staging: string, sizeBytes: number): Promise<void> {
    const { virtualDiskManager } = await this.vsphere.client.serviceContent();
    const datastore = await this.lookup();
    const file = `[${this.datastoreName}] ${join(staging, DISK)}`;
    await this.vsphere.client
      .runTask(
        'CreateVirtualDisk_Task',
        virtualDiskManager,
        {
          name: file,
          datacenter: datastore.datacenter.ref,
          spec: { $type: 'FileBackedVirtualDiskSpec', diskType: DISK_TYPES[this.provisioning], adapterType: 'lsiLogic', capacityKb: Math.ceil(sizeBytes / 1024) },
        },
        `create ${file}`,
      )
      .catch((err: unknown) => {
        throw vsphereError(`create the disk of volume ${name}`, err);
      });
  }

  async abandon(): Promise<void> {
    // The disk is in the staging directory, which goes with it.
  }

  async remove(): Promise<void> {
    // The disk went with the volume's directory.
  }

  async grow(): Promise<void> {
    // The driver's resized(): an attached disk grows through its VM, a detached one when next attached.
  }

  async ensureSize(): Promise<void> {
    // Done by export, which attaches first.
  }
}
