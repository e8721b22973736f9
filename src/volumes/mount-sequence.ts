import { mkdir, rmdir } from 'node:fs/promises';
import { join } from 'node:path';
import type { Attacher } from '../attach/types.js';
import type { Ext4State, Filesystem, XfsSize } from '../attach/filesystem.js';
import { luksMappedPath, type Luks } from '../attach/luks.js';
import type { Config } from '../config/schema.js';
import type { BackendDriver, VolumeRecord } from '../drivers/index.js';
import { EncryptionKeyUnusable, LeaseHeld, VolumeInUse, errorMessage } from '../errors.js';
import type { EncryptionKeys } from './encryption-keys.js';
import type { Export, Initiator } from '../export.js';
import type { Logger } from '../log.js';
import { metrics } from '../metrics/registry.js';
import type { OwnershipLease } from '../ownership/lease.js';
import { attachedDevice, type MountedVolume } from './mount-state.js';
import { crashPointReached, roundMs, runSteps, type Step, type StepTimes } from './steps.js';

export interface MountSequenceDeps {
  config: Config;
  /** This host's id, for the initiator an array exports to. */
  hostId: string;
  filesystem: Filesystem;
  luks: Luks;
  keys: EncryptionKeys;
  attachers: Map<Export['transport'], Attacher>;
  log: Logger;
  sleep?: (ms: number) => Promise<void>;
}

/** What preparing the filesystem found: `fresh` when mkfs or e2fsck may have just made lost+found. */
interface PreparedFilesystem {
  fresh: boolean;
  /** xfs whose device is larger than its filesystem: xfs_growfs once mounted. */
  growXfs: boolean;
}

/** Where the volume lives and who may own it: what a sequence works on. */
export interface VolumeHome {
  driver: BackendDriver;
  record: VolumeRecord;
  lease: OwnershipLease;
  /** True when other hosts share the backend, so waiting for a holder can end. */
  shared: boolean;
}

/**
 * The two command sequences of a volume on this host, each step explicit (os-brick style):
 * lease, export, attach, filesystem, mount - and back. The caller holds the volume's lock.
 */
export class MountSequence {
  constructor(private readonly deps: MountSequenceDeps) {}

  private get log(): Logger {
    return this.deps.log;
  }

  mountpointOf(name: string): string {
    return join(this.deps.config.mount_root, name);
  }

  attacherFor(exp: Pick<Export, 'transport'>): Attacher {
    const attacher = this.deps.attachers.get(exp.transport);
    if (!attacher) throw new Error(`no attacher for transport ${exp.transport}`);
    return attacher;
  }

  /** This host as the driver's array sees it (for iSCSI: its initiator name, for the ACL). */
  private async initiatorFor(driver: BackendDriver): Promise<Initiator> {
    return { hostId: this.deps.hostId, ...(await this.attacherFor(driver).identify()) };
  }

