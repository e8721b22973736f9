import { createHash } from 'node:crypto';
import { Mutex } from 'async-mutex';
import type { IscsiBackendConfig } from '../../config/schema.js';
import { BackendUnavailable, BallastError, InvalidRequest, errorMessage } from '../../errors.js';
import type { Exec } from '../../exec.js';
import type { Export, Initiator } from '../../export.js';
import type { Logger } from '../../log.js';
import type { FileStore } from '../file-store.js';
import { arrayPool, FileVolumes } from '../file-volumes.js';
import type { SnapshotCapable } from '../types.js';
import { poolSnapshots } from '../array-host/pool-snapshots.js';
import { Tgtadm, tgtError, type TgtTarget } from './tgtadm.js';

/** "<prefix>:<name>"; names an IQN cannot hold (upper case, "_") get a hash so two never meet. */
export function volumeTargetIqn(prefix: string, name: string): string {
  if (/^[a-z0-9][a-z0-9.-]*$/.test(name)) return `${prefix}:${name}`;
  const readable = name.toLowerCase().replace(/[^a-z0-9.-]/g, '-');
  return `${prefix}:${readable}-${createHash('sha256').update(name).digest('hex').slice(0, 8)}`;
}

/** Every volume is LUN 1 of a target of its own, so a target's ACL is that volume's ACL. */
export const VOLUME_LUN = 1;

/**
 * Volumes on a Linux iSCSI array running tgtd: images and metadata in a pool directory on
 * the array host (the metadata, lease included, written by compare-and-swap as for loop),
 * each exported as one target whose ACL lets in exactly the host that holds the volume.
 */
export class IscsiDriver extends FileVolumes {
  readonly kind = 'iscsi';
  readonly transport = 'iscsi' as const;
  private readonly tgt: Tgtadm;
  /** tgtd's target table is one shared state: change it one request at a time. */
  private readonly tgtLock = new Mutex();
  /** Copies made on the array host beside each image; a clone is a new volume, with a target of its own. */
  readonly snapshots: SnapshotCapable;

  constructor(
    pool: string,
    private readonly backend: IscsiBackendConfig,
    /** The array host: tgtadm runs there and the pool lives there (this host, or over SSH). */
    arrayHost: { exec: Exec; files?: FileStore },
    commandTimeoutMs: number,
    log: Logger,
    /** Volumes as logical volumes in this LVM volume group on the array host, not image files. */
    volumeGroup?: string,
    /** Base bound on copying an image for a snapshot or clone (it grows with the data); default commandTimeoutMs. */
    copyTimeoutMs = commandTimeoutMs,
  ) {
    super(arrayPool(pool, arrayHost, commandTimeoutMs, volumeGroup), log);
    this.tgt = new Tgtadm(arrayHost.exec, backend.array.tgt_control_port, commandTimeoutMs);
    this.snapshots = poolSnapshots(this, { pool, arrayHost: { exec: arrayHost.exec, files: this.files }, commandTimeoutMs, copyTimeoutMs, volumeGroup }, log);
  }

  targetIqn(name: string): string {
    return volumeTargetIqn(this.backend.target_prefix, name);
  }

  override async checkHealth(): Promise<void> {
    await super.checkHealth();
    await this.arrayCall('list targets', () => this.tgt.targets());
  }

  async export(name: string, initiator: Initiator): Promise<Export> {
    if (!initiator.iqn) throw new InvalidRequest(`host ${initiator.hostId} has no iSCSI initiator name; cannot export volume ${name} to it`);
    const file = await this.imageAtRecordedSize(name);
    await this.arrayCall(`export volume ${name}`, () =>
      this.tgtLock.runExclusive(async () => {
        const target = (await this.findTarget(name)) ?? (await this.createTarget(name, file));
        const lunPath = target.luns.find((l) => l.lun === VOLUME_LUN)?.path;
        if (lunPath !== file) throw new BackendUnavailable(`target ${target.iqn} serves ${lunPath ?? 'no LUN'}, not volume ${name} (${file})`);
        // CHAP first: a target never lets an initiator in without it, not even briefly.
        await this.requireChap(target);
        // Only the holder may log in: a host that lost the lease cannot log in again.
        for (const other of target.acl.filter((entry) => entry !== initiator.iqn && isIscsiName(entry))) {
          await this.tgt.unbindInitiator(target.tid, other);
        }
        if (!target.acl.includes(initiator.iqn!)) await this.tgt.bindInitiator(target.tid, initiator.iqn!);
      }),
    );
    this.log.info('volume exported', { volume: name, target: this.targetIqn(name), initiator: initiator.iqn });
    return {
      transport: 'iscsi',
      iqn: this.targetIqn(name),
      portals: [...this.backend.portals],
      lun: VOLUME_LUN,
      multipath: this.backend.multipath,
      reservations: this.backend.reservations,
      ...(this.backend.chap ? { chap: { ...this.backend.chap } } : {}),
    };
  }

