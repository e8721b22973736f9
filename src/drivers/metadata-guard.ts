import { randomBytes } from 'node:crypto';
import { readFileSync, readlinkSync } from 'node:fs';
import { hostname } from 'node:os';
import { dirname } from 'node:path';
import { BackendUnavailable, isErrno, StaleRevision, VolumeNotFound } from '../errors.js';
import type { Logger } from '../log.js';
import { monotonicSeconds } from '../ownership/host-lease.js';
import { writeProblem, type FileStore } from './file-store.js';

/** How long one caller waits for a guard another writer holds. */
const WAIT_MS = 5_000;
/**
 * A guard this host has seen unchanged for this long (on its own monotonic clock) was left by
 * a writer that died mid-write. Never judged by the file's mtime: on NFS an exclusively created
 * file shows the server's create verifier (1970) to other clients, and clocks differ by host.
 */
export const GUARD_STALE_MS = 30_000;
/**
 * A writer that has held its guard this long gives up instead of committing: another host may
 * break the guard only after seeing it unchanged for GUARD_STALE_MS, and that observation began
 * after the writer created it, so a writer that commits within half of that is never broken.
 */
export const GUARD_HOLD_LIMIT_MS = GUARD_STALE_MS / 2;

export interface HeldGuard {
  /** Throws StaleRevision when the guard has been held too long to still be sure it is ours. */
  assertFresh(): void;
}

/** This process as a guard names it: a writer on this kernel (same boot, same PID namespace) can be checked by PID. */
const PROCESS = { boot: readOr('/proc/sys/kernel/random/boot_id'), pidns: linkOr('/proc/self/ns/pid'), pid: process.pid };

function readOr(path: string): string {
  try {
    return readFileSync(path, 'utf8').trim();
  } catch {
    return '';
  }
}

function linkOr(path: string): string {
  try {
    return readlinkSync(path);
  } catch {
    return '';
  }
}

/**
 * True when the guard was written by a process of this kernel and PID namespace that no longer
 * exists: a daemon killed in the middle of a compare-and-swap. Its guard goes at once instead of
 * after GUARD_STALE_MS. A guard from another host (other boot) is judged by time only.
 */
function writerIsGone(content: string): boolean {
  let writer: { boot?: unknown; pidns?: unknown; pid?: unknown };
  try {
    writer = JSON.parse(content) as typeof writer;
  } catch {
    return false;
  }
  if (!PROCESS.boot || !PROCESS.pidns || writer.boot !== PROCESS.boot || writer.pidns !== PROCESS.pidns || typeof writer.pid !== 'number') return false;
  try {
    process.kill(writer.pid, 0);
    return false;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === 'ESRCH';
  }
}

/** "host node-b (pid 4242)" from a guard's content, or what little can be said of it. */
function describeWriter(content: string | undefined): string {
  try {
    const writer = JSON.parse(content ?? '') as { host?: unknown; pid?: unknown };
    if (typeof writer.host === 'string') return `host ${writer.host}${typeof writer.pid === 'number' ? ` (pid ${writer.pid})` : ''}`;
  } catch {
    // an empty or partial guard: a writer that died while creating it
  }
  return 'an unknown writer';
}

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

/**
 * The guard file of a compare-and-swap on shared files: created exclusively (EEXIST: someone
 * else holds it), removed when done. A guard is judged stale by its identity - its content,
 * which carries a random token per holder - staying the same for GUARD_STALE_MS as this host
 * watched it, so neither clock skew nor NFS attribute caching can make a live guard look old.
 */
export class MetadataGuard {
  /** Per guard path: the content last seen there and since when (monotonic ms). */
  private readonly sightings = new Map<string, { content: string; sinceMs: number }>();

  constructor(
    private readonly files: FileStore,
    private readonly log: Logger,
    private readonly clockMs: () => number = () => monotonicSeconds() * 1000,
  ) {}

