import type { Export } from '../export.js';
import type { Exec } from './exec.js';
import type { Attacher } from './types.js';

/**
 * Parses `losetup --json --list --associated FILE --output NAME,BACK-FILE`:
 *   {"loopdevices": [{"name": "/dev/loop3", "back-file": "/var/lib/ballast/loop/db/disk.img"}]}
 * A backing file removed while attached shows as "<path> (deleted)".
 */
export function parseLosetupJson(stdout: string): { device: string; file: string }[] {
  if (!stdout.trim()) return [];
  const parsed = JSON.parse(stdout) as { loopdevices?: { name?: string; 'back-file'?: string }[] };
  return (parsed.loopdevices ?? [])
    .filter((row) => row.name && row['back-file'] !== undefined)
    .map((row) => ({ device: String(row.name), file: String(row['back-file']).replace(/ \(deleted\)$/, '') }));
}

/** Attaches image files as loop devices with losetup, reusing a device already bound to the file. */
export class LoopAttacher implements Attacher {
  readonly transport = 'loop';

  constructor(private readonly exec: Exec) {}

  /** --nooverlap makes losetup return the device already bound to the file instead of binding another. */
  async attach(exp: Export): Promise<string> {
    const { stdout } = await this.exec.run(['losetup', '--find', '--show', '--nooverlap', exp.file]);
    const device = stdout.trim();
    if (!/^\/dev\/loop\d+$/.test(device)) throw new Error(`losetup printed no loop device for ${exp.file}: ${JSON.stringify(stdout)}`);
    return device;
  }

  async detach(exp: Export, device: string): Promise<void> {
    // Only detach a device that is still bound to this volume's file: never someone else's.
    if (!(await this.devicesFor(exp.file)).includes(device)) return;
    await this.exec.run(['losetup', '--detach', device]);
  }

  async isAttached(exp: Export, device: string): Promise<boolean> {
    return (await this.devicesFor(exp.file)).includes(device);
  }

  private async devicesFor(file: string): Promise<string[]> {
    const { stdout } = await this.exec.run(['losetup', '--json', '--list', '--associated', file, '--output', 'NAME,BACK-FILE']);
    return parseLosetupJson(stdout)
      .filter((row) => row.file === file)
      .map((row) => row.device);
  }
}
