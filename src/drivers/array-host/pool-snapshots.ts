import type { Exec } from '../../exec.js';
import { NotSupported, SnapshotNotFound } from '../../errors.js';
import type { Logger } from '../../log.js';
import { ArrayHostCopier } from './array-copier.js';
import type { FileStore } from '../file-store.js';
import { ImageSnapshots, imageSnapshotsOf, type ImagePool } from '../image-snapshots.js';
import type { SnapshotCapable } from '../types.js';

export interface PoolSnapshotsOptions {
  pool: string;
  arrayHost: { exec: Exec; files: FileStore };
  commandTimeoutMs: number;
  /** Base bound on one copy; it grows with the data. */
  copyTimeoutMs: number;
  volumeGroup?: string | undefined;
}

/**
 * The snapshots of a pool on a Linux array host (tgt or LIO). Image files: copies beside each volume's image on the array
 * host (a reflink where its filesystem can), the layout of the loop backend. Logical volumes:
 * refused, as ballast has no tested LVM snapshots yet (lvcreate -s needs device-mapper, which
 * the hosts its tests run on lack).
 */
export function poolSnapshots(driver: ImagePool, options: PoolSnapshotsOptions, log: Logger): SnapshotCapable {
  if (options.volumeGroup !== undefined) return refusedOnLvm(options.volumeGroup);
  const { exec, files } = options.arrayHost;
  const copier = new ArrayHostCopier(exec, files, options.commandTimeoutMs, options.copyTimeoutMs);
  return imageSnapshotsOf(driver, new ImageSnapshots(options.pool, files, copier, log), copier, log);
}

function refusedOnLvm(volumeGroup: string): SnapshotCapable {
  const refuse = (volume: string): never => {
    throw new NotSupported(
      `volume ${volume} is a logical volume in LVM volume group ${volumeGroup} on the array host: ` +
        'ballast has no snapshots or clones of LVM volumes yet; they work on a pool of image files (a profile without volume_group)',
    );
  };
  return {
    createSnapshot: async (volume) => refuse(volume.name),
    listSnapshots: async () => [],
    removeSnapshot: async (volume, name) => {
      throw new SnapshotNotFound(volume, name);
    },
    createFrom: async (_volume, source) => refuse(source.volume),
  };
}
