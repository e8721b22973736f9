import { randomBytes } from 'node:crypto';
import { basename, dirname, join } from 'node:path';
import type { VmdkBackendConfig } from '../../config/schema.js';
import { formatSize } from '../../config/size.js';
import { BackendUnavailable, InvalidOption, InvalidRequest, LeaseHeld, StaleRevision, VolumeInUse, VolumeNotFound } from '../../errors.js';
import type { Export, Initiator } from '../../export.js';
import type { Logger } from '../../log.js';
import { monotonicSeconds } from '../../ownership/host-lease.js';
import type { OwnershipRecord, Versioned } from '../../ownership/types.js';
import { FileVolumes } from '../file-volumes.js';
import type { CloneSource, NewVolume, SnapshotCapable, VolumeRecord } from '../types.js';
import type { VsphereClient } from './client.js';
import { DatastoreFiles } from './datastore-files.js';
import { vsphereError } from './faults.js';
import type { Datastore, Inventory } from './inventory.js';
import { VsphereFault, type MoRef } from './soap.js';
import { queryDiskUuid, VirtualDisks, type DiskSource } from './virtual-disks.js';
import { VmDisks, type AttachedDisk } from './vm-disks.js';
import { CLAIM_HOLD_LIMIT_MS, READ_FRESH_MS, VmdkRecords, type DiskNotes, type VmdkRecord } from './vmdk-records.js';
import { VmdkSnapshots } from './vmdk-snapshots.js';

/** The vCenter connection the vmdk profiles share. */
export interface Vsphere {
  client: VsphereClient;
  inventory: Inventory;
  disks: VmDisks;
}

/**
 * A "free" record this process wrote or read this recently is what the lease's next acquire
 * starts from, without reading it again: `docker run` with a new volume creates then mounts at
 * once. Only an expectation: the claim of the next revision fails if anyone wrote since.
 */
const FREE_REUSE_MS = 2_000;
/** Export trusts the record this process has just written (the lease's acquire) this long instead of reading it again. */
const RECORD_REUSE_MS = 2_000;

/** What this host did to a volume's disk while it held the volume: what its release may write into the record. */
interface Hold {
  /** VMs this host took the disk off (or found without it). */
  detached: Set<string>;
  /** Where the disk is, exactly, once this host asked every VM on the datastore. */
  exact?: Map<string, MoRef>;
}

/**
 * Volumes as virtual disks in a folder on a vSphere datastore, one directory each (disk.vmdk
 * and meta.json, the record and lease, compare-and-swapped by revision claims: vmdk-records.ts),
 * host leases in <folder>/.hosts. Exporting a volume attaches its disk to this host's VM;
 * vCenter's attachment state is the authority on which VM has it. A disk still attached to
 * another VM when this host holds the lease (its former holder died) is detached from that VM
 * before this host's VM is handed the disk: from then on the former holder cannot write to it.
 * VMs the record names are asked before the attach; a record that names none (a new volume)
 * has every VM on the datastore asked in the poll that sees the attach done, and an attach
 * vCenter refuses (another running VM has the file locked) is tried again after the same ask.
 *
 * The record also says which VMs ballast may have attached the disk to (written before each
 * attach to a VM it does not name yet), its UUID and its file's capacity, so an attach asks
 * vCenter for nothing but the change itself: about 6 round trips with the lease, where
 * FileVolumes' guarded writes and fresh lookups took 24.
 */
export class VmdkDriver extends FileVolumes {
  readonly kind = 'vmdk';
  readonly transport = 'vmdk' as const;
  private readonly vms = new Map<string, Promise<MoRef>>();
  /** The VM each host (by id) exports to, as learned from its exports: named in the record when it takes the lease. */
  private readonly hostVms = new Map<string, MoRef>();
  private readonly records: VmdkRecords;
  /** What this process learned of a disk file that its record may not say yet, by name@createdAt. */
  private readonly learned = new Map<string, DiskNotes>();
  private readonly holds = new Map<string, Hold>();
  private readonly disks: VirtualDisks;
  /** Snapshots as disk copies in each volume's directory (vmdk-snapshots.ts); clones start as such a copy. */
  readonly snapshots: SnapshotCapable;

