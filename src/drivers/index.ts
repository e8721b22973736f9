import { readFileSync } from 'node:fs';
import { networkInterfaces } from 'node:os';
import type { ArrayHostSsh, Config, VmdkBackendConfig } from '../config/schema.js';
import { errorMessage, InvalidRequest } from '../errors.js';
import type { Exec } from '../exec.js';
import type { Logger } from '../log.js';
import { RemoteFileStore } from './array-host/exec-file-store.js';
import { CinderClient } from './cinder/client.js';
import { CinderDriver, type Placement } from './cinder/cinder-driver.js';
import { SshExec } from './array-host/ssh-exec.js';
import { LocalFileStore, type FileStore } from './file-store.js';
import { IscsiDriver } from './iscsi/iscsi-driver.js';
import { LioDriver } from './lio/lio-driver.js';
import { DellScArray } from './dellsc/array.js';
import { DellScClient } from './dellsc/client.js';
import { dellscDriver } from './dellsc/dellsc-driver.js';
import { ImageCopier } from './image-copy.js';
import { LoopDriver } from './loop-driver.js';
import { ScbeClient } from './scbe/client.js';
import { scbeDriver } from './scbe/scbe-driver.js';
import { PowerFlexArray } from './powerflex/array.js';
import { PowerFlexClient } from './powerflex/client.js';
import { powerflexDriver } from './powerflex/powerflex-driver.js';
import { VsphereClient } from './vsphere/client.js';
import { Inventory } from './vsphere/inventory.js';
import { VmDisks } from './vsphere/vm-disks.js';
import { VmdkDriver, type Vsphere } from './vsphere/vmdk-driver.js';
import type { BackendDriver } from './types.js';

export type { BackendDriver, ChangeListing, NewVolume, VolumeRecord } from './types.js';
export { VolumeAlreadyExists } from './types.js';

/**
 * One driver instance per distinct backend location; profiles that share a location
 * share the instance. Returns profile name -> driver. `arrayExec` runs array-side
 * commands (tgtadm) on the array host.
 */
export function createDrivers(config: Config, log: Logger, arrayExec?: Exec): Map<string, BackendDriver> {
  const byLocation = new Map<string, BackendDriver>();
  let arrayHost: { exec: Exec; files: FileStore } | undefined;
  let lioHost: { exec: Exec; files: FileStore } | undefined;
  let vsphere: Vsphere | undefined;
  const byProfile = new Map<string, BackendDriver>();
  for (const [profile, settings] of Object.entries(config.profiles)) {
    let key: string;
    let make: () => BackendDriver;
    if (settings.backend === 'iscsi') {
      const backend = config.backends.iscsi!; // the schema refuses an iscsi profile without it
      const pool = settings.pool ?? backend.pool;
      key = `iscsi:${pool}:${settings.volume_group ?? ''}`;
      make = () => {
        arrayHost ??= arrayHostOf(config.backends.iscsi?.array.ssh, config, log, arrayExec);
        const timeouts = config.timeouts;
        return new IscsiDriver(pool, backend, arrayHost, timeouts.command_seconds * 1000, log.child({ backend: 'iscsi', pool }), settings.volume_group, timeouts.filesystem_seconds * 1000);
      };
    } else if (settings.backend === 'lio') {
      const backend = config.backends.lio!; // the schema refuses an lio profile without it
      const pool = settings.pool ?? backend.pool;
      const transport = settings.transport ?? backend.transport;
      key = `lio:${pool}`; // the schema gives a pool one transport and one volume group
      make = () => {
        lioHost ??= arrayHostOf(backend.array.ssh, config, log, arrayExec);
        const timeouts = config.timeouts;
        return new LioDriver(pool, backend, transport, lioHost, timeouts.command_seconds * 1000, log.child({ backend: 'lio', pool, transport }), settings.volume_group, timeouts.filesystem_seconds * 1000);
      };
    } else if (settings.backend === 'cinder') {
      key = 'cinder'; // one endpoint and project: every cinder profile lists the same volumes
      make = () => cinderDriverOf(config, log);
    } else if (settings.backend === 'powerflex') {
      key = 'powerflex'; // one gateway: every powerflex profile lists the same volumes
      make = () => powerflexDriverOf(config, log);
    } else if (settings.backend === 'dellsc') {
      key = 'dellsc'; // one Storage Center: every dellsc profile lists the same volumes
      make = () => dellscDriverOf(config, log);
    } else if (settings.backend === 'scbe') {
      key = 'scbe'; // one Spectrum Connect: every scbe profile lists the same volumes
      make = () => scbeDriverOf(config, log);
    } else if (settings.backend === 'vmdk') {
      const backend = config.backends.vmdk!; // the schema refuses a vmdk profile without it
      const datastore = settings.datastore ?? backend.datastore;
      key = `vmdk:${datastore}`;
      make = () => {
        vsphere ??= vsphereOf(backend, log);
        return new VmdkDriver(vsphere, datastore, backend, log.child({ backend: 'vmdk', datastore }));
      };
    } else {
      const root = settings.root ?? config.backends.loop.root;
      key = `loop:${root}`;
      const { shared, fence } = config.backends.loop;
      // The copier runs cp on this host (arrayExec is this host's command runner); without one, no snapshots.
      const copier = arrayExec && new ImageCopier(arrayExec, config.timeouts.filesystem_seconds * 1000);
      make = () => new LoopDriver({ root, shared, fence, lockWaitSeconds: config.lease.mount_wait, ...(copier ? { copier } : {}) }, log.child({ backend: 'loop', root }));
    }
    let driver = byLocation.get(key);
    if (!driver) byLocation.set(key, (driver = make()));
    byProfile.set(profile, driver);
  }
  return byProfile;
}

