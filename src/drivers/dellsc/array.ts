import { BackendUnavailable, InvalidRequest } from '../../errors.js';
import { LookupCache } from '../../util/lookup-cache.js';
import { DellScRefusal, type DellScClient } from './client.js';

const GIB = 2 ** 30;

/** A ballast volume's Storage Center volume: its instance id ("ssn.n") and WWN. */
export interface ScVolumeRef {
  instanceId: string;
  deviceId: string;
}

interface Instance {
  instanceId: string;
  name?: string;
  instanceName?: string;
}

interface MappingProfile {
  instanceId: string;
  server: Instance;
}

interface Mapping {
  lun: number;
  server: Instance;
  controllerPort: Instance;
}

/** A replay (Storage Center's snapshot) of a volume, as ReplayList and CreateReplay give it. */
export interface ScReplay {
  instanceId: string;
  description?: string;
  /** When its data was frozen. */
  freezeTime?: string;
  /** Expired replays stay listed until Storage Center has freed them. */
  markedForExpiration?: boolean;
  /** "N Bytes": the volume's size when it was taken. */
  size?: string;
}

/** Where a host logs in to reach a mapped volume. */
export interface ScIscsiPath {
  iqn: string;
  portals: string[];
  lun: number;
}

/** The list filter of API 3.x and later (2.x took the filters without the wrapper). */
const filter = (ssn: number, equals: Record<string, string | number>) => ({
  filter: {
    filterType: 'AND',
    filters: [{ attributeName: 'ScSerialNumber', attributeValue: ssn, filterType: 'Equals' }, ...Object.entries(equals).map(([attributeName, attributeValue]) => ({ attributeName, attributeValue, filterType: 'Equals' }))],
  },
});

const notFound = (err: unknown) => err instanceof DellScRefusal && err.status === 404;

/**
 * The Storage Center calls ballast's volumes need, typed: folders, storage profiles, volumes,
 * server objects with their iSCSI HBA, mappings and the controller ports behind them.
 */
export class DellScArray {
  private readonly folders = new LookupCache<string>();

  constructor(
    readonly client: DellScClient,
    readonly ssn: number,
    readonly folder: string,
  ) {}

  /** The volume (or server) folder of that name, made when missing; looked up once. */
  folderId(kind: 'ScVolumeFolder' | 'ScServerFolder'): Promise<string> {
    return this.folders.get(kind, () => this.findOrMakeFolder(kind));
  }

  private async findOrMakeFolder(kind: string): Promise<string> {
    const found = await this.client.call<Instance[]>('POST', `StorageCenter/${kind}/GetList`, `find folder ${this.folder}`, filter(this.ssn, { Name: this.folder }));
    if (found[0]) return found[0].instanceId;
    return (await this.client.call<Instance>('POST', `StorageCenter/${kind}`, `make folder ${this.folder}`, { Name: this.folder, StorageCenter: this.ssn })).instanceId;
  }

  async storageProfileId(name: string): Promise<string> {
    const profiles = await this.client.call<Instance[]>('POST', 'StorageCenter/ScStorageProfile/GetList', 'list storage profiles', filter(this.ssn, {}));
    const key = (s: string | undefined) => (s ?? '').replace(/\s+/g, '').toLowerCase();
    const profile = profiles.find((p) => key(p.name) === key(name));
    if (!profile) throw new InvalidRequest(`Storage Center ${this.ssn} has no storage profile "${name}" (it has: ${profiles.map((p) => p.name).join(', ')}); check storage_profile`);
    return profile.instanceId;
  }

  /** Creates a volume of whole GiB in ballast's folder (an asynchronous task). */
  async createVolume(name: string, sizeBytes: number, notes: string, storageProfileId: string | undefined): Promise<ScVolumeRef> {
    const body = { Name: name, Notes: notes, Size: `${Math.ceil(sizeBytes / GIB)} GB`, StorageCenter: this.ssn, VolumeFolder: await this.folderId('ScVolumeFolder'), ...(storageProfileId ? { StorageProfile: storageProfileId } : {}) };
    const made = await this.client.call<ScVolumeRef>('POST', 'StorageCenter/ScVolume', `create volume ${name}`, body, { async: true }).catch((err: unknown) => {
      if (err instanceof DellScRefusal) throw new InvalidRequest(`${err.message}; check the Storage Center's free space and the storage profile`);
      throw err;
    });
    return { instanceId: made.instanceId, deviceId: made.deviceId };
  }

  async deleteVolume(id: string, name: string): Promise<void> {
    await this.client.call('DELETE', `StorageCenter/ScVolume/${id}`, `delete volume ${name}`, undefined, { async: true }).catch((err: unknown) => {
      if (!notFound(err)) throw err;
    });
  }

  async expand(id: string, name: string, sizeBytes: number): Promise<void> {
    await this.client.call('POST', `StorageCenter/ScVolume/${id}/ExpandToSize`, `grow volume ${name}`, { NewSize: `${Math.ceil(sizeBytes / GIB)} GB` });
  }

  /** Freezes the volume's data in a replay; `expireMinutes` 0 keeps it until it is expired. */
  async createReplay(id: string, name: string, description: string, expireMinutes: number): Promise<ScReplay> {
    return this.client.call<ScReplay>('POST', `StorageCenter/ScVolume/${id}/CreateReplay`, `take a replay of volume ${name}`, { description, expireTime: expireMinutes }, { async: true }).catch((err: unknown) => {
      if (err instanceof DellScRefusal) throw new InvalidRequest(`${err.message}; check the Storage Center's free space`);
      throw err;
    });
  }

