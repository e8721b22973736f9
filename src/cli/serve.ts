import { mkdir } from 'node:fs/promises';
import { CommandRunner, createAttachers, Filesystem, Luks, MountTable } from '../attach/index.js';
import type { Config } from '../config/schema.js';
import { createDrivers } from '../drivers/index.js';
import { errorMessage } from '../errors.js';
import type { Logger } from '../log.js';
import { startMetricsServer } from '../metrics/server.js';
import { resolveHostIdentity } from '../ownership/host-identity.js';
import { startPluginServer, type PluginServer } from '../plugin/server.js';
import { VolumeManager } from '../volumes/manager.js';
import { MountStateStore } from '../volumes/mount-state.js';
import { DockerApiUsage } from '../volumes/container-usage.js';
import { startWatchdog } from './watchdog.js';

export interface RunningDaemon {
  manager: VolumeManager;
  plugin: PluginServer;
}

/** Wires config -> drivers, attachers, lease, manager -> protocol server, and starts serving. */
export async function startDaemon(config: Config, log: Logger, configPath?: string): Promise<RunningDaemon> {
  const identity = await resolveHostIdentity(config.host.id);
  log.info('starting ballast', { hostId: identity.hostId, bootId: identity.bootId, socket: config.socket });
  await mkdir(config.state_dir, { recursive: true, mode: 0o700 });
  await mkdir(config.mount_root, { recursive: true, mode: 0o755 });
  const exec = new CommandRunner(log, config.timeouts.command_seconds * 1000);
  const manager = new VolumeManager({
    config,
    identity,
    drivers: createDrivers(config, log, exec),
    attachers: createAttachers(exec, log, config.timeouts.command_seconds * 1000, { ...(config.backends.vmdk?.vm_uuid ? { vmUuid: config.backends.vmdk.vm_uuid } : {}) }),
    filesystem: new Filesystem(exec, log, { slowMs: config.timeouts.filesystem_seconds * 1000 }),
    luks: new Luks(exec, config.timeouts.command_seconds * 1000),
    mountTable: new MountTable(),
    state: new MountStateStore(config.state_dir),
    usage: new DockerApiUsage(config.docker.socket, log),
    log,
    startWatchdog: () => startWatchdog(config, configPath, log),
  });
  await manager.start();
  const plugin = await startPluginServer(manager, config.socket, log);
  return { manager, plugin };
}

/** `ballast serve`: runs until SIGTERM or SIGINT, then drains requests and exits without unmounting. */
export async function serve(config: Config, log: Logger, configPath?: string): Promise<void> {
  // First: a metrics address that cannot be used stops the start before anything is touched.
  const metricsServer = config.metrics ? await startMetricsServer(config.metrics.listen, log) : undefined;
  let daemon: RunningDaemon;
  try {
    daemon = await startDaemon(config, log, configPath);
  } catch (err) {
    await metricsServer?.close(); // an open listener would keep the failed daemon from exiting
    throw err;
  }
  let stopping = false;
  const stop = async (signal: string) => {
    if (stopping) return;
    stopping = true;
    log.info('stopping: finishing in-flight requests; volumes stay mounted for running containers', { signal });
    await daemon.manager.stop();
    try {
      await daemon.plugin.close();
      await metricsServer?.close();
    } catch (err) {
      log.error('error while stopping', { error: errorMessage(err) });
    }
    log.info('stopped');
    log.on('finish', () => process.exit(0));
    log.end();
    setTimeout(() => process.exit(0), 1_000).unref();
  };
  process.on('SIGTERM', () => void stop('SIGTERM'));
  process.on('SIGINT', () => void stop('SIGINT'));
}
