import { Mutex, withTimeout, E_TIMEOUT } from 'async-mutex';
import { Timeout } from '../errors.js';

/**
 * One async mutex per volume name: calls on one volume run one at a time, calls on
 * different volumes run in parallel. Waiting is bounded so dockerd never hangs on us.
 */
export class KeyedMutex {
  private readonly locks = new Map<string, { mutex: Mutex; users: number }>();

  constructor(private readonly timeoutMs: number) {}

  async run<T>(key: string, body: () => Promise<T>): Promise<T> {
    let entry = this.locks.get(key);
    if (!entry) {
      entry = { mutex: new Mutex(), users: 0 };
      this.locks.set(key, entry);
    }
    entry.users += 1;
    try {
      return await withTimeout(entry.mutex, this.timeoutMs).runExclusive(body);
    } catch (err) {
      if (err === E_TIMEOUT) {
        throw new Timeout(`volume ${key} is busy with another request; gave up after ${Math.round(this.timeoutMs / 1000)} s`);
      }
      throw err;
    } finally {
      entry.users -= 1;
      if (entry.users === 0) this.locks.delete(key);
    }
  }

  /** Names with a request running or waiting. */
  busyKeys(): string[] {
    return [...this.locks.keys()];
  }
}
