import { AttachFailed } from '../errors.js';
import type { ScsiSysfs } from './scsi-sysfs.js';

/** What a SCSI transport's attacher (iSCSI, FC) is given. */
export interface ScsiAttacherOptions {
  /** Bound on each external command (iscsiadm, multipath, sg_persist, blockdev). */
  commandTimeoutMs: number;
  /** How long to wait for the LUN's disk to appear on every path. */
  deviceWaitMs?: number;
  pollMs?: number;
  /** "/" in production; a fixture tree (sys/, etc/) in unit tests. */
  root?: string;
  sleep?: (ms: number) => Promise<void>;
}

/** Milliseconds after the first scan at which a LUN that has not appeared is scanned again (os-brick: (n+2)^2 s). */
export const RESCAN_AT_MS = [2_000, 5_000, 10_000];

/**
 * The WWID of each disk when they are all one known logical unit, undefined otherwise:
 * multipath must never join the paths of two volumes.
 */
export async function oneLogicalUnit(sysfs: ScsiSysfs, disks: readonly string[]): Promise<{ same: boolean; wwids: (string | undefined)[] }> {
  const wwids = await Promise.all(disks.map((disk) => sysfs.wwid(disk)));
  return { same: new Set(wwids).size === 1 && !wwids.includes(undefined), wwids };
}

/** Waits (bounded) until the kernel has removed the deleted disks. */
export async function waitDisksGone(sysfs: ScsiSysfs, disks: readonly string[], sleep: (ms: number) => Promise<void>, pollMs = 250, waitMs = 30_000): Promise<void> {
  const deadline = Date.now() + waitMs;
  for (;;) {
    const left = [];
    for (const disk of disks) if (await sysfs.exists(disk)) left.push(disk);
    if (left.length === 0) return;
    if (Date.now() > deadline) throw new AttachFailed(`SCSI disks ${left.join(', ')} did not go away after delete`);
    await sleep(pollMs);
  }
}
