import type { Config } from '../config/schema.js';
import { formatSize } from '../config/size.js';
import type { CopyProgress } from '../drivers/image-copy.js';
import type { BackendDriver, CloneSource, NewVolume, SnapshotCapable, SnapshotRecord, VolumeRecord } from '../drivers/types.js';
import { InvalidOption, NotSupported, SnapshotNotFound, VolumeInUse, VolumeNotFound } from '../errors.js';
import type { Logger } from '../log.js';
import { describeHolder, type OwnershipLease } from '../ownership/lease.js';
import type { FrozenFilesystems } from './frozen-filesystems.js';
import type { MountedVolume } from './mount-state.js';
import { assertVolumeName } from './names.js';
import type { RequestedOptions } from './options.js';

/** What snapshots need of the volume manager. */
export interface SnapshotHost {
  /** The volume read afresh from its backend. */
  find(name: string): Promise<{ driver: BackendDriver; record: VolumeRecord } | undefined>;
  leaseOf(driver: BackendDriver): OwnershipLease;
  /** The volume when containers on this host have it mounted. */
  mountedHere(name: string): MountedVolume | undefined;
  /** Runs `body` under the volume's lock, as every call that may change it does. */
  locked<T>(op: string, name: string, body: () => Promise<T>): Promise<T>;
  driverOfProfile(profile: string): BackendDriver;
}

type Progress = (p: CopyProgress) => void;

/**
 * Snapshots and clones over the backends that have them. A copy of a volume's data is taken
 * while nothing can change it: frozen (fsfreeze) when containers on this host use it, under this
 * host's lease when no host does, refused while another host holds it.
 */
export class VolumeSnapshots {
  constructor(
    private readonly host: SnapshotHost,
    private readonly drivers: BackendDriver[],
    private readonly frozen: FrozenFilesystems,
    private readonly config: Config,
    private readonly log: Logger,
  ) {}

  async create(volume: string, name: string, onProgress?: Progress): Promise<SnapshotRecord & { writtenBytes: number }> {
    assertVolumeName(volume);
    assertSnapshotName(name);
    return this.host.locked('snapshot', volume, async () => {
      const found = await this.found(volume);
      const capable = this.capable(found.driver, volume);
      return this.whileStill(found, () => capable.createSnapshot(found.record, name, onProgress));
    });
  }

  /** The snapshots of `volume`, or of every volume on every backend that keeps them. */
  async list(volume?: string): Promise<SnapshotRecord[]> {
    if (volume === undefined) {
      const all = await Promise.all(this.drivers.map((d) => d.snapshots?.listSnapshots() ?? []));
      return all.flat();
    }
    assertVolumeName(volume);
    const found = await this.found(volume);
    return found.driver.snapshots ? found.driver.snapshots.listSnapshots(volume) : [];
  }

  async remove(volume: string, name: string): Promise<void> {
    assertVolumeName(volume);
    assertSnapshotName(name);
    await this.host.locked('remove snapshot', volume, async () => {
      const found = await this.found(volume);
      await this.capable(found.driver, volume).removeSnapshot(volume, name);
    });
  }

  /**
   * Creates `name` as a clone of `requested.from`: the source's filesystem, at least its size, on
   * its backend. Called under `name`'s lock; takes the source's lock for the copy.
   */
  async clone(name: string, requested: RequestedOptions & { from: CloneSource }): Promise<{ driver: BackendDriver; record: VolumeRecord }> {
    const { from } = requested;
    const source = await this.host.find(from.volume);
    if (!source) throw new InvalidOption(`option from=${describe(from)}: volume ${from.volume} does not exist`);
    const capable = this.capable(source.driver, from.volume);
    const spec = this.cloneSpec(name, requested, source.driver, source.record);
    return this.host.locked('clone', from.volume, async () => {
      let record: VolumeRecord;
      if (from.snapshot === undefined) {
        const fresh = await this.found(from.volume);
        record = await this.whileStill(fresh, () => capable.createFrom(spec, from));
      } else {
        const snapshot = (await capable.listSnapshots(from.volume)).find((s) => s.name === from.snapshot);
        if (!snapshot) throw new SnapshotNotFound(from.volume, from.snapshot);
        record = await capable.createFrom({ ...spec, sizeBytes: Math.max(spec.sizeBytes, snapshot.sizeBytes) }, from);
      }
      return { driver: source.driver, record };
    });
  }

  /** The names of the volume's snapshots (Remove refuses a volume that has any); none where the backend keeps none. */
  async namesOf(driver: BackendDriver, volume: string): Promise<string[]> {
    return driver.snapshots ? (await driver.snapshots.listSnapshots(volume)).map((s) => s.name) : [];
  }

