// A `ballast serve` process for the lease bench, with the fence watchdog it may spawn.
// Not test/helpers/daemon.ts's BallastProcess: that one waits for an info-level log line
// (the scale simulation runs at level warn) and re-reads the whole log every 50 ms, which
// 50 daemons cannot afford. Every process here is stopped by its own PID, never by name.
import type { ChildProcess } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';
import { mkdir, readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { dump } from 'js-yaml';
import type { CleanupStack } from './cleanup.js';
import { callPlugin } from './plugin-client.js';
import { isAborting, isRunning, sleep, spawnLong, stopChild } from './proc.js';

/** The daemon `npm run build` made: <repo>/dist/cli/main.js (this file runs from dist-bench/bench/lib/). */
export const BALLAST_BIN = fileURLToPath(new URL('../../../dist/cli/main.js', import.meta.url));

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

export class LeaseDaemon {
  child?: ChildProcess;
  readonly socket: string;
  readonly stateDir: string;
  readonly mountRoot: string;
  readonly configPath: string;
  readonly logPath: string;
  readonly stderrPath: string;

  constructor(readonly spec: LeaseDaemonSpec) {
    this.socket = join(spec.dir, 'ballast.sock');
    this.stateDir = join(spec.dir, 'state');
    this.mountRoot = join(spec.dir, 'mounts');
    this.configPath = join(spec.dir, 'config.yml');
    this.logPath = join(spec.dir, 'ballast.log');
    this.stderrPath = join(spec.dir, 'stderr.log');
  }

  get hostId(): string {
    return this.spec.hostId;
  }

  get pid(): number | undefined {
    return this.child?.pid;
  }

  /**
   * Writes the config and registers the cleanup steps (stop the daemon, then its watchdog, by
   * PID) before anything is started, so an interrupt at any point finds them.
   */
  static async create(spec: LeaseDaemonSpec, cleanup: CleanupStack): Promise<LeaseDaemon> {
    if (!existsSync(BALLAST_BIN)) throw new Error(`${BALLAST_BIN} is missing: run 'npm run build' first`);
    const daemon = new LeaseDaemon(spec);
    await mkdir(spec.dir, { recursive: true });
    const config = {
      host: { id: spec.hostId },
      socket: daemon.socket,
      state_dir: daemon.stateDir,
      mount_root: daemon.mountRoot,
      // Never dockerd's real API: nothing here runs a dockerd.
      docker: { socket: join(spec.dir, 'no-dockerd.sock'), restart_wait_seconds: 1 },
      lease: spec.lease,
      log: { level: spec.logLevel, file: daemon.logPath },
      backends: { loop: { root: spec.loopRoot, shared: spec.shared } },
    };
    await writeFile(daemon.configPath, dump(config));
    cleanup.push(`stop the fence watchdog of ${spec.hostId}`, () => daemon.killWatchdog());
    cleanup.push(`stop ballast ${spec.hostId}`, () => daemon.stop());
    return daemon;
  }

  /** Starts `ballast serve` and resolves once its socket answers VolumeDriver.Capabilities. */
  async start(timeoutMs = 30_000): Promise<void> {
    if (this.child && isRunning(this.child)) throw new Error(`ballast ${this.hostId} already runs (pid ${this.child.pid})`);
    // After an interrupt the cleanup steps have run (or are running): start nothing new.
    if (isAborting()) throw new Error(`ballast ${this.hostId} not started: the bench is aborting`);
    const child = spawnLong([process.execPath, BALLAST_BIN, '--config', this.configPath, 'serve'], this.stderrPath);
    this.child = child;
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      if (isAborting()) {
        await stopChild(child, 5_000);
        throw new Error(`ballast ${this.hostId} stopped while starting: the bench is aborting`);
      }
      if (!isRunning(child)) {
        const stderr = await readFile(this.stderrPath, 'utf8').catch(() => '');
        throw new Error(`ballast ${this.hostId} exited (${child.exitCode ?? child.signalCode}): ${stderr.slice(-1000)}`);
      }
      if (existsSync(this.socket)) {
        const ok = await callPlugin(this.socket, 'VolumeDriver.Capabilities', {}, 2_000).then(
          (r) => r.status === 200,
          () => false,
        );
        if (ok) return;
      }
      if (Date.now() > deadline) throw new Error(`ballast ${this.hostId} did not answer within ${timeoutMs} ms (see ${this.logPath})`);
      await sleep(25);
    }
  }

  /** SIGTERM, then SIGKILL after the grace time. ballast never unmounts on SIGTERM. */
  async stop(graceMs = 10_000): Promise<void> {
    if (this.child) await stopChild(this.child, graceMs);
  }

  /** kill -9 of the daemon alone (not of its watchdog); resolves once it is gone. */
  async kill9(): Promise<void> {
    const child = this.child;
    if (!child || !isRunning(child)) throw new Error(`ballast ${this.hostId} is not running`);
    const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
    child.kill('SIGKILL');
    await Promise.race([exited, sleep(5_000)]);
  }

  /** The fence watchdog this daemon spawned, from STATE_DIR/watchdog.pid, if that PID is still it. */
  watchdogPid(): number | undefined {
    try {
      const pid = Number(readFileSync(join(this.stateDir, 'watchdog.pid'), 'utf8').trim());
      if (!Number.isInteger(pid) || pid <= 0) return undefined;
      // Only ours: the PID may have been reused since the file was written.
      const cmdline = readFileSync(`/proc/${pid}/cmdline`, 'utf8').split('\0');
      return cmdline.includes('fence-watchdog') && cmdline.includes(this.configPath) ? pid : undefined;
    } catch {
      return undefined;
    }
  }

  /** Waits (bounded) for the daemon to have spawned its watchdog. */
  async waitForWatchdog(timeoutMs = 5_000): Promise<number | undefined> {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const pid = this.watchdogPid();
      if (pid !== undefined || Date.now() > deadline) return pid;
      await sleep(20);
    }
  }

  /** SIGKILL to the watchdog, by the PID the daemon recorded for it; waits until it is gone. */
  async killWatchdog(): Promise<boolean> {
    const pid = this.watchdogPid();
    if (pid === undefined) return false;
    try {
      process.kill(pid, 'SIGKILL');
    } catch {
      return false;
    }
    for (let i = 0; i < 250; i += 1) {
      if (!existsSync(`/proc/${pid}`)) return true;
      await sleep(20);
    }
    throw new Error(`fence watchdog ${pid} of ${this.hostId} survived SIGKILL for 5 s`);
  }

  /** Resident memory of the daemon process in KiB (0 when it is not running). */
  rssKiB(): number {
    try {
      const status = readFileSync(`/proc/${this.pid}/status`, 'utf8');
      return Number(/^VmRSS:\s+(\d+)/m.exec(status)?.[1] ?? 0);
    } catch {
      return 0;
    }
  }

  /** The daemon process's I/O counters (/proc/PID/io: all its reads and writes, files and sockets alike). */
  io(): { syscr: number; rchar: number; syscw: number; wchar: number } | undefined {
    try {
      const text = readFileSync(`/proc/${this.pid}/io`, 'utf8');
      const field = (name: string) => Number(new RegExp(`^${name}:\\s+(\\d+)`, 'm').exec(text)?.[1] ?? NaN);
      return { syscr: field('syscr'), rchar: field('rchar'), syscw: field('syscw'), wchar: field('wchar') };
    } catch {
      return undefined;
    }
  }

  /** The daemon's JSON log lines (and its watchdog's: they share the file). */
  async logLines(): Promise<Record<string, unknown>[]> {
    const text = await readFile(this.logPath, 'utf8').catch(() => '');
    const lines: Record<string, unknown>[] = [];
    for (const line of text.split('\n')) {
      if (!line) continue;
      try {
        lines.push(JSON.parse(line) as Record<string, unknown>);
      } catch {
        // a line cut by kill -9
      }
    }
    return lines;
  }
}
