import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Filesystem, Luks, MountTable, createAttachers } from '../../src/attach/index.js';
import { parseConfig } from '../../src/config/load.js';
import type { Config } from '../../src/config/schema.js';
import { createDrivers } from '../../src/drivers/index.js';
import { silentLogger } from '../../src/log.js';
import type { HostIdentity } from '../../src/ownership/types.js';
import { VolumeManager } from '../../src/volumes/manager.js';
import { MountStateStore } from '../../src/volumes/mount-state.js';
import { FakeHost } from './fake-host.js';
import type { ContainerUsage } from '../../src/volumes/container-usage.js';

/** What dockerd's API would say about running containers; `gate` holds the answer back until opened. */
export class FakeUsage implements ContainerUsage {
  answer: Set<string> | undefined = new Set();
  calls = 0;
  private opened: Promise<void> = Promise.resolve();
  private open: () => void = () => undefined;

  /** Makes the next volumesInUse() wait until release() is called. */
  hold(): void {
    this.opened = new Promise((r) => (this.open = r));
  }

  release(): void {
    this.open();
  }

  async volumesInUse(): Promise<Set<string> | undefined> {
    this.calls += 1;
    await this.opened;
    return this.answer;
  }
}

export interface ManagerFixture {
  dir: string;
  config: Config;
  host: FakeHost;
  identity: HostIdentity;
  usage: FakeUsage;
  manager: VolumeManager;
  /** A fresh manager over the same state dir, loop root and host: a daemon restart. */
  restart(identity?: HostIdentity): Promise<VolumeManager>;
  cleanup(): Promise<void>;
}

export const HOST_A: HostIdentity = { hostId: 'node-a', bootId: 'boot-a1', hostname: 'a' };

/** A VolumeManager over a real loop driver in a temp dir and a FakeHost for every command. */
export async function managerFixture(
  extraConfig: Record<string, unknown> | ((dir: string) => Record<string, unknown>) = {},
  identity = HOST_A,
): Promise<ManagerFixture> {
  const dir = await mkdtemp(join(tmpdir(), 'ballast-unit-'));
  const extra = typeof extraConfig === 'function' ? extraConfig(dir) : extraConfig;
  const config = parseConfig(
    {
      socket: join(dir, 'ballast.sock'),
      state_dir: join(dir, 'state'),
      mount_root: join(dir, 'mounts'),
      backends: { loop: { root: join(dir, 'loop') } },
      docker: { socket: join(dir, 'docker.sock'), restart_wait_seconds: 0.05 },
      ...extra,
    },
    'test config',
  );
  const host = new FakeHost(join(dir, 'mountinfo'));
  const usage = new FakeUsage();
  const build = async (id: HostIdentity) => {
    await fixture?.manager.stop();
    const log = silentLogger();
    const manager = new VolumeManager({
      config,
      identity: id,
      drivers: createDrivers(config, log),
      attachers: createAttachers(host, log, 1000),
      filesystem: new Filesystem(host, log, { slowMs: 1000 }, new MountTable(host.mountinfoPath)),
      luks: new Luks(host, 1000),
      mountTable: new MountTable(host.mountinfoPath),
      state: new MountStateStore(config.state_dir),
      usage,
      log,
      sleep: () => new Promise((r) => setTimeout(r, 5)),
    });
    await manager.start();
    return manager;
  };
  let fixture: ManagerFixture | undefined;
  fixture = {
    dir,
    config,
    host,
    identity,
    usage,
    manager: await build(identity),
    restart: async (id = identity) => (fixture!.manager = await build(id)),
    cleanup: async () => {
      await fixture!.manager.stop();
      await rm(dir, { recursive: true, force: true });
    },
  };
  return fixture;
}
