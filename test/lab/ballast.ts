import { spawn, type ChildProcess } from 'node:child_process';
import { mkdir, mkdtemp, readFile, writeFile, rm } from 'node:fs/promises';
import { existsSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { dump } from 'js-yaml';
import { callPlugin } from '../helpers/plugin-client.js';

/** The checkout this file belongs to (also when compiled into dist-bench/): the nearest package.json up. */
function findRepoRoot(start: string): string {
  for (let dir = start; ; dir = dirname(dir)) {
    if (existsSync(join(dir, 'package.json'))) return dir;
    if (dirname(dir) === dir) throw new Error(`no package.json above ${start}`);
  }
}

export const REPO_ROOT = findRepoRoot(fileURLToPath(new URL('.', import.meta.url)));
export const BALLAST_BIN = join(REPO_ROOT, 'dist/cli/main.js');

export interface DaemonOptions {
  /** Directory for config, socket, state, mounts and the loop root; a new temp dir by default. */
  dir?: string;
  /** Extra keys merged into the generated config. */
  config?: Record<string, unknown>;
  /** argv prefix, e.g. ['nsenter', '--mount=/proc/PID/ns/mnt'] to run inside another mount namespace. */
  prefix?: string[];
  /** Socket path; default DIR/ballast.sock. */
  socket?: string;
  /** The host id it runs as (config host.id). */
  hostId?: string;
  /**
   * How start() knows the daemon serves: its "serving" log line (at info level or below), or its
   * socket answering VolumeDriver.Capabilities (any log level; the socket must be reachable here).
   */
  readyBy?: 'log' | 'socket';
}

/** A real `ballast serve` process with its own config, for integration tests and benchmarks. */
export class BallastProcess {
  child?: ChildProcess;
  readonly dir: string;
  readonly socket: string;
  readonly configPath: string;
  readonly logPath: string;
  readonly loopRoot: string;
  readonly mountRoot: string;
  readonly stateDir: string;

  private constructor(dir: string, private readonly options: DaemonOptions) {
    this.dir = dir;
    this.socket = options.socket ?? join(dir, 'ballast.sock');
    this.configPath = join(dir, 'config.yml');
    this.logPath = join(dir, 'ballast.log');
    this.loopRoot = join(dir, 'loop');
    this.mountRoot = join(dir, 'mounts');
    this.stateDir = join(dir, 'state');
  }

  get hostId(): string | undefined {
    return this.options.hostId;
  }

  static async create(options: DaemonOptions = {}): Promise<BallastProcess> {
    if (!existsSync(BALLAST_BIN)) throw new Error(`${BALLAST_BIN} is missing: run 'npm run build' first`);
    const dir = options.dir ?? (await mkdtemp(join(tmpdir(), 'ballast-test-')));
    const daemon = new BallastProcess(dir, options);
    const config = {
      socket: daemon.socket,
      state_dir: daemon.stateDir,
      mount_root: daemon.mountRoot,
      log: { level: 'debug', file: daemon.logPath },
      backends: { loop: { root: daemon.loopRoot } },
      ...(options.hostId ? { host: { id: options.hostId } } : {}),
      ...options.config,
    };
    await mkdir(dir, { recursive: true });
    await writeFile(daemon.configPath, dump(config));
    return daemon;
  }

  /** Starts the daemon and resolves once its socket answers. */
  async start(timeoutMs = 15_000, env: Record<string, string> = {}): Promise<void> {
    const isReady = (l: Record<string, unknown>) => l.message === 'serving the Docker volume plugin protocol';
    // Earlier runs append to the same log.
    const readyBefore = this.options.readyBy === 'socket' ? 0 : (await this.logs()).filter(isReady).length;
    const argv = [...(this.options.prefix ?? []), process.execPath, BALLAST_BIN, '--config', this.configPath, 'serve'];
    const child = spawn(argv[0]!, argv.slice(1), { stdio: ['ignore', 'ignore', 'pipe'], env: { ...process.env, ...env } });
    this.child = child;
    let stderr = '';
    child.stderr?.on('data', (chunk: Buffer) => (stderr += chunk.toString()));
    const deadline = Date.now() + timeoutMs;
    while (Date.now() < deadline) {
      if (child.exitCode !== null) throw new Error(`ballast exited with ${child.exitCode}: ${stderr}`);
      if (this.options.readyBy === 'socket' ? await this.answers() : (await this.logs()).filter(isReady).length > readyBefore) return;
      await new Promise((r) => setTimeout(r, 50));
    }
    throw new Error(`ballast did not start within ${timeoutMs} ms: ${stderr}`);
  }

  /** SIGTERM (or another signal) and wait for exit. */
  async stop(signal: NodeJS.Signals = 'SIGTERM'): Promise<void> {
    const child = this.child;
    if (!child || child.exitCode !== null || child.signalCode !== null) return;
    const exited = new Promise((r) => child.once('exit', r));
    child.kill(signal);
    let timer: NodeJS.Timeout | undefined;
    await Promise.race([exited, new Promise((r) => (timer = setTimeout(r, 15_000)))]);
    clearTimeout(timer);
    if (child.exitCode === null && child.signalCode === null) {
      child.kill('SIGKILL');
      await exited;
    }
  }

  /** The daemon's JSON log lines. */
  async logs(): Promise<Record<string, unknown>[]> {
    let text = '';
    try {
      text = await readFile(this.logPath, 'utf8');
    } catch {
      return [];
    }
    const lines: Record<string, unknown>[] = [];
    for (const line of text.split('\n')) {
      if (!line) continue;
      try {
        lines.push(JSON.parse(line) as Record<string, unknown>);
      } catch {
        // the last line, still being written (or cut by kill -9)
      }
    }
    return lines;
  }

  /** True when the socket answers VolumeDriver.Capabilities. */
  private async answers(): Promise<boolean> {
    if (!existsSync(this.socket)) return false;
    return callPlugin(this.socket, 'VolumeDriver.Capabilities', {}, 2_000).then(
      (r) => r.status === 200,
      () => false,
    );
  }

  /** How many requests of `method` (e.g. "VolumeDriver.Mount") the daemon served, optionally for one volume. */
  async requestCount(method: string, volume?: string): Promise<number> {
    return (await this.logs()).filter(
      (l) => l.message === 'request' && l.request === method && (volume === undefined || l.volume === volume),
    ).length;
  }

  /**
   * The fence watchdog `ballast serve` spawned (detached, it outlives the daemon), if it runs:
   * the PID in STATE_DIR/watchdog.pid, only while that PID is still this daemon's watchdog.
   */
  watchdogPid(): number | undefined {
    try {
      const pid = Number(readFileSync(join(this.stateDir, 'watchdog.pid'), 'utf8').trim());
      if (!Number.isInteger(pid) || pid <= 0) return undefined;
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
      await new Promise((r) => setTimeout(r, 20));
    }
  }

  /** SIGKILL to the fence watchdog, by the PID the daemon recorded for it; true if there was one. */
  async stopWatchdog(): Promise<boolean> {
    const pid = this.watchdogPid();
    if (pid === undefined) return false;
    process.kill(pid, 'SIGKILL');
    for (let i = 0; i < 250; i += 1) {
      if (!existsSync(`/proc/${pid}`)) return true;
      await new Promise((r) => setTimeout(r, 20));
    }
    throw new Error(`fence watchdog ${pid} survived SIGKILL for 5 s`);
  }

  /** Resident memory of the daemon process in KiB (0 when it is not running). */
  rssKiB(): number {
    try {
      return Number(/^VmRSS:\s+(\d+)/m.exec(readFileSync(`/proc/${this.child?.pid}/status`, 'utf8'))?.[1] ?? 0);
    } catch {
      return 0;
    }
  }

  /** The daemon's I/O counters (/proc/PID/io: all its reads and writes, files and sockets alike). */
  io(): { syscr: number; rchar: number; syscw: number; wchar: number } | undefined {
    try {
      const text = readFileSync(`/proc/${this.child?.pid}/io`, 'utf8');
      const field = (name: string) => Number(new RegExp(`^${name}:\\s+(\\d+)`, 'm').exec(text)?.[1] ?? NaN);
      return { syscr: field('syscr'), rchar: field('rchar'), syscw: field('syscw'), wchar: field('wchar') };
    } catch {
      return undefined;
    }
  }

  async removeDir(): Promise<void> {
    await rm(this.dir, { recursive: true, force: true });
  }
}