  constructor(
    private readonly vsphere: Vsphere,
    private readonly datastoreName: string,
    private readonly backend: VmdkBackendConfig,
    log: Logger,
  ) {
    const lookup = () => vsphere.inventory.datastore(datastoreName);
    const files = new DatastoreFiles(vsphere.client, datastoreName, lookup, join(backend.folder, '.tmp'), (path) => basename(dirname(path)).startsWith('.creating-'));
    const disks = new VirtualDisks(vsphere.client, backend.folder, datastoreName, lookup, backend.provisioning);
    super({ root: backend.folder, shared: true, files, images: () => disks }, log);
    this.disks = disks;
    this.records = new VmdkRecords(files, backend.folder, log);
    const store = new VmdkSnapshots(backend.folder, files, disks, log);
    this.snapshots = {
      createSnapshot: async (volume, name) => store.create(volume, await this.diskOf(volume.name), name),
      listSnapshots: (volume) => store.list(volume),
      removeSnapshot: (volume, name) => store.remove(volume, name),
      createFrom: async (volume, source) => this.createFrom(volume, source, source.snapshot === undefined ? await this.diskOf(source.volume) : await store.source(source.volume, source.snapshot)),
    };
  }

  /**
   * Creates `volume` with a copy of `from` as its disk (given a new UUID). A larger clone's disk
   * is its source's size until its first attach grows it, as for a grow recorded while detached.
   */
  private async createFrom(volume: NewVolume, source: CloneSource, from: DiskSource): Promise<VolumeRecord & { method: 'copy' }> {
    const record = await this.disks.creatingCloneOf(volume.name, from, () => this.create(volume));
    this.learn(record, { capacityKb: from.capacityKb });
    this.log.info('volume cloned', { volume: volume.name, from: source, method: 'copy' });
    return { ...record, method: 'copy' };
  }

  /** A volume's disk and its capacity as ballast made or grew it (its record as this process knows it, or read). */
  private async diskOf(name: string): Promise<DiskSource> {
    const record = this.records.recent(name, READ_FRESH_MS) ?? (await this.records.read(name));
    if (!record) throw new VolumeNotFound(name);
    const capacityKb = this.mergedNotes(record).capacityKb ?? Math.ceil(record.volume.sizeBytes / 1024);
    return { file: this.imagePath(name), capacityKb };
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
    const record = await super.create(volume);
    // Where the record's revision claims begin (vmdk-records.ts); a writer that finds it missing makes it.
    await this.records.makeFirstBucket(record).catch((err: unknown) => this.log.warn('could not make the first claim bucket of a new volume', { volume: volume.name, error: String(err) }));
    // Asked once here, so no attach has to: the record carries it from the first lease change on.
    // (At its final path: vcsim derives a disk's UUID from its path; vSphere keeps it in the disk.)
    const diskUuid = await this.diskUuid(this.imagePath(volume.name)).catch(() => undefined);
    this.learn(record, { capacityKb: Math.ceil(volume.sizeBytes / 1024), ...(diskUuid ? { diskUuid } : {}) });
    this.records.remember(volume.name, { revision: 1, volume: record, notes: {}, atMs: monotonicSeconds() * 1000 });
    return record;
  }

  override async readOwnership(name: string): Promise<Versioned<OwnershipRecord> | undefined> {
    const known = this.records.recent(name, FREE_REUSE_MS);
    const current = known?.volume.ownership.state === 'free' ? known : await this.records.read(name);
    return current && { value: current.volume.ownership, revision: current.revision };
  }

  override async writeOwnership(name: string, expectedRevision: number, next: OwnershipRecord): Promise<number> {
    const written = await this.records.swap(name, expectedRevision, (current) => ({ volume: { ...current.volume, ownership: next }, notes: this.notesFor(name, current, next) }));
    if (next.state === 'held') this.holds.set(name, { detached: new Set() });
    else this.holds.delete(name);
    return written.revision;
  }

  override async grow(name: string, sizeBytes: number): Promise<VolumeRecord> {
    const current = await this.records.read(name);
    if (!current) throw new VolumeNotFound(name);
    if (sizeBytes < current.volume.sizeBytes) {
      throw new InvalidOption(`volume ${name} is ${formatSize(current.volume.sizeBytes)}; volumes can grow but not shrink`);
    }
    const written = await this.records.swap(name, current.revision, (c) => ({ volume: { ...c.volume, sizeBytes }, notes: this.mergedNotes(c) }));
    try {
      for (const disk of await this.attachedAnywhere(written)) {
        await this.vsphere.disks.resize(disk, sizeBytes);
        this.learn(written.volume, { capacityKb: Math.ceil(sizeBytes / 1024) });
      }
    } catch (err) {
      throw vsphereError(`grow the disk of volume ${name}`, err);
    }
    this.log.info('volume grown', { volume: name, sizeBytes });
    return written.volume;
  }

