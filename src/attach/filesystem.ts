import type { Fstype } from '../config/schema.js';
import { CommandFailed } from '../errors.js';
import type { Logger } from '../log.js';
import type { Exec } from '../exec.js';
import { MountTable } from '../util/mountinfo.js';

export interface FilesystemTimeouts {
  /** mkfs, fsck and grow scale with the volume: they get a longer bound than other commands. */
  slowMs: number;
}

export interface DetectedFilesystem {
  /** The filesystem type, e.g. "ext4"; undefined when the device holds a partition table. */
  type?: string;
  /** Set when the device carries a partition table: never formatted over. */
  partitionTable?: string;
}

/** Parses `blkid -p -s TYPE -s PTTYPE -o export` output: KEY=value lines. */
export function parseBlkidExport(stdout: string): DetectedFilesystem {
  const fields = new Map<string, string>();
  for (const line of stdout.split('\n')) {
    const eq = line.indexOf('=');
    if (eq > 0) fields.set(line.slice(0, eq), line.slice(eq + 1));
  }
  return { type: fields.get('TYPE'), partitionTable: fields.get('PTTYPE') };
}

const MKFS_ARGS: Record<Fstype, readonly string[]> = {
  // No discard (the sparse file is already empty) and lazy init: a 1 GiB volume formats in well under a second.
  ext4: ['mkfs.ext4', '-F', '-q', '-m0', '-E', 'nodiscard,lazy_itable_init=1,lazy_journal_init=1'],
  xfs: ['mkfs.xfs', '-f', '-q', '-K'],
};

/** How long a fence waits for its shutdown command before leaving it to finish on its own. */
const SHUTDOWN_WAIT_MS = 3_000;

/** blkid, mkfs, fsck, mount, umount and grow: the filesystem steps every transport shares. */
export class Filesystem {
  constructor(
    private readonly exec: Exec,
    private readonly log: Logger,
    private readonly timeouts: FilesystemTimeouts,
    private readonly mounts: MountTable = new MountTable(),
  ) {}

  /** What the device holds; undefined when it is blank (blkid exit 2: nothing found). */
  async detect(device: string): Promise<DetectedFilesystem | undefined> {
    const { stdout, exitCode } = await this.exec.run(['blkid', '-p', '-s', 'TYPE', '-s', 'PTTYPE', '-o', 'export', device], {
      okExitCodes: [0, 2], // 2: no recognisable signature, a blank device
    });
    return exitCode === 2 ? undefined : parseBlkidExport(stdout);
  }

  async format(device: string, fstype: Fstype, extraArgs: readonly string[], label: string): Promise<void> {
    const labelArgs = fstype === 'ext4' ? ['-L', label.slice(0, 16)] : ['-L', label.slice(0, 12)];
    await this.exec.run([...MKFS_ARGS[fstype], ...labelArgs, ...extraArgs, device], { timeoutMs: this.timeouts.slowMs });
  }

  /**
   * Checks an existing filesystem before a read-write mount. fsck exit codes: 0 clean,
   * 1 errors corrected, 2 corrected and a reboot advised (irrelevant for a data volume),
   * 4 errors left uncorrected: refuse to mount. Higher codes are fsck's own failures.
   */
  async check(device: string): Promise<void> {
    const { exitCode } = await this.exec.run(['fsck', '-a', device], { okExitCodes: [0, 1, 2], timeoutMs: this.timeouts.slowMs });
    if (exitCode !== 0) this.log.warn('fsck corrected errors before mounting', { device, exitCode });
  }

  async mount(device: string, target: string, fstype: Fstype, options: readonly string[], readonly: boolean): Promise<void> {
    const all = [...(readonly ? ['ro'] : []), ...options];
    await this.exec.run(['mount', '-t', fstype, ...(all.length ? ['-o', all.join(',')] : []), device, target]);
  }

  /** Unmounts `target`; "not mounted" (umount exit 32 with that message) counts as done. */
  async unmount(target: string): Promise<void> {
    try {
      await this.exec.run(['umount', target]);
    } catch (err) {
      if (err instanceof CommandFailed && /not mounted|no mount point specified/.test(err.stderr)) return;
      throw err;
    }
  }

  /**
   * Shuts the mounted filesystem down (the XFS_IOC_GOINGDOWN ioctl, which ext4 implements
   * too) after flushing its log: from then on every write fails with EIO and nothing more
   * reaches the device. The self-fence of a host that may have lost its lease. umount still works.
   */
  async shutdown(target: string, device: string): Promise<void> {
    // The ioctl acts on whatever filesystem holds `target`: on a bare directory that would be
    // the host's own. Only ever shut down a mount of the volume's device.
    const entry = await this.mounts.find(target);
    if (entry?.source !== device) {
      throw new Error(`refusing to shut down ${target}: it is not a mount of ${device} (found ${entry ? entry.source : 'no mount'})`);
    }
    // No log flush (`shutdown -f`): it writes to the storage being fenced, and on a cut-off NFS
    // root it blocks until the link returns. The ioctl marks the filesystem shut down before it
    // aborts the journal, so writes fail at once even while the command itself still waits on
    // the storage; then it is left to finish in the background (fsynced data is on disk already).
    const command = this.exec.run(['xfs_io', '-x', '-c', 'shutdown', target]);
    let timer: NodeJS.Timeout | undefined;
    const waited = new Promise<false>((resolve) => (timer = setTimeout(() => resolve(false), SHUTDOWN_WAIT_MS)));
    const finished = await Promise.race([command.then(() => true), waited]).finally(() => clearTimeout(timer));
    if (!finished) {
      command.catch(() => undefined);
      this.log.warn('filesystem shut down; the command still waits on the storage and is left to finish', { target, device, waitedMs: SHUTDOWN_WAIT_MS });
    }
  }

  /** The device's size in bytes. */
  async deviceBytes(device: string): Promise<number> {
    const { stdout } = await this.exec.run(['blockdev', '--getsize64', device]);
    return Number(stdout.trim());
  }

  /** The size an unmounted ext4 filesystem spans, from its superblock. */
  async ext4Bytes(device: string): Promise<number> {
    const { stdout } = await this.exec.run(['dumpe2fs', '-h', device]);
    const field = (name: string) => Number(new RegExp(`^${name}:\\s+(\\d+)$`, 'm').exec(stdout)?.[1] ?? NaN);
    const bytes = field('Block count') * field('Block size');
    if (!Number.isFinite(bytes)) throw new Error(`dumpe2fs printed no block count for ${device}`);
    return bytes;
  }

  /**
   * Grows an unmounted ext4 filesystem to fill its device: a forced check, then resize2fs.
   * Done offline because online resize of small ext4 filesystems on loop devices fails
   * with EPERM on current kernels, and the check is needed before an offline resize anyway.
   */
  async growExt4Offline(device: string): Promise<void> {
    await this.exec.run(['e2fsck', '-f', '-p', device], { okExitCodes: [0, 1, 2], timeoutMs: this.timeouts.slowMs });
    await this.exec.run(['resize2fs', device], { timeoutMs: this.timeouts.slowMs });
  }

  /** Grows a mounted ext4 filesystem in place (the kernel's online resize). */
  async growExt4Online(device: string): Promise<void> {
    await this.exec.run(['resize2fs', device], { timeoutMs: this.timeouts.slowMs });
  }

  /** Grows a mounted xfs filesystem to its device's size; "data size unchanged" when it already fills it. */
  async growXfsOnline(target: string): Promise<void> {
    await this.exec.run(['xfs_growfs', '-d', target], { timeoutMs: this.timeouts.slowMs });
  }
}
