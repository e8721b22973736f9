import { BackendUnavailable } from '../../errors.js';
import type { VsphereClient } from './client.js';
import { asArray, refOf, textOf, type MoRef } from './soap.js';

export interface Datacenter {
  name: string;
  ref: MoRef;
}

export interface Datastore {
  name: string;
  ref: MoRef;
  browser: MoRef;
  datacenter: Datacenter;
}

export interface DatastoreSpace {
  accessible: boolean;
  freeBytes: number;
  capacityBytes: number;
}

/**
 * Finds the datacenter, datastores and VMs ballast works with. Names and references do not
 * change while ballast runs, so they are looked up once.
 */
export class Inventory {
  private datacenterFound: Promise<Datacenter> | undefined;
  private readonly datastores = new Map<string, Promise<Datastore>>();

  constructor(
    private readonly client: VsphereClient,
    private readonly datacenterName?: string,
  ) {}

  datacenter(): Promise<Datacenter> {
    this.datacenterFound ??= this.findDatacenter().catch((err: unknown) => {
      this.datacenterFound = undefined;
      throw err;
    });
    return this.datacenterFound;
  }

  datastore(name: string): Promise<Datastore> {
    let found = this.datastores.get(name);
    if (!found) {
      found = this.findDatastore(name).catch((err: unknown) => {
        this.datastores.delete(name);
        throw err;
      });
      this.datastores.set(name, found);
    }
    return found;
  }

  async space(datastore: Datastore): Promise<DatastoreSpace> {
    const props = await this.client.propertiesOf(datastore.ref, ['summary.accessible', 'summary.freeSpace', 'summary.capacity']);
    return {
      accessible: textOf(props['summary.accessible']) === 'true',
      freeBytes: Number(textOf(props['summary.freeSpace'])),
      capacityBytes: Number(textOf(props['summary.capacity'])),
    };
  }

  /**
   * The VM with this BIOS UUID. Older VM hardware shows the guest the first three fields of
   * the UUID byte-swapped in /sys/class/dmi/id/product_uuid, so both forms are tried.
   */
  async vmByBiosUuid(uuid: string): Promise<MoRef> {
    const { searchIndex } = await this.client.serviceContent();
    const datacenter = await this.datacenter();
    for (const candidate of [uuid.toLowerCase(), swapUuidEndianness(uuid.toLowerCase())]) {
      const found = await this.client.call('FindByUuid', searchIndex, { datacenter: datacenter.ref, uuid: candidate, vmSearch: true });
      if (found) return refOf(found);
    }
    throw new BackendUnavailable(
      `no VM with BIOS UUID ${uuid} in datacenter ${datacenter.name}: is this host a VM of that vCenter? ` +
        'ballast reads the UUID from /sys/class/dmi/id/product_uuid; set backends.vmdk.vm_uuid if that is not the VM',
    );
  }

  /** The VMs vCenter lists as using a datastore (their home or any disk on it). */
  async vmsOn(datastore: Datastore): Promise<MoRef[]> {
    const props = await this.client.propertiesOf(datastore.ref, ['vm']);
    return asArray(props.vm?.ManagedObjectReference).map(refOf);
  }

  private async findDatacenter(): Promise<Datacenter> {
    const { rootFolder, searchIndex } = await this.client.serviceContent();
    if (this.datacenterName) {
      const found = await this.client.call('FindByInventoryPath', searchIndex, { inventoryPath: this.datacenterName });
      if (!found || refOf(found).type !== 'Datacenter') {
        throw new BackendUnavailable(`vCenter ${this.client.url} has no datacenter ${this.datacenterName} (backends.vmdk.datacenter)`);
      }
      return { name: this.datacenterName, ref: refOf(found) };
    }
    const children = asArray((await this.client.propertiesOf(rootFolder, ['childEntity'])).childEntity?.ManagedObjectReference).map(refOf);
    const datacenters = children.filter((c) => c.type === 'Datacenter');
    const names = await this.client.properties(datacenters, ['name']);
    if (datacenters.length !== 1) {
      const listed = [...names.values()].map((p) => textOf(p.name)).join(', ') || 'none';
      throw new BackendUnavailable(`vCenter ${this.client.url} has ${datacenters.length} datacenters at its root (${listed}); name one in backends.vmdk.datacenter`);
    }
    return { name: textOf(names.get(datacenters[0]!.value)?.name), ref: datacenters[0]! };
  }

  private async findDatastore(name: string): Promise<Datastore> {
    const datacenter = await this.datacenter();
    const { searchIndex } = await this.client.serviceContent();
    const found = await this.client.call('FindByInventoryPath', searchIndex, { inventoryPath: `${datacenter.name}/datastore/${name}` });
    if (!found || refOf(found).type !== 'Datastore') {
      const all = asArray((await this.client.propertiesOf(datacenter.ref, ['datastore'])).datastore?.ManagedObjectReference).map(refOf);
      const names = [...(await this.client.properties(all, ['name'])).values()].map((p) => textOf(p.name));
      throw new BackendUnavailable(`datastore ${name} does not exist in datacenter ${datacenter.name} (datastores there: ${names.join(', ') || 'none'})`);
    }
    const ref = refOf(found);
    const props = await this.client.propertiesOf(ref, ['browser']);
    return { name, ref, browser: refOf(props.browser), datacenter };
  }
}

/** "00112233-4455-6677-..." -> "33221100-5544-7766-...": the SMBIOS byte order older hardware shows. */
export function swapUuidEndianness(uuid: string): string {
  const hex = uuid.replace(/-/g, '');
  if (!/^[0-9a-f]{32}$/.test(hex)) return uuid;
  const swap = (part: string) => part.match(/../g)!.reverse().join('');
  const parts = [swap(hex.slice(0, 8)), swap(hex.slice(8, 12)), swap(hex.slice(12, 16)), hex.slice(16, 20), hex.slice(20)];
  return parts.join('-');
}
