import type { Config } from '../config/schema.js';
import { formatSize } from '../config/size.js';
import type { Attacher } from '../attach/types.js';
import type { Filesystem } from '../attach/filesystem.js';
import type { MountTable } from '../util/mountinfo.js';
import { VolumeAlreadyExists, type BackendDriver, type VolumeRecord } from '../drivers/index.js';
import {
  BackendUnavailable,
  InvalidOption,
  OperationError,
  VolumeExists,
  VolumeInUse,
  VolumeNotFound,
  errorMessage,
} from '../errors.js';
import type { Export } from '../export.js';
import type { Logger } from '../log.js';
import { metrics } from '../metrics/registry.js';
import { OwnershipLease, type HostLiveness } from '../ownership/lease.js';
import type { HostIdentity } from '../ownership/types.js';
import { backendLeases } from './backend-leases.js';
import { LeaseUpkeep } from './lease-upkeep.js';
import type { ContainerUsage } from './container-usage.js';
import { KeyedMutex } from './keyed-mutex.js';
import { addRef, markStale, removeRef, totalRefs, type MountedVolume, type MountStateStore } from './mount-state.js';
import { assertVolumeName, mergeInline, parseRequestedName } from './names.js';
import { optionConflicts, parseVolumeOptions, resolveSpec, type VolumeSpec } from './options.js';
import { MountSequence } from './mount-sequence.js';
import { VolumeIndex } from './volume-index.js';
import { FrozenFilesystems } from './frozen-filesystems.js';
import { VolumeSnapshots, type SnapshotHost } from './snapshots.js';
import { IoLimitEnforcer, type Throttled } from './io-limits.js';
import { volumeView, type VolumeView } from './volume-view.js';
import { EncryptionKeys } from './encryption-keys.js';
import type { Luks } from '../attach/luks.js';

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
 * Docker's volume semantics over backend drivers, the ownership lease and the attachers:
 * a per-volume mutex, mount-ID reference counts persisted on disk, startup reconciliation.
 */
export class VolumeManager {
  private readonly locks: KeyedMutex;
  private readonly leases: Map<BackendDriver, OwnershipLease>;
  /** Host leases of the backends several hosts share. */
  readonly liveness: Map<BackendDriver, HostLiveness>;
  readonly upkeep: LeaseUpkeep;
  private readonly sequence: MountSequence;
  private mounted = new Map<string, MountedVolume>();
  /** Every volume in memory: Get and List answer from it (the last record seen, when a backend is down). */
  private readonly index: VolumeIndex;
  /** List's last reply, reused while the index and this host's mounts stand still. */
  private listed?: { indexVersion: number; mountsVersion: number; views: VolumeView[] };
  private mountsVersion = 0;
  /** The stale-ID prune started by the latest dockerd restart, for tests and shutdown. */
  staleIdPrune: Promise<void> = Promise.resolve();
  readonly snapshots: VolumeSnapshots;
  private readonly frozen: FrozenFilesystems;
  readonly ioLimits: IoLimitEnforcer;
  private readonly keys: EncryptionKeys;

  constructor(private readonly deps: VolumeManagerDeps) {
    this.locks = new KeyedMutex(deps.config.timeouts.volume_lock_seconds * 1000);
    const { lease } = deps.config;
    ({ leases: this.leases, liveness: this.liveness } = backendLeases(deps.drivers.values(), deps.identity, lease, deps.log));
    this.index = new VolumeIndex([...new Set(deps.drivers.values())], lease.renew_every * 1000, deps.identity.hostId, deps.log);
    this.upkeep = new LeaseUpkeep(this, deps);
    metrics.nameBackends(deps.drivers);
    this.keys = new EncryptionKeys(deps.config);
    this.sequence = new MountSequence({ ...deps, keys: this.keys, hostId: deps.identity.hostId });
    this.frozen = new FrozenFilesystems(deps.config.state_dir, deps.filesystem, deps.mountTable, deps.log);
    const snapshotHost: SnapshotHost = {
      find: (name) => this.findVolume(name),
      leaseOf: (driver) => this.leaseOf(driver),
      mountedHere: (name) => {
        const volume = this.mounted.get(name);
        return volume && totalRefs(volume) > 0 ? volume : undefined;
      },
      locked: (op, name, body) => this.op(op, name, body),
      driverOfProfile: (profile) => this.driverFor(profile),
    };
    this.snapshots = new VolumeSnapshots(snapshotHost, [...new Set(deps.drivers.values())], this.frozen, deps.config, deps.log);
    this.ioLimits = new IoLimitEnforcer(deps.config.docker.socket, (dockerName) => this.throttled(dockerName), deps.log, () =>
      [...this.mounted.keys()].some((name) => this.index.cached(name)?.record.ioLimits),
    );
  }

