import type { Config } from '../config/schema.js';
import type { VolumeRecord } from '../drivers/index.js';
import { errorMessage } from '../errors.js';
import type { Logger } from '../log.js';
import { metrics } from '../metrics/registry.js';
import type { HostIdentity } from '../ownership/types.js';
import type { MountTable } from '../util/mountinfo.js';
import type { Backends } from './backends.js';
import type { ContainerUsage } from './container-usage.js';
import type { MountSequence } from './mount-sequence.js';
import { markStale, totalRefs } from './mount-state.js';
import type { Mounts } from './mounts.js';
import type { VolumeLocks } from './volume-locks.js';

export interface ReconcileDeps {
  config: Config;
  identity: HostIdentity;
  mountTable: MountTable;
  /** Asked after dockerd restarts which volumes running containers still use. */
  usage: ContainerUsage;
  log: Logger;
  sleep?: (ms: number) => Promise<void>;
}

/**
 * Recovery after a restart of the daemon or of dockerd: brings the references in mounts.json in
 * line with the kernel's mount table, the backends' leases and the containers still running.
 */
export class Reconciler {
  /** The stale-ID prune started by the latest dockerd restart, for tests and shutdown. */
  staleIdPrune: Promise<void> = Promise.resolve();

  constructor(
    private readonly deps: ReconcileDeps,
    private readonly backends: Backends,
    private readonly mounts: Mounts,
    private readonly sequence: MountSequence,
    private readonly locks: VolumeLocks,
  ) {}

  private get log(): Logger {
    return this.deps.log;
  }

  /**
   * Brings the recorded references in line with what the kernel and the backends say:
   * a recorded mount that vanished (reboot, manual umount) is dropped and its lease freed;
   * a mount without references is torn down; a lease this host holds for a volume it has
   * not mounted is released.
   */
  async reconcile(): Promise<void> {
    for (const [name, volume] of [...this.mounts.all()]) {
      await this.locks.run(name, async () => {
        if (!(await this.mounts.isStillMounted(volume))) {
          this.log.warn('recorded mount vanished; dropping its references', { volume: name, refs: volume.refs });
          await this.mounts.forgetVanished(name, volume);
        } else if (totalRefs(volume) === 0) {
          await this.mounts.tearDown(name, volume).catch(() => undefined);
        }
      });
    }
    await this.mounts.save();
    for (const [driver, lease] of this.backends.leases) {
      let records: VolumeRecord[];
      try {
        records = await metrics.backendRound(driver, driver.list());
      } catch (err) {
        this.log.warn('reconcile: backend unavailable, leases left as they are', { error: errorMessage(err) });
        continue;
      }
      for (const record of records) {
        const mine = record.ownership.state === 'held' && record.ownership.holder.hostId === this.deps.identity.hostId;
        if (!mine || this.mounts.all().has(record.name)) continue;
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

  /**
   * Plugin.Activate comes once from each dockerd process (a dockerd that merely reconnects
   * after a ballast restart does not send it). So any mount ID recorded before an Activate
   * belongs to an earlier dockerd - one that restarted, or crashed together with ballast -
   * and is stale.
   */
  async dockerdRestarted(): Promise<void> {
    if (this.mounts.all().size === 0) return;
    this.log.info('dockerd activated the plugin (a new dockerd): marking earlier mount IDs stale and reconciling');
    for (const volume of this.mounts.all().values()) markStale(volume);
    await this.mounts.save();
    await this.reconcile();
    // Containers that died with dockerd never send Unmount. Once dockerd's API answers, drop
    // the stale IDs of volumes no running container uses. In the background: dockerd calls
    // plugins before its API is up, so waiting here would deadlock it.
    this.staleIdPrune = this.pruneStaleIds().catch((err) => {
      this.log.error('pruning stale mount IDs failed', { error: errorMessage(err) });
    });
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
    for (const [name, volume] of [...this.mounts.all()]) {
      if (!volume.staleIds.length || inUse.has(name)) continue;
      await this.locks.run(name, async () => {
        const current = this.mounts.all().get(name);
        if (!current?.staleIds.length) return;
        this.log.info('no running container uses the volume after dockerd restarted: dropping its stale mount IDs', { volume: name, staleIds: current.staleIds });
        for (const id of current.staleIds) delete current.refs[id];
        current.staleIds = [];
        await this.mounts.save();
        if (totalRefs(current) === 0) await this.mounts.tearDown(name, current);
      });
    }
  }
}
