import { readFile, realpath } from 'node:fs/promises';
import { basename, join } from 'node:path';
import type { Fstype } from '../config/schema.js';
import { CommandFailed, errorMessage } from '../errors.js';
import type { Logger } from '../log.js';
import type { Exec } from '../exec.js';
import { MountTable } from '../util/mountinfo.js';
import { settledWithin } from '../util/settled-within.js';
import { dmKernelName, multipathMapsBeneath } from './device-mapper.js';
import { cleanExt4, readExt4Superblock } from './ext4-superblock.js';

/**
 * The root under which sysfs is read: "/" on a real host; a host fake (test/helpers/fake-host.ts)
 * that keeps its own sysfs tree says where, so code it drives reads that tree, not the real one.
 */
export function sysfsRootOf(exec: Exec): string {
  const root = (exec as { sysfsRoot?: unknown }).sysfsRoot;
  return typeof root === 'string' ? root : '/';
}

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

/**
 * Reads a device's ext4 superblock bytes: from the device itself on a real host; a host fake
 * (test/helpers/fake-host.ts) answers for its own devices, so unit tests never open a real one.
 */
export function superblockReaderOf(exec: Exec): (device: string) => Promise<Buffer> {
  const fake = (exec as { readExt4Superblock?: unknown }).readExt4Superblock;
  return typeof fake === 'function' ? (fake.bind(exec) as (device: string) => Promise<Buffer>) : readExt4Superblock;
}

/** What `dumpe2fs -h` says about an ext4 filesystem: its size, and why it must be checked before a mount. */
export interface Ext4State {
  /** The device holds an ext4 superblock: the ext2 family's magic with the extent feature (how blkid tells ext4 from ext2/3). */
  isExt4: boolean;
  blockCount?: number;
  blockSize?: number;
  /** Empty only when the superblock says the filesystem is known clean: then e2fsck -p would only print "clean". */
  checkReasons: string[];
}

/** One day: e2fsck's own fudge for a last-check time in the future. */
const CLOCK_FUDGE_S = 86_400;
/** dumpe2fs prints local time; a DST jump must not make a due check look not yet due. */
const DST_MARGIN_S = 3_600;
const MONTHS = ['Jan', 'Feb', 'Mar', 'Apr', 'May', 'Jun', 'Jul', 'Aug', 'Sep', 'Oct', 'Nov', 'Dec'];

/** A ctime(3) date as dumpe2fs prints it ("Fri Dec  4 22:48:17 2026", in this process's time zone); NaN otherwise. */
function ctimeSeconds(text: string): number {
  const m = /^\w{3} (\w{3}) +(\d{1,2}) (\d{2}):(\d{2}):(\d{2}) (\d{4})$/.exec(text);
  const month = m ? MONTHS.indexOf(m[1]!) : -1;
  if (!m || month < 0) return NaN;
  return new Date(Number(m[6]), month, Number(m[2]), Number(m[3]), Number(m[4]), Number(m[5])).getTime() / 1000;
}

/**
 * Decides from `dumpe2fs -h` whether e2fsck would do real work, mirroring its own skip test
 * (e2fsck/unix.c check_if_skip, plus the journal replay and orphan release that precede it):
 * a check unless the state is "clean", no journal needs replay, no orphan is listed, no error
 * is recorded, the maximum mount count is not reached and no check interval is due. Anything
 * missing or unparsable counts as a reason to check.
 */
