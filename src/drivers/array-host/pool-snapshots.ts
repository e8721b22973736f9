import type { Exec } from '../../exec.js';
import type { Logger } from '../../log.js';
import { ArrayHostCopier } from './array-copier.js';
import { LvmSnapshots, type LvmPool } from './lvm-snapshots.js';
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
 * The snapshots of a pool on a Linux array host (tgt or LIO). Image files: copies beside each
 * volume's image on the array host (a reflink where its filesystem can), the layout of the loop
 * backend. Logical volumes: LVM snapshots in the volume group, and clones copied from them.
 */
export function poolSnapshots(driver: ImagePool & LvmPool, options: PoolSnapshotsOptions, log: Logger): SnapshotCapable {
  const { exec, files } = options.arrayHost;
  if (options.volumeGroup !== undefined) {
    return new LvmSnapshots(driver, { exec, volumeGroup: options.volumeGroup, commandTimeoutMs: options.commandTimeoutMs, copyTimeoutMs: options.copyTimeoutMs }, log);
  }
  const copier = new ArrayHostCopier(exec, files, options.commandTimeoutMs, options.copyTimeoutMs);
  return imageSnapshotsOf(driver, new ImageSnapshots(options.pool, files, copier, log), copier, log);
}
