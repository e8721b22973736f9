import type { VolumeRecord } from '../drivers/index.js';
import { BackendUnavailable, VolumeInUse } from '../errors.js';
import type { Logger } from '../log.js';
import type { MountTable } from '../util/mountinfo.js';
import type { Backends } from './backends.js';
import type { LeaseUpkeep } from './lease-upkeep.js';
import type { MountSequence } from './mount-sequence.js';
import { addRef, removeRef, totalRefs, type MountedVolume, type MountStateStore } from './mount-state.js';

export interface MountsDeps {
  state: MountStateStore;
  mountTable: MountTable;
  log: Logger;
}

/**
 * The volumes mounted on this host and the Docker mount IDs that use them, saved to the state
 * file on every change. The device is mounted on the first reference and torn down after the
 * last. The caller holds the volume's lock.
 */
export class Mounts {
  private volumes = new Map<string, MountedVolume>();
  /** Bumped by every save: List's reply shows mountpoints, so it is rebuilt. */
  version = 0;

  constructor(
    private readonly deps: MountsDeps,
    private readonly backends: Backends,
    private readonly sequence: MountSequence,
    private readonly upkeep: LeaseUpkeep,
  ) {}

  private get log(): Logger {
    return this.deps.log;
  }

  /** Loads the references the state file kept across a daemon restart. */
  async load(): Promise<void> {
    this.volumes = await this.deps.state.load();
  }

  all(): ReadonlyMap<string, MountedVolume> {
    return this.volumes;
  }

  /** The volume when containers on this host use it. */
  inUse(name: string): MountedVolume | undefined {
    const volume = this.volumes.get(name);
    return volume && totalRefs(volume) > 0 ? volume : undefined;
  }

  /** The mount point Docker may use: set only while containers mount the volume. */
  mountpointOf(name: string): string {
    return this.inUse(name)?.mountpoint ?? '';
  }

  /**
   * Mount(ID): checks this host may still use the volume, attaches and mounts it unless it
   * already is, adds the reference and saves it. Returns the mount point.
   */
  async mount(name: string, id: string): Promise<string> {
    const recorded = this.volumes.get(name);
    if (recorded) await this.upkeep.check(name, recorded); // another host may have taken it
    if (recorded?.fenced) {
      throw new VolumeInUse(`volume ${name} was fenced on this host (${recorded.fenced}); stop the containers that use it, then it can be mounted again`);
    }
    this.upkeep.assertCanMount(name);
    const reuse = recorded !== undefined && (await this.isStillMounted(recorded));
    if (recorded && !reuse) {
      this.log.warn('recorded mount is gone from the kernel; mounting afresh', { volume: name, mountpoint: recorded.mountpoint });
      this.volumes.delete(name);
    }
    const volume = reuse ? recorded : await this.sequence.mount(await this.backends.home(name));
    addRef(volume, id);
    this.volumes.set(name, volume);
    await this.save();
    if (!reuse) await this.upkeep.volumeMounted(name);
    return volume.mountpoint;
  }

  /** Unmount(ID): drops the reference and saves it; the last one tears the volume down. */
  async unmount(name: string, id: string): Promise<void> {
    const volume = this.volumes.get(name);
    if (!volume || !removeRef(volume, id)) {
      // dockerd only logs Unmount errors; an unknown ID must not make a mess of anything.
      this.log.warn('unmount of a mount ID this host does not hold; nothing to do', { volume: name, mountId: id });
      return;
    }
    await this.save();
    if (totalRefs(volume) === 0) {
      try {
        await this.tearDown(name, volume);
      } catch (err) {
        // Still mounted (umount refused: busy): the reference stays, so that a retried Unmount
        // with the same ID tears it down instead of finding nothing to do and leaving it mounted.
        if (err instanceof VolumeInUse) {
          addRef(volume, id);
          await this.save();
        }
        throw err;
      }
    }
  }

  /** Last reference gone: tear down, forget the mount, report what failed. */
  async tearDown(name: string, volume: MountedVolume): Promise<void> {
    const failures = await this.sequence.unmount(name, volume, await this.backends.ownerOf(name));
    this.volumes.delete(name);
    await this.save();
    if (volume.fenced) await this.upkeep.forgetFenced(name);
    if (failures.length) throw new BackendUnavailable(`volume ${name} was unmounted but cleanup failed: ${failures.join('; ')}`);
    this.log.info('volume unmounted', { volume: name });
  }

  /** The volume grew: grows its device and filesystem now if it is mounted here. */
  async grown(name: string, record: VolumeRecord): Promise<void> {
    const volume = this.volumes.get(name);
    if (volume) await this.sequence.growMounted(record, volume);
  }

  /** A recorded mount that vanished (a reboot, a manual umount): detach what is left and forget it, unsaved. */
  async forgetVanished(name: string, volume: MountedVolume): Promise<void> {
    await this.sequence.detachVanished(name, volume).catch(() => undefined);
    this.volumes.delete(name);
    await this.upkeep.forgetFenced(name);
  }

  async isStillMounted(volume: MountedVolume): Promise<boolean> {
    const entry = await this.deps.mountTable.find(volume.mountpoint);
    return entry?.source === volume.device;
  }

  /** Persists the references (the saves queue in order: mount-state.ts). */
  save(): Promise<void> {
    this.version += 1;
    return this.deps.state.save(this.volumes);
  }
}
