import { BackendUnavailable, errorMessage } from '../errors.js';
import type { BackendDriver } from '../drivers/index.js';
import { describeHolder } from '../ownership/lease.js';
import { metrics } from '../metrics/registry.js';
import { FenceFiles } from './fence-files.js';
import type { Config } from '../config/schema.js';
import { FREEZE_WAIT_MS, type Filesystem } from '../attach/filesystem.js';
import type { Logger } from '../log.js';
import type { HostIdentity } from '../ownership/types.js';
import type { HostLiveness, OwnershipLease } from '../ownership/lease.js';
import type { MountedVolume, MountStateStore } from './mount-state.js';

/** A volume to fence, why, and how long its freeze may take (FREEZE_WAIT_MS unless said). */
interface Fence {
  name: string;
  volume: MountedVolume;
  reason: string;
  freezeWaitMs?: number;
}

/**
 * How long a fence may wait for its freeze (FREEZE_WAIT_MS at least). A freeze cut short falls
 * back to the shutdown without it, which can lose an fsync-acknowledged line while a data write
 * is still in flight (a loaded host, a path being failed over: iSCSI random faults lost one so).
 * - Storage that fences at the array (iSCSI and FC with reservations): ARRAY_FENCED_FREEZE_WAIT_MS,
 *   past the lease if need be. A host taking the volume over preempts this host's registration
 *   and aborts its commands (PREEMPT AND ABORT), so what is still in flight then fails.
 * - Otherwise until a second before other hosts may take the volume (lease.seconds after the last
 *   renewal, `quietSeconds` ago): the lease is still this host's until then.
 * New writes wait meanwhile: the freeze holds them from its start.
 */
export function freezeWaitFor(volume: MountedVolume, leaseSeconds: number, quietSeconds: number): number {
  if (fencedAtArray(volume)) return ARRAY_FENCED_FREEZE_WAIT_MS;
  return Math.max(FREEZE_WAIT_MS, Math.floor((leaseSeconds - quietSeconds - 1) * 1000));
}
/** The array stops this host's I/O once another host takes the volume (SCSI reservations): a fence after the lease is not a danger there. */
export function fencedAtArray(volume: MountedVolume): boolean {
  return (volume.export.transport === 'iscsi' || volume.export.transport === 'fc') && volume.export.reservations === true;
}
/** Long enough for a multipath path to fail over (open-iscsi's NOP-Out timeouts, multipathd's fast_io_fail_tmo). */
const ARRAY_FENCED_FREEZE_WAIT_MS = 30_000;

/** The fence of one volume, as the daemon and its watchdog both do it: said loudly, never thrown. */
export async function shutDownFenced(filesystem: Filesystem, log: Logger, { name, volume, reason, freezeWaitMs }: Fence): Promise<void> {
  log.error('FENCING a volume: its filesystem is shut down, writes on this host now fail', { volume: name, reason, freezeWaitMs: freezeWaitMs ?? FREEZE_WAIT_MS });
  await filesystem.shutdown(volume.mountpoint, volume.device, freezeWaitMs).catch((err: unknown) => log.error('fence: filesystem shutdown failed', { volume: name, error: errorMessage(err) }));
}

/** What the upkeep needs of the volumes layer (the manager wires it, and this file imports none of it): the backends' liveness and this host's mounts. */
export interface UpkeepHost {
  readonly liveness: ReadonlyMap<BackendDriver, HostLiveness>;
  mountedVolumes(): ReadonlyMap<string, MountedVolume>;
  /** The driver a mounted volume lives on, and its lease. */
  ownerOf(name: string): Promise<{ driver: BackendDriver; lease: OwnershipLease } | undefined>;
  /** Runs `body` under the volume's lock. */
  withVolumeLock<T>(name: string, body: () => Promise<T>): Promise<T>;
}

export interface UpkeepDeps {
  config: Config;
  identity: HostIdentity;
  filesystem: Filesystem;
  state: MountStateStore;
  log: Logger;
  startWatchdog?: () => void;
}

