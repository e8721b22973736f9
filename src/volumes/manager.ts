import type { Config } from '../config/schema.js';
import type { Attacher } from '../attach/types.js';
import type { Filesystem } from '../attach/filesystem.js';
import type { Luks } from '../attach/luks.js';
import type { MountTable } from '../util/mountinfo.js';
import type { BackendDriver, VolumeRecord } from '../drivers/index.js';
import { BackendUnavailable, OperationError, VolumeInUse, VolumeNotFound, errorMessage } from '../errors.js';
import type { Export } from '../export.js';
import type { Logger } from '../log.js';
import type { HostLiveness } from '../ownership/lease.js';
import type { HostIdentity } from '../ownership/types.js';
import { Backends } from './backends.js';
import type { ContainerUsage } from './container-usage.js';
import { VolumeCreation } from './creation.js';
import { EncryptionKeys } from './encryption-keys.js';
import { FrozenFilesystems } from './frozen-filesystems.js';
import { hostIoLimits, IoLimitEnforcer, type Throttled } from './io-limits.js';
import { LeaseUpkeep } from './lease-upkeep.js';
import { MountSequence } from './mount-sequence.js';
import { totalRefs, type MountedVolume, type MountStateStore } from './mount-state.js';
import { Mounts } from './mounts.js';
import { mergeInline, parseRequestedName } from './names.js';
import { OperatorCommands } from './operator.js';
import { optionConflicts, parseVolumeOptions, resolveSpec, type VolumeSpec } from './options.js';
import { Reconciler } from './reconcile.js';
import { VolumeSnapshots, type SnapshotHost } from './snapshots.js';
import { VolumeLocks } from './volume-locks.js';
import { volumeView, type VolumeView } from './volume-view.js';

export interface VolumeManagerDeps {
  config: Config;
  identity: HostIdentity;
  drivers: Map<string, BackendDriver>;
  attachers: Map<Export['transport'], Attacher>;
  filesystem: Filesystem;
  /** Opens and closes the LUKS devices of encrypted volumes. */
  luks: Luks;
  mountTable: MountTable;
  state: MountStateStore;
  /** Asked after dockerd restarts which volumes running containers still use. */
  usage: ContainerUsage;
  log: Logger;
  /** Starts the fence watchdog process if it is not running (shared backends only). */
  startWatchdog?: () => void;
  /** Injected for tests: how to wait between attempts (Docker API, a held lease). */
  sleep?: (ms: number) => Promise<void>;
}

/**
 * Docker's volume semantics over backend drivers, the ownership lease and the attachers. Each
 * call takes the volume's lock (volume-locks.ts) and hands the work to the module that does it:
 * backends.ts finds volumes, mounts.ts keeps this host's mounts and their references,
 * creation.ts creates, reconcile.ts recovers after restarts, operator.ts serves the `ballast` command.
 */
export class VolumeManager {
  private readonly backends: Backends;
  private readonly locks: VolumeLocks;
  private readonly mounts: Mounts;
  private readonly creation: VolumeCreation;
  private readonly reconciler: Reconciler;
  private readonly operator: OperatorCommands;
  private readonly frozen: FrozenFilesystems;
  readonly upkeep: LeaseUpkeep;
  readonly snapshots: VolumeSnapshots;
  readonly ioLimits: IoLimitEnforcer;
  /** List's last reply, reused while the index and this host's mounts stand still. */
  private listed?: { indexVersion: number; mountsVersion: number; views: VolumeView[] };

