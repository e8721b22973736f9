import type { Exec } from '../../exec.js';
import type { FileStore } from '../file-store.js';
import { copyTimeoutMs, type Copier, type CopyMethod, type CopyProgress, type CopyResult } from '../image-copy.js';

// Each cp is a command of its own (no shell around it), so a timeout stops the cp itself. The
// reflink goes first: instant, no space, and it fails at once where the pool's filesystem
// cannot share extents. Two runs rather than one `--reflink=auto`, so the record can say which
// it was. cp exits 1 for any failure: the sparse copy then tries, and reports the real one.
const REFLINK_FAILED = 1;

const PROGRESS_EVERY_MS = 1_000;

/**
 * Copies image files on the array host with its own cp, through the array host's Exec: a
 * reflink where the pool's filesystem has them (xfs with reflink, btrfs), else a sparse copy.
 * The data never crosses the network; over SSH every command is bounded on the array host.
 */
export class ArrayHostCopier implements Copier {
  constructor(
    private readonly exec: Exec,
    private readonly files: FileStore,
    /** Bound on the small commands (stat, rm). */
    private readonly commandTimeoutMs: number,
    /** Base bound on a copy; it grows with the data, as for the loop copier. */
    private readonly copyBaseTimeoutMs: number,
  ) {}

  async copy(source: string, target: string, onProgress?: (p: CopyProgress) => void): Promise<CopyResult> {
    const { size, dataBytes } = await this.sizeOf(source);
    await this.files.writeNew(target, '', { sync: false }); // cp would overwrite a file that is there: claim the name first (EEXIST)
    const progress = onProgress && this.reportProgress(target, dataBytes, onProgress);
    let method: CopyMethod = 'reflink';
    let held: number;
    try {
      const timeoutMs = copyTimeoutMs(this.copyBaseTimeoutMs, dataBytes);
      const reflink = await this.exec.run(['cp', '--reflink=always', '--', source, target], { timeoutMs, okExitCodes: [0, REFLINK_FAILED] });
      if (reflink.exitCode !== 0) {
        method = 'copy';
        await this.exec.run(['cp', '--reflink=never', '--sparse=always', '--', source, target], { timeoutMs });
      }
      await this.exec.run(['sync', '--', target], { timeoutMs });
      held = await this.blocksHeld(target);
    } catch (err) {
      await this.exec.run(['rm', '-f', '--', target], { timeoutMs: this.commandTimeoutMs }).catch(() => undefined);
      throw err;
    } finally {
      progress?.stop();
    }
    onProgress?.({ doneBytes: dataBytes, totalBytes: dataBytes });
    return { method, bytes: size, writtenBytes: method === 'reflink' ? 0 : held };
  }

  /** The apparent size and the bytes of data (a sparse image's holes are not counted). */
  private async sizeOf(path: string): Promise<{ size: number; dataBytes: number }> {
    const { stdout } = await this.exec.run(['stat', '-L', '-c', '%s %b %B', '--', path], { timeoutMs: this.commandTimeoutMs });
    const [size, ...blocks] = stdout.trim().split(' ');
    if (!Number.isSafeInteger(Number(size))) throw new Error(`unexpected output of stat: ${JSON.stringify(stdout)}`);
    return { size: Number(size), dataBytes: blocksOf(blocks.join(' ')) };
  }

  /** The bytes of the blocks the file holds. */
  private async blocksHeld(path: string): Promise<number> {
    return blocksOf((await this.exec.run(['stat', '-c', '%b %B', '--', path], { timeoutMs: this.commandTimeoutMs })).stdout);
  }

  /** Polls the blocks the target holds so far, one stat at a time. */
  private reportProgress(target: string, dataBytes: number, onProgress: (p: CopyProgress) => void): { stop(): void } {
    let busy = false;
    let stopped = false;
    const timer = setInterval(() => {
      if (busy) return;
      busy = true;
      void this.blocksHeld(target)
        .then((held) => {
          if (!stopped) onProgress({ doneBytes: Math.min(held, dataBytes), totalBytes: dataBytes });
        })
        .catch(() => undefined)
        .finally(() => (busy = false));
    }, PROGRESS_EVERY_MS);
    return {
      stop: () => {
        stopped = true;
        clearInterval(timer);
      },
    };
  }
}

/** Bytes from stat's "%b %B" ("6152 512": blocks, and the size of a block). */
function blocksOf(stdout: string): number {
  const [blocks, blockSize] = stdout.trim().split(' ').map(Number);
  const bytes = blocks! * blockSize!;
  if (!Number.isSafeInteger(bytes)) throw new Error(`unexpected output of stat: ${JSON.stringify(stdout)}`);
  return bytes;
}
