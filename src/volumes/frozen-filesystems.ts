import { mkdir, readdir, readFile, rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import type { Filesystem } from '../attach/filesystem.js';
import { errorMessage } from '../errors.js';
import type { Logger } from '../log.js';
import type { MountTable } from '../util/mountinfo.js';
import { crashPointReached } from './steps.js';

/**
 * Freezes a mounted volume's filesystem for the moment a snapshot is taken, and thaws it on every
 * path. Before each freeze a note `state_dir/frozen/<volume>` names the mount: if the daemon dies
 * while it is frozen, the next start thaws it (containers writing to it are stuck until then).
 */
export class FrozenFilesystems {
  private readonly dir: string;

  constructor(
    stateDir: string,
    private readonly filesystem: Filesystem,
    private readonly mounts: MountTable,
    private readonly log: Logger,
  ) {
    this.dir = join(stateDir, 'frozen');
  }

  async whileFrozen<T>(volume: string, mountpoint: string, device: string, body: () => Promise<T>): Promise<T> {
    await mkdir(this.dir, { recursive: true, mode: 0o700 });
    const note = join(this.dir, volume);
    await writeFile(note, JSON.stringify({ mountpoint, device }));
    try {
      await this.filesystem.freeze(mountpoint);
      crashPointReached('freeze');
      const started = performance.now();
      try {
        return await body();
      } finally {
        await this.filesystem.thaw(mountpoint);
        this.log.info('filesystem thawed', { volume, mountpoint, frozenMs: Math.round(performance.now() - started) });
      }
    } finally {
      await rm(note, { force: true });
    }
  }

  /** At start: thaws what a daemon that died mid-snapshot left frozen (only mounts still of the noted device). */
  async thawLeftovers(): Promise<void> {
    let names: string[];
    try {
      names = await readdir(this.dir);
    } catch {
      return;
    }
    for (const volume of names) {
      const note = join(this.dir, volume);
      try {
        const { mountpoint, device } = JSON.parse(await readFile(note, 'utf8')) as { mountpoint: string; device: string };
        if ((await this.mounts.find(mountpoint))?.source === device) {
          await this.filesystem.thaw(mountpoint);
          this.log.warn('thawed a filesystem left frozen by a snapshot the daemon did not finish', { volume, mountpoint });
        }
        await rm(note, { force: true });
      } catch (err) {
        this.log.error('cannot thaw a filesystem left frozen by an unfinished snapshot', { volume, error: errorMessage(err) });
      }
    }
  }
}
