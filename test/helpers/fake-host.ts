import { statSync, writeFileSync } from 'node:fs';
import { CommandFailed } from '../../src/errors.js';
import type { Exec, ExecOptions, ExecResult } from '../../src/exec.js';

/**
 * A stateful Exec fake that behaves like a small Linux host: losetup binds files to
 * /dev/loopN, mkfs marks a device formatted, mount/umount edit a mountinfo file that the
 * code under test reads. It fakes only the Exec edge; the real commands run in
 * test/integration/loop-backend.test.ts and the docker suites.
 */
export class FakeHost implements Exec {
  readonly calls: string[] = [];
  private readonly loops = new Map<string, string>(); // device -> file
  private readonly formatted = new Map<string, { fstype: string; bytes: number }>(); // file -> filesystem
  private readonly mounts = new Map<string, string>(); // mountpoint -> device
  private nextLoop = 0;
  /** Mount points whose filesystem was shut down (xfs_io shutdown): the fence. */
  readonly shutDown = new Set<string>();
  /** Commands (by prefix) that fail with the given exit code and stderr. */
  readonly failures: { prefix: string; exitCode: number; stderr: string }[] = [];

  constructor(readonly mountinfoPath: string) {
    this.writeMountinfo();
  }

  fail(prefix: string, exitCode = 1, stderr = 'injected failure'): this {
    this.failures.push({ prefix, exitCode, stderr });
    return this;
  }

  get attachedDevices(): string[] {
    return [...this.loops.keys()];
  }

  get mountPoints(): string[] {
    return [...this.mounts.keys()];
  }

  /** Simulates the kernel losing every mount and loop device (a reboot). */
  reboot(): void {
    this.loops.clear();
    this.mounts.clear();
    this.writeMountinfo();
  }

  /** Simulates a mount disappearing behind ballast's back (an operator's umount). */
  forgetMount(mountPoint: string): void {
    this.mounts.delete(mountPoint);
    this.writeMountinfo();
  }

  async run(argv: readonly string[], options: ExecOptions = {}): Promise<ExecResult> {
    const line = argv.join(' ');
    this.calls.push(line);
    const failure = this.failures.find((f) => line.startsWith(f.prefix));
    if (failure) throw new CommandFailed([...argv], failure.exitCode, failure.stderr, false);
    const result = this.execute([...argv]);
    if (!(options.okExitCodes ?? [0]).includes(result.exitCode)) {
      throw new CommandFailed([...argv], result.exitCode, result.stderr, false);
    }
    return result;
  }

  private execute(argv: string[]): ExecResult {
    const ok = (stdout = ''): ExecResult => ({ stdout, stderr: '', exitCode: 0 });
    const [cmd] = argv;
    const last = argv[argv.length - 1]!;
    switch (cmd) {
      case 'losetup': {
        if (argv.includes('--associated')) {
          const file = argv[argv.indexOf('--associated') + 1];
          const rows = [...this.loops].filter(([, f]) => f === file).map(([name, f]) => ({ name, 'back-file': f }));
          return ok(JSON.stringify({ loopdevices: rows }));
        }
        if (argv.includes('--find')) {
          const device = `/dev/loop${this.nextLoop++}`;
          this.loops.set(device, last);
          return ok(`${device}\n`);
        }
        if (argv.includes('--detach')) {
          this.loops.delete(last);
          return ok();
        }
        break;
      }
      case 'blkid': {
        const fs = this.formatted.get(this.loops.get(last) ?? '');
        return fs ? ok(`DEVNAME=${last}\nTYPE=${fs.fstype}\n`) : { stdout: '', stderr: '', exitCode: 2 };
      }
      case 'blockdev':
        return ok(`${this.deviceBytes(last)}\n`);
      case 'dumpe2fs': {
        const fs = this.formatted.get(this.loops.get(last) ?? '');
        return fs ? ok(`Block count:              ${fs.bytes / 1024}\nBlock size:               1024\n`) : { stdout: '', stderr: 'Bad magic number', exitCode: 1 };
      }
      case 'mkfs.ext4':
      case 'mkfs.xfs':
        this.formatted.set(this.loops.get(last) ?? '', { fstype: cmd.slice(5), bytes: this.deviceBytes(last) });
        return ok();
      case 'resize2fs': {
        const fs = this.formatted.get(this.loops.get(last) ?? '');
        if (fs) fs.bytes = this.deviceBytes(last);
        return ok();
      }
      case 'xfs_io':
        this.shutDown.add(last);
        return ok();
      case 'fsck':
      case 'e2fsck':
      case 'xfs_growfs':
        return ok();
      case 'mount': {
        const device = argv[argv.length - 2]!;
        this.mounts.set(last, device);
        this.writeMountinfo();
        return ok();
      }
      case 'umount':
        if (!this.mounts.delete(last)) return { stdout: '', stderr: `umount: ${last}: not mounted.`, exitCode: 32 };
        this.writeMountinfo();
        return ok();
    }
    return { stdout: '', stderr: `FakeHost: unexpected command ${argv.join(' ')}`, exitCode: 127 };
  }

  /** A loop device is as large as its backing file (the real file in the test's temp dir). */
  private deviceBytes(device: string): number {
    const file = this.loops.get(device);
    return file ? statSync(file).size : 0;
  }

  private writeMountinfo(): void {
    const lines = ['22 1 0:21 / / rw,relatime - ext4 /dev/vda rw'];
    let id = 100;
    for (const [mountPoint, device] of this.mounts) {
      lines.push(`${id++} 22 7:0 / ${mountPoint.replace(/ /g, '\\040')} rw,relatime - ext4 ${device} rw`);
    }
    writeFileSync(this.mountinfoPath, `${lines.join('\n')}\n`);
  }
}
