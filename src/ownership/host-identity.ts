import { readFile } from 'node:fs/promises';
import { hostname } from 'node:os';
import type { HostIdentity } from './types.js';

async function readTrimmed(path: string): Promise<string | undefined> {
  try {
    return (await readFile(path, 'utf8')).trim() || undefined;
  } catch {
    return undefined;
  }
}

/**
 * The host id is configured or derived from /etc/machine-id (stable across reboots); the
 * boot id changes with every kernel boot, so a host that rebooted knows it lost its mounts.
 */
export async function resolveHostIdentity(configuredId: string, procRoot = '/proc', etcRoot = '/etc'): Promise<HostIdentity> {
  const bootId = (await readTrimmed(`${procRoot}/sys/kernel/random/boot_id`)) ?? 'unknown-boot';
  let hostId = configuredId;
  if (configuredId === 'auto') {
    const machineId = await readTrimmed(`${etcRoot}/machine-id`);
    hostId = machineId ? `machine-${machineId.slice(0, 16)}` : `host-${hostname()}`;
  }
  return { hostId, bootId, hostname: hostname() };
}