/**
 * On backends shared by several hosts: renews this host's lease every lease.renew_every,
 * tells the fence watchdog the daemon is alive, and fences (shuts down the filesystem of)
 * every mounted volume this host may have lost: when it could not renew for
 * lease.fence_after, or when another host took the volume over.
 */
export class LeaseUpkeep {
  private timer?: NodeJS.Timeout;
  private readonly rounds = new Set<Promise<void>>();
  /** The host-lease writes of the round in flight, until they return. */
  private renewal?: Promise<void>;
  private beatSeq = 0;
  /** The check of mounted volumes in flight: rounds share it rather than pile up. */
  private checking?: Promise<void>;
  /**
   * Shutdowns under way, by volume. A fence can wait 30 s for its freeze while the renewal is
   * stuck and every tick looks for volumes to fence: a second fence of the same volume joins the
   * first (two freezes of one filesystem fail or queue behind each other).
   */
  private readonly fencing = new Map<string, Promise<void>>();
  private readonly files: FenceFiles;

  constructor(
    private readonly host: UpkeepHost,
    private readonly deps: UpkeepDeps,
  ) {
    this.files = new FenceFiles(deps.config.state_dir);
  }

  private get active(): boolean {
    return this.host.liveness.size > 0;
  }

  private get log() {
    return this.deps.log;
  }

  async start(): Promise<void> {
    if (!this.active) return;
    for (const { keeper } of this.host.liveness.values()) {
      await keeper.register().catch((err) => this.log.error('cannot register the host lease; retrying at every renewal', { error: errorMessage(err) }));
    }
    await this.beatIfAllRenewed();
    await this.checkMounted(); // before serving: learn what was lost while the daemon was away
    this.timer = setInterval(() => void this.tick(), this.deps.config.lease.renew_every * 1000);
    if (this.host.mountedVolumes().size > 0) this.deps.startWatchdog?.();
  }

  /** Stops the rounds and waits for the one in flight, so nothing writes state after stop. */
  async stop(): Promise<void> {
    clearInterval(this.timer);
    this.timer = undefined;
    await Promise.all(this.rounds);
  }

  /**
   * One renewal round; the check of mounted volumes runs beside it and never delays renewals.
   * While a renewal still waits on the storage (an NFS server that does not answer blocks every
   * read and write), no new round starts: they would only pile up. The fence needs no storage.
   */
  tick(): Promise<void> {
    if (this.renewal) this.markOverdueBackendsDown();
    if (this.renewal) return this.fenceIfUnrenewed();
    const round = this.renewAndCheck().finally(() => this.rounds.delete(round));
    this.rounds.add(round);
    return round;
  }

  private async renewAndCheck(): Promise<void> {
    const renewal = (async () => {
      for (const [driver, { keeper }] of this.host.liveness) metrics.backendUp(driver, await keeper.renew());
    })();
    this.renewal = renewal;
    await renewal.finally(() => (this.renewal = undefined));
    await this.beatIfAllRenewed();
    await this.observeHosts();
    // A check already running may have read state from before this round: let it finish,
    // then check again unless another round already started the next check.
    if (this.checking) await this.checking;
    if (this.checking) return;
    this.checking = this.checkMounted()
      .catch((err: unknown) => void this.log.error('lease check of mounted volumes failed', { error: errorMessage(err) }))
      .finally(() => (this.checking = undefined));
    await this.checking;
  }

  /** A renewal stuck on the storage never reports failure: a backend overdue for one counts as down meanwhile. */
  private markOverdueBackendsDown(): void {
    for (const [driver, { keeper }] of this.host.liveness) {
      if (keeper.secondsSinceRenewal() > this.deps.config.lease.renew_every) metrics.backendUp(driver, false);
    }
  }

