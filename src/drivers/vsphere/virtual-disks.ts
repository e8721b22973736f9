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
  constructor(
    private readonly client: VsphereClient,
    private readonly root: string,
    private readonly datastoreName: string,
    private readonly lookup: () => Promise<Datastore>,
    private readonly provisioning: VmdkBackendConfig['provisioning'],
  ) {}

  path(name: string): string {
    return `[${this.datastoreName}] ${join(this.root, name, DISK)}`;
  }

  async create(name: string, staging: string, sizeBytes: number): Promise<void> {
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