  override async destroy(name: string): Promise<void> {
    for (let attempt = 1; ; attempt += 1) {
      const current = await this.records.read(name);
      if (!current) return;
      const ownership = current.volume.ownership;
      if (ownership.state === 'held') {
        throw new VolumeInUse(`volume ${name} is in use on host ${ownership.holder.hostId} (${ownership.holder.hostname}); unmount it there first`);
      }
      // The claim keeps every writer off the record (an acquire cannot slip in) while the volume goes.
      let revision: number;
      try {
        revision = await this.records.claimNext(name, current);
      } catch (err) {
        if (err instanceof VolumeNotFound) return;
        if (err instanceof StaleRevision && attempt < 8) continue;
        throw err;
      }
      const claimedAt = monotonicSeconds() * 1000;
      const trash = join(this.root, `.deleting-${name}-${randomBytes(4).toString('hex')}`);
      try {
        for (const disk of await this.attachedAnywhere(current)) {
          this.log.warn('detaching a disk left attached to a VM before deleting it', { volume: name, vm: disk.vm.value });
          await this.vsphere.disks.detach(disk);
        }
        if (monotonicSeconds() * 1000 - claimedAt > CLAIM_HOLD_LIMIT_MS) throw new StaleRevision(`volume ${name} took too long to detach; not deleting it under a claim another host may have skipped`);
        await this.files.rename(join(this.root, name), trash);
      } catch (err) {
        await this.records.unclaim(current.volume, revision);
        if (err instanceof VsphereFault) throw vsphereError(`detach volume ${name} before deleting it`, err);
        throw err;
      }
      this.records.forget(name);
      this.holds.delete(name);
      this.learned.delete(learnedKey(current.volume));
      await this.files.removeTree(trash);
      this.log.info('volume destroyed', { volume: name, root: this.where });
      return;
    }
  }

  async export(name: string, initiator: Initiator): Promise<Export> {
    const vm = await this.vmOf(initiator);
    this.hostVms.set(initiator.hostId, vm);
    let record = this.records.recent(name, RECORD_REUSE_MS) ?? (await this.records.read(name));
    if (!record) throw new VolumeNotFound(name);
    const ownership = record.volume.ownership;
    // Taking a disk from another VM is only right for the host that holds the lease.
    if (ownership.state !== 'held' || ownership.holder.hostId !== initiator.hostId) {
      throw new LeaseHeld(`volume ${name} is not leased to host ${initiator.hostId}; it cannot be attached to its VM`);
    }
    const file = this.imagePath(name);
    const hold = this.holdOf(name);
    let attachedNow: AttachedDisk | undefined;
    try {
      // VMs the record names besides this one: the disk is taken off them first.
      const others = (record.notes.vms ?? []).filter((v) => v.value !== vm.value);
      for (const disk of others.length ? await this.vsphere.disks.find(others, file) : []) await this.takeFrom(name, disk, vm, hold);
      for (const other of others) hold.detached.add(other.value);
      if (record.notes.vms && !record.notes.vms.some((v) => v.value === vm.value)) {
        // Named before it is attached: after a crash in between, the next holder knows where to look.
        record = await this.records.swap(name, record.revision, (c) => ({ volume: c.volume, notes: { ...this.mergedNotes(c), vms: [...(c.notes.vms ?? []), vm] } }));
      }
      // A record that names no VMs (made before ballast kept them, or never attached): the poll
      // that sees the attach done also asks every VM on the datastore, in the same round trip.
      const unknown = record.notes.vms === undefined;
      const datastore = (await this.datastore()).ref;
      const { disk, elsewhere, attached } = await this.vsphere.disks.attach(vm, file, unknown ? datastore : undefined).catch(async (err: unknown) => {
        // Refused: a real vCenter refuses a disk another running VM has open (attached by hand,
        // or by a holder the record does not name). Every VM on the datastore is asked; the disk
        // is taken from the others and the attach tried once more.
        if (!(err instanceof VsphereFault)) throw err;
        const holders = (await this.vsphere.disks.findAnywhere([], datastore, file)).filter((d) => d.vm.value !== vm.value);
        if (!holders.length) throw err;
        for (const other of holders) await this.takeFrom(name, other, vm, hold);
        return this.vsphere.disks.attach(vm, file, unknown ? datastore : undefined);
      });
      if (attached) {
        attachedNow = disk;
        this.log.info('disk attached', { volume: name, vm: vm.value, file, unit: `${disk.controllerKey}:${disk.unitNumber}` });
      }
      for (const other of elsewhere) await this.takeFrom(name, other, vm, hold);
      if (unknown) hold.exact = new Map([[vm.value, vm]]);
      else hold.exact?.set(vm.value, vm);
      hold.detached.delete(vm.value);
      const notes = this.mergedNotes(record);
      // A grow recorded while the disk was not attached catches up here. vcsim reports no
      // capacity for a disk it did not make in this VM; then the file's is what ballast noted.
      const wantKb = Math.ceil(record.volume.sizeBytes / 1024);
      const fileKb = disk.capacityKb || (notes.capacityKb ?? 0);
      if (fileKb < wantKb) {
        await this.vsphere.disks.resize({ ...disk, capacityKb: fileKb }, record.volume.sizeBytes);
        this.learn(record.volume, { capacityKb: wantKb });
      }
      const diskUuid = disk.uuid ?? notes.diskUuid ?? (await this.diskUuid(file));
      this.learn(record.volume, { diskUuid });
      return { transport: 'vmdk', diskUuid, file };
    } catch (err) {
      // Only what this call attached is undone: a disk attached before may be in use here.
      if (attachedNow) {
        await this.vsphere.disks.detach(attachedNow).then(
          () => hold.exact?.delete(vm.value),
          (undoErr: unknown) => this.log.error('detaching after a failed export failed', { volume: name, error: String(undoErr) }),
        );
      }
      throw vsphereError(`attach volume ${name} (${file}) to VM ${vm.value}`, err);
    }
  }