  /** A volume Docker names, when it is mounted here and has IO limits. */
  private throttled(dockerName: string): Throttled | undefined {
    let name: string;
    try {
      name = parseRequestedName(dockerName).name;
    } catch {
      return undefined;
    }
    const mounted = this.mounted.get(name);
    const limits = this.index.cached(name)?.record.ioLimits;
    return mounted && limits ? { volume: name, device: mounted.device, limits } : undefined;
  }

  private get log(): Logger {
    return this.deps.log;
  }

  /** Loads the persisted references and reconciles them with the kernel and the backends. */
  async start(): Promise<void> {
    this.mounted = await this.deps.state.load();
    await this.frozen.thawLeftovers();
    for (const driver of new Set(this.deps.drivers.values())) await driver.start?.();
    await this.upkeep.start();
    await this.reconcile();
    this.index.start();
    this.ioLimits.start();
  }

  /** Stops renewing host leases (graceful shutdown). The watchdog keeps guarding mounted volumes. */
  async stop(): Promise<void> {
    this.index.stop();
    this.ioLimits.stop();
    await this.upkeep.stop();
  }

  /**
   * Plugin.Activate comes once from each dockerd process (a dockerd that merely reconnects
   * after a ballast restart does not send it). So any mount ID recorded before an Activate
   * belongs to an earlier dockerd - one that restarted, or crashed together with ballast -
   * and is stale.
   */
  async activate(): Promise<void> {
    if (this.mounted.size === 0) return;
    this.log.info('dockerd activated the plugin (a new dockerd): marking earlier mount IDs stale and reconciling');
    for (const volume of this.mounted.values()) markStale(volume);
    await this.saveMounts();
    await this.reconcile();
    // Containers that died with dockerd never send Unmount. Once dockerd's API answers, drop
    // the stale IDs of volumes no running container uses. In the background: dockerd calls
    // plugins before its API is up, so waiting here would deadlock it.
    this.staleIdPrune = this.pruneStaleIds().catch((err) => {
      this.log.error('pruning stale mount IDs failed', { error: errorMessage(err) });
    });
  }

  scope(): 'local' | 'global' {
    const drivers = [...new Set(this.deps.drivers.values())];
    return drivers.every((d) => d.scope === 'global') ? 'global' : 'local';
  }