/** One Cinder session for every cinder profile; each profile names its volume type and zone. */
function cinderDriverOf(config: Config, log: Logger): CinderDriver {
  const backend = config.backends.cinder!; // the schema refuses a cinder profile without it
  const auth = backend.auth;
  const clog = log.child({ backend: 'cinder', cinder: backend.url });
  const client = new CinderClient(
    {
      url: backend.url,
      auth:
        auth.type === 'noauth'
          ? { kind: 'noauth', projectId: auth.project_id }
          : {
              kind: 'password',
              authUrl: auth.auth_url,
              username: auth.user,
              password: readPasswordFile(auth.password_file, 'backends.cinder.auth.password_file'),
              userDomain: auth.user_domain,
              project: auth.project,
              projectDomain: auth.project_domain,
            },
      ...(backend.ca_file ? { caPem: readConfiguredFile(backend.ca_file, 'backends.cinder.ca_file') } : {}),
      timeoutMs: backend.timeout_seconds * 1000,
    },
    clog,
  );
  const placements = new Map<string, Placement>();
  for (const [profile, settings] of Object.entries(config.profiles)) {
    if (settings.backend !== 'cinder') continue;
    const volumeType = settings.volume_type ?? backend.volume_type;
    const availabilityZone = settings.availability_zone ?? backend.availability_zone;
    placements.set(profile, { ...(volumeType ? { volumeType } : {}), ...(availabilityZone ? { availabilityZone } : {}) });
  }
  return new CinderDriver(client, backend, placements, backend.connector_ip ?? firstIpv4(), clog);
}

/** The connector's address when none is configured: informational for most Cinder drivers. */
function firstIpv4(): string {
  const addresses = Object.values(networkInterfaces()).flat();
  return addresses.find((a) => a && a.family === 'IPv4' && !a.internal)?.address ?? '127.0.0.1';
}

/** An array's password (first line of password_file) and CA, read at start; a missing file stops the daemon with its key. */
function secretsOf(backend: { password_file: string; ca_file?: string | undefined }, key: string): { password: string; caPem?: string } {
  return {
    password: readPasswordFile(backend.password_file, `${key}.password_file`),
    ...(backend.ca_file ? { caPem: readConfiguredFile(backend.ca_file, `${key}.ca_file`) } : {}),
  };
}

/** One Data Collector session for every dellsc profile; each profile names its storage profile. */
function dellscDriverOf(config: Config, log: Logger): BackendDriver {
  const backend = config.backends.dellsc!; // the schema refuses a dellsc profile without it
  const slog = log.child({ backend: 'dellsc', ssn: backend.ssn });
  const client = new DellScClient(
    {
      url: backend.url,
      username: backend.user,
      ...secretsOf(backend, 'backends.dellsc'),
      apiVersion: backend.api_version,
      timeoutMs: backend.timeout_seconds * 1000,
    },
    slog,
  );
  const storageProfiles = new Map(Object.entries(config.profiles).flatMap(([name, p]) => (p.backend === 'dellsc' ? [[name, p.storage_profile] as const] : [])));
  return dellscDriver(new DellScArray(client, backend.ssn, backend.folder), backend, storageProfiles, slog);
}

