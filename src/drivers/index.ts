import type { Config } from '../config/schema.js';
import type { Logger } from '../log.js';
import { LoopDriver } from './loop-driver.js';
import type { BackendDriver } from './types.js';

export type { BackendDriver, NewVolume, VolumeRecord } from './types.js';
export { VolumeAlreadyExists } from './types.js';

/**
 * One driver instance per distinct backend location; profiles that share a location
 * share the instance. Returns profile name -> driver.
 */
export function createDrivers(config: Config, log: Logger): Map<string, BackendDriver> {
  const byLocation = new Map<string, BackendDriver>();
  const byProfile = new Map<string, BackendDriver>();
  for (const [profile, settings] of Object.entries(config.profiles)) {
    const root = settings.root ?? config.backends.loop.root;
    const key = `loop:${root}`;
    let driver = byLocation.get(key);
    if (!driver) {
      driver = new LoopDriver({ root, shared: config.backends.loop.shared }, log.child({ backend: 'loop', root }));
      byLocation.set(key, driver);
    }
    byProfile.set(profile, driver);
  }
  return byProfile;
}