  constructor(private readonly deps: VolumeManagerDeps) {
    const { config, identity, log } = deps;
    const backends = (this.backends = new Backends(deps));
    const locks = (this.locks = new VolumeLocks(config.timeouts.volume_lock_seconds * 1000, backends.index));
    this.upkeep = new LeaseUpkeep(
      {
        liveness: backends.liveness,
        mountedVolumes: () => this.mounts.all(),
        ownerOf: (name) => backends.ownerOf(name),
        withVolumeLock: (name, body) => locks.run(name, body),
      },
      deps,
    );
    const keys = new EncryptionKeys(config);
    const sequence = new MountSequence({ ...deps, keys, hostId: identity.hostId });
    const mounts = (this.mounts = new Mounts(deps, backends, sequence, this.upkeep));
    this.frozen = new FrozenFilesystems(config.state_dir, deps.filesystem, deps.mountTable, log);
    const snapshotHost: SnapshotHost = {
      find: (name) => backends.find(name),
      leaseOf: (driver) => backends.leaseOf(driver),
      mountedHere: (name) => mounts.inUse(name),
      locked: (op, name, body) => locks.op(op, name, body),
      driverOfProfile: (profile) => backends.driverFor(profile),
    };
    this.snapshots = new VolumeSnapshots(snapshotHost, backends.drivers, this.frozen, config, log);
    this.creation = new VolumeCreation(backends, this.snapshots, keys);
    this.reconciler = new Reconciler(deps, backends, mounts, sequence, locks);
    this.operator = new OperatorCommands(config, identity.hostId, backends, mounts, locks, (driver, record) => this.view(driver, record));
    this.ioLimits = new IoLimitEnforcer(config.docker.socket, (dockerName) => this.throttled(dockerName), log, () =>
      [...mounts.all().keys()].some((name) => hostIoLimits(backends.index.cached(name))),
    );
  }

  /** Host leases of the backends several hosts share. */
  get liveness(): ReadonlyMap<BackendDriver, HostLiveness> {
    return this.backends.liveness;
  }

  /** The stale-ID prune started by the latest dockerd restart, for tests and shutdown. */
  get staleIdPrune(): Promise<void> {
    return this.reconciler.staleIdPrune;
  }

  /** Loads the persisted references and reconciles them with the kernel and the backends. */
  async start(): Promise<void> {
    await this.mounts.load();
    await this.frozen.thawLeftovers();
    for (const driver of this.backends.drivers) await driver.start?.();
    await this.upkeep.start();
    await this.reconciler.reconcile();
    this.backends.index.start();
    this.ioLimits.start();
  }

  /** Stops renewing host leases (graceful shutdown). The watchdog keeps guarding mounted volumes. */
  async stop(): Promise<void> {
    this.backends.index.stop();
    this.ioLimits.stop();
    await this.upkeep.stop();
  }

  /** Plugin.Activate: a new dockerd, whose predecessor's mount IDs are stale (reconcile.ts). */
  activate(): Promise<void> {
    return this.reconciler.dockerdRestarted();
  }

  scope(): 'local' | 'global' {
    return this.backends.scope();
  }

  /** `as` is the name Docker gives: a volume name, or inline options naming one (names.ts). */
  async create(as: string, opts: Record<string, string> | null | undefined): Promise<void> {
    const { name, inline } = parseRequestedName(as);
    const requested = parseVolumeOptions(mergeInline(inline, opts), this.deps.config);
    // A clone's size and filesystem come from its source: resolved once the source is read.
    const spec = requested.from ? undefined : resolveSpec(name, requested, this.deps.config);
    // A new volume is put into the index; an existing one was read afresh.
    await this.locks.op('create', name, () => this.creation.create(name, requested, spec), true);
  }

  /** Deletes the volume; one with snapshots only when told to take them with it. */
  async remove(as: string, withSnapshots = false): Promise<void> {
    const { name } = parseRequestedName(as);
    await this.locks.op('remove', name, async () => {
      const local = this.mounts.inUse(name);
      if (local) throw new VolumeInUse(`volume ${name} is mounted on this host by ${totalRefs(local)} container mount(s); stop them first`);
      const found = await this.backends.find(name);
      if (!found) return;
      const snapshots = withSnapshots ? [] : await this.snapshots.namesOf(found.driver, name);
      if (snapshots.length) {
        throw new VolumeInUse(
          `volume ${name} has ${snapshots.length} snapshot(s) (${snapshots.join(', ')}): remove them first (ballast snapshot rm ${name} SNAPSHOT), ` +
            `or remove the volume with them (ballast volume rm --with-snapshots ${name})`,
        );
      }
      const lease = this.backends.leaseOf(found.driver);
      await lease.assertNotHeldElsewhere(name);
      const ownership = (await found.driver.readOwnership(name))?.value;
      if (ownership && lease.heldByMe(ownership)) await lease.release(name);
      await found.driver.destroy(name);
      this.backends.index.remove(name);
    });
  }

