import { spawn, type ChildProcess } from 'node:child_process';
import { mkdir, mkdtemp, readFile, writeFile, rm } from 'node:fs/promises';
import { existsSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { dump } from 'js-yaml';

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
}

/** A real `ballast serve` process with its own config, for integration tests. */
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
      ...options.config,
    };
    await mkdir(dir, { recursive: true });
    await writeFile(daemon.configPath, dump(config));
    return daemon;
  }

  /** Starts the daemon and resolves once its socket answers. */
  async start(timeoutMs = 15_000, env: Record<string, string> = {}): Promise<void> {
    const isReady = (l: Record<string, unknown>) => l.message === 'serving the Docker volume plugin protocol';
    const readyBefore = (await this.logs()).filter(isReady).length; // earlier runs append to the same log
    const argv = [...(this.options.prefix ?? []), process.execPath, BALLAST_BIN, '--config', this.configPath, 'serve'];
    const child = spawn(argv[0]!, argv.slice(1), { stdio: ['ignore', 'ignore', 'pipe'], env: { ...process.env, ...env } });
    this.child = child;
    let stderr = '';
    child.stderr?.on('data', (chunk: Buffer) => (stderr += chunk.toString()));
    const deadline = Date.now() + timeoutMs;
    while (Date.now() < deadline) {
      if (child.exitCode !== null) throw new Error(`ballast exited with ${child.exitCode}: ${stderr}`);
      if ((await this.logs()).filter(isReady).length > readyBefore) return;
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
    return text
      .split('\n')
      .filter(Boolean)
      .map((line) => JSON.parse(line) as Record<string, unknown>);
  }

  /** How many requests of `method` (e.g. "VolumeDriver.Mount") the daemon served, optionally for one volume. */
  async requestCount(method: string, volume?: string): Promise<number> {
    return (await this.logs()).filter(
      (l) => l.message === 'request' && l.request === method && (volume === undefined || l.volume === volume),
    ).length;
  }

  /** The fence watchdog `ballast serve` spawned (detached, it outlives the daemon), if it runs. */
  async watchdogPid(): Promise<number | undefined> {
    try {
      const pid = Number(await readFile(join(this.stateDir, 'watchdog.pid'), 'utf8'));
      process.kill(pid, 0);
      return pid;
    } catch {
      return undefined;
    }
  }

  /** Stops the fence watchdog by the PID the daemon recorded for it. */
  async stopWatchdog(): Promise<void> {
    const pid = await this.watchdogPid();
    if (pid === undefined) return;
    process.kill(pid, 'SIGKILL');
    for (let i = 0; i < 100; i += 1) {
      try {
        process.kill(pid, 0);
      } catch {
        return;
      }
      await new Promise((r) => setTimeout(r, 20));
    }
  }

  async removeDir(): Promise<void> {
    await rm(this.dir, { recursive: true, force: true });
  }
}