  /** `as` is the name Docker gives: a volume name, or inline options naming one (names.ts). */
  async create(as: string, opts: Record<string, string> | null | undefined): Promise<void> {
    const { name, inline } = parseRequestedName(as);
    const requested = parseVolumeOptions(mergeInline(inline, opts), this.deps.config);
    // A clone's size and filesystem come from its source: resolved once the source is read.
    const spec = requested.from ? undefined : resolveSpec(name, requested, this.deps.config);
    await this.op('create', name, async () => {
      const existing = await this.findVolume(name);
      if (existing) return this.checkSameOptions(existing.record, requested);
      if (!spec) {
        const clone = await this.snapshots.clone(name, { ...requested, from: requested.from! });
        return void this.index.put(clone.driver, { value: clone.record, revision: 1 });
      }
      const driver = this.driverFor(spec.profile);
      if (spec.ioLimits && !driver.keepsIoLimits) {
        throw new InvalidOption(`options read_iops, write_iops, read_bps, write_bps: the ${driver.kind} backend of profile ${spec.profile} cannot keep per-volume IO limits yet`);
      }
      if (requested.encrypted) {
        if (!driver.keepsEncryption) throw new InvalidOption(`option encrypted=true: the ${driver.kind} backend of profile ${spec.profile} cannot keep encrypted volumes`);
        spec.encryption = await this.keys.forNewVolume(name, spec.profile).catch((err: Error) => {
          throw new InvalidOption(`option encrypted=true: ${err.message}`);
        });
      }
      try {
        const record = await driver.create(spec);
        this.index.put(driver, { value: record, revision: 1 });
      } catch (err) {
        // Another host (or process) created it first: the same rule as an existing volume.
        if (err instanceof VolumeAlreadyExists) return this.checkSameOptions(err.existing, requested);
        throw err;
      }
    }, true); // a new volume is put into the index; an existing one was read afresh
  }

  /** Deletes the volume; one with snapshots only when told to take them with it. */
  async remove(as: string, withSnapshots = false): Promise<void> {
    const { name } = parseRequestedName(as);
    await this.op('remove', name, async () => {
      const local = this.mounted.get(name);
      if (local && totalRefs(local) > 0) {
        throw new VolumeInUse(`volume ${name} is mounted on this host by ${totalRefs(local)} container mount(s); stop them first`);
      }
      const found = await this.findVolume(name);
      if (!found) return;
      const snapshots = withSnapshots ? [] : await this.snapshots.namesOf(found.driver, name);
      if (snapshots.length) {
        throw new VolumeInUse(
          `volume ${name} has ${snapshots.length} snapshot(s) (${snapshots.join(', ')}): remove them first (ballast snapshot rm ${name} SNAPSHOT), ` +
            `or remove the volume with them (ballast volume rm --with-snapshots ${name})`,
        );
      }
      const lease = this.leaseOf(found.driver);
      await lease.assertNotHeldElsewhere(name);
      const ownership = (await found.driver.readOwnership(name))?.value;
      if (ownership && lease.heldByMe(ownership)) await lease.release(name);
      await found.driver.destroy(name);
      this.index.remove(name);
    });
  }

  async mount(as: string, id: string): Promise<string> {
    const { name } = parseRequestedName(as);
    return this.op('mount', name, async () => {
      const current = this.mounted.get(name);
      if (current) await this.upkeep.check(name, current); // another host may have taken it
      if (current?.fenced) {
        throw new VolumeInUse(`volume ${name} was fenced on this host (${current.fenced}); stop the containers that use it, then it can be mounted again`);
      }
      this.upkeep.assertCanMount(name);
      if (current && (await this.isStillMounted(current))) {
        addRef(current, id);
        await this.saveMounts();
        return current.mountpoint;
      }
      if (current) {
        this.log.warn('recorded mount is gone from the kernel; mounting afresh', { volume: name, mountpoint: current.mountpoint });
        this.mounted.delete(name);
      }
      const mountedVolume = await this.attachAndMount(name);
      addRef(mountedVolume, id);
      this.mounted.set(name, mountedVolume);
      await this.saveMounts();
      await this.upkeep.volumeMounted(name);
      return mountedVolume.mountpoint;
    });
  }

  async unmount(as: string, id: string): Promise<void> {
    const { name } = parseRequestedName(as);
    await this.op('unmount', name, async () => {
      const current = this.mounted.get(name);
      if (!current || !removeRef(current, id)) {
        // dockerd only logs Unmount errors; an unknown ID must not make a mess of anything.
        this.log.warn('unmount of a mount ID this host does not hold; nothing to do', { volume: name, mountId: id });
        return;
      }
      await this.saveMounts();
      if (totalRefs(current) > 0) return;
      await this.unmountAndDetach(name, current);
    });
  }