  /** Runs every step or, when one fails, undoes the ones done: Docker never sends Unmount for a failed Mount. */
  async mount(home: VolumeHome): Promise<MountedVolume> {
    const { driver, record, lease } = home;
    const name = record.name;
    const mountpoint = this.mountpointOf(name);
    const fs = this.deps.filesystem;
    let exp: Export | undefined;
    let initiator: Initiator | undefined;
    let device = '';
    /** The attached device under the LUKS mapping (encrypted volumes); `device` is then the mapping. */
    let attached: string | undefined;
    let knownBlank = false;
    let generation = 0;
    let prepared: PreparedFilesystem = { fresh: false, growXfs: false };
    const steps: Step[] = [
      {
        name: 'acquire ownership',
        run: async () => void (generation = (await this.acquireWaiting(home)).generation),
        undo: () => lease.release(name),
      },
      {
        name: 'export',
        run: async () => {
          initiator = await this.initiatorFor(driver);
          exp = await driver.export(name, initiator);
        },
        undo: () => driver.unexport(name, initiator!),
      },
      {
        name: 'attach',
        run: async () => void (device = await metrics.timeAttach(exp!.transport, () => this.attacherFor(exp!).attach(exp!, { hostId: this.deps.hostId, generation }))),
        undo: () => metrics.timeDetach(exp!.transport, () => this.attacherFor(exp!).detach(exp!, device, { hostId: this.deps.hostId, generation })),
      },
      {
        name: 'open encryption',
        run: async () => {
          // Taken from generation 0 to 1 by this Mount: no host ever attached it before.
          const firstAcquisition = record.ownership.state === 'free' && record.ownership.generation === 0 && generation === 1;
          knownBlank = firstAcquisition && (await this.attacherFor(exp!).neverWritten?.(exp!)) === true;
          if (!record.encryption) return;
          knownBlank = await this.openEncrypted(record, device, knownBlank);
          attached = device;
          device = luksMappedPath(name);
        },
        undo: async () => {
          if (!attached) return;
          await this.deps.luks.close(name);
          device = attached;
        },
      },
      {
        name: 'prepare filesystem',
        run: async () => void (prepared = await this.prepareFilesystem(record, device, knownBlank)),
      },
      {
        name: 'create mountpoint',
        run: async () => void (await mkdir(mountpoint, { recursive: true, mode: 0o755 })),
        undo: () => rmdir(mountpoint),
      },
      {
        name: 'mount',
        run: () => fs.mount(device, mountpoint, record.fstype, record.mountOpts, record.readonly),
        undo: () => fs.unmount(mountpoint),
      },
      {
        name: 'grow filesystem',
        run: async () => {
          if (prepared.growXfs) await metrics.timeFilesystem('grow', 'xfs', () => fs.growXfsOnline(mountpoint));
        },
      },
      {
        // mkfs.ext4 and e2fsck make lost+found; Docker copies image content only into an empty
        // volume, and database images refuse a non-empty data directory. rmdir spares a non-empty one.
        name: 'empty a fresh filesystem',
        run: async () => {
          if (prepared.fresh) await rmdir(join(mountpoint, 'lost+found')).catch(() => undefined);
        },
      },
    ];
    const stepsMs = await runSteps(steps, this.log);
    this.log.info('volume mounted', { volume: name, device, mountpoint, generation, stepsMs });
    return { device, ...(attached ? { attached } : {}), mountpoint, export: exp!, refs: {}, staleIds: [], generation };
  }

  /**
   * Opens the LUKS device of an encrypted volume at /dev/mapper/ballast-NAME; a blank device gets
   * its LUKS2 header first. True when the header was just written (the mapping holds nothing yet).
   * A key that opens no key slot leaves nothing open: the Mount undoes the attach.
   */
  private async openEncrypted(record: VolumeRecord, device: string, knownBlank: boolean): Promise<boolean> {
    const { luks, keys, filesystem } = this.deps;
    const name = record.name;
    const key = await keys.read(name, record.profile, record.encryption!);
    let formatted = false;
    if (!(await luks.isLuks(device))) {
      const found = knownBlank ? undefined : await filesystem.detect(device);
      if (found) {
        throw new VolumeInUse(`volume ${name} is encrypted, but its device holds ${found.type ?? `a partition table (${found.partitionTable})`} and no LUKS header; ballast will not format over it`);
      }
      this.log.info('blank encrypted volume: writing its LUKS2 header', { volume: name, device });
      await luks.format(device, key);
      formatted = true;
    }
    let opened = await luks.open(device, name, key);
    if (opened === 'exists') {
      // Left open by a daemon that died before its mount: nothing uses it (a mounted one would not close).
      this.log.warn('closing a LUKS mapping left open by an interrupted Mount', { volume: name });
      await luks.close(name);
      opened = await luks.open(device, name, key);
    }
    if (opened === 'wrong-key') {
      throw new EncryptionKeyUnusable(`volume ${name}: its key file ${keys.pathOf(record.profile, record.encryption!)} opens none of the volume's LUKS key slots; put this volume's key there`);
    }
    if (opened !== 'opened') throw new VolumeInUse(`volume ${name}: its LUKS mapping ${luksMappedPath(name)} is open and in use`);
    return formatted;
  }