  async hold<T>(path: string, volume: string, body: (guard: HeldGuard) => Promise<T>): Promise<T> {
    const mine = JSON.stringify({ host: hostname(), ...PROCESS, token: randomBytes(8).toString('hex') });
    const deadline = this.clockMs() + WAIT_MS;
    for (;;) {
      try {
        // No fsync: the guard lives for milliseconds, and one lost to a crash is a dead writer's, broken by the stale rules.
        await this.files.writeNew(path, mine, { sync: false });
        break;
      } catch (err) {
        if (isErrno(err, 'ENOENT')) throw new VolumeNotFound(volume);
        if (!isErrno(err, 'EEXIST')) throw new BackendUnavailable(`cannot lock the metadata of volume ${volume}: ${writeProblem(err, this.files.describe(dirname(path)))}`);
        if (await this.breakIfStale(path, volume)) continue;
        if (this.clockMs() > deadline) throw this.stillLocked(path, volume);
        await sleep(5 + Math.random() * 20);
      }
    }
    this.sightings.delete(path);
    const heldSince = this.clockMs();
    const guard: HeldGuard = {
      assertFresh: () => {
        const heldMs = this.clockMs() - heldSince;
        if (heldMs > GUARD_HOLD_LIMIT_MS) {
          throw new StaleRevision(`the metadata guard of volume ${volume} was held ${Math.round(heldMs / 1000)} s; not committing (another host may have broken it)`);
        }
      },
    };
    try {
      return await body(guard);
    } finally {
      await this.release(path, mine, heldSince);
    }
  }

  /** Removes our guard; after a long hold, only if it is still ours (another host may own it now). */
  private async release(path: string, mine: string, heldSince: number): Promise<void> {
    try {
      if (this.clockMs() - heldSince >= GUARD_STALE_MS && (await this.files.readFile(path)) !== mine) return;
      await this.files.unlink(path);
    } catch {
      // Gone already, or unreachable: a guard left behind is broken by the next writer.
    }
  }

  /**
   * A guard that outlasted WAIT_MS: a writer holds it for milliseconds, so it is most likely a
   * crashed writer's. Says whose it is, and when this host will break it.
   */
  private stillLocked(path: string, volume: string): StaleRevision {
    const seen = this.sightings.get(path);
    const breakInS = seen ? Math.max(0, Math.ceil((seen.sinceMs + GUARD_STALE_MS - this.clockMs()) / 1000)) : GUARD_STALE_MS / 1000;
    const writer = describeWriter(seen?.content);
    return new StaleRevision(
      `the metadata of volume ${volume} stayed locked for ${WAIT_MS / 1000} s by ${writer} (guard file ${this.files.describe(path)}); ` +
        `if that writer crashed, this host removes the guard once it has seen it unchanged for ${GUARD_STALE_MS / 1000} s: ` +
        `retry in ${breakInS} s, or delete the guard file now if no ballast on that host is running`,
    );
  }

  /** True when it removed a stale guard: the caller tries again at once. */
  private async breakIfStale(path: string, volume: string): Promise<boolean> {
    let content: string | undefined;
    try {
      content = await this.files.readFile(path);
    } catch {
      return false; // unreadable right now: judge it at the next attempt
    }
    const now = this.clockMs();
    if (content === undefined) {
      this.sightings.delete(path); // released meanwhile: the next attempt takes it
      return false;
    }
    if (writerIsGone(content)) {
      this.log.warn('breaking a stale metadata guard left by a dead writer on this host', { volume, guard: this.files.describe(path) });
      this.sightings.delete(path);
      await this.files.unlink(path).catch(() => undefined);
      return true;
    }
    const seen = this.sightings.get(path);
    if (!seen || seen.content !== content) {
      this.sightings.set(path, { content, sinceMs: now });
      return false;
    }
    if (now - seen.sinceMs < GUARD_STALE_MS) return false;
    this.log.warn('breaking a stale metadata guard left by a dead writer', { volume, guard: this.files.describe(path), unchangedForMs: Math.round(now - seen.sinceMs) });
    this.sightings.delete(path);
    await this.files.unlink(path).catch(() => undefined);
    return true;
  }
}
