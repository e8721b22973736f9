import { OperationError } from '../errors.js';
import { KeyedMutex } from './keyed-mutex.js';
import type { VolumeIndex } from './volume-index.js';

/**
 * The lock every call on a volume runs under. A call that may change the volume also tells
 * the index, so the next Get reads it afresh, and names itself in the error it throws.
 */
export class VolumeLocks {
  private readonly mutex: KeyedMutex;

  constructor(
    timeoutMs: number,
    private readonly index: VolumeIndex,
  ) {
    this.mutex = new KeyedMutex(timeoutMs);
  }

  /** Runs `body` under the volume's lock, nothing more. */
  run<T>(name: string, body: () => Promise<T>): Promise<T> {
    return this.mutex.run(name, body);
  }

  /**
   * A call that may change the volume: under its lock, errors wrapped as "OP NAME: ...", and the
   * index learns of the change. `indexes` says the body puts what it changed into the index
   * itself when it succeeds.
   */
  async op<T>(op: string, name: string, body: () => Promise<T>, indexes = false): Promise<T> {
    let succeeded = false;
    try {
      const result = await this.mutex.run(name, body);
      succeeded = true;
      return result;
    } catch (err) {
      throw err instanceof OperationError ? err : new OperationError(op, name, err);
    } finally {
      if (!(succeeded && indexes)) this.index.touch(name);
    }
  }
}
