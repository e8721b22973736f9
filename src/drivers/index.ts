import type { Config } from '../config/schema.js';
import type { Exec } from '../exec.js';
import type { Logger } from '../log.js';
import { RemoteFileStore } from './array-host/exec-file-store.js';
import { SshExec } from './array-host/ssh-exec.js';
import { LocalFileStore, type FileStore } from './file-store.js';
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
  let arrayHost: { exec: Exec; files: FileStore } | undefined;
  const byProfile = new Map<string, BackendDriver>();
  for (const [profile, settings] of Object.entries(config.profiles)) {
    let key: string;
    let make: () => BackendDriver;
    if (settings.backend === 'iscsi') {
      const backend = config.backends.iscsi!; // the schema refuses an iscsi profile without it
      const pool = settings.pool ?? backend.pool;
      key = `iscsi:${pool}:${settings.volume_group ?? ''}`;
      make = () => {
        arrayHost ??= arrayHostOf(config, log, arrayExec);
        return new IscsiDriver(pool, backend, arrayHost, config.timeouts.command_seconds * 1000, log.child({ backend: 'iscsi', pool }), settings.volume_group);
      };
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

/** Where the iSCSI array's commands run and its pool lives: this host, or one reached over SSH. */
function arrayHostOf(config: Config, log: Logger, localExec: Exec | undefined): { exec: Exec; files: FileStore } {
  const ssh = config.backends.iscsi?.array.ssh;
  const timeoutMs = config.timeouts.command_seconds * 1000;
  if (!ssh) {
    if (!localExec) throw new Error('the iscsi backend on this host needs an Exec for tgtadm');
    return { exec: localExec, files: new LocalFileStore() };
  }
  const exec = new SshExec(
    { host: ssh.host, port: ssh.port, username: ssh.user, privateKeyPath: ssh.private_key_file, ...(ssh.host_key_sha256 ? { hostKeySha256: ssh.host_key_sha256 } : {}) },
    log.child({ arrayHost: `${ssh.user}@${ssh.host}:${ssh.port}` }),
    timeoutMs,
  );
  return { exec, files: new RemoteFileStore(exec) };
}
