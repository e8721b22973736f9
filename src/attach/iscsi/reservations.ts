import { createHash } from 'node:crypto';
import { AttachFailed, CommandFailed, errorMessage } from '../../errors.js';
import type { Exec } from '../../exec.js';
import type { Logger } from '../../log.js';

/** SPC-3 type 5: Write Exclusive, Registrants Only. Unregistered initiators may read, not write. */
const WRITE_EXCLUSIVE_REGISTRANTS_ONLY = '5';

/**
 * The reservation key of a host for one lease generation: 4 bytes of the host id's hash and
 * the 4-byte generation (fence_scsi's "%.4s%.4d" idea). A new acquisition gets a new key, so a
 * key left by this host's earlier, lost tenure is preempted like anyone else's.
 */
export function reservationKey(hostId: string, generation: number): string {
  const host = createHash('sha256').update(hostId).digest('hex').slice(0, 8);
  return `0x${host}${(generation >>> 0).toString(16).padStart(8, '0')}`;
}

/** sg3_utils' exit status for a CHECK CONDITION with ILLEGAL REQUEST (e.g. an unsupported service action). */
const SG_ILLEGAL_REQUEST = 5;

const sameKey = (a: string, b: string) => BigInt(a) === BigInt(b);

/**
 * SCSI-3 persistent reservations with sg_persist, the storage-side fence: the holder registers
 * its key on every path (each I_T nexus) and reserves type 5; a new holder preempts-and-aborts
 * every other key, so the old holder's writes fail at the array even if its kernel is still
 * running (hung, partitioned, paused).
 */
export class ScsiReservations {
  constructor(
    private readonly exec: Exec,
    private readonly log: Logger,
    private readonly timeoutMs: number,
  ) {}

  private async persist(args: string[]): Promise<string> {
    return (await this.exec.run(['sg_persist', '-n', ...args], { timeoutMs: this.timeoutMs })).stdout;
  }

  /** Registers `key` on every path, removes every other registration, and holds the reservation. */
  async take(paths: readonly string[], key: string): Promise<{ preempted: string[] }> {
    try {
      for (const path of paths) await this.persist(['-o', '-I', '-S', key, `/dev/${path}`]);
      const first = `/dev/${paths[0]}`;
      const others = (await this.keys(first)).filter((k) => !sameKey(k, key));
      for (const other of new Set(others)) await this.preempt(first, key, other);
      const holder = await this.holder(first);
      if (!holder) await this.persist(['-o', '-R', '-T', WRITE_EXCLUSIVE_REGISTRANTS_ONLY, '-K', key, first]);
      else if (!sameKey(holder, key)) throw new AttachFailed(`the reservation is still held by key ${holder} after preempting it`);
      if (others.length) this.log.warn('preempted the reservation keys of former holders: their writes now fail at the array', { preempted: others, key });
      return { preempted: [...new Set(others)] };
    } catch (err) {
      if (err instanceof AttachFailed) throw err;
      throw new AttachFailed(`cannot take the SCSI reservation with key ${key}: ${errorMessage(err)}`);
    }
  }

  /**
   * PREEMPT AND ABORT also aborts the old holder's commands queued at the array; arrays without
   * it (tgt 1.0.85 answers ILLEGAL REQUEST) get a plain PREEMPT: the old holder's registrations
   * go all the same, so each command it sends from then on fails with a reservation conflict.
   */
  private async preempt(device: string, key: string, victim: string): Promise<void> {
    const args = (action: string) => ['-o', action, '-T', WRITE_EXCLUSIVE_REGISTRANTS_ONLY, '-K', key, '-S', victim, device];
    try {
      await this.persist(args('-A'));
    } catch (err) {
      if (!(err instanceof CommandFailed && err.exitCode === SG_ILLEGAL_REQUEST)) throw err;
      this.log.warn('the array does not support PREEMPT AND ABORT; using PREEMPT', { device, victim });
      await this.persist(args('-P'));
    }
  }

  /** Gives the reservation up on detach: unregistering every path releases it (type 5). */
  async drop(paths: readonly string[], key: string): Promise<void> {
    for (const path of paths) {
      await this.persist(['-o', '-G', '-K', key, '-S', '0', `/dev/${path}`]).catch((err) =>
        // Preempted meanwhile (another host took over): nothing of ours is left to drop.
        this.log.warn('could not unregister the reservation key', { path, key, error: errorMessage(err) }),
      );
    }
  }

  async keys(device: string): Promise<string[]> {
    return parseKeys(await this.persist(['-i', '-k', device]));
  }

  async holder(device: string): Promise<string | undefined> {
    return /Key\s*=\s*(0x[0-9a-f]+)/i.exec(await this.persist(['-i', '-r', device]))?.[1];
  }
}

/** `sg_persist -i -k` lists one "0x..." key a line after its header. */
export function parseKeys(text: string): string[] {
  return text
    .split('\n')
    .map((l) => l.trim())
    .filter((l) => /^0x[0-9a-f]+$/i.test(l));
}