  /** The volume's replays, expired ones included (markedForExpiration). */
  async replays(id: string, name: string): Promise<ScReplay[]> {
    return this.client.call<ScReplay[]>('GET', `StorageCenter/ScVolume/${id}/ReplayList`, `list the replays of volume ${name}`).catch((err: unknown) => {
      if (notFound(err)) throw new BackendUnavailable(`${(err as Error).message}; Storage Center ${this.ssn} has no volume ${id}: it was deleted on the array, outside ballast`);
      throw err;
    });
  }

  /** Expires the replay: Storage Center frees it once no view volume needs it. Gone already is fine. */
  async expireReplay(replayId: string, what: string): Promise<void> {
    await this.client.call('POST', `StorageCenter/ScReplay/${replayId}/Expire`, `expire ${what}`, {}, { async: true }).catch((err: unknown) => {
      if (!notFound(err)) throw err;
    });
  }

  /** A new volume in ballast's folder whose data is the replay's: a view volume. */
  async createView(replayId: string, name: string, notes: string): Promise<ScVolumeRef> {
    const body = { Name: name, Notes: notes, VolumeFolder: await this.folderId('ScVolumeFolder') };
    const made = await this.client.call<ScVolumeRef>('POST', `StorageCenter/ScReplay/${replayId}/CreateView`, `create view volume ${name}`, body, { async: true }).catch((err: unknown) => {
      if (err instanceof DellScRefusal) throw new InvalidRequest(`${err.message}; check the Storage Center's free space`);
      throw err;
    });
    return { instanceId: made.instanceId, deviceId: made.deviceId };
  }

  /** The server object with this iSCSI initiator, made (with its HBA) when the array has none. */
  async serverFor(iqn: string, name: string): Promise<string> {
    const hbas = await this.client.call<{ server: Instance }[]>('POST', 'StorageCenter/ScServerHba/GetList', `find the server of ${iqn}`, filter(this.ssn, { instanceName: iqn }));
    if (hbas[0]) return hbas[0].server.instanceId;
    const systems = await this.client.call<Instance[]>('POST', 'StorageCenter/ScServerOperatingSystem/GetList', 'list server operating systems', filter(this.ssn, {}));
    const linux = systems.find((s) => /linux/i.test(s.name ?? ''));
    const body = { Name: name, StorageCenter: this.ssn, ServerFolder: await this.folderId('ScServerFolder'), Notes: 'made by ballast', ...(linux ? { OperatingSystem: linux.instanceId } : {}) };
    const server = await this.client.call<Instance>('POST', 'StorageCenter/ScPhysicalServer', `make server ${name}`, body, { async: true });
    await this.client.call('POST', `StorageCenter/ScPhysicalServer/${server.instanceId}/AddHba`, `add HBA ${iqn} to server ${name}`, { HbaPortType: 'Iscsi', WwnOrIscsiName: iqn, AllowManual: true });
    return server.instanceId;
  }

  async mappingProfiles(id: string, name: string): Promise<MappingProfile[]> {
    return this.client.call<MappingProfile[]>('GET', `StorageCenter/ScVolume/${id}/MappingProfileList`, `list the mappings of volume ${name}`);
  }

  async map(id: string, name: string, serverId: string): Promise<void> {
    await this.client.call('POST', `StorageCenter/ScVolume/${id}/MapToServer`, `map volume ${name}`, { server: serverId, Advanced: { MapToDownServerHbas: true } }, { async: true });
  }

  async unmap(profile: MappingProfile, name: string): Promise<void> {
    await this.client.call('DELETE', `StorageCenter/ScMappingProfile/${profile.instanceId}`, `unmap volume ${name} from ${profile.server.instanceName ?? profile.server.instanceId}`, undefined, { async: true }).catch((err: unknown) => {
      if (!notFound(err)) throw err;
    });
  }

  /**
   * The target, portals and LUN through which `serverId` reaches the volume. A Storage Center in
   * legacy port mode has a target per controller port: the IQN with the most portals is taken.
   */
  async iscsiPath(id: string, name: string, serverId: string): Promise<ScIscsiPath> {
    const mappings = (await this.client.call<Mapping[]>('GET', `StorageCenter/ScVolume/${id}/MappingList`, `list the paths of volume ${name}`)).filter((m) => m.server.instanceId === serverId);
    const byIqn = new Map<string, { portals: string[]; lun: number }>();
    for (const port of new Map(mappings.map((m) => [m.controllerPort.instanceId, m])).values()) {
      const cp = port.controllerPort.instanceId;
      const { iscsiName } = await this.client.call<{ iscsiName: string }>('GET', `StorageCenter/ScControllerPort/${cp}`, `read controller port ${cp}`);
      const { ipAddress, portNumber } = await this.client.call<{ ipAddress: string; portNumber: number }>('GET', `StorageCenter/ScControllerPortIscsiConfiguration/${cp}`, `read the iSCSI address of controller port ${cp}`);
      const entry = byIqn.get(iscsiName) ?? { portals: [], lun: port.lun };
      entry.portals.push(`${ipAddress}:${portNumber}`);
      byIqn.set(iscsiName, entry);
    }
    const best = [...byIqn].sort((a, b) => b[1].portals.length - a[1].portals.length)[0];
    if (!best) throw new InvalidRequest(`Storage Center ${this.ssn} shows no iSCSI path from this host's server to volume ${name}: check that its controller ports serve iSCSI`);
    return { iqn: best[0], ...best[1] };
  }
}
