import { join } from 'node:path';
import { BackendUnavailable, errorMessage, isErrno } from '../errors.js';
import type { FileStore } from './file-store.js';
import type { ChangeListing } from './types.js';

/** <root>/.rev/<name>@<rev>: the change markers of file-volumes.ts (its layout comment says more). */
const MARKERS = '.rev';

/**
 * One empty file a volume, named for its revision and renamed to the next one before every
 * metadata write: one readdir tells a reader which volumes changed. Kept only where a rename is
 * a local syscall (a local or NFS root).
 */
export class ChangeMarkers {
  constructor(
    private readonly root: string,
    private readonly files: FileStore,
  ) {}

  /**
   * Names and change markers in two readdirs, for an index that re-reads only what changed. A name
   * may have no marker (a crash after create) or several (an aborted write, a reader's repair racing
   * a writer): readers re-read such names.
   */
  async list(): Promise<ChangeListing> {
    let entries: string[];
    let markers: string[];
    try {
      // Markers first: a create renames its directory into place before it writes its marker, so a
      // marker listed here without a directory listed after it belongs to a volume that is gone.
      markers = (await this.files.readdir(join(this.root, MARKERS))) ?? [];
      entries = (await this.files.readdir(this.root)) ?? [];
    } catch (err) {
      throw new BackendUnavailable(`cannot list ${this.files.describe(this.root)}: ${errorMessage(err)}`);
    }
    const revisions = new Map<string, number[]>();
    for (const marker of markers) {
      const at = marker.lastIndexOf('@');
      const revision = Number(marker.slice(at + 1));
      if (at <= 0 || !Number.isSafeInteger(revision)) continue;
      const name = marker.slice(0, at);
      revisions.set(name, [...(revisions.get(name) ?? []), revision]);
    }
    const names = entries.filter((entry) => !entry.startsWith('.'));
    const present = new Set(names);
    for (const [name, seen] of revisions) {
      if (present.has(name)) continue;
      // Its directory was deleted by hand (or a destroy is finishing): drop the markers it left.
      revisions.delete(name);
      for (const revision of seen) await this.remove(name, revision);
    }
    return { names, revisions };
  }

  /**
   * After a reader read `revision` of a volume whose markers were `seen`: markers below it go (no
   * writer can rename them any more: writers hold the guard and read at least that revision), and a
   * missing one is put back.
   */
  async repair(name: string, revision: number, seen: number[]): Promise<void> {
    for (const old of seen.filter((r) => r < revision)) await this.remove(name, old);
    if (!seen.some((r) => r >= revision)) await this.move(name, undefined, revision);
  }

  /** Moves the marker from `from` to `to` (or creates `to`); before the metadata write, so readers never miss a change. */
  async move(name: string, from: number | undefined, to: number): Promise<void> {
    if (from !== undefined) {
      try {
        await this.files.rename(this.path(name, from), this.path(name, to));
        return;
      } catch (err) {
        if (!isErrno(err, 'ENOENT')) throw err;
      }
    }
    try {
      await this.files.writeNew(this.path(name, to), '', { sync: false });
    } catch (err) {
      if (isErrno(err, 'EEXIST')) return; // an aborted write or a reader's repair made it already
      if (!isErrno(err, 'ENOENT')) throw err;
      await this.files.mkdir(join(this.root, MARKERS));
      await this.files.writeNew(this.path(name, to), '', { sync: false }).catch((e) => {
        if (!isErrno(e, 'EEXIST')) throw e;
      });
    }
  }

  /** Removes one marker; a missing one is no matter (readers re-read a volume without a marker). */
  async remove(name: string, revision: number): Promise<void> {
    await this.files.unlink(this.path(name, revision)).catch(() => undefined);
  }

  private path(name: string, revision: number): string {
    return join(this.root, MARKERS, `${name}@${revision}`);
  }
}
