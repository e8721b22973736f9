import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Filesystem, MountTable, createAttachers } from '../../src/attach/index.js';
import { parseConfig } from '../../src/config/load.js';
import type { Config } from '../../src/config/schema.js';
import { createDrivers } from '../../src/drivers/index.js';
import { silentLogger } from '../../src/log.js';
import type { HostIdentity } from '../../src/ownership/types.js';
import { VolumeManager } from '../../src/volumes/manager.js';
import { MountStateStore } from '../../src/volumes/mount-state.js';
import { FakeHost } from './fake-host.js';

export interface ManagerFixture {
  dir: string;
  config: Config;
  host: FakeHost;
  identity: HostIdentity;
  manager: VolumeManager;
  /** A fresh manager over the same state dir, loop root and host: a daemon restart. */
  restart(identity?: HostIdentity): Promise<VolumeManager>;
  cleanup(): Promise<void>;
}

export const HOST_A: HostIdentity = { hostId: 'node-a', bootId: 'boot-a1', hostname: 'a' };

/** A VolumeManager over a real loop driver in a temp dir and a FakeHost for every command. */
export async function managerFixture(extraConfig: Record<string, unknown> = {}, identity = HOST_A): Promise<ManagerFixture> {
  const dir = await mkdtemp(join(tmpdir(), 'ballast-unit-'));
  const config = parseConfig(
    {
      socket: join(dir, 'ballast.sock'),
      state_dir: join(dir, 'state'),
      mount_root: join(dir, 'mounts'),
      backends: { loop: { root: join(dir, 'loop') } },
      ...extraConfig,
    },
    'test config',
  );
  const host = new FakeHost(join(dir, 'mountinfo'));
  const build = async (id: HostIdentity) => {
    const log = silentLogger();
    const manager = new VolumeManager({
      config,
      identity: id,
      drivers: createDrivers(config, log),
      attachers: createAttachers(host),
      filesystem: new Filesystem(host, log, { slowMs: 1000 }),
      mountTable: new MountTable(host.mountinfoPath),
      state: new MountStateStore(config.state_dir),
      log,
    });
    await manager.start();
    return manager;
  };
  const fixture: ManagerFixture = {
    dir,
    config,
    host,
    identity,
    manager: await build(identity),
    restart: async (id = identity) => (fixture.manager = await build(id)),
    cleanup: () => rm(dir, { recursive: true, force: true }),
  };
  return fixture;
}