  /**
   * Last reference gone: umount, detach, unexport, release. If umount fails, nothing else
   * happens (the filesystem is still in use: keep its device and lease). Otherwise every step
   * runs and the failures come back together.
   */
  async unmount(name: string, volume: MountedVolume, home: Omit<VolumeHome, 'record' | 'shared'> | undefined): Promise<string[]> {
    const failures: string[] = [];
    const stepsMs: StepTimes = [];
    const attempt = async (step: string, fn: () => Promise<unknown>) => {
      const started = performance.now();
      try {
        await fn();
        stepsMs.push({ step, ms: roundMs(performance.now() - started) });
        crashPointReached(step);
      } catch (err) {
        failures.push(`${step}: ${errorMessage(err)}`);
        this.log.error('teardown step failed', { volume: name, step, error: errorMessage(err) });
      }
    };
    await attempt('umount', () => this.deps.filesystem.unmount(volume.mountpoint));
    if (failures.length) {
      throw new VolumeInUse(`volume ${name} could not be unmounted from ${volume.mountpoint}: ${failures.join('; ')}`);
    }
    await rmdir(volume.mountpoint).catch(() => undefined);
    if (volume.attached) await attempt('close encryption', () => this.deps.luks.close(name));
    await attempt('detach', () => metrics.timeDetach(volume.export.transport, () => this.attacherFor(volume.export).detach(volume.export, attachedDevice(volume), { hostId: this.deps.hostId, generation: volume.generation })));
    if (home) {
      await attempt('unexport', async () => home.driver.unexport(name, await this.initiatorFor(home.driver)));
      await attempt('release ownership', () => home.lease.release(name));
    }
    this.log.info('volume torn down', { volume: name, stepsMs });
    return failures;
  }

  /**
   * A Mount cut off (the daemon crashed) after its mount step but before the mount was recorded
   * leaves the volume mounted at its mount point with nobody tracking it. Undoes it as the
   * rollback would have: umount, detach, unexport. The caller then releases the lease.
   */
  async clearInterrupted(driver: BackendDriver, record: VolumeRecord, mountedFrom: string): Promise<void> {
    const mountpoint = this.mountpointOf(record.name);
    this.log.warn('a Mount interrupted by a crash left the volume mounted; undoing it', { volume: record.name, mountpoint, device: mountedFrom });
    await this.deps.filesystem.unmount(mountpoint);
    await rmdir(mountpoint).catch(() => undefined);
    if (record.encryption) {
      const under = await this.deps.luks.backingDevice(mountedFrom);
      await this.deps.luks.close(record.name);
      if (under) mountedFrom = under;
    }
    const initiator = await this.initiatorFor(driver);
    const exp = await driver.export(record.name, initiator);
    const generation = record.ownership.generation;
    await metrics.timeDetach(exp.transport, () => this.attacherFor(exp).detach(exp, mountedFrom, { hostId: this.deps.hostId, generation }));
    await driver.unexport(record.name, initiator);
  }

  /** A recorded mount that vanished (a manual umount): close its LUKS mapping, detach its device. */
  async detachVanished(name: string, volume: MountedVolume): Promise<void> {
    if (volume.attached) await this.deps.luks.close(name);
    await metrics.timeDetach(volume.export.transport, () => this.attacherFor(volume.export).detach(volume.export, attachedDevice(volume), { hostId: this.deps.hostId, generation: volume.generation }));
  }

  /** The volume grew while mounted here: grow device and filesystem now where the transport allows. */
  async growMounted(record: VolumeRecord, volume: MountedVolume): Promise<void> {
    if (record.readonly || !(await this.attacherFor(volume.export).refreshSize(volume.export, attachedDevice(volume)))) return;
    if (record.encryption) await this.deps.luks.resize(record.name, await this.deps.keys.read(record.name, record.profile, record.encryption));
    const fs = this.deps.filesystem;
    await metrics.timeFilesystem('grow', record.fstype, () => (record.fstype === 'ext4' ? fs.growExt4Online(volume.device) : fs.growXfsOnline(volume.mountpoint)));
    this.log.info('volume grown online', { volume: record.name, device: volume.device });
  }

