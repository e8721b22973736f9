import { mkdir } from 'node:fs/promises';
import { join } from 'node:path';
import { BallastProcess, type DaemonOptions } from '../../test/lab/ballast.js';
import { DockerHarness } from '../../test/lab/docker-harness.js';
import type { CleanupStack } from './cleanup.js';
import { DIE_WITH_PARENT, isAborting } from './proc.js';

// The lab's ballast and dockerd (test/lab) as the benches run them: at ballast's production
// defaults, each registered on the bench's cleanup stack before it starts, so an interrupt at any
// point finds it.

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

/** A private dockerd with ballast as its volume plugin (test/lab/docker-harness.ts), torn down by `cleanup`. */
export async function startPrivateDocker(dir: string, cleanup: CleanupStack, log: (line: string) => void): Promise<DockerHarness> {
  log('starting ballast and dockerd in a private mount namespace...');
  const h = await DockerHarness.start({
    name: 'bench',
    dir,
    // ballast's production defaults (info level, 1 GiB volumes), not the tests' debug and 64M.
    ballastConfig: { defaults: {}, log: { level: 'info', file: join(dir, 'ballast', 'ballast.log') } },
  });
  cleanup.push(`tear down the private dockerd (${dir})`, () => h.teardownAndCheck());
  return h;
}

export interface LeaseTiming {
  seconds: number;
  renew_every: number;
  fence_after: number;
  mount_wait: number;
}

export interface LeaseDaemonSpec {
  /** Holds config.yml, the socket, state/, mounts/ and the logs. */
  dir: string;
  hostId: string;
  loopRoot: string;
  shared: boolean;
  lease: LeaseTiming;
  logLevel: 'error' | 'warn' | 'info' | 'debug';
}

/** A ballast daemon of the lease bench: one named host of a shared loop root. */
export type LeaseDaemon = BallastProcess & { readonly hostId: string };

/**
 * Writes a lease-bench daemon's config and registers its cleanup steps (stop the daemon, then
 * its watchdog, by PID) before anything is started. It is ready when its socket answers: the
 * scale bench runs at level warn, which logs no "serving" line.
 */
export async function createLeaseDaemon(spec: LeaseDaemonSpec, cleanup: CleanupStack): Promise<LeaseDaemon> {
  const daemon = await BallastProcess.create({
    dir: spec.dir,
    hostId: spec.hostId,
    readyBy: 'socket',
    prefix: DIE_WITH_PARENT,
    config: {
      // Never dockerd's real API: nothing here runs a dockerd.
      docker: { socket: join(spec.dir, 'no-dockerd.sock'), restart_wait_seconds: 1 },
      lease: spec.lease,
      log: { level: spec.logLevel, file: join(spec.dir, 'ballast.log') },
      backends: { loop: { root: spec.loopRoot, shared: spec.shared } },
    },
  });
  cleanup.push(`stop the fence watchdog of ${spec.hostId}`, () => daemon.stopWatchdog());
  cleanup.push(`stop ballast ${spec.hostId}`, () => daemon.stop());
  return daemon as LeaseDaemon;
}

/** Starts a lease-bench daemon, unless the bench is aborting (its cleanup steps have run). */
export async function startLeaseDaemon(daemon: LeaseDaemon, timeoutMs = 30_000): Promise<void> {
  if (isAborting()) throw new Error(`ballast ${daemon.hostId} not started: the bench is aborting`);
  await daemon.start(timeoutMs);
}