  async unexport(name: string, initiator: Initiator): Promise<void> {
    const vm = await this.vmOf(initiator);
    const file = this.imagePath(name);
    try {
      await this.vsphere.disks.detachFile(vm, file);
    } catch (err) {
      throw vsphereError(`detach volume ${name} (${file}) from VM ${vm.value}`, err);
    }
    const hold = this.holds.get(name);
    hold?.detached.add(vm.value);
    hold?.exact?.delete(vm.value);
    this.log.info('disk detached', { volume: name, vm: vm.value, file });
  }

  private async takeFrom(name: string, disk: AttachedDisk, to: MoRef, hold: Hold): Promise<void> {
    this.log.warn('taking the disk from the VM of its former holder', { volume: name, from: disk.vm.value, to: to.value });
    await this.vsphere.disks.detach(disk);
    hold.detached.add(disk.vm.value);
    hold.exact?.delete(disk.vm.value);
  }

  /** Where vCenter has the disk now: on the VMs the record names, or on any VM of the datastore when it names none. */
  private async attachedAnywhere(record: VmdkRecord): Promise<AttachedDisk[]> {
    const file = this.imagePath(record.volume.name);
    if (record.notes.vms === undefined) return this.vsphere.disks.findAnywhere([], (await this.datastore()).ref, file);
    return record.notes.vms.length ? this.vsphere.disks.find(record.notes.vms, file) : [];
  }

  /**
   * The notes of the next revision: what the record says plus what this process learned of the
   * disk; a host taking the lease names its VM (export attaches there next), and a host releasing
   * it drops the VMs it took the disk off while it held it.
   */
  private notesFor(name: string, current: VmdkRecord, next: OwnershipRecord): DiskNotes {
    const notes = this.mergedNotes(current);
    if (notes.vms === undefined && next.state === 'held') return notes;
    const vms = new Map((notes.vms ?? []).map((v) => [v.value, v]));
    const hold = this.holds.get(name);
    if (next.state === 'held') {
      const vm = this.hostVms.get(next.holder.hostId);
      if (vm) vms.set(vm.value, vm);
    } else if (hold?.exact) {
      return { ...notes, vms: [...hold.exact.values()] };
    } else if (hold && notes.vms) {
      for (const id of hold.detached) vms.delete(id);
    } else if (!notes.vms) {
      return notes;
    }
    return { ...notes, vms: [...vms.values()] };
  }

  private mergedNotes(record: VmdkRecord): DiskNotes {
    return { ...record.notes, ...this.learned.get(learnedKey(record.volume)) };
  }

  private learn(volume: VolumeRecord, notes: DiskNotes): void {
    const key = learnedKey(volume);
    this.learned.set(key, { ...this.learned.get(key), ...notes });
  }

  private holdOf(name: string): Hold {
    let hold = this.holds.get(name);
    if (!hold) this.holds.set(name, (hold = { detached: new Set() }));
    return hold;
  }

  /** The disk's UUID as the guest sees it in the WWN: 32 lower-case hex digits. */
  private async diskUuid(file: string): Promise<string> {
    return queryDiskUuid(this.vsphere.client, await this.datastore(), file);
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

/** Learned facts of a disk belong to one volume's life: a volume made again under the name has another disk. */
function learnedKey(volume: Pick<VolumeRecord, 'name' | 'createdAt'>): string {
  return `${volume.name}@${volume.createdAt}`;
}
