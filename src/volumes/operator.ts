import type { Config } from '../config/schema.js';
import { formatSize } from '../config/size.js';
import type { BackendDriver, VolumeRecord } from '../drivers/index.js';
import { InvalidOption, VolumeInUse, VolumeNotFound } from '../errors.js';
import type { Backends } from './backends.js';
import type { Mounts } from './mounts.js';
import { assertVolumeName } from './names.js';
import type { VolumeLocks } from './volume-locks.js';
import type { VolumeView } from './volume-view.js';

/** The `ballast` command's calls that Docker's protocol has no verb for: grow, force release, host leases. */
export class OperatorCommands {
  constructor(
    private readonly config: Config,
    private readonly hostId: string,
    private readonly backends: Backends,
    private readonly mounts: Mounts,
    private readonly locks: VolumeLocks,
    private readonly view: (driver: BackendDriver, record: VolumeRecord) => VolumeView,
  ) {}

  /** Raises a volume's size; the image and filesystem grow at its next mount (at once where mounted here, if they can). */
  async grow(name: string, sizeBytes: number): Promise<VolumeView> {
    assertVolumeName(name);
    if (sizeBytes > this.config.limits.max_size) {
      throw new InvalidOption(`size ${formatSize(sizeBytes)} is over limits.max_size (${formatSize(this.config.limits.max_size)})`);
    }
    return this.locks.op('grow', name, async () => {
      const found = await this.backends.find(name);
      if (!found) throw new VolumeNotFound(name);
      const record = await found.driver.grow(name, sizeBytes);
      await this.mounts.grown(name, record);
      return this.view(found.driver, record);
    });
  }

  /** `ballast volume release NAME --force`: break a dead host's hold. */
  async forceRelease(name: string): Promise<VolumeView> {
    assertVolumeName(name);
    return this.locks.op('release', name, async () => {
      if (this.mounts.all().has(name)) throw new VolumeInUse(`volume ${name} is mounted on this host; unmount it here instead`);
      const found = await this.backends.find(name);
      if (!found) throw new VolumeNotFound(name);
      await this.backends.leaseOf(found.driver).forceRelease(name);
      const again = await this.backends.find(name);
      return this.view(found.driver, again!.record);
    });
  }

  /** Every host lease on the shared backends, and how long ago each renewed as this host sees it. */
  async hosts(): Promise<Record<string, unknown>[]> {
    const rows: Record<string, unknown>[] = [];
    for (const { store, monitor, keeper } of this.backends.liveness.values()) {
      for (const lease of await store.listHostLeases()) {
        const self = lease.hostId === this.hostId;
        monitor.observe(lease.hostId, lease);
        const quiet = self ? keeper.secondsSinceRenewal() : monitor.quietSeconds(lease.hostId);
        rows.push({ ...lease, renewedSecondsAgoHere: quiet === undefined ? null : Math.round(quiet * 10) / 10, self });
      }
    }
    return rows;
  }
}
