import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { writeFileAtomic } from '../util/atomic-file.js';

// The daemon and its fence watchdog (a separate process, so it acts even when the daemon is
// stopped or hung) talk through two small files in the state dir:
//   heartbeat.json  {seq, renewedAt}  advanced by the daemon after every successful lease renewal;
//                   renewedAt is when the oldest of those renewals started (CLOCK_MONOTONIC)
//   fenced.json     {name: {at, reason}}  volumes the watchdog shut down

export type FencedVolumes = Record<string, { at: string; reason: string }>;

/** renewedAt: monotonicSeconds() at which the renewal the beat stands for started. */
export interface Heartbeat {
  seq: number;
  renewedAt?: number;
}

export class FenceFiles {
  readonly heartbeat: string;
  readonly fenced: string;
  readonly pidFile: string;

  constructor(stateDir: string) {
    this.heartbeat = join(stateDir, 'heartbeat.json');
    this.fenced = join(stateDir, 'fenced.json');
    this.pidFile = join(stateDir, 'watchdog.pid');
  }

  /** Not fsynced: only the watchdog reads it, on this host, in this boot. */
  async beat(beat: Heartbeat): Promise<void> {
    await writeFileAtomic(this.heartbeat, JSON.stringify(beat), { durable: false });
  }

  async readBeat(): Promise<Heartbeat | undefined> {
    try {
      return JSON.parse(await readFile(this.heartbeat, 'utf8')) as Heartbeat;
    } catch {
      return undefined;
    }
  }

  async readFenced(): Promise<FencedVolumes> {
    try {
      return JSON.parse(await readFile(this.fenced, 'utf8')) as FencedVolumes;
    } catch {
      return {};
    }
  }

  async writeFenced(fenced: FencedVolumes): Promise<void> {
    await writeFileAtomic(this.fenced, JSON.stringify(fenced, null, 2));
  }
}