  /** Refuses new mounts while this host cannot renew its lease: it may be about to lose everything. */
  assertCanMount(name: string): void {
    for (const { keeper } of this.host.liveness.values()) {
      const quiet = keeper.secondsSinceRenewal();
      if (quiet > this.deps.config.lease.fence_after) {
        throw new BackendUnavailable(`this host has not renewed its lease for ${Math.round(quiet)} s (backend unreachable?); refusing to mount ${name} until it can`);
      }
    }
  }

  /** A fresh mount: whatever the watchdog fenced under this name before is history. */
  async volumeMounted(name: string): Promise<void> {
    if (!this.active) return;
    await this.forgetFenced(name);
    this.deps.startWatchdog?.();
  }

  /** Lease age for Status: how long ago the holder renewed, as this host saw it (no I/O). */
  leaseAge(driver: BackendDriver, hostId: string): { renewedSecondsAgo?: number } {
    const liveness = this.host.liveness.get(driver);
    if (!liveness) return {};
    const quiet = hostId === this.deps.identity.hostId ? liveness.keeper.secondsSinceRenewal() : liveness.monitor.quietSeconds(hostId);
    return quiet === undefined || !Number.isFinite(quiet) ? {} : { renewedSecondsAgo: Math.round(quiet * 10) / 10 };
  }

  async forgetFenced(name: string): Promise<void> {
    const fenced = await this.files.readFenced();
    if (!(name in fenced)) return;
    delete fenced[name];
    await this.files.writeFenced(fenced);
  }

  /**
   * Sees every host's renewSeq each round, so this host's view of who is alive is always
   * current: a holder counts as dead lease.seconds after its renewSeq stopped moving, not
   * lease.seconds after someone first asked. On a file root that is one listing a round (the
   * hosts' beacons), not one read per host: reads across all daemons grow with the hosts, not
   * their square.
   */
  private async observeHosts(): Promise<void> {
    for (const { store, monitor } of this.host.liveness.values()) {
      const leases = await store.listHostLeases().catch(() => undefined);
      for (const lease of leases ?? []) monitor.observe(lease.hostId, lease);
    }
  }

  /**
   * A beat after every round, once each backend's lease was renewed at least once. It carries
   * the oldest renewal's start, and the watchdog counts from that, as other hosts may: a round
   * that failed repeats the old start. (A beat only when every renewal was younger than
   * renew_every stopped for good on a loaded host, where one renewal over SSH takes longer than
   * that: the watchdog then fenced volumes whose leases were being renewed.)
   */
  private async beatIfAllRenewed(): Promise<void> {
    const keepers = [...this.host.liveness.values()].map(({ keeper }) => keeper);
    const renewedAt = Math.min(...keepers.map((keeper) => keeper.lastRenewed));
    if (!Number.isFinite(renewedAt)) return;
    this.beatSeq += 1;
    await this.files.beat({ seq: this.beatSeq, renewedAt }).catch((err) => this.log.error('cannot write the watchdog heartbeat', { error: errorMessage(err) }));
  }

  private async checkMounted(): Promise<void> {
    // Volumes of a backend this host could not renew: fenced all at once first (no storage read,
    // no lock needed), not one after the other as the checks below would.
    await this.fenceIfUnrenewed();
    for (const name of [...this.host.mountedVolumes().keys()]) {
      // Under the volume's lock: an Unmount frees the record before it forgets the mount,
      // and a check in between would take that for a loss. The watchdog's list is read
      // there too: read before, it could name a volume that was mounted afresh since.
      await this.host.withVolumeLock(name, async () => {
        const volume = this.host.mountedVolumes().get(name);
        if (volume) await this.check(name, volume);
      });
    }
  }

