import { AttachFailed, errorMessage } from '../../errors.js';
import type { Exec } from '../../exec.js';
import type { ScsiSysfs } from '../scsi-sysfs.js';

export interface MultipathOptions {
  timeoutMs: number;
  /** How long to wait for multipathd to build the map after the paths were added. */
  mapWaitMs?: number;
  pollMs?: number;
  sleep?: (ms: number) => Promise<void>;
}

/** dm-multipath over the SCSI paths of one LUN: find or build the map, and flush it on detach. */
export class Multipath {
  private readonly sleep: (ms: number) => Promise<void>;

  constructor(
    private readonly exec: Exec,
    private readonly sysfs: ScsiSysfs,
    private readonly options: MultipathOptions,
  ) {
    this.sleep = options.sleep ?? ((ms) => new Promise((r) => setTimeout(r, ms)));
  }

  /** The map (dm-N) holding any of these paths, if multipathd made one. */
  async findMap(paths: readonly string[]): Promise<string | undefined> {
    for (const path of paths) {
      for (const dm of await this.sysfs.holders(path)) {
        if ((await this.sysfs.dmUuid(dm))?.startsWith('mpath-')) return dm;
      }
    }
    return undefined;
  }

  /**
   * Returns /dev/mapper/<name> for the map over `paths`. Like os-brick, forces the map when
   * multipathd did not make one by itself (find_multipaths yes, or slow uevents):
   * `multipath -a` whitelists the WWID, `multipathd add path` hands each path over.
   */
  async ensureMap(paths: readonly string[]): Promise<string> {
    let dm = await this.findMap(paths);
    if (!dm) {
      await this.exec.run(['multipath', '-a', `/dev/${paths[0]}`], { timeoutMs: this.options.timeoutMs, okExitCodes: [0, 1] });
      for (const path of paths) {
        await this.exec
          .run(['multipathd', 'add', 'path', `/dev/${path}`], { timeoutMs: Math.min(this.options.timeoutMs, 5_000) })
          .catch(() => undefined); // already added by multipathd's own uevent handling
      }
      dm = await this.waitForMap(paths);
    }
    await this.waitForPaths(dm, paths);
    const name = await this.sysfs.dmName(dm);
    if (!name) throw new AttachFailed(`multipath map ${dm} has no name in sysfs`);
    await this.waitForNode(name);
    return `/dev/mapper/${name}`;
  }

  /** udev makes /dev/mapper/NAME a little after the map exists; without udev, dmsetup makes it. */
  private async waitForNode(name: string): Promise<void> {
    const waitMs = this.options.mapWaitMs ?? 10_000;
    const started = Date.now();
    let asked = false;
    while (!(await this.sysfs.deviceNodeExists(`mapper/${name}`))) {
      if (!asked && Date.now() - started > Math.min(2_000, waitMs / 2)) {
        asked = true;
        await this.exec.run(['dmsetup', 'mknodes', name], { timeoutMs: this.options.timeoutMs }).catch(() => undefined);
      }
      if (Date.now() - started > waitMs) throw new AttachFailed(`/dev/mapper/${name} did not appear within ${waitMs / 1000} s (is udev running?)`);
      await this.sleep(this.options.pollMs ?? 250);
    }
  }

  /** Flushes (removes) the map: outstanding I/O completes, then the dm device goes away. */
  async flush(name: string): Promise<void> {
    let last: unknown;
    for (let attempt = 0; attempt < 3; attempt++) {
      try {
        await this.exec.run(['multipath', '-f', name], { timeoutMs: this.options.timeoutMs });
        return;
      } catch (err) {
        last = err;
        await this.sleep(1_000);
      }
    }
    throw new AttachFailed(`cannot flush multipath map ${name}: ${errorMessage(last)}`);
  }

  private async waitForMap(paths: readonly string[]): Promise<string> {
    const deadline = Date.now() + (this.options.mapWaitMs ?? 10_000);
    for (;;) {
      const dm = await this.findMap(paths);
      if (dm) return dm;
      if (Date.now() > deadline) {
        throw new AttachFailed(`multipathd made no map over ${paths.map((p) => `/dev/${p}`).join(', ')} within ${(this.options.mapWaitMs ?? 10_000) / 1000} s; is multipathd running?`);
      }
      await this.sleep(this.options.pollMs ?? 250);
    }
  }

  /** Waits (bounded) until the map holds every path we logged in, so none is left outside it. */
  private async waitForPaths(dm: string, paths: readonly string[]): Promise<void> {
    const deadline = Date.now() + (this.options.mapWaitMs ?? 10_000);
    for (;;) {
      const slaves = await this.sysfs.slaves(dm);
      if (paths.every((p) => slaves.includes(p))) return;
      if (Date.now() > deadline) {
        throw new AttachFailed(`multipath map ${dm} holds ${slaves.join(', ') || 'no paths'} but not all of ${paths.join(', ')}`);
      }
      await this.sleep(this.options.pollMs ?? 250);
    }
  }
}
