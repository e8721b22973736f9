import { spawn, type ChildProcess } from 'node:child_process';
import { closeSync, mkdirSync, openSync, readFileSync } from 'node:fs';
import { rm } from 'node:fs/promises';
import { join } from 'node:path';
import { buildBusyboxTar, IMAGE } from './busybox-image.js';
import {
  alive,
  describeResult,
  GiveUp,
  runCommand,
  startCommand,
  stopChild,
  waitFor,
  type Background,
  type CommandResult,
  type RunOptions,
} from './command.js';
import { DockerNamespace, type Attempt, type NamespaceOptions } from './docker-namespace.js';

// A private dockerd in the lab's namespace (docker-namespace.ts), and the docker CLI against it.

export const DOCKER_BIN = process.env.BALLAST_TEST_DOCKER ?? 'docker';
export const COMPOSE_BIN = process.env.BALLAST_TEST_COMPOSE ?? 'docker-compose';

export interface DockerdOptions extends NamespaceOptions {
  /** A busybox:local tarball made once (buildBusyboxTar) for several harnesses; default: build one. */
  busyboxTar?: string;
}

export interface VolumeInspect {
  Name: string;
  Driver: string;
  Mountpoint: string;
  Scope: string;
  Options: Record<string, string> | null;
  Labels: Record<string, string> | null;
  Status?: Record<string, any>;
}

export class DockerdHost extends DockerNamespace {
  declare readonly options: DockerdOptions;
  readonly dockerSocket: string;
  readonly pidFile: string;
  readonly dockerdLog: string;
  readonly cliConfig: string;
  dockerd?: ChildProcess;
  private dockerdStarts = 0;

  protected constructor(dir: string, options: DockerdOptions) {
    super(dir, options);
    this.dockerSocket = join(dir, 'docker.sock');
    this.pidFile = join(dir, 'dockerd.pid');
    this.dockerdLog = join(dir, 'dockerd.log');
    this.cliConfig = join(dir, 'cli-config');
  }

  /** Creates the harness's directories and its namespace. */
  protected async startNamespace(): Promise<void> {
    for (const d of [this.dataRoot, this.execRoot, this.pluginSpecDir, this.cliConfig]) mkdirSync(d, { recursive: true });
    await this.startHolder();
  }

  /** Starts dockerd in the namespace and waits (bounded) until it answers on its socket. */
  async startDockerd(timeoutMs = 60_000): Promise<void> {
    if (alive(this.dockerd)) throw new Error('dockerd already runs');
    this.dockerdStarts += 1;
    const logFd = openSync(this.dockerdLog, 'a');
    const argv = [
      ...this.nsPrefix(),
      'dockerd',
      '--data-root', this.dataRoot,
      '--exec-root', this.execRoot,
      '--pidfile', this.pidFile,
      '-H', `unix://${this.dockerSocket}`,
      '--bridge', 'none',
      '--iptables=false',
      '--ip-masq=false',
      ...(this.options.cgroupParent ? ['--cgroup-parent', this.options.cgroupParent] : []),
    ];
    const child = spawn(argv[0]!, argv.slice(1), { stdio: ['ignore', logFd, logFd] });
    closeSync(logFd);
    this.dockerd = child;
    await waitFor(
      async () => {
        if (!alive(child)) throw new GiveUp(`dockerd exited (${child.exitCode ?? child.signalCode})`);
        const r = await this.docker(['version', '--format', '{{.Server.Version}}'], { timeoutMs: 5_000 });
        return r.code === 0;
      },
      `dockerd #${this.dockerdStarts} to answer on ${this.dockerSocket}`,
      timeoutMs,
      200,
      () => this.diagnostics(),
    );
  }

  /** SIGTERM to the dockerd this harness started; SIGKILL if it does not exit in time. */
  async stopDockerd(timeoutMs = 45_000): Promise<void> {
    await stopChild(this.dockerd, 'SIGTERM', timeoutMs);
  }

  /**
   * A dockerd crash: SIGKILL, no shutdown (containers keep running under their shims, no
   * Unmount is sent). dockerd's own containerd dies with it (parent-death signal) but nothing
   * reaps it on this machine, and a zombie's PID in containerd.pid makes the next dockerd wait
   * for a "still running" containerd forever: the harness clears that, as a reboot would.
   */
  async killDockerd(): Promise<void> {
    await stopChild(this.dockerd, 'SIGKILL', 10_000);
    const pidFile = join(this.execRoot, 'containerd', 'containerd.pid');
    let pid = 0;
    try {
      pid = Number(readFileSync(pidFile, 'utf8').trim());
    } catch {
      return;
    }
    if (pid > 0 && this.inNamespace(pid)) {
      // Still alive: it is this harness's containerd (nothing else runs in the namespace).
      process.kill(pid, 'SIGKILL');
    }
    await waitFor(() => !this.inNamespace(pid), `the crashed dockerd's containerd (${pid}) to go`, 10_000, 50);
    await rm(pidFile, { force: true });
  }

  /** Stops dockerd and starts it again on the same data root, in the same namespace (ballast keeps running). */
  async restartDockerd(): Promise<void> {
    await this.stopDockerd();
    await this.startDockerd();
  }

  protected override async stopServices(attempt: Attempt): Promise<void> {
    if (alive(this.dockerd)) await attempt('remove containers', () => this.removeAllContainers());
    await attempt('stop dockerd', () => this.stopDockerd());
  }

  // ---- docker CLI ------------------------------------------------------------------------

  env(extra: NodeJS.ProcessEnv = {}): NodeJS.ProcessEnv {
    return { ...process.env, DOCKER_HOST: `unix://${this.dockerSocket}`, DOCKER_CONFIG: this.cliConfig, ...extra };
  }

