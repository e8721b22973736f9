import { execFileSync } from 'node:child_process';
import { mkdtempSync } from 'node:fs';
import { join } from 'node:path';
import { loopDevicesUnder, mountsUnder } from '../helpers/cleanup.js';
import { REPO_ROOT } from './ballast.js';
import { describeResult, runCommand, startCommand, type Background, type CommandResult } from './command.js';

/** What runs inside the chroot sees only this, not the test runner's environment (NODE_OPTIONS, CA paths, ...). */
const CLEAN_ENV = { PATH: '/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin', LANG: 'C.UTF-8', HOME: '/root' };

/**
 * A Debian bookworm root made by scripts/debian-rootfs.sh, with /proc, /sys and /dev mounted in
 * it (node needs /proc and /dev; ballast reads loop bindings and device sizes from /sys, as on
 * every host and in a managed plugin's container). `remove()` unmounts whatever is mounted under
 * it (those three, and volumes a daemon run inside mounted), detaches loop devices backed by files
 * under it, and deletes the directory only once nothing is mounted under it: a bound /dev must
 * never meet `rm -rf`.
 */
export class Chroot {
  private constructor(readonly dir: string) {}

  /** `packages`: the comma-separated --include list for debootstrap (cached per list). */
  static async create(packages: string, parent = '/var/tmp'): Promise<Chroot> {
    const chroot = new Chroot(mkdtempSync(join(parent, 'ballast-chroot-')));
    try {
      const made = await runCommand(['bash', join(REPO_ROOT, 'scripts/debian-rootfs.sh'), chroot.dir, packages], { timeoutMs: 900_000 });
      if (made.code !== 0) throw new Error(`debian-rootfs.sh failed\n${describeResult(made)}`);
      execFileSync('mount', ['-t', 'proc', 'proc', join(chroot.dir, 'proc')], { timeout: 10_000 });
      execFileSync('mount', ['-t', 'sysfs', 'sysfs', join(chroot.dir, 'sys')], { timeout: 10_000 });
      execFileSync('mount', ['--bind', '/dev', join(chroot.dir, 'dev')], { timeout: 10_000 });
    } catch (err) {
      chroot.remove();
      throw err;
    }
    return chroot;
  }

  /** Runs argv inside the chroot, with a clean environment; never throws for a failing command. */
  run(argv: string[], timeoutMs = 60_000): Promise<CommandResult> {
    return runCommand(['chroot', this.dir, ...argv], { timeoutMs, env: CLEAN_ENV });
  }

  /** Starts argv inside the chroot in the background (the caller stops it), with a clean environment. */
  start(argv: string[], timeoutMs = 120_000): Background {
    return startCommand(['chroot', this.dir, ...argv], { timeoutMs, env: CLEAN_ENV });
  }

  /** Like run, but throws with the whole result unless the command exits 0. */
  async ok(argv: string[], timeoutMs = 60_000): Promise<CommandResult> {
    const result = await this.run(argv, timeoutMs);
    if (result.code !== 0) throw new Error(describeResult(result));
    return result;
  }

  path(inside: string): string {
    return join(this.dir, inside);
  }

  /** Unmounts (lazily if busy) and detaches what is under the root, then deletes it; throws if a mount stays. */
  remove(): void {
    for (const mountPoint of mountsUnder(this.dir).reverse()) {
      try {
        execFileSync('umount', [mountPoint], { timeout: 10_000, stdio: 'ignore' });
      } catch {
        execFileSync('umount', ['-l', mountPoint], { timeout: 10_000, stdio: 'ignore' });
      }
    }
    for (const device of loopDevicesUnder(this.dir)) execFileSync('losetup', ['-d', device], { timeout: 10_000 });
    const left = mountsUnder(this.dir);
    if (left.length) throw new Error(`not removing ${this.dir}: still mounted: ${left.join(', ')}`);
    execFileSync('rm', ['-rf', '--one-file-system', this.dir], { timeout: 120_000 });
  }
}
