import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { cleanUpUnder } from '../helpers/cleanup.js';
import { BallastProcess } from './ballast.js';

/**
 * Several hosts on one machine, each a `ballast serve` with its own host id and state, sharing
 * one loop root (`dir/shared`). Per test: `reset()` in beforeEach, `teardown()` in afterEach
 * (kills the daemons and their watchdogs, unmounts and detaches what is left under `dir`).
 */
export class SharedRootHosts {
  dir = '';
  private readonly daemons: BallastProcess[] = [];

  constructor(
    private readonly prefix: string,
    private readonly lease: Record<string, number>,
  ) {}

  get root(): string {
    return join(this.dir, 'shared');
  }

  async reset(): Promise<void> {
    this.dir = await mkdtemp(join(tmpdir(), `${this.prefix}-`));
  }

  async host(id: string, env: Record<string, string> = {}): Promise<BallastProcess> {
    const d = await BallastProcess.create({ dir: join(this.dir, id), config: { host: { id }, backends: { loop: { root: this.root, shared: true } }, lease: this.lease } });
    this.daemons.push(d);
    await d.start(15_000, env);
    return d;
  }

  async teardown(): Promise<void> {
    for (const d of this.daemons.splice(0)) {
      await d.stop('SIGKILL');
      await d.stopWatchdog();
    }
    cleanUpUnder(this.dir);
    await rm(this.dir, { recursive: true, force: true });
  }
}
