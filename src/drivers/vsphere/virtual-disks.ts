import { randomBytes } from 'node:crypto';
import { join } from 'node:path';
import type { VmdkBackendConfig } from '../../config/schema.js';
import { BackendUnavailable } from '../../errors.js';
import type { VolumeImages } from '../images.js';
import type { VsphereClient } from './client.js';
import { vsphereError } from './faults.js';
import type { Datastore } from './inventory.js';
import { textOf } from './soap.js';

const DISK = 'disk.vmdk';
const DISK_TYPES = { thin: 'thin', thick: 'preallocated', eagerZeroedThick: 'eagerZeroedThick' } as const;
/** The slowest copy allowed for, beyond the client's bound: 1 s per 20 MB of capacity (the loop copy's rule). */
const SLOWEST_BYTES_PER_SECOND = 20_000_000;

/** A disk to copy: a volume's or a snapshot's, and its capacity as ballast made or grew it. */
export interface DiskSource {
  file: string;
  capacityKb: number;
}

/** The disk's UUID as the guest sees it in the WWN: 32 lower-case hex digits. */
export async function queryDiskUuid(client: VsphereClient, datastore: Datastore, file: string): Promise<string> {
  const { virtualDiskManager } = await client.serviceContent();
  const uuid = textOf(await client.call('QueryVirtualDiskUuid', virtualDiskManager, { name: file, datacenter: datastore.datacenter.ref }));
  const hex = uuid.replace(/[\s-]/g, '').toLowerCase();
  if (!/^[0-9a-f]{32}$/.test(hex)) throw new BackendUnavailable(`vCenter returned ${JSON.stringify(uuid)} as the UUID of ${file}`);
  return hex;
}

/** Volume data as VMDK files, `[datastore] <folder>/<name>/disk.vmdk`, made by the VirtualDiskManager. */
export class VirtualDisks implements VolumeImages {
  /** Volumes being created as clones: their disk is a copy of this source instead of a new one. */
  private readonly clones = new Map<string, DiskSource>();

  constructor(
    private readonly client: VsphereClient,
    private readonly root: string,
    private readonly datastoreName: string,
    private readonly lookup: () => Promise<Datastore>,
    private readonly provisioning: VmdkBackendConfig['provisioning'],
  ) {}

  path(name: string): string {
    return this.fileIn(join(this.root, name));
  }

  /** `[datastore] <dir>/disk.vmdk`: the disk of a volume's or a snapshot's directory. */
  fileIn(dir: string): string {
    return `[${this.datastoreName}] ${join(dir, DISK)}`;
  }

  /** Runs `create` (FileVolumes.create of volume `name`) with the volume's disk made as a copy of `source`. */
  async creatingCloneOf<T>(name: string, source: DiskSource, create: () => Promise<T>): Promise<T> {
    this.clones.set(name, source);
    try {
      return await create();
    } finally {
      this.clones.delete(name);
    }
  }

  /**
   * Copies the disk `source` to `<dir>/disk.vmdk`, which must not exist: one CopyVirtualDisk_Task,
   * bounded by the client's bound plus 1 s per 20 MB of capacity.
   */
  async copy(source: DiskSource, dir: string): Promise<void> {
    const { virtualDiskManager } = await this.client.serviceContent();
    const dc = (await this.lookup()).datacenter.ref;
    const target = this.fileIn(dir);
    const boundMs = this.client.timeoutMs + Math.ceil((source.capacityKb * 1024) / SLOWEST_BYTES_PER_SECOND) * 1000;
    // No destSpec: vCenter answers NotImplemented to one (vcsim does too); the copy's format is vCenter's choice.
    await this.client.runTask(
      'CopyVirtualDisk_Task',
      virtualDiskManager,
      { sourceName: source.file, sourceDatacenter: dc, destName: target, destDatacenter: dc, force: false },
      `copy ${source.file} to ${target}`,
      boundMs,
    );
  }

  async create(name: string, staging: string, sizeBytes: number): Promise<void> {
    const clone = this.clones.get(name);
    if (clone) return this.createClone(name, staging, clone);
    const { virtualDiskManager } = await this.client.serviceContent();
    const datastore = await this.lookup();
    const file = `[${this.datastoreName}] ${join(staging, DISK)}`;
    await this.client
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

  /**
   * A copy keeps its source's UUID, which is how the guest finds a disk (its WWN): the clone gets
   * a new one, so a volume and its clone can be attached to the same VM.
   */
  private async createClone(name: string, staging: string, source: DiskSource): Promise<void> {
    try {
      await this.copy(source, staging);
      const { virtualDiskManager } = await this.client.serviceContent();
      const datastore = await this.lookup();
      await this.client.call('SetVirtualDiskUuid', virtualDiskManager, { name: this.fileIn(staging), datacenter: datastore.datacenter.ref, uuid: newDiskUuid() });
    } catch (err) {
      throw vsphereError(`copy ${source.file} into volume ${name}`, err);
    }
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

/** A disk UUID as vCenter writes them ("60 00 C2 9x xx xx xx xx-xx ..."), VMware's NAA prefix and random bits. */
function newDiskUuid(): string {
  const hex = `6000c29${randomBytes(13).toString('hex').slice(0, 25)}`;
  const bytes = hex.match(/../g)!;
  return `${bytes.slice(0, 8).join(' ')}-${bytes.slice(8).join(' ')}`;
}