  async unexport(name: string, initiator: Initiator): Promise<void> {
    await this.arrayCall(`unexport volume ${name}`, () =>
      this.tgtLock.runExclusive(async () => {
        const target = await this.findTarget(name);
        if (target && initiator.iqn && target.acl.includes(initiator.iqn)) await this.tgt.unbindInitiator(target.tid, initiator.iqn);
      }),
    );
  }

  /** The target goes before the image: nobody can log in to a volume being destroyed. */
  protected override async withdraw(name: string): Promise<void> {
    await this.arrayCall(`remove the target of volume ${name}`, () =>
      this.tgtLock.runExclusive(async () => {
        const target = await this.findTarget(name);
        if (target) await this.tgt.deleteTarget(target.tid);
      }),
    );
  }

  /** tgtd reads the image size when it opens the backing store: reopen it (a few ms offline). */
  protected override async resized(name: string): Promise<void> {
    await this.arrayCall(`resize the LUN of volume ${name}`, () =>
      this.tgtLock.runExclusive(async () => {
        const target = await this.findTarget(name);
        if (!target) return; // exported again at the next mount, at the new size
        await this.tgt.updateLun(target.tid, VOLUME_LUN, 'online=0');
        try {
          await this.tgt.updateLun(target.tid, VOLUME_LUN, `path=${this.imagePath(name)}`);
        } finally {
          await this.tgt.updateLun(target.tid, VOLUME_LUN, 'online=1');
        }
      }),
    );
  }

  /** The volume's target as tgtd shows it (its LUN, ACL and sessions). */
  async describeTarget(name: string): Promise<TgtTarget | undefined> {
    return this.arrayCall('read the targets', () => this.findTarget(name));
  }

  private async findTarget(name: string): Promise<TgtTarget | undefined> {
    const iqn = this.targetIqn(name);
    return (await this.tgt.targets()).find((t) => t.iqn === iqn);
  }

  private async createTarget(name: string, file: string): Promise<TgtTarget> {
    const iqn = this.targetIqn(name);
    for (let attempt = 0; attempt < 5; attempt++) {
      const tid = Math.max(0, ...(await this.tgt.targets()).map((t) => t.tid)) + 1;
      try {
        await this.tgt.newTarget(tid, iqn);
      } catch (err) {
        if (!tgtError(err, /already exists/)) throw err;
        // The same message for a taken tid and a taken name: another daemon may be exporting this volume.
        const theirs = await this.waitForLun(name);
        if (theirs) return theirs;
        continue; // the tid was taken by another volume's target
      }
      try {
        await this.tgt.newLun(tid, VOLUME_LUN, file);
        // The unit serial (VPD 0x80) names the volume, for people reading sg_inq or lsscsi.
        await this.tgt.updateLun(tid, VOLUME_LUN, `scsi_sn=${createHash('sha256').update(iqn).digest('hex').slice(0, 16)}`);
      } catch (err) {
        await this.tgt.deleteTarget(tid).catch(() => undefined);
        throw err;
      }
      this.log.info('target created', { volume: name, target: iqn, tid });
      const created = await this.findTarget(name);
      if (created) return created;
    }
    throw new BackendUnavailable(`could not create a target for volume ${name}: target ids kept being taken`);
  }

  /** A target another daemon just created, once its LUN is there (it adds the LUN right after). */
  private async waitForLun(name: string): Promise<TgtTarget | undefined> {
    for (let i = 0; i < 100; i++) {
      const target = await this.findTarget(name);
      if (!target) return undefined;
      if (target.luns.some((l) => l.lun === VOLUME_LUN)) return target;
      await new Promise((r) => setTimeout(r, 50));
    }
    throw new BackendUnavailable(`target ${this.targetIqn(name)} exists but got no LUN within 5 s (its creator died half-way?)`);
  }

  private async requireChap(target: TgtTarget): Promise<void> {
    const chap = this.backend.chap;
    if (!chap || target.accounts.includes(chap.username)) return;
    if (!(await this.tgt.accounts()).includes(chap.username)) await this.tgt.newAccount(chap.username, chap.password);
    await this.tgt.bindAccount(target.tid, chap.username);
  }

  /** Any failure to talk to tgtd becomes BackendUnavailable naming the array. */
  private async arrayCall<T>(what: string, call: () => Promise<T>): Promise<T> {
    try {
      return await call();
    } catch (err) {
      if (err instanceof BallastError && !(err.code === 'BALLAST_COMMAND_FAILED')) throw err;
      throw new BackendUnavailable(`cannot ${what} on the iSCSI array (tgtd, control port ${this.backend.array.tgt_control_port}): ${errorMessage(err)}`);
    }
  }
}

const isIscsiName = (entry: string) => /^(iqn|eui|naa)\./.test(entry);
