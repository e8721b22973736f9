import { constants } from 'node:fs';
import { open, readdir, readFile, stat } from 'node:fs/promises';
import { join } from 'node:path';
import { exportOf, type Export } from '../export.js';
import type { Exec } from '../exec.js';
import { AttachFailed } from '../errors.js';
import { sysfsRootOf } from './filesystem.js';
import { attachLocked } from './locked-loop.js';
import type { Attacher } from './types.js';

/** How often a locked attach asks again while another host holds the image's lock. */
const LOCK_POLL_MS = 1_000;
/** How long (polls of DETACH_POLL_MS) a detach waits for the kernel to release a device still held open. */
const DETACH_POLLS = 50;
const DETACH_POLL_MS = 100;
const LOOP_DEVICE = /^loop\d+$/;
const UNBOUND_MEANWHILE = new Set(['ENOENT', 'ENODEV', 'ENXIO']);

/**
 * Loop devices' bindings as sysfs shows them: `/sys/block/loopN/loop/backing_file` exists
 * while loopN is bound and holds the file's path (what `losetup --list` itself reads), with
 * " (deleted)" after a backing file removed while attached. `root` is "/" in production and a
 * fixture tree in unit tests (test/helpers/fake-host.ts), as for ScsiSysfs.
 */
export class LoopSysfs {
  constructor(
    readonly root = '/',
    private readonly readText: (path: string) => Promise<string> = (path) => readFile(path, 'utf8'),
  ) {}

  /** The file bound to `device` (/dev/loopN); undefined when it is unbound or not a loop device. */
  async backingFile(device: string): Promise<string | undefined> {
    const name = /^\/dev\/(loop\d+)$/.exec(device)?.[1];
    return name ? this.read(name) : undefined;
  }

  /** The loop devices bound to exactly this path. */
  async devicesFor(file: string): Promise<string[]> {
    const names = (await readdir(join(this.root, 'sys', 'block'))).filter((n) => LOOP_DEVICE.test(n));
    const bound = await Promise.all(names.map(async (name) => ((await this.read(name)) === file ? `/dev/${name}` : undefined)));
    return bound.filter((d): d is string => d !== undefined).sort((a, b) => Number(a.slice(9)) - Number(b.slice(9)));
  }

  private async read(name: string): Promise<string | undefined> {
    try {
      const text = await this.readText(join(this.root, 'sys', 'block', name, 'loop', 'backing_file'));
      return text.replace(/\n$/, '').replace(/ \(deleted\)$/, '');
    } catch (err) {
      // Unbound, or unbound while we read: another process's device being detached reads as
      // ENODEV (a CI run's Mount failed so, scanning every loop device for its image).
      if (UNBOUND_MEANWHILE.has((err as NodeJS.ErrnoException).code ?? '')) return undefined;
      throw err;
    }
  }
}

/**
 * True when nothing has the block device open exclusively: no filesystem is mounted from
 * it in any mount namespace (a mount claims its device kernel-wide, and O_EXCL fails with EBUSY).
 */
export async function deviceIsUnclaimed(device: string): Promise<boolean> {
  try {
    const handle = await open(device, constants.O_RDONLY | constants.O_EXCL);
    await handle.close();
    return true;
  } catch {
    return false;
  }
}

/** Attaches image files as loop devices with losetup, reusing an idle device already bound to the file. */
export class LoopAttacher implements Attacher {
  readonly transport = 'loop';

  constructor(
    private readonly exec: Exec,
    private readonly sysfs: LoopSysfs = new LoopSysfs(sysfsRootOf(exec)),
    private readonly isUnclaimed: (device: string) => Promise<boolean> = deviceIsUnclaimed,
    private readonly sleep: (ms: number) => Promise<void> = (ms) => new Promise((r) => setTimeout(r, ms)),
  ) {}

  async identify(): Promise<Record<string, never>> {
    return {};
  }

  /**
   * Reuses a device bound to the file only if no filesystem is mounted from it: on a shared
   * root seen by one kernel (hosts as namespaces), a device still mounted by a fenced former
   * holder must not be shared with the new one.
   */
  async attach(exp: Export): Promise<string> {
    const { file, lock } = exportOf(exp, 'loop');
    if (lock) return this.attachLocked(file, lock.waitSeconds);
    for (const device of await this.sysfs.devicesFor(file)) {
      if (await this.isUnclaimed(device)) return device;
    }
    const { stdout } = await this.exec.run(['losetup', '--find', '--show', file]);
    const device = stdout.trim();
    if (!/^\/dev\/loop\d+$/.test(device)) throw new Error(`losetup printed no loop device for ${file}: ${JSON.stringify(stdout)}`);
    return device;
  }

  /**
   * Attaches holding the image's lock, polling while another host holds it. A device this host
   * left bound to the image is detached first: it may carry a lock the server has since revoked.
   */
  private async attachLocked(file: string, waitSeconds: number): Promise<string> {
    for (const device of await this.sysfs.devicesFor(file)) {
      if (await this.isUnclaimed(device)) await this.exec.run(['losetup', '--detach', device]);
    }
    const deadline = performance.now() + waitSeconds * 1000;
    for (;;) {
      const device = await attachLocked(this.exec, file);
      if (device !== 'locked') return device;
      if (performance.now() >= deadline) {
        throw new AttachFailed(
          `the image ${file} is locked by another NFS client: the host that had the volume still has it attached ` +
            `(waited ${waitSeconds} s). It can move once that host detaches it (its containers stop) or the NFS server ` +
            `expires that host's lease (a host cut off from the server); then mount again`,
        );
      }
      await this.sleep(LOCK_POLL_MS);
    }
  }

  async detach(exp: Export, device: string): Promise<void> {
    // Only detach a device that is still bound to this volume's file: never someone else's.
    if (!(await this.isAttached(exp, device))) return;
    await this.exec.run(['losetup', '--detach', device]);
    // On a device something still holds open (udev's probe, under load) the detach only marks it
    // to clear at the last close. Wait for that, bounded: once Unmount returns nothing is left
    // attached, and on NFS the image's lock is free for the next host. (Seen in two CI runs.)
    for (let i = 0; i < DETACH_POLLS && (await this.isAttached(exp, device)); i++) await this.sleep(DETACH_POLL_MS);
  }

  /** Online resize2fs fails with EPERM on loop devices here: loop volumes grow at their next mount. */
  async refreshSize(): Promise<boolean> {
    return false;
  }

  /** No block of the image file allocated: a sparse file never written reads as zeros. */
  async neverWritten(exp: Export): Promise<boolean> {
    return (await stat(exportOf(exp, 'loop').file)).blocks === 0;
  }

  async isAttached(exp: Export, device: string): Promise<boolean> {
    return (await this.sysfs.backingFile(device)) === exportOf(exp, 'loop').file;
  }
}