  /** Runs the docker CLI against this dockerd; never throws for a failing command. */
  docker(args: string[], options: RunOptions = {}): Promise<CommandResult> {
    return runCommand([DOCKER_BIN, '-H', `unix://${this.dockerSocket}`, ...args], {
      timeoutMs: 90_000,
      ...options,
      env: this.env(options.env),
    });
  }

  dockerBackground(args: string[], options: RunOptions = {}): Background {
    return startCommand([DOCKER_BIN, '-H', `unix://${this.dockerSocket}`, ...args], {
      timeoutMs: 90_000,
      ...options,
      env: this.env(options.env),
    });
  }

  /** Runs docker and returns stdout; throws a message with the command, its output and the logs if it fails. */
  async ok(args: string[], options: RunOptions = {}): Promise<string> {
    const result = await this.docker(args, options);
    if (result.code !== 0) throw new Error(`docker command failed:\n${describeResult(result)}\n${await this.diagnostics()}`);
    return result.stdout;
  }

  /** Runs docker and returns its wall time in ms (for benchmarks); throws like ok() if it fails. */
  async timed(args: string[], options: RunOptions = {}): Promise<number> {
    const result = await this.docker(args, options);
    if (result.code !== 0) throw new Error(`docker command failed:\n${describeResult(result)}\n${await this.diagnostics()}`);
    return result.ms;
  }

  /** Runs docker expecting it to fail; returns stderr. */
  async fails(args: string[], options: RunOptions = {}): Promise<string> {
    const result = await this.docker(args, options);
    if (result.code === 0 || result.timedOut) {
      throw new Error(`docker command was expected to fail:\n${describeResult(result)}\n${await this.diagnostics()}`);
    }
    return result.stderr;
  }

  /** `docker run --network none ARGS`. */
  run(args: string[], options: RunOptions = {}): Promise<string> {
    return this.ok(['run', '--network', 'none', ...args], options);
  }

  async inspectVolume(name: string): Promise<VolumeInspect> {
    const [volume] = JSON.parse(await this.ok(['volume', 'inspect', name])) as VolumeInspect[];
    if (!volume) throw new Error(`docker volume inspect ${name} returned nothing`);
    return volume;
  }

  async inspectContainer(name: string): Promise<Record<string, any>> {
    const [c] = JSON.parse(await this.ok(['container', 'inspect', name])) as Record<string, any>[];
    if (!c) throw new Error(`docker container inspect ${name} returned nothing`);
    return c;
  }

  /** docker-compose v1 against this dockerd. */
  compose(project: string, file: string, args: string[], options: RunOptions = {}): Promise<CommandResult> {
    return runCommand([COMPOSE_BIN, '--ansi', 'never', '-p', project, '-f', file, ...args], {
      timeoutMs: 120_000,
      ...options,
      env: this.env({ COMPOSE_INTERACTIVE_NO_CLI: '1', ...options.env }),
    });
  }

  async composeOk(project: string, file: string, args: string[], options: RunOptions = {}): Promise<string> {
    const result = await this.compose(project, file, args, options);
    if (result.code !== 0) throw new Error(`docker-compose failed:\n${describeResult(result)}\n${await this.diagnostics()}`);
    return `${result.stdout}\n${result.stderr}`;
  }

  /** Removes every container of this dockerd (rm -f). */
  async removeAllContainers(): Promise<void> {
    const ids = (await this.ok(['ps', '-aq'])).split('\n').filter(Boolean);
    if (ids.length) await this.ok(['rm', '-f', ...ids]);
  }

  // ---- images ----------------------------------------------------------------------------

  /** busybox:local from the machine's static busybox: no registry involved. */
  async importBusybox(): Promise<void> {
    const tar = this.options.busyboxTar ?? (await buildBusyboxTar(this.dir));
    await this.importImage(tar, IMAGE);
  }

  /** `docker import` of a root filesystem tarball as `name`. */
  async importImage(tar: string, name: string): Promise<void> {
    await this.ok(['import', '-', name], { input: { file: tar }, timeoutMs: 60_000 });
  }

  // ---- diagnostics -----------------------------------------------------------------------

  /** Lines in a file inside a running container. */
  async lineCount(container: string, file: string): Promise<number> {
    return Number((await this.ok(['exec', container, 'sh', '-c', `wc -l < ${file}`])).trim());
  }

  /** Waits (bounded) until a container's file has more than `than` lines; returns the count. */
  async waitForMoreLines(container: string, file: string, than: number, what: string): Promise<number> {
    return waitFor(
      async () => {
        const n = await this.lineCount(container, file);
        return n > than ? n : 0;
      },
      what,
      30_000,
      200,
      () => this.diagnostics(),
    );
  }

  /** The tail of dockerd's log, for failure messages. */
  dockerdLogTail(lines = 25): string {
    try {
      return readFileSync(this.dockerdLog, 'utf8')
        .trimEnd()
        .split('\n')
        .filter((l) => !/module=grpc|loading plugin|skip loading plugin|starting signal loop|shim disconnected|cleaning up/.test(l))
        .slice(-lines)
        .map((l) => `  ${l}`)
        .join('\n');
    } catch {
      return '  (no dockerd log)';
    }
  }

  /** What to add to a failure message: the tail of dockerd's log. */
  async diagnostics(): Promise<string> {
    const who = this.options.hostname ? ` of ${this.options.hostname}` : '';
    return `--- dockerd log tail${who} (${this.dockerdLog}) ---\n${this.dockerdLogTail()}`;
  }
}
