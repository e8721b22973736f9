import type { Config } from '../config/schema.js';
import type { Exec } from '../exec.js';
import type { Logger } from '../log.js';
import { IscsiDriver } from './iscsi/iscsi-driver.js';
import { LoopDriver } from './loop-driver.js';
import type { BackendDriver } from './types.js';

export type { BackendDriver, NewVolume, VolumeRecord } from './types.js';
export { VolumeAlreadyExists } from './types.js';

/**
 * One driver instance per distinct backend location; profiles that share a location
 * share the instance. Returns profile name -> driver. `arrayExec` runs array-side
 * commands (tgtadm) on the array host.
 */
export function createDrivers(config: Config, log: Logger, arrayExec?: Exec): Map<string, BackendDriver> {
  const byLocation = new Map<string, BackendDriver>();
  const byProfile = new Map<string, BackendDriver>();
  for (const [profile, settings] of Object.entries(config.profiles)) {
    let key: string;
    let make: () => BackendDriver;
    if (settings.backend === 'iscsi') {
      const backend = config.backends.iscsi!; // the schema refuses an iscsi profile without it
      const pool = settings.pool ?? backend.pool;
      key = `iscsi:${pool}`;
      if (!arrayExec) throw new Error('the iscsi backend needs an Exec for array commands');
      make = () => new IscsiDriver(pool, backend, arrayExec, config.timeouts.command_seconds * 1000, log.child({ backend: 'iscsi', pool }));
    } else {
      const root = settings.root ?? config.backends.loop.root;
      key = `loop:${root}`;
      make = () => new LoopDriver({ root, shared: config.backends.loop.shared }, log.child({ backend: 'loop', root }));
    }
    let driver = byLocation.get(key);
    if (!driver) byLocation.set(key, (driver = make()));
    byProfile.set(profile, driver);
  }
  return byProfile;
}
