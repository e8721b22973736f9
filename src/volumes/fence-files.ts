import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { writeFileAtomic } from '../util/atomic-file.js';

// The daemon and its fence watchdog (a separate process, so it acts even when the daemon is
// stopped or hung) talk through two small files in the state dir:
//   heartbeat.json  {seq}  advanced by the daemon after every successful lease renewal
//   fenced.json     {name: {at, reason}}  volumes the watchdog shut down

export type FencedVolumes = Record<string, { at: string; reason: string }>;

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
  async beat(seq: number): Promise<void> {
    await writeFileAtomic(this.heartbeat, JSON.stringify({ seq }), { durable: false });
  }

  async readBeat(): Promise<number | undefined> {
    try {
      return (JSON.parse(await readFile(this.heartbeat, 'utf8')) as { seq: number }).seq;
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