  async path(as: string): Promise<string> {
    const { name } = parseRequestedName(as);
    const found = await this.findVolume(name);
    if (!found) throw new OperationError('path', name, new VolumeNotFound(name));
    return this.mountpointIfMounted(name);
  }

  /** Cheap and side-effect free: dockerd calls it on nearly every operation, for every driver. */
  async get(as: string): Promise<VolumeView> {
    const { name, inline } = parseRequestedName(as);
    const view = await this.getView(name);
    if (!inline) return view;
    // Inline options that the volume does not match: not this volume, so dockerd sends Create, which says why.
    const record = this.index.cached(name)?.record;
    if (record && optionConflicts(record as VolumeSpec, parseVolumeOptions(inline, this.deps.config)).length) throw new VolumeNotFound(as);
    return { ...view, name: as }; // Docker keys the volume by the name it gave
  }

  private async getView(name: string): Promise<VolumeView> {
    const hit = await this.index.lookup(name);
    if (hit) return this.view(hit.driver, hit.record, hit.error);
    let found: { driver: BackendDriver; record: VolumeRecord } | undefined;
    try {
      found = await this.findVolume(name);
    } catch (err) {
      // An Err here makes dockerd forget the volume: report it unhealthy instead.
      const cached = this.index.cached(name);
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
    const { entries, cacheable } = await this.index.all();
    const listed = this.listed;
    if (reuse && cacheable && listed?.indexVersion === this.index.version && listed.mountsVersion === this.mountsVersion) return listed.views;
    const views = entries.map((e) => this.view(e.driver, e.record, e.error)).sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0));
    this.listed = cacheable ? { indexVersion: this.index.version, mountsVersion: this.mountsVersion, views } : undefined;
    return views;
  }

  /** Raises a volume's size; the image and filesystem grow at its next mount. */
  async grow(name: string, sizeBytes: number): Promise<VolumeView> {
    assertVolumeName(name);
    if (sizeBytes > this.deps.config.limits.max_size) {
      throw new InvalidOption(`size ${formatSize(sizeBytes)} is over limits.max_size (${formatSize(this.deps.config.limits.max_size)})`);
    }
    return this.op('grow', name, async () => {
      const found = await this.findVolume(name);
      if (!found) throw new VolumeNotFound(name);
      const record = await found.driver.grow(name, sizeBytes);
      const mounted = this.mounted.get(name);
      if (mounted) await this.sequence.growMounted(record, mounted);
      return this.view(found.driver, record);
    });
  }

  /** Mount references held on this host, for the operator command. */
  mountedVolumes(): ReadonlyMap<string, MountedVolume> {
    return this.mounted;
  }

  // ---- the mount and unmount sequences ----------------------------------------------

  private async attachAndMount(name: string): Promise<MountedVolume> {
    const found = await this.findVolume(name);
    if (!found) throw new VolumeNotFound(name);
    return this.sequence.mount({ ...found, lease: this.leaseOf(found.driver), shared: this.liveness.has(found.driver) });
  }

  /** Last reference gone: tear down, forget the mount, report what failed. */
  private async unmountAndDetach(name: string, volume: MountedVolume): Promise<void> {
    const found = this.index.cached(name) ?? (await this.findVolume(name));
    const failures = await this.sequence.unmount(name, volume, found && { driver: found.driver, lease: this.leaseOf(found.driver) });
    this.mounted.delete(name);
    await this.saveMounts();
    if (volume.fenced) await this.upkeep.forgetFenced(name);
    if (failures.length) throw new BackendUnavailable(`volume ${name} was unmounted but cleanup failed: ${failures.join('; ')}`);
    this.log.info('volume unmounted', { volume: name });
  }

  // ---- reconciliation -----------------------------------------------------------------

  /**
   * Brings the recorded references in line with what the kernel and the backends say:
   * a recorded mount that vanished (reboot, manual umount) is dropped and its lease freed;
   * a mount without references is torn down; a lease this host holds for a volume it has
   * not mounted is released.
   */
  async reconcile(): Promise<void> {
    for (const [name, volume] of [...this.mounted]) {
      await this.locks.run(name, async () => {
        if (!(await this.isStillMounted(volume))) {
          this.log.warn('recorded mount vanished; dropping its references', { volume: name, refs: volume.refs });
          await this.sequence.detachVanished(name, volume).catch(() => undefined);
          this.mounted.delete(name);
          await this.upkeep.forgetFenced(name);
          return;
        }
        if (totalRefs(volume) === 0) await this.unmountAndDetach(name, volume).catch(() => undefined);
      });
    }
    await this.saveMounts();
    for (const [driver, lease] of this.leases) {
      let records: VolumeRecord[];
      try {
        records = await metrics.backendRound(driver, driver.list());
      } catch (err) {
        this.log.warn('reconcile: backend unavailable, leases left as they are', { error: errorMessage(err) });
        continue;
      }
      for (const record of records) {
        const mine = record.ownership.state === 'held' && record.ownership.holder.hostId === this.deps.identity.hostId;
        if (mine && !this.mounted.has(record.name)) {
          await this.locks.run(record.name, async () => {
            const left = await this.deps.mountTable.find(this.sequence.mountpointOf(record.name));
            if (left) await this.sequence.clearInterrupted(driver, record, left.source);
            await lease.release(record.name);
          }).catch((err) =>
            this.log.warn('reconcile: could not release a stale lease', { volume: record.name, error: errorMessage(err) }),
          );
        }
      }
    }
  }

  /**
   * Drops mount IDs recorded before dockerd restarted that no running container can still
   * hold, and tears down volumes left with no reference. IDs re-armed by a Mount since the
   * restart are not stale any more and stay; if dockerd's API never answers, nothing changes.
   */
  private async pruneStaleIds(): Promise<void> {
    const sleep = this.deps.sleep ?? ((ms: number) => new Promise((r) => setTimeout(r, ms)));
    const deadline = Date.now() + this.deps.config.docker.restart_wait_seconds * 1000;
    let inUse = await this.deps.usage.volumesInUse();
    while (!inUse && Date.now() < deadline) {
      await sleep(2_000);
      inUse = await this.deps.usage.volumesInUse();
    }
    if (!inUse) {
      this.log.warn('dockerd API unreachable after its restart: stale mount IDs kept (the volumes stay mounted)', { socket: this.deps.config.docker.socket });
      return;
    }
    for (const [name, volume] of [...this.mounted]) {
      if (!volume.staleIds.length || inUse.has(name)) continue;
      await this.locks.run(name, async () => {
        const current = this.mounted.get(name);
        if (!current?.staleIds.length) return;
        this.log.info('no running container uses the volume after dockerd restarted: dropping its stale mount IDs', { volume: name, staleIds: current.staleIds });
        for (const id of current.staleIds) delete current.refs[id];
        current.staleIds = [];
        await this.saveMounts();
        if (totalRefs(current) === 0) await this.unmountAndDetach(name, current);
      });
    }
  }

  /** The operator's `ballast volume release NAME --force`: break a dead host's hold. */
  async forceRelease(name: string): Promise<VolumeView> {
    assertVolumeName(name);
    return this.op('release', name, async () => {
      if (this.mounted.has(name)) throw new VolumeInUse(`volume ${name} is mounted on this host; unmount it here instead`);
      const found = await this.findVolume(name);
      if (!found) throw new VolumeNotFound(name);
      await this.leaseOf(found.driver).forceRelease(name);
      const again = await this.findVolume(name);
      return this.view(found.driver, again!.record);
    });
  }

  /** Every host lease on the shared backends, and how long ago each renewed as this host sees it. */
  async hosts(): Promise<Record<string, unknown>[]> {
    const rows: Record<string, unknown>[] = [];
    for (const { store, monitor, keeper } of this.liveness.values()) {
      for (const lease of await store.listHostLeases()) {
        const self = lease.hostId === this.deps.identity.hostId;
        monitor.observe(lease.hostId, lease);
        const quiet = self ? keeper.secondsSinceRenewal() : monitor.quietSeconds(lease.hostId);
        rows.push({ ...lease, renewedSecondsAgoHere: quiet === undefined ? null : Math.round(quiet * 10) / 10, self });
      }
    }
    return rows;
  }

  /** For the lease upkeep: the driver a mounted volume lives on, and its lease. */
  async ownerOf(name: string): Promise<{ driver: BackendDriver; lease: OwnershipLease } | undefined> {
    const found = this.index.cached(name) ?? (await this.findVolume(name));
    return found && { driver: found.driver, lease: this.leaseOf(found.driver) };
  }

  /** For the lease upkeep: runs `body` under the volume's lock. */
  withVolumeLock<T>(name: string, body: () => Promise<T>): Promise<T> {
    return this.locks.run(name, body);
  }

  // ---- helpers -------------------------------------------------------------------------

  /**
   * A call that may change the volume: under its lock, and the index and List reply learn of the
   * change. `indexes` says the body puts what it changed into the index itself when it succeeds.
   */
  private async op<T>(op: string, name: string, body: () => Promise<T>, indexes = false): Promise<T> {
    let succeeded = false;
    try {
      const result = await this.locks.run(name, body);
      succeeded = true;
      return result;
    } catch (err) {
      throw err instanceof OperationError ? err : new OperationError(op, name, err);
    } finally {
      if (!(succeeded && indexes)) this.index.touch(name);
    }
  }

  /** Persists the mount references; List's reply shows mountpoints, so it is rebuilt. */
  private saveMounts(): Promise<void> {
    this.mountsVersion += 1;
    return this.deps.state.save(this.mounted);
  }

  private checkSameOptions(existing: VolumeRecord, requested: ReturnType<typeof parseVolumeOptions>): void {
    const conflicts = optionConflicts(existing as VolumeSpec, requested);
    if (conflicts.length) {
      throw new VolumeExists(`volume ${existing.name} already exists with different options: ${conflicts.join('; ')}`);
    }
  }

  /** Reads the volume afresh from its backend (never the index): what mutations and index misses go by. */
  private async findVolume(name: string): Promise<{ driver: BackendDriver; record: VolumeRecord } | undefined> {
    const cached = this.index.cached(name);
    const drivers = cached ? [cached.driver, ...this.deps.drivers.values()] : this.deps.drivers.values();
    for (const driver of new Set(drivers)) {
      const found = await metrics.backendRound(driver, driver.read(name));
      if (found) {
        this.index.put(driver, found);
        return { driver, record: found.value };
      }
    }
    this.index.remove(name);
    return undefined;
  }

  private driverFor(profile: string): BackendDriver {
    const driver = this.deps.drivers.get(profile);
    if (!driver) throw new InvalidOption(`no such profile ${profile}`);
    return driver;
  }

  private leaseOf(driver: BackendDriver): OwnershipLease {
    const lease = this.leases.get(driver);
    if (!lease) throw new Error('driver without a lease: not created through createDrivers');
    return lease;
  }

  private mountpointIfMounted(name: string): string {
    const volume = this.mounted.get(name);
    return volume && totalRefs(volume) > 0 ? volume.mountpoint : '';
  }

  private async isStillMounted(volume: MountedVolume): Promise<boolean> {
    const entry = await this.deps.mountTable.find(volume.mountpoint);
    return entry?.source === volume.device;
  }

  private view(driver: BackendDriver, record: VolumeRecord, unhealthy?: string): VolumeView {
    const local = this.mounted.get(record.name);
    return volumeView(driver, record, {
      hostId: this.deps.identity.hostId,
      local,
      mountpoint: this.mountpointIfMounted(record.name),
      leaseAge: (hostId) => this.upkeep.leaseAge(driver, hostId),
      unhealthy,
    });
  }
}