export function parseDumpe2fs(stdout: string, nowSeconds: number): Ext4State {
  const fields = new Map<string, string>();
  for (const line of stdout.split('\n')) {
    const m = /^([^:]+):\s*(.*?)\s*$/.exec(line);
    if (m && !fields.has(m[1]!)) fields.set(m[1]!, m[2]!);
  }
  const int = (name: string) => (/^-?\d+$/.test(fields.get(name) ?? '') ? Number(fields.get(name)) : NaN);
  const reasons: string[] = [];
  const state = fields.get('Filesystem state');
  if (state !== 'clean') reasons.push(state === undefined ? 'no filesystem state' : `state "${state}"`);
  const features = fields.get('Filesystem features');
  const set = new Set(features?.split(/\s+/) ?? []);
  const isExt4 = fields.get('Filesystem magic number')?.toLowerCase() === '0xef53' && set.has('extent');
  if (features === undefined) reasons.push('no feature list');
  else {
    if (set.has('needs_recovery')) reasons.push('needs_recovery: the journal has transactions to replay');
    if (set.has('orphan_present')) reasons.push('orphan_present: the orphan file lists inodes to release');
  }
  if (fields.has('First orphan inode')) reasons.push(`orphan inodes to release (first ${fields.get('First orphan inode')})`);
  if (fields.has('FS Error count') || fields.has('First error time')) reasons.push(`errors recorded (${fields.get('FS Error count') ?? 'count unknown'})`);
  if (fields.has('Journal errno') && fields.get('Journal errno') !== '0') reasons.push(`journal aborted (errno ${fields.get('Journal errno')})`);
  if (fields.has('Journal start') && fields.get('Journal start') !== '0') reasons.push(`journal start ${fields.get('Journal start')}: not empty`);
  const mounts = int('Mount count');
  const maxMounts = int('Maximum mount count');
  if (Number.isNaN(mounts) || Number.isNaN(maxMounts)) reasons.push('no mount counts');
  else if (maxMounts > 0 && mounts >= maxMounts) reasons.push(`mounted ${mounts} times, maximum ${maxMounts}`);
  const interval = Number(/^(\d+)/.exec(fields.get('Check interval') ?? '')?.[1] ?? NaN);
  if (Number.isNaN(interval)) reasons.push('no check interval');
  else if (interval > 0) {
    const lastCheck = ctimeSeconds(fields.get('Last checked') ?? '');
    if (Number.isNaN(lastCheck)) reasons.push('no last-checked time');
    else if (lastCheck > nowSeconds + CLOCK_FUDGE_S) reasons.push('last checked in the future');
    else if (nowSeconds >= lastCheck + interval - DST_MARGIN_S) reasons.push(`check interval of ${interval} s due`);
  }
  const blockCount = int('Block count');
  const blockSize = int('Block size');
  if (!(blockCount > 0 && blockSize > 0)) reasons.push('no block count or size');
  return { isExt4, ...(blockCount > 0 && blockSize > 0 ? { blockCount, blockSize } : {}), checkReasons: reasons };
}

/** An xfs filesystem's data section: dblocks blocks of blocksize bytes. */
export interface XfsSize {
  dblocks: number;
  blocksize: number;
}

/** XFS's superblock magic, "XFSB". */
const XFS_MAGIC = '0x58465342';

/**
 * Parses `xfs_db -r -c 'sb 0' -c 'print magicnum dblocks blocksize'`: the data section's size;
 * undefined unless it shows an xfs superblock with a usable size.
 */
export function parseXfsSize(stdout: string): XfsSize | undefined {
  const field = (name: string) => new RegExp(`^${name} = (\\w+)$`, 'm').exec(stdout)?.[1];
  const dblocks = Number(field('dblocks') ?? NaN);
  const blocksize = Number(field('blocksize') ?? NaN);
  return field('magicnum')?.toLowerCase() === XFS_MAGIC && dblocks > 0 && blocksize > 0 ? { dblocks, blocksize } : undefined;
}

const MKFS_ARGS: Record<Fstype, readonly string[]> = {
  // No discard (the sparse file is already empty) and lazy init: a 1 GiB volume formats in well under a second.
  ext4: ['mkfs.ext4', '-F', '-q', '-m0', '-E', 'nodiscard,lazy_itable_init=1,lazy_journal_init=1'],
  xfs: ['mkfs.xfs', '-f', '-q', '-K'],
};

/** How long a fence waits for its shutdown command before leaving it to finish on its own. */
const SHUTDOWN_WAIT_MS = 3_000;
/** How long a fence waits, unless told otherwise, for the freeze that makes in-flight fsyncs durable before shutting down without it. */
export const FREEZE_WAIT_MS = 2_000;
/**
 * The bound on a fence's own fsfreeze command, far past the fence's wait for it. Killing it would
 * not stop the freeze (the kernel finishes it once the storage answers, and the filesystem then
 * stays frozen with writers stuck in it): ballast keeps the command so that it can thaw then.
 */