/** One Spectrum Connect session for every scbe profile; each profile names its storage service. */
function scbeDriverOf(config: Config, log: Logger): BackendDriver {
  const backend = config.backends.scbe!; // the schema refuses an scbe profile without it
  const slog = log.child({ backend: 'scbe', scbe: backend.url });
  const client = new ScbeClient(
    {
      url: backend.url,
      username: backend.user,
      ...secretsOf(backend, 'backends.scbe'),
      group: backend.group,
      timeoutMs: backend.timeout_seconds * 1000,
    },
    slog,
  );
  const services = new Map(Object.entries(config.profiles).flatMap(([name, p]) => (p.backend === 'scbe' ? [[name, p.service] as const] : [])));
  return scbeDriver(client, backend, services, slog);
}

/** One gateway session for every powerflex profile; each profile names its protection domain and pool. */
function powerflexDriverOf(config: Config, log: Logger): BackendDriver {
  const backend = config.backends.powerflex!; // the schema refuses a powerflex profile without it
  const plog = log.child({ backend: 'powerflex', gateway: backend.url });
  const client = new PowerFlexClient(
    {
      url: backend.url,
      apiVersion: backend.api_version,
      username: backend.user,
      ...secretsOf(backend, 'backends.powerflex'),
      timeoutMs: backend.timeout_seconds * 1000,
    },
    plog,
  );
  const pools = new Map(
    Object.entries(config.profiles).flatMap(([name, p]) =>
      p.backend === 'powerflex' ? [[name, { protectionDomain: p.protection_domain ?? backend.protection_domain, storagePool: p.storage_pool ?? backend.storage_pool }] as const] : [],
    ),
  );
  return powerflexDriver(new PowerFlexArray(client), backend, pools, plog);
}

/** One vCenter session for every vmdk profile. */
function vsphereOf(backend: VmdkBackendConfig, log: Logger): Vsphere {
  const vcenter = backend.vcenter;
  const vlog = log.child({ vcenter: vcenter.url });
  const client = new VsphereClient(
    {
      url: vcenter.url,
      username: vcenter.user,
      password: readPasswordFile(vcenter.password_file, 'backends.vmdk.vcenter.password_file'),
      ...(vcenter.ca_file ? { caPem: readConfiguredFile(vcenter.ca_file, 'backends.vmdk.vcenter.ca_file') } : {}),
      ...(vcenter.thumbprint ? { thumbprint: vcenter.thumbprint } : {}),
      timeoutMs: vcenter.timeout_seconds * 1000,
    },
    vlog,
  );
  return { client, inventory: new Inventory(client, backend.datacenter), disks: new VmDisks(client, vlog) };
}

/** A password_file's first line, without its line end (\r\n too: a file edited on Windows). */
export function readPasswordFile(path: string, key: string): string {
  return readConfiguredFile(path, key).split(/\r?\n/)[0]!;
}

/** A file named in the configuration, read at start: a missing one stops the daemon with its key. */
function readConfiguredFile(path: string, key: string): string {
  try {
    return readFileSync(path, 'utf8');
  } catch (err) {
    throw new InvalidRequest(`cannot read ${path} (${key}): ${errorMessage(err)}`);
  }
}

/** Where an array's commands run and its pool lives: this host, or one reached over SSH. */
function arrayHostOf(ssh: ArrayHostSsh | undefined, config: Config, log: Logger, localExec: Exec | undefined): { exec: Exec; files: FileStore } {
  const timeoutMs = config.timeouts.command_seconds * 1000;
  if (!ssh) {
    if (!localExec) throw new Error('an array backend on this host needs an Exec for its commands');
    return { exec: localExec, files: new LocalFileStore() };
  }
  const exec = new SshExec(
    { host: ssh.host, port: ssh.port, username: ssh.user, privateKeyPath: ssh.private_key_file, ...(ssh.host_key_sha256 ? { hostKeySha256: ssh.host_key_sha256 } : {}) },
    log.child({ arrayHost: `${ssh.user}@${ssh.host}:${ssh.port}` }),
    timeoutMs,
  );
  return { exec, files: new RemoteFileStore(exec) };
}
