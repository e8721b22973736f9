import { mkdirSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { CommandFailed } from '../../src/errors.js';
import type { Exec, ExecOptions, ExecResult } from '../../src/exec.js';

/** What cryptsetup's default LUKS2 header takes from the start of a device. */
const LUKS2_HEADER_BYTES = 16 * 1024 * 1024;

/**
 * A stateful Exec fake that behaves like a small Linux host: losetup binds files to
 * /dev/loopN, mkfs marks a device formatted, mount/umount edit a mountinfo file that the
 * code under test reads, and bound loop devices appear in a sysfs tree under `sysfsRoot`
 * (sys/block/loopN/loop/backing_file, sys/class/block/loopN/size) as the kernel shows them.
 * It fakes only the Exec edge; the real commands run in test/integration/loop-backend.test.ts
 * and the docker suites.
 */
export class FakeHost implements Exec {
  readonly calls: string[] = [];
  private readonly loops = new Map<string, string>(); // device -> file
  private readonly formatted = new Map<string, { fstype: string; bytes: number }>(); // file -> filesystem
  private readonly mounts = new Map<string, string>(); // mountpoint -> device
  private nextLoop = 0;
  /** Mount points whose filesystem was shut down (xfs_io shutdown): the fence. */
  readonly shutDown = new Set<string>();
  /** Commands (by prefix) that take this long before they answer: a slow storage. */
  readonly delays: { prefix: string; ms: number }[] = [];
  /** Commands (by prefix) that fail with the given exit code and stderr. */
  readonly failures: { prefix: string; exitCode: number; stderr: string }[] = [];

  /** Where the code under test reads sysfs (src/attach/filesystem.ts sysfsRootOf). */
  readonly sysfsRoot: string;
  /** LUKS headers cryptsetup wrote: image file -> its key (hex). */
  readonly luksKeys = new Map<string, string>();
  /** Open LUKS mappings: dm name -> the loop device under it. */
  readonly luksMappings = new Map<string, string>();
  /** Per ext4 device, what dumpe2fs -h says beyond the size: the tests make a filesystem look unclean. */
  readonly ext4Superblock = new Map<string, string>();

  constructor(readonly mountinfoPath: string) {
    this.sysfsRoot = join(dirname(mountinfoPath), 'sysfs');
    mkdirSync(join(this.sysfsRoot, 'sys', 'block'), { recursive: true });
    mkdirSync(join(this.sysfsRoot, 'sys', 'class', 'block'), { recursive: true });
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
    for (const device of this.loops.keys()) this.unbind(device);
    this.mounts.clear();
    this.writeMountinfo();
  }

  /** Simulates a mount disappearing behind ballast's back (an operator's umount). */
  forgetMount(mountPoint: string): void {
    this.mounts.delete(mountPoint);
    this.writeMountinfo();
  }

  /** No superblock bytes from fake devices: Filesystem asks dumpe2fs, which the fake answers. */
  async readExt4Superblock(): Promise<Buffer> {
    return Buffer.alloc(0);
  }

  /** Forgets every filesystem mkfs made: as if the images were zeroed or reformatted by someone else. */
  forgetFilesystems(): void {
    this.formatted.clear();
  }

  async run(argv: readonly string[], options: ExecOptions = {}): Promise<ExecResult> {
    const line = argv.join(' ');
    this.calls.push(line);
    const delay = this.delays.find((d) => line.startsWith(d.prefix));
    if (delay) await new Promise((r) => setTimeout(r, delay.ms));
    const failure = this.failures.find((f) => line.startsWith(f.prefix));
    if (failure) throw new CommandFailed([...argv], failure.exitCode, failure.stderr, false);
    const result = this.execute([...argv], options.input);
    if (!(options.okExitCodes ?? [0]).includes(result.exitCode)) {
      throw new CommandFailed([...argv], result.exitCode, result.stderr, false);
    }
    return result;
  }

  private execute(argv: string[], input?: string | Buffer): ExecResult {
    const ok = (stdout = ''): ExecResult => ({ stdout, stderr: '', exitCode: 0 });
    const [cmd] = argv;
    const last = argv[argv.length - 1]!;
    switch (cmd) {
      case 'losetup': {
        if (argv.includes('--find')) {
          const device = `/dev/loop${this.nextLoop++}`;
          this.bind(device, last);
          return ok(`${device}\n`);
        }
        if (argv.includes('--detach')) {
          this.unbind(last);
          return ok();
        }
        break;
      }
      case 'blkid': {
        if (this.luksKeys.has(this.fileOf(last))) return ok(`DEVNAME=${last}\nTYPE=crypto_LUKS\n`);
        const fs = this.formatted.get(this.fileOf(last));
        return fs ? ok(`DEVNAME=${last}\nTYPE=${fs.fstype}\n`) : { stdout: '', stderr: '', exitCode: 2 };
      }
      case 'dumpe2fs': {
        const fs = this.formatted.get(this.fileOf(last));
        if (fs?.fstype !== 'ext4') return { stdout: '', stderr: 'dumpe2fs: Bad magic number in super-block while trying to open', exitCode: 1 };
        const superblock =
          this.ext4Superblock.get(last) ??
          'Filesystem state:         clean\nFilesystem features:      has_journal extent\nMount count:              1\nMaximum mount count:      -1\nCheck interval:           0 (<none>)\n';
        return ok(`Filesystem magic number:  0xEF53\n${superblock}Block count:              ${fs.bytes / 1024}\nBlock size:               1024\n`);
      }
      case 'xfs_db': {
        const fs = this.formatted.get(this.fileOf(last));
        if (fs?.fstype !== 'xfs') return { stdout: '', stderr: `xfs_db: ${last} is not a valid XFS filesystem (unexpected SB magic number 0x00000000)`, exitCode: 1 };
        return ok(`magicnum = 0x58465342\ndblocks = ${fs.bytes / 4096}\nblocksize = 4096\n`);
      }
      case 'mkfs.ext4':
      case 'mkfs.xfs':
        this.formatted.set(this.fileOf(last), { fstype: cmd.slice(5), bytes: this.deviceBytes(last) });
        return ok();
      case 'resize2fs': {
        const fs = this.formatted.get(this.fileOf(last));
        if (fs) fs.bytes = this.deviceBytes(last);
        return ok();
      }
      case 'xfs_io':
        this.shutDown.add(last);
        return ok();
      case 'fsfreeze':
        return ok(); // the fence freezes before its shutdown and thaws after
      case 'xfs_growfs': {
        const device = this.mounts.get(last) ?? '';
        const fs = this.formatted.get(this.fileOf(device));
        if (fs) fs.bytes = this.deviceBytes(device);
        return ok();
      }
      case 'fsck':
      case 'e2fsck':
        return ok();
      case 'mount': {
        const device = argv[argv.length - 2]!;
        this.mounts.set(last, device);
        this.writeMountinfo();
        return ok();
      }
      case 'cryptsetup':
        return this.cryptsetup(argv, Buffer.from(input ?? '').toString('hex'));
      case 'umount':
        if (!this.mounts.delete(last)) return { stdout: '', stderr: `umount: ${last}: not mounted.`, exitCode: 32 };
        this.writeMountinfo();
        return ok();
    }
    return { stdout: '', stderr: `FakeHost: unexpected command ${argv.join(' ')}`, exitCode: 127 };
  }

  /** cryptsetup's isLuks, luksFormat, open, close, status and resize, with its exit codes. */
  private cryptsetup(argv: string[], key: string): ExecResult {
    const done = (exitCode = 0, stderr = ''): ExecResult => ({ stdout: '', stderr, exitCode });
    const [, action] = argv;
    const last = argv[argv.length - 1]!;
    switch (action) {
      case 'isLuks':
        return done(this.luksKeys.has(this.fileOf(last)) ? 0 : 1);
      case 'luksFormat':
        this.formatted.delete(this.fileOf(last));
        this.luksKeys.set(this.fileOf(last), key);
        return done();
      case 'open': {
        const device = argv[argv.length - 2]!;
        if (this.luksMappings.has(last)) return done(5, `Device ${last} already exists.`);
        if (this.luksKeys.get(this.fileOf(device)) !== key) return done(2, 'No key available with this passphrase.');
        this.luksMappings.set(last, device);
        this.bindMapping(last, device);
        return done();
      }
      case 'close':
        if (!this.luksMappings.has(last)) return done(4, `Device ${last} is not active.`);
        if ([...this.mounts.values()].includes(`/dev/mapper/${last}`)) return done(5, `Device ${last} is still in use.`);
        this.luksMappings.delete(last);
        rmSync(join(this.sysfsRoot, 'sys', 'block', `dm-${last}`), { recursive: true, force: true });
        return done();
      case 'status':
        return done(this.luksMappings.has(last) ? 0 : 4);
      case 'resize':
        return done();
    }
    return done(1, `FakeHost: unexpected cryptsetup ${action}`);
  }

  /** The image under a device: a loop device's backing file, or FILE#luks for a LUKS mapping on one. */
  private fileOf(device: string): string {
    const mapped = /^\/dev\/mapper\/(.+)$/.exec(device);
    if (!mapped) return this.loops.get(device) ?? '';
    const under = this.luksMappings.get(mapped[1]!);
    return under ? `${this.loops.get(under) ?? ''}#luks` : '';
  }

  /** A mapping in sysfs as the kernel shows it: sys/block/dm-N/{dm/name,slaves/loopM} and its size (dm-NAME here). */
  private bindMapping(name: string, device: string): void {
    const dm = join(this.sysfsRoot, 'sys', 'block', `dm-${name}`);
    mkdirSync(join(dm, 'dm'), { recursive: true });
    mkdirSync(join(dm, 'slaves', device.slice('/dev/'.length)), { recursive: true });
    writeFileSync(join(dm, 'dm', 'name'), `${name}\n`);
    mkdirSync(join(this.sysfsRoot, 'sys', 'class', 'block', `dm-${name}`), { recursive: true });
    writeFileSync(join(this.sysfsRoot, 'sys', 'class', 'block', `dm-${name}`, 'size'), `${this.deviceBytes(`/dev/mapper/${name}`) / 512}\n`);
  }

  private bind(device: string, file: string): void {
    this.loops.set(device, file);
    const name = device.slice('/dev/'.length);
    mkdirSync(join(this.sysfsRoot, 'sys', 'block', name, 'loop'), { recursive: true });
    writeFileSync(join(this.sysfsRoot, 'sys', 'block', name, 'loop', 'backing_file'), `${file}\n`);
    mkdirSync(join(this.sysfsRoot, 'sys', 'class', 'block', name), { recursive: true });
    writeFileSync(join(this.sysfsRoot, 'sys', 'class', 'block', name, 'size'), `${this.deviceBytes(device) / 512}\n`);
  }

  private unbind(device: string): void {
    this.loops.delete(device);
    const name = device.slice('/dev/'.length);
    rmSync(join(this.sysfsRoot, 'sys', 'block', name), { recursive: true, force: true });
    writeFileSync(join(this.sysfsRoot, 'sys', 'class', 'block', name, 'size'), '0\n');
  }

  /** A loop device is as large as its backing file (the real file in the test's temp dir). */
  private deviceBytes(device: string): number {
    const under = this.luksMappings.get(device.replace(/^\/dev\/mapper\//, ''));
    if (under) return this.deviceBytes(under) - LUKS2_HEADER_BYTES;
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