const FENCE_FREEZE_COMMAND_MS = 15 * 60_000;

/** blkid, mkfs, fsck, mount, umount and grow: the filesystem steps every transport shares. */
export class Filesystem {
  constructor(
    private readonly exec: Exec,
    private readonly log: Logger,
    private readonly timeouts: FilesystemTimeouts,
    private readonly mounts: MountTable = new MountTable(),
    private readonly sysfsRoot: string = sysfsRootOf(exec),
    private readonly readSuperblock: (device: string) => Promise<Buffer> = superblockReaderOf(exec),
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

  /** Suspends writes to the filesystem at `target` and flushes it to its device (fsfreeze -f). */
  async freeze(target: string, timeoutMs?: number): Promise<void> {
    await this.exec.run(['fsfreeze', '--freeze', target], { timeoutMs });
  }

  /** Lets writes through again; a filesystem that is not frozen counts as thawed. */
  async thaw(target: string): Promise<void> {
    try {
      await this.exec.run(['fsfreeze', '--unfreeze', target]);
    } catch (err) {
      if (err instanceof CommandFailed && /Invalid argument/.test(err.stderr)) return;
      throw err;
    }
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
   * Shuts the mounted filesystem down (the XFS_IOC_GOINGDOWN ioctl, which ext4 implements too):
   * from then on every write fails with EIO and nothing more reaches the device. The self-fence
   * of a host that may have lost its lease. umount still works.
   *
   * A freeze comes first. ext4 can acknowledge an fsync whose metadata the shutdown then drops:
   * an fsync still waiting on its data when the shutdown aborts the journal finds its transaction
   * ended (by the abort) and returns 0, and the line it wrote is gone (fence-fsync.test.ts shows
   * it in Debian's kernel). A freeze commits everything in flight and holds new writes, so the
   * shutdown aborts an empty journal; the thaw then lets the held writes fail. On storage that
   * does not answer the freeze cannot finish: after `freezeWaitMs` the I/O queued in multipath
   * maps beneath is failed, then the shutdown goes ahead. New writes stay held (not failed) until
   * the freeze fails on its own once the storage answers (a shut-down filesystem cannot sync).
   */
  async shutdown(target: string, device: string, freezeWaitMs = FREEZE_WAIT_MS): Promise<void> {
    // The ioctl acts on whatever filesystem holds `target`: on a bare directory that would be
    // the host's own. Only ever shut down a mount of the volume's device.
    const entry = await this.mounts.find(target);
    if (entry?.source !== device) {
      throw new Error(`refusing to shut down ${target}: it is not a mount of ${device} (found ${entry ? entry.source : 'no mount'})`);
    }
    const freeze = this.freeze(target, FENCE_FREEZE_COMMAND_MS).then(
      () => true,
      (err: unknown) => {
        this.log.warn('fence: freeze failed; shutting down without it', { target, device, error: errorMessage(err) });
        return false;
      },
    );
    const frozen = await settledWithin(freeze, freezeWaitMs);
    if (frozen === undefined) {
      // A thaw now would wait as long as the freeze (both need the superblock): thaw when it ends.
      this.log.warn('fence: the freeze waits on the storage; shutting down without it', { target, device, waitedMs: freezeWaitMs });
      void freeze.then((late) => (late ? this.thawFenced(target) : undefined));
      await this.failQueuedIo(target, device);
    }
    // No log flush (`shutdown -f`): it writes to the storage being fenced, and on a cut-off NFS
    // root it blocks until the link returns. The ioctl marks the filesystem shut down before it
    // aborts the journal, so the shutdown holds even while the command itself still waits on the
    // storage; then it is left to finish in the background.
    const command = this.exec.run(['xfs_io', '-x', '-c', 'shutdown', target]);
    if (!(await settledWithin(command.then(() => true), SHUTDOWN_WAIT_MS))) {
      command.catch(() => undefined);
      this.log.warn('filesystem shut down; the command still waits on the storage and is left to finish', { target, device, waitedMs: SHUTDOWN_WAIT_MS });
    }
    if (frozen) await this.thawFenced(target);
  }

  /**
   * Fails the I/O that multipath maps beneath `device` hold while they have no path (queue_if_no_path,
   * no_path_retry). Once the journal is aborted, a data write that completes later, when a path
   * returns, lets an fsync waiting on it report success for a line whose size the abort dropped
   * (FC random faults lost one so: a host cut off from the array was fenced with its writes queued).
   * Failed now, that fsync reports EIO; and nothing of this host reaches the storage after its fence.
   */
  private async failQueuedIo(target: string, device: string): Promise<void> {
    // Never in the way of the shutdown that follows: a failed lookup is logged, not thrown.
    const maps = await this.kernelName(device).then((name) => multipathMapsBeneath(this.sysfsRoot, name)).catch((err: unknown) => {
      this.log.error('fence: cannot read the multipath maps beneath the volume from sysfs; their queued I/O is left queued', { target, device, error: errorMessage(err) });
      return [] as string[];
    });
    for (const map of maps) {
      await this.exec
        .run(['dmsetup', 'message', map, '0', 'fail_if_no_path'])
        .then(() => this.log.warn('fence: multipath map set to fail the I/O it queued', { target, device, map }))
        .catch((err: unknown) => this.log.error('fence: cannot make the multipath map fail its queued I/O', { target, device, map, error: errorMessage(err) }));
    }
  }

  /** The fence's thaw: held writes then fail with EIO. A thaw that fails leaves them held until the unmount. */
  private async thawFenced(target: string): Promise<void> {
    await this.thaw(target).catch((err: unknown) => this.log.error('fence: thaw failed; writes to the volume stay held until it is unmounted', { target, error: errorMessage(err) }));
  }

  /** The device's size in bytes, from sysfs (/sys/class/block/NAME/size, in 512-byte sectors): no child process. */
  async deviceBytes(device: string): Promise<number> {
    const path = join(this.sysfsRoot, 'sys', 'class', 'block', await this.kernelName(device), 'size');
    const sectors = (await readFile(path, 'utf8')).trim();
    if (!/^\d+$/.test(sectors)) throw new Error(`${path} holds no sector count: ${JSON.stringify(sectors)}`);
    return Number(sectors) * 512;
  }

  /** The device's kernel name (loop3, dm-2): /dev/disk/by-id/... are links to it; /dev/mapper/x may be a node of its own. */
  private async kernelName(device: string): Promise<string> {
    const mapped = /^\/dev\/mapper\/([^/]+)$/.exec(device);
    const dm = mapped ? await dmKernelName(this.sysfsRoot, mapped[1]!) : undefined;
    return dm ?? basename(/^\/dev\/[^/]+$/.test(device) ? device : await realpath(device));
  }

  /**
   * An unmounted ext4 filesystem's size and whether it needs fsck: from its superblock read
   * in-process when that shows it plainly clean, else from one `dumpe2fs -h`.
   */
  async ext4State(device: string): Promise<Ext4State> {
    const clean = cleanExt4(await this.readSuperblock(device).catch(() => Buffer.alloc(0)));
    if (clean) return { isExt4: true, ...clean, checkReasons: [] };
    try {
      const { stdout, stderr } = await this.exec.run(['dumpe2fs', '-h', device]);
      const state = parseDumpe2fs(stdout, Date.now() / 1000);
      // stderr carries only the version banner unless something is wrong (a bad journal superblock, ...).
      const warnings = stderr.split('\n').filter((l) => l.trim() && !/^dumpe2fs \d/.test(l));
      if (warnings.length) state.checkReasons.push(`dumpe2fs warned: ${warnings.join('; ')}`);
      return state;
    } catch (err) {
      if (!(err instanceof CommandFailed)) throw err;
      return { isExt4: false, checkReasons: [`dumpe2fs failed: ${err.stderr.trim() || `exit code ${err.exitCode}`}`] };
    }
  }

  /** An unmounted xfs filesystem's data size from its superblock; undefined when xfs_db finds no xfs superblock it can use. */
  async xfsSize(device: string): Promise<XfsSize | undefined> {
    const { stdout } = await this.exec.run(['xfs_db', '-r', '-c', 'sb 0', '-c', 'print magicnum dblocks blocksize', device], { okExitCodes: [0, 1] });
    return parseXfsSize(stdout);
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