  /**
   * Fences `volume` if this host may have lost it: the watchdog fenced it, this host could
   * not renew for fence_after, or the ownership record names another holder. Returns true
   * when the volume is (now) fenced. The caller holds the volume's lock.
   */
  async check(name: string, volume: MountedVolume): Promise<boolean> {
    if (volume.fenced) return true;
    const fencedByWatchdog = (await this.files.readFenced())[name];
    if (fencedByWatchdog) {
      await this.markFenced(name, volume, `fenced by the watchdog at ${fencedByWatchdog.at}: ${fencedByWatchdog.reason}`);
      return true;
    }
    const owner = await this.host.ownerOf(name).catch(() => undefined);
    const liveness = owner && this.host.liveness.get(owner.driver);
    if (!owner || !liveness) return false;
    const quiet = liveness.keeper.secondsSinceRenewal();
    if (quiet > this.deps.config.lease.fence_after) {
      await this.fence(name, volume, `this host could not renew its lease for ${Math.round(quiet)} s`, quiet);
      return true;
    }
    const ownership = (await owner.driver.readOwnership(name).catch(() => undefined))?.value;
    // "free" while mounted here is not a loss: only a host that holds the record can write.
    if (ownership?.state === 'held' && !owner.lease.heldByMe(ownership)) {
      await this.fence(name, volume, `the volume was taken over by ${describeHolder(ownership)}`);
      return true;
    }
    return false;
  }

  /**
   * Fences every mounted volume of a backend this host could not renew for fence_after; reads
   * nothing from the storage. When the watchdog got there first, its reason is the one kept (the
   * shutdown runs all the same: read outside the volume's lock, its record may be a former mount's).
   */
  private async fenceIfUnrenewed(): Promise<void> {
    const byWatchdog = await this.files.readFenced();
    const due: Fence[] = [];
    for (const [name, volume] of this.host.mountedVolumes()) {
      if (volume.fenced) continue;
      const owner = await this.host.ownerOf(name).catch(() => undefined);
      const quiet = owner && this.host.liveness.get(owner.driver)?.keeper.secondsSinceRenewal();
      if (quiet !== undefined && quiet > this.deps.config.lease.fence_after) {
        const watchdog = byWatchdog[name];
        const reason = watchdog ? `fenced by the watchdog at ${watchdog.at}: ${watchdog.reason}` : `this host could not renew its lease for ${Math.round(quiet)} s`;
        due.push({ name, volume, reason, freezeWaitMs: freezeWaitFor(volume, this.deps.config.lease.seconds, quiet) });
      }
    }
    await this.fenceAll(due);
  }

  /** Shuts the volume's filesystem down: every later write on this host fails, nothing reaches the device. `quietSeconds`: since this host last renewed (unknown: the lease is taken to be gone). */
  fence(name: string, volume: MountedVolume, reason: string, quietSeconds = Infinity): Promise<void> {
    return this.fenceAll([{ name, volume, reason, freezeWaitMs: freezeWaitFor(volume, this.deps.config.lease.seconds, quietSeconds) }]);
  }

  /** All at once: on storage that does not answer each shutdown may wait seconds, and the last must not come late. */
  private async fenceAll(fences: readonly Fence[]): Promise<void> {
    const underWay = fences.flatMap(({ name }) => this.fencing.get(name) ?? []);
    const fresh = fences.filter(({ name }) => !this.fencing.has(name));
    const done = this.shutDownAndMark(fresh).finally(() => fresh.forEach(({ name }) => this.fencing.delete(name)));
    for (const { name } of fresh) this.fencing.set(name, done);
    await Promise.all([done, ...underWay]);
  }

  private async shutDownAndMark(fences: readonly Fence[]): Promise<void> {
    await Promise.all(fences.map((fence) => shutDownFenced(this.deps.filesystem, this.log, fence)));
    for (const { name, volume, reason } of fences) await this.markFenced(name, volume, reason);
  }

  private async markFenced(name: string, volume: MountedVolume, reason: string): Promise<void> {
    volume.fenced = reason;
    metrics.fenced();
    await this.deps.state.save(this.host.mountedVolumes());
    this.log.warn('volume marked fenced: new mounts refused until its containers stop', { volume: name, reason });
  }
}