  /**
   * Makes, grows or checks the filesystem, with as few children as the state allows. Never mkfs
   * over data: mkfs runs only on a device blkid finds blank, or one known never written (the
   * volume's first acquisition ever, on storage that shows no block allocated). Otherwise the
   * expected filesystem's own superblock reader goes first (dumpe2fs for ext4, xfs_db for xfs):
   * when it finds that filesystem, blkid has nothing to add. ext4 gets fsck only when its
   * superblock does not say clean; xfs none (fsck.xfs does nothing; xfs replays its log at mount).
   */
  private async prepareFilesystem(record: VolumeRecord, device: string, knownBlank: boolean): Promise<PreparedFilesystem> {
    const fs = this.deps.filesystem;
    if (knownBlank) return this.makeFilesystem(record, device, 'never written');
    let ext4: Ext4State | undefined;
    let xfs: XfsSize | undefined;
    if (record.fstype === 'ext4') {
      ext4 = await fs.ext4State(device);
      if (ext4.isExt4) return this.checkExt4(record, device, ext4);
    } else {
      xfs = await fs.xfsSize(device);
      if (xfs) return this.checkXfs(record, device, xfs);
    }
    const detected = await fs.detect(device);
    if (!detected) return this.makeFilesystem(record, device, 'blkid found no signature');
    if (detected.partitionTable || !detected.type) {
      throw new VolumeInUse(`volume ${record.name} holds a partition table (${detected.partitionTable ?? 'unknown'}), not a filesystem; ballast will not format over it`);
    }
    if (detected.type !== record.fstype) {
      throw new VolumeInUse(`volume ${record.name} holds an ${detected.type} filesystem but was created as ${record.fstype}; ballast will not format over it`);
    }
    // blkid sees the filesystem its superblock reader could not read: check it (ext4), grow it anyway (xfs).
    return ext4 ? this.checkExt4(record, device, ext4) : this.checkXfs(record, device, undefined);
  }

  private async makeFilesystem(record: VolumeRecord, device: string, why: string): Promise<PreparedFilesystem> {
    this.log.info('blank volume: creating its filesystem', { volume: record.name, fstype: record.fstype, why });
    await metrics.timeFilesystem('mkfs', record.fstype, () => this.deps.filesystem.format(device, record.fstype, record.mkfsOpts, record.name));
    return { fresh: true, growXfs: false };
  }

  private async checkXfs(record: VolumeRecord, device: string, size: XfsSize | undefined): Promise<PreparedFilesystem> {
    if (record.readonly) return { fresh: false, growXfs: false };
    // Unreadable superblock: grow anyway, as every mount once did (xfs_growfs on a full filesystem changes nothing).
    const growXfs = !size || Math.floor((await this.deps.filesystem.deviceBytes(device)) / size.blocksize) > size.dblocks;
    if (growXfs) this.log.info('volume grew: growing its filesystem after mounting', { volume: record.name, superblock: size ?? 'unreadable' });
    return { fresh: false, growXfs };
  }

  private async checkExt4(record: VolumeRecord, device: string, state: Ext4State): Promise<PreparedFilesystem> {
    const fs = this.deps.filesystem;
    if (record.readonly) return { fresh: false, growXfs: false };
    if (state.blockCount && state.blockSize && Math.floor((await fs.deviceBytes(device)) / state.blockSize) > state.blockCount) {
      this.log.info('volume grew: growing its filesystem before mounting', { volume: record.name });
      await metrics.timeFilesystem('grow', 'ext4', () => fs.growExt4Offline(device)); // e2fsck -f first: also the check
      return { fresh: true, growXfs: false };
    }
    if (!state.checkReasons.length) {
      this.log.debug('filesystem clean: no fsck', { volume: record.name, device });
      return { fresh: false, growXfs: false };
    }
    this.log.info('filesystem not known clean: fsck before mounting', { volume: record.name, device, reasons: state.checkReasons });
    await metrics.timeFilesystem('fsck', record.fstype, () => fs.check(device));
    return { fresh: false, growXfs: false };
  }

  /**
   * Acquires the volume, waiting (bounded by lease.mount_wait) while another live host holds
   * it on a shared backend: the holder may be about to release it, or its lease to expire.
   */
  private async acquireWaiting({ lease, record, shared }: VolumeHome) {
    const sleep = this.deps.sleep ?? ((ms: number) => new Promise((r) => setTimeout(r, ms)));
    const deadline = performance.now() + this.deps.config.lease.mount_wait * 1000;
    for (;;) {
      try {
        return await lease.acquire(record.name);
      } catch (err) {
        const remaining = deadline - performance.now();
        if (!(err instanceof LeaseHeld) || !shared || remaining <= 0) throw err;
        this.log.debug('volume held by another host; waiting', { volume: record.name, remainingMs: Math.round(remaining), holder: err.message });
        await sleep(Math.min(1_000, remaining));
      }
    }
  }
}
