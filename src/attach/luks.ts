import { createHash } from 'node:crypto';
import { readdir } from 'node:fs/promises';
import { join } from 'node:path';
import { CommandFailed } from '../errors.js';
import type { Exec } from '../exec.js';
import { dmKernelName } from './device-mapper.js';
import { sysfsRootOf } from './filesystem.js';

/** device-mapper names are at most 127 bytes; volume names up to 128. */
const DM_NAME_MAX = 127;

/** The device-mapper name of a volume's open LUKS device: /dev/mapper/ballast-NAME (a long name is cut and hashed). */
export function luksMapperName(volume: string): string {
  const name = `ballast-${volume}`;
  if (name.length <= DM_NAME_MAX) return name;
  return `${name.slice(0, DM_NAME_MAX - 17)}-${createHash('sha256').update(volume).digest('hex').slice(0, 16)}`;
}

export function luksMappedPath(volume: string): string {
  return `/dev/mapper/${luksMapperName(volume)}`;
}

/** cryptsetup's exit code for a key that opens no key slot ("No key available with this passphrase"). */
const EXIT_WRONG_KEY = 2;
/** "Device ballast-x already exists" (or busy). */
const EXIT_EXISTS = 5;

/**
 * LUKS2 between an attached device and its filesystem (cryptsetup). The key always goes on
 * stdin (`--key-file=-`): never in argv, never in a log line. ballast's keys are files of random
 * bytes (at least 32), so the key slot's PBKDF is PBKDF2 for a tenth of a second rather than
 * argon2's default second and up to a gigabyte of memory on every Mount: the key's own entropy,
 * not the stretching, is what protects it.
 */
export class Luks {
  constructor(
    private readonly exec: Exec,
    private readonly timeoutMs: number,
    private readonly sysfsRoot: string = sysfsRootOf(exec),
  ) {}

  async isLuks(device: string): Promise<boolean> {
    const { exitCode } = await this.exec.run(['cryptsetup', 'isLuks', device], { okExitCodes: [0, 1], timeoutMs: this.timeoutMs });
    return exitCode === 0;
  }

  /** Writes a new LUKS2 header: only ever on a device known to hold nothing. */
  async format(device: string, key: Buffer): Promise<void> {
    await this.exec.run(['cryptsetup', 'luksFormat', '--batch-mode', '--type', 'luks2', '--pbkdf', 'pbkdf2', '--iter-time', '100', '--key-file=-', device], {
      input: key,
      timeoutMs: this.timeoutMs,
    });
  }

  /** Opens the device as /dev/mapper/ballast-VOLUME: "wrong-key" when the key opens no key slot, "exists" when that mapping is open already. */
  async open(device: string, volume: string, key: Buffer): Promise<'opened' | 'wrong-key' | 'exists'> {
    const { exitCode } = await this.exec.run(['cryptsetup', 'open', '--type', 'luks', '--key-file=-', device, luksMapperName(volume)], {
      input: key,
      okExitCodes: [0, EXIT_WRONG_KEY, EXIT_EXISTS],
      timeoutMs: this.timeoutMs,
    });
    return exitCode === 0 ? 'opened' : exitCode === EXIT_WRONG_KEY ? 'wrong-key' : 'exists';
  }

  /** Closes the mapping; one that is not open is already closed. */
  async close(volume: string): Promise<void> {
    const { exitCode, stderr } = await this.exec.run(['cryptsetup', 'close', luksMapperName(volume)], { okExitCodes: [0, 4], timeoutMs: this.timeoutMs });
    // 4: "Device ballast-x is not active" (closed already), or busy: tell them apart.
    if (exitCode === 4 && !/not active|doesn't exist|does not exist/i.test(stderr)) {
      throw new CommandFailed(['cryptsetup', 'close', luksMapperName(volume)], exitCode, stderr, false);
    }
  }

  async isOpen(volume: string): Promise<boolean> {
    const { exitCode } = await this.exec.run(['cryptsetup', 'status', luksMapperName(volume)], { okExitCodes: [0, 4], timeoutMs: this.timeoutMs });
    return exitCode === 0;
  }

  /** The open mapping follows its device's new size (a volume grown while mounted). */
  async resize(volume: string, key: Buffer): Promise<void> {
    await this.exec.run(['cryptsetup', 'resize', '--key-file=-', luksMapperName(volume)], { input: key, timeoutMs: this.timeoutMs });
  }

  /** The device under an open mapping (/dev/dm-N's only slave in sysfs), or undefined. */
  async backingDevice(mapped: string): Promise<string | undefined> {
    const dm = await dmKernelName(this.sysfsRoot, mapped.replace(/^\/dev\/mapper\//, ''));
    if (!dm) return undefined;
    const slaves = await readdir(join(this.sysfsRoot, 'sys/block', dm, 'slaves')).catch(() => []);
    return slaves.length === 1 ? `/dev/${slaves[0]}` : undefined;
  }
}
