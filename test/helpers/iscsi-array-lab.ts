import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { IscsiBackendConfig } from '../../src/config/schema.js';
import { IscsiDriver } from '../../src/drivers/iscsi/iscsi-driver.js';
import type { NewVolume } from '../../src/drivers/types.js';
import { CommandRunner, type Exec } from '../../src/exec.js';
import type { Initiator } from '../../src/export.js';
import { silentLogger } from '../../src/log.js';
import { Tgtd, requireTgtTools, type Chap } from '../lab/tgtd.js';

// What the iSCSI backend's integration suites (iscsi-array.test.ts, iscsi-array-concurrency.test.ts)
// share: a real tgtd of the test file's own (its own control port and portal on 127.0.0.1), a
// pool directory per test, and IscsiDriver instances on it as hosts would build them.

export const MiB = 1024 ** 2;
export const T = 30_000;
export const PREFIX = 'iqn.2026-11.dev.ballast.test';
const COMMAND_TIMEOUT_MS = 10_000;
export const HOST1: Initiator = { hostId: 'h1', iqn: `${PREFIX}:host1` };
export const HOST2: Initiator = { hostId: 'h2', iqn: `${PREFIX}:host2` };

let tgtd: Tgtd | undefined;
let work: string | undefined;

/** Starts this file's tgtd before its tests and stops it (and removes the pools) after them. */
export function useTgtd(): void {
  beforeAll(async () => {
    requireTgtTools();
    work = await mkdtemp(join(tmpdir(), 'ballast-iscsi-'));
    tgtd = await Tgtd.start();
  }, T);

  afterAll(async () => {
    try {
      await tgtd?.stop();
      if (tgtd?.running) throw new Error(`tgtd pid ${tgtd.pid} did not stop`);
    } finally {
      if (work) await rm(work, { recursive: true, force: true });
    }
  }, T);
}

export function array(): Tgtd {
  if (!tgtd) throw new Error('tgtd did not start (see beforeAll)');
  return tgtd;
}

export async function newPool(): Promise<string> {
  return mkdtemp(join(work!, 'pool-'));
}

function backendConfig(pool: string, options: { controlPort?: number; chap?: Chap } = {}): IscsiBackendConfig {
  return {
    portals: [array().portal],
    target_prefix: PREFIX,
    array: { tgt_control_port: options.controlPort ?? array().controlPort },
    pool,
    multipath: true,
    reservations: true,
    ...(options.chap ? { chap: { ...options.chap } } : {}),
  };
}

interface DriverOptions {
  controlPort?: number;
  chap?: Chap;
  commandTimeoutMs?: number;
  /** Wraps the real CommandRunner (to watch or interfere with tgtadm calls). */
  wrap?: (real: Exec) => Exec;
}

export function newDriver(pool: string, options: DriverOptions = {}): IscsiDriver {
  const timeout = options.commandTimeoutMs ?? COMMAND_TIMEOUT_MS;
  const real = new CommandRunner(silentLogger(), timeout);
  return new IscsiDriver(pool, backendConfig(pool, options), { exec: options.wrap ? options.wrap(real) : real }, timeout, silentLogger());
}

export function volume(name: string, sizeBytes = 64 * MiB): NewVolume {
  return { name, profile: 'gold', sizeBytes, fstype: 'ext4', mkfsOpts: [], mountOpts: [], readonly: false };
}

export async function shownTarget(iqn: string) {
  return (await array().targets()).find((t) => t.iqn === iqn);
}