  private cloneSpec(name: string, requested: RequestedOptions, driver: BackendDriver, source: VolumeRecord): NewVolume {
    const from = describe(requested.from!);
    if (requested.profile !== undefined && this.host.driverOfProfile(requested.profile) !== driver) {
      throw new InvalidOption(`option profile=${requested.profile}: a clone lives on its source's backend (${source.name} is on profile ${source.profile})`);
    }
    if (requested.fstype !== undefined && requested.fstype !== source.fstype) {
      throw new InvalidOption(`option fstype=${requested.fstype}: a clone keeps its source's filesystem (${source.name} is ${source.fstype})`);
    }
    if (requested.mkfsOpts !== undefined) throw new InvalidOption(`option mkfsopts: a clone of ${from} is not formatted; it keeps its source's filesystem`);
    const sizeBytes = requested.sizeBytes ?? source.sizeBytes;
    if (sizeBytes < source.sizeBytes) {
      throw new InvalidOption(`option size=${formatSize(sizeBytes)}: a clone cannot be smaller than its source ${source.name} (${formatSize(source.sizeBytes)})`);
    }
    if (sizeBytes > this.config.limits.max_size) {
      throw new InvalidOption(`option size=${formatSize(sizeBytes)}: the largest volume allowed is ${formatSize(this.config.limits.max_size)} (limits.max_size)`);
    }
    if (requested.encrypted !== undefined && requested.encrypted !== (source.encryption !== undefined)) {
      throw new InvalidOption(`option encrypted=${requested.encrypted}: a clone keeps its source's encryption (${source.name} is ${source.encryption ? '' : 'not '}encrypted)`);
    }
    if (source.encryption?.key === 'profile' && requested.profile !== undefined && requested.profile !== source.profile) {
      throw new InvalidOption(`option profile=${requested.profile}: a clone of ${source.name} opens with its source's key, the key_file of profile ${source.profile}: keep that profile`);
    }
    const mountOpts = requested.mountOpts ?? source.mountOpts;
    return {
      name,
      profile: requested.profile ?? source.profile,
      sizeBytes,
      fstype: source.fstype,
      mkfsOpts: source.mkfsOpts,
      // xfs refuses to mount a second filesystem with the same UUID as one already mounted.
      mountOpts: source.fstype === 'xfs' && !mountOpts.includes('nouuid') ? [...mountOpts, 'nouuid'] : mountOpts,
      readonly: requested.readonly ?? false,
      // The copy is the source's ciphertext: it opens with the source's key.
      ...(source.encryption ? { encryption: source.encryption } : {}),
    };
  }

  /** Runs `body` while the volume's data cannot change. */
  private async whileStill<T>({ driver, record }: { driver: BackendDriver; record: VolumeRecord }, body: () => Promise<T>): Promise<T> {
    const local = this.host.mountedHere(record.name);
    if (local) return this.frozen.whileFrozen(record.name, local.mountpoint, local.device, body);
    const lease = this.host.leaseOf(driver);
    const { ownership } = record;
    if (ownership.state === 'held' && !lease.heldByMe(ownership)) {
      throw new VolumeInUse(
        `volume ${record.name} is in use on ${describeHolder(ownership)}: its data may change there while it is copied. ` +
          `Take the snapshot or clone on that host, or once the containers using it have stopped`,
      );
    }
    await lease.acquire(record.name);
    try {
      return await body();
    } finally {
      await lease.release(record.name);
    }
  }

  private async found(volume: string): Promise<{ driver: BackendDriver; record: VolumeRecord }> {
    const found = await this.host.find(volume);
    if (!found) throw new VolumeNotFound(volume);
    return found;
  }

  private capable(driver: BackendDriver, volume: string): SnapshotCapable {
    if (!driver.snapshots) {
      throw new NotSupported(`volume ${volume} is on the ${driver.kind} backend, which has no snapshots or clones in ballast yet (the loop backend has them)`);
    }
    return driver.snapshots;
  }
}

function assertSnapshotName(name: unknown): string {
  try {
    return assertVolumeName(name);
  } catch {
    throw new InvalidOption(`snapshot name ${JSON.stringify(String(name)).slice(0, 140)}: expected letters, digits and _ . - (at most 128, starting with a letter or digit)`);
  }
}

function describe(source: CloneSource): string {
  return source.snapshot === undefined ? source.volume : `${source.volume}@${source.snapshot}`;
}
