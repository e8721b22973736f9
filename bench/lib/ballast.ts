import { mkdir } from 'node:fs/promises';
import { join } from 'node:path';
import { BallastProcess, type DaemonOptions } from '../../test/helpers/daemon.js';
import type { CleanupStack } from './cleanup.js';
import { DIE_WITH_PARENT } from './proc.js';

/** Starts a `ballast serve` at info level (its production default), stopped by `cleanup`. */
export async function startBallast(dir: string, cleanup: CleanupStack, options: Omit<DaemonOptions, 'dir' | 'config'> = {}): Promise<BallastProcess> {
  await mkdir(dir, { recursive: true });
  const daemon = await BallastProcess.create({
    ...options,
    prefix: [...DIE_WITH_PARENT, ...(options.prefix ?? [])],
    dir,
    config: { log: { level: 'info', file: join(dir, 'ballast.log') } },
  });
  cleanup.push(`stop ballast (${dir})`, () => daemon.stop());
  await daemon.start(30_000);
  return daemon;
}