  /** Mount(Name, ID): the whole path is Mounts.mount, under the volume's lock. */
  async mount(as: string, id: string): Promise<string> {
    const { name } = parseRequestedName(as);
    return this.locks.op('mount', name, () => this.mounts.mount(name, id));
  }

  async unmount(as: string, id: string): Promise<void> {
    const { name } = parseRequestedName(as);
    await this.locks.op('unmount', name, () => this.mounts.unmount(name, id));
  }

  async path(as: string): Promise<string> {
    const { name } = parseRequestedName(as);
    const found = await this.backends.find(name);
    if (!found) throw new OperationError('path', name, new VolumeNotFound(name));
    return this.mounts.mountpointOf(name);
  }

  /** Cheap and side-effect free: dockerd calls it on nearly every operation, for every driver. */
  async get(as: string): Promise<VolumeView> {
    const { name, inline } = parseRequestedName(as);
    const view = await this.getView(name);
    if (!inline) return view;
    // Inline options that the volume does not match: not this volume, so dockerd sends Create, which says why.
    const record = this.backends.index.cached(name)?.record;
    if (record && optionConflicts(record as VolumeSpec, parseVolumeOptions(inline, this.deps.config)).length) throw new VolumeNotFound(as);
    return { ...view, name: as }; // Docker keys the volume by the name it gave
  }

  private async getView(name: string): Promise<VolumeView> {
    const hit = await this.backends.index.lookup(name);
    if (hit) return this.view(hit.driver, hit.record, hit.error);
    let found: { driver: BackendDriver; record: VolumeRecord } | undefined;
    try {
      found = await this.backends.find(name);
    } catch (err) {
      // An Err here makes dockerd forget the volume: report it unhealthy instead.
      const cached = this.backends.index.cached(name);
      if (!cached || !(err instanceof BackendUnavailable)) throw new OperationError('get', name, err);
      return this.view(cached.driver, cached.record, errorMessage(err));
    }
    if (!found) throw new VolumeNotFound(name);
    return this.view(found.driver, found.record);
  }

  /**
   * Views for List. Docker reads only the names and mountpoints, so its reply is reused while the
   * index and mounts stand still; `ballast volume ls` (reuse false) also shows lease ages, built afresh.
   */
  async list(reuse = true): Promise<VolumeView[]> {
    const { index } = this.backends;
    const { entries, cacheable } = await index.all();
    const listed = this.listed;
    if (reuse && cacheable && listed?.indexVersion === index.version && listed.mountsVersion === this.mounts.version) return listed.views;
    const views = entries.map((e) => this.view(e.driver, e.record, e.error)).sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0));
    this.listed = cacheable ? { indexVersion: index.version, mountsVersion: this.mounts.version, views } : undefined;
    return views;
  }

  /** Raises a volume's size (operator.ts). */
  grow(name: string, sizeBytes: number): Promise<VolumeView> {
    return this.operator.grow(name, sizeBytes);
  }

  /** The operator's `ballast volume release NAME --force` (operator.ts). */
  forceRelease(name: string): Promise<VolumeView> {
    return this.operator.forceRelease(name);
  }

  /** Every host lease on the shared backends (operator.ts). */
  hosts(): Promise<Record<string, unknown>[]> {
    return this.operator.hosts();
  }

  /** Mount references held on this host, for the operator command. */
  mountedVolumes(): ReadonlyMap<string, MountedVolume> {
    return this.mounts.all();
  }

  /** A volume Docker names, when it is mounted here and has IO limits. */
  private throttled(dockerName: string): Throttled | undefined {
    let name: string;
    try {
      name = parseRequestedName(dockerName).name;
    } catch {
      return undefined;
    }
    const mounted = this.mounts.all().get(name);
    const limits = hostIoLimits(this.backends.index.cached(name));
    return mounted && limits ? { volume: name, device: mounted.device, limits } : undefined;
  }

  private view(driver: BackendDriver, record: VolumeRecord, unhealthy?: string): VolumeView {
    return volumeView(driver, record, {
      hostId: this.deps.identity.hostId,
      local: this.mounts.all().get(record.name),
      mountpoint: this.mounts.mountpointOf(record.name),
      leaseAge: (hostId) => this.upkeep.leaseAge(driver, hostId),
      unhealthy,
    });
  }
}
