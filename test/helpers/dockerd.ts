import { spawn, type ChildProcess } from 'node:child_process';
import { closeSync, copyFileSync, existsSync, mkdirSync, openSync, readdirSync, readFileSync, readlinkSync, rmdirSync, symlinkSync, writeFileSync } from 'node:fs';
import { mkdtemp, readdir, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { cleanUpUnder, loopDevicesUnder, mountsUnder } from './cleanup.js';
import { BALLAST_BIN, BallastProcess } from './daemon.js';
import { requireRootAndTools } from './root.js';

// A private Docker engine for end-to-end tests, which never disturbs anything else on the machine.
//
// Layout: one temp dir per harness (DIR). A long-lived "holder" process owns a private mount
// namespace (`unshare -m --propagation private`) in which a tmpfs covers /run/docker/plugins and
// /run/containerd, and DIR/etc is bind-mounted over /etc/docker (so the plugin spec directory,
// daemon.json and key.json are the test's own). dockerd and ballast are both started inside that
// namespace with nsenter: ballast's mounts are visible to dockerd, its socket
// /run/docker/plugins/ballast.sock is private, and dockerd can be stopped and started again while
// the namespace, ballast and ballast's mounts survive. Every process started here has its PID
// tracked and a parent-death signal (setpriv --pdeathsig), so a crashed jest takes it down too.
//
// With the `netns` and `hostname` options the same harness is one host of a multi-host cluster
// (test/helpers/multihost.ts): the holder is started inside that network namespace with a UTS
// namespace of its own, and nsPrefix() enters all three namespaces.

export const DOCKER_BIN = process.env.BALLAST_TEST_DOCKER ?? 'docker';
export const COMPOSE_BIN = process.env.BALLAST_TEST_COMPOSE ?? 'docker-compose';
export const IMAGE = 'busybox:local';
export const PLUGIN = 'ballast';
export const PLUGIN_SOCKET = '/run/docker/plugins/ballast.sock';

/** Applets linked into the busybox image. */
const APPLETS = [
  'sh', 'ash', 'ls', 'cat', 'echo', 'printf', 'md5sum', 'sha256sum', 'dd', 'head', 'tail', 'sleep', 'mkdir', 'rm',
  'wc', 'test', '[', 'true', 'false', 'sync', 'stat', 'date', 'touch', 'grep', 'cp', 'mv', 'seq', 'df', 'id', 'env',
  'tee', 'kill', 'cut', 'sort', 'uniq', 'tr', 'xargs', 'find', 'du', 'mount', 'hostname', 'awk', 'expr',
];

export interface CommandResult {
  argv: string[];
  code: number | null;
  signal: NodeJS.Signals | null;
  stdout: string;
  stderr: string;
  timedOut: boolean;
  ms: number;
}

export interface RunOptions {
  timeoutMs?: number;
  /** Text for stdin, or { file } to feed a file. */
  input?: string | { file: string };
  env?: NodeJS.ProcessEnv;
  cwd?: string;
}

export interface Background {
  child: ChildProcess;
  /** Resolves when the command ends (or is killed by its timeout). */
  done: Promise<CommandResult>;
  /** True while the command still runs. */
  running(): boolean;
  /** SIGKILL to this one child, if it still runs. */
  kill(): void;
}

/** Starts a command with a hard timeout (SIGKILL to that one child). Never throws for a failing command. */
export function startCommand(argv: string[], options: RunOptions = {}): Background {
  const started = Date.now();
  const timeoutMs = options.timeoutMs ?? 60_000;
  let stdinFd: number | undefined;
  let stdin: 'pipe' | 'ignore' | number = 'ignore';
  if (typeof options.input === 'string') stdin = 'pipe';
  else if (options.input) stdin = stdinFd = openSync(options.input.file, 'r');
  const child = spawn(argv[0]!, argv.slice(1), {
    stdio: [stdin, 'pipe', 'pipe'],
    env: options.env ?? process.env,
    cwd: options.cwd,
  });
  if (stdinFd !== undefined) closeSync(stdinFd);
  if (typeof options.input === 'string') child.stdin?.end(options.input);
  let stdout = '';
  let stderr = '';
  let timedOut = false;
  child.stdout?.on('data', (chunk: Buffer) => (stdout += chunk.toString()));
  child.stderr?.on('data', (chunk: Buffer) => (stderr += chunk.toString()));
  const timer = setTimeout(() => {
    timedOut = true;
    child.kill('SIGKILL');
  }, timeoutMs);
  const done = new Promise<CommandResult>((resolve) => {
    const finish = (code: number | null, signal: NodeJS.Signals | null) => {
      clearTimeout(timer);
      resolve({ argv, code, signal, stdout, stderr, timedOut, ms: Date.now() - started });
    };
    child.once('error', (err) => {
      stderr += `\n${err.message}`;
      finish(null, null);
    });
    child.once('close', finish);
  });
  return {
    child,
    done,
    running: () => child.exitCode === null && child.signalCode === null,
    kill: () => {
      if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
    },
  };
}

export function runCommand(argv: string[], options: RunOptions = {}): Promise<CommandResult> {
  return startCommand(argv, options).done;
}

export function describeResult(result: CommandResult): string {
  const status = result.timedOut ? `timed out after ${result.ms} ms` : `exit ${result.code ?? result.signal}`;
  return `$ ${result.argv.join(' ')}\n  -> ${status}\n  stdout: ${clip(result.stdout)}\n  stderr: ${clip(result.stderr)}`;
}

function clip(text: string, max = 3000): string {
  const t = text.trim();
  return t.length > max ? `...${t.slice(-max)}` : t;
}

export const sleep = (ms: number) => new Promise<void>((resolve) => setTimeout(resolve, ms));

function alive(child: ChildProcess | undefined): boolean {
  return !!child && child.exitCode === null && child.signalCode === null;
}

/** Resolves true once `child` has exited, false after `ms` (the timer never outlives the wait). */
export function exitWithin(child: ChildProcess, ms: number): Promise<boolean> {
  if (!alive(child)) return Promise.resolve(true);
  return new Promise((resolve) => {
    const timer = setTimeout(() => {
      child.off('exit', onExit);
      resolve(false);
    }, ms);
    const onExit = () => {
      clearTimeout(timer);
      resolve(true);
    };
    child.once('exit', onExit);
  });
}

/** Sends `signal` to a child this harness started, then SIGKILL if it outlives `graceMs`. */
export async function stopChild(child: ChildProcess | undefined, signal: NodeJS.Signals, graceMs: number): Promise<void> {
  if (!child || !alive(child)) return;
  child.kill(signal);
  if (await exitWithin(child, graceMs)) return;
  child.kill('SIGKILL');
  await exitWithin(child, 10_000);
}

/** Thrown from a waitFor() condition to stop waiting at once (e.g. the process being waited for died). */
export class GiveUp extends Error {}

/**
 * Polls `condition` until it returns a truthy value; throws `what` (plus `explain()`) after
 * `timeoutMs`, or at once when the condition throws GiveUp.
 */
export async function waitFor<T>(
  condition: () => Promise<T> | T,
  what: string,
  timeoutMs = 30_000,
  intervalMs = 100,
  explain?: () => Promise<string>,
): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  let lastError: unknown;
  for (;;) {
    try {
      const value = await condition();
      if (value) return value;
    } catch (err) {
      lastError = err;
      if (err instanceof GiveUp) {
        throw new Error(`gave up waiting for ${what}: ${err.message}${explain ? `\n${await explain()}` : ''}`);
      }
    }
    if (Date.now() > deadline) {
      const detail = lastError ? `\nlast error: ${(lastError as Error).message ?? String(lastError)}` : '';
      throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}${detail}${explain ? `\n${await explain()}` : ''}`);
    }
    await sleep(intervalMs);
  }
}

export interface HarnessOptions {
  /** Short name used in the temp dir and compose project names. */
  name: string;
  /** Start ballast in beforeAll (default true); false to start it later with startBallast(). */
  startBallast?: boolean;
  /** Extra keys for ballast's config (merged over the harness defaults). */
  ballastConfig?: Record<string, unknown>;
  /** The harness dir (created if missing); default a new temp dir. */
  dir?: string;
  /**
   * One "host" of a multi-host cluster (test/helpers/multihost.ts): the namespace holder is
   * started inside this network namespace (a name under /run/netns), and dockerd, ballast and
   * every command run through nsPrefix() join it.
   */
  netns?: string;
  /** A UTS namespace of its own with this hostname (dockerd's node name, ballast's hostname). */
  hostname?: string;
  /** ballast's loop root when it is not the harness's own DIR/ballast/loop (a root shared by hosts). */
  loopRoot?: string;
  /** dockerd --cgroup-parent: a name unique to this harness, whose cgroups teardown removes. */
  cgroupParent?: string;
  /** A busybox:local tarball made once (buildBusyboxTar) for several harnesses; default: build one. */
  busyboxTar?: string;
}

export interface TeardownReport {
  /** Mounts under the test dir seen from the host (there should never be any). */
  hostMounts: string[];
  /** Loop devices whose backing file was under the test dir. */
  loops: string[];
  /** PIDs still in the private mount namespace after dockerd, ballast and the holder stopped. */
  strayPids: number[];
  errors: string[];
}

/** The request lines of a ballast log, tolerant of a line being written while it is read. */
type LogLine = Record<string, unknown>;

export class DockerHarness {
  readonly dir: string;
  readonly dockerSocket: string;
  readonly dataRoot: string;
  readonly execRoot: string;
  readonly pidFile: string;
  readonly etcDir: string;
  /** The private /etc/docker/plugins: spec files written here are seen by this dockerd only. */
  readonly pluginSpecDir: string;
  readonly dockerdLog: string;
  readonly cliConfig: string;
  ballast!: BallastProcess;
  holder?: ChildProcess;
  dockerd?: ChildProcess;
  private nsInode = '';
  private dockerdStarts = 0;

  private constructor(dir: string, readonly options: HarnessOptions) {
    this.dir = dir;
    this.dockerSocket = join(dir, 'docker.sock');
    this.dataRoot = join(dir, 'data');
    this.execRoot = join(dir, 'exec');
    this.pidFile = join(dir, 'dockerd.pid');
    this.etcDir = join(dir, 'etc');
    this.pluginSpecDir = join(this.etcDir, 'plugins');
    this.dockerdLog = join(dir, 'dockerd.log');
    this.cliConfig = join(dir, 'cli-config');
  }

  /** Creates the namespace, starts dockerd (and ballast unless told not to) and imports busybox:local. */
  static async start(options: HarnessOptions): Promise<DockerHarness> {
    requireRootAndTools('dockerd', DOCKER_BIN, 'unshare', 'nsenter', 'setpriv', 'losetup', 'mkfs.ext4', 'blkid', 'busybox');
    if (options.netns) requireRootAndTools('ip', 'hostname');
    let dir = options.dir;
    if (dir) mkdirSync(dir, { recursive: true });
    else dir = await mkdtemp(join(tmpdir(), `ballast-docker-${options.name}-`));
    const h = new DockerHarness(dir, options);
    try {
      for (const d of [h.dataRoot, h.execRoot, h.pluginSpecDir, h.cliConfig, join(dir, 'ballast')]) mkdirSync(d, { recursive: true });
      await h.startHolder();
      h.ballast = await BallastProcess.create({
        dir: join(dir, 'ballast'),
        prefix: h.nsPrefix(),
        socket: PLUGIN_SOCKET,
        config: {
          defaults: { size: '64M' },
          docker: { socket: h.dockerSocket },
          ...(options.loopRoot ? { backends: { loop: { root: options.loopRoot } } } : {}),
          ...options.ballastConfig,
        },
      });
      await h.startDockerd();
      if (options.startBallast !== false) await h.startBallast();
      await h.importBusybox();
    } catch (err) {
      const report = await h.teardown().catch((e: Error) => ({ errors: [e.message] }));
      throw new Error(`could not start the docker harness: ${(err as Error).message}\nteardown: ${JSON.stringify(report)}`);
    }
    return h;
  }

  /** PID of the process owning the private mount namespace. */
  get nsPid(): number {
    const pid = this.holder?.pid;
    if (!pid) throw new Error('the namespace holder is not running');
    return pid;
  }

  /** The mount table as dockerd and ballast see it. */
  get nsMountinfo(): string {
    return `/proc/${this.nsPid}/mountinfo`;
  }

  /**
   * argv prefix that runs a command inside the private mount namespace (and, for a cluster
   * host, its network and UTS namespaces).
   */
  nsPrefix(): string[] {
    const pid = this.nsPid;
    return [
      'nsenter',
      `--mount=/proc/${pid}/ns/mnt`,
      ...(this.options.netns ? [`--net=/proc/${pid}/ns/net`] : []),
      ...(this.options.hostname ? [`--uts=/proc/${pid}/ns/uts`] : []),
      'setpriv', '--pdeathsig', 'SIGTERM',
    ];
  }

  /** The host's name in a cluster (its hostname), or the harness name. */
  get label(): string {
    return this.options.hostname ?? this.options.name;
  }

  /** ballast's loop root (shared by every host of a cluster). */
  get loopRoot(): string {
    return this.options.loopRoot ?? this.ballast.loopRoot;
  }

  private async startHolder(): Promise<void> {
    // Mount points must exist on the host to be covered inside the namespace.
    for (const d of ['/run/docker/plugins', '/run/containerd', '/etc/docker']) mkdirSync(d, { recursive: true });
    const script = [
      'set -e',
      'mount -t tmpfs -o mode=0755,size=16m ballast-test-plugins /run/docker/plugins',
      'mount -t tmpfs -o mode=0711,size=64m ballast-test-containerd /run/containerd',
      `mount --bind '${this.etcDir}' /etc/docker`,
      ...(this.options.hostname ? [`hostname '${this.options.hostname}'`] : []),
      'echo ready',
      'exec sleep infinity',
    ].join('\n');
    // A cluster host: the holder enters the host's network namespace with nsenter (not
    // `ip netns exec`, which remounts /sys: dockerd then finds no cgroups) before unsharing.
    const argv = [
      'setpriv', '--pdeathsig', 'SIGKILL',
      ...(this.options.netns ? ['nsenter', `--net=/run/netns/${this.options.netns}`] : []),
      'unshare', '--mount', ...(this.options.hostname ? ['--uts'] : []), '--propagation', 'private',
      'sh', '-c', script,
    ];
    const holder = spawn(argv[0]!, argv.slice(1), { stdio: ['ignore', 'pipe', 'pipe'] });
    this.holder = holder;
    let out = '';
    holder.stdout?.on('data', (c: Buffer) => (out += c.toString()));
    holder.stderr?.on('data', (c: Buffer) => (out += c.toString()));
    await waitFor(
      () => {
        if (!alive(holder)) throw new GiveUp(`namespace holder exited: ${out}`);
        return out.includes('ready');
      },
      'the mount namespace holder',
      10_000,
      20,
    );
    this.nsInode = readlinkSync(`/proc/${holder.pid}/ns/mnt`);
    if (this.nsInode === readlinkSync('/proc/self/ns/mnt')) throw new Error('the holder did not get a mount namespace of its own');
  }

  // ---- dockerd ---------------------------------------------------------------------------

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

  // ---- ballast ---------------------------------------------------------------------------

  private async servingCount(): Promise<number> {
    return (await this.logs()).filter((l) => l.message === 'serving the Docker volume plugin protocol').length;
  }

  /** Starts ballast inside the namespace; waits for a *new* "serving" line (the log file is appended to across restarts). */
  async startBallast(): Promise<void> {
    const before = await this.servingCount();
    await this.ballast.start(20_000);
    const child = this.ballast.child!;
    await waitFor(
      async () => {
        if (!alive(child)) throw new GiveUp(`ballast exited (${child.exitCode ?? child.signalCode})`);
        return (await this.servingCount()) > before;
      },
      'ballast to serve',
      20_000,
      50,
      () => this.diagnostics(),
    );
  }

  /** Like BallastProcess.stop, with a timer that does not keep jest waiting after the exit. */
  async stopBallast(signal: NodeJS.Signals = 'SIGTERM'): Promise<void> {
    const child = this.ballast?.child;
    // A ballast stopped with SIGSTOP (a "hung" host) would not act on SIGTERM until continued.
    if (alive(child) && signal !== 'SIGKILL') child!.kill('SIGCONT');
    await stopChild(child, signal, 15_000);
  }

  /**
   * The fence watchdog ballast spawned (detached: it outlives the daemon on purpose), by the
   * PID ballast wrote to STATE_DIR/watchdog.pid; only a live `fence-watchdog` process inside
   * this harness's namespace counts.
   */
  watchdogPid(): number | undefined {
    let pid = 0;
    try {
      pid = Number(readFileSync(join(this.ballast.stateDir, 'watchdog.pid'), 'utf8').trim());
    } catch {
      return undefined;
    }
    if (!(pid > 0) || !this.inNamespace(pid)) return undefined;
    try {
      return readFileSync(`/proc/${pid}/cmdline`, 'utf8').includes('fence-watchdog') ? pid : undefined;
    } catch {
      return undefined;
    }
  }

  /** SIGKILL to the fence watchdog, if one runs; waits (bounded) for it to go. */
  async stopWatchdog(): Promise<void> {
    const pid = this.watchdogPid();
    if (pid === undefined) return;
    try {
      process.kill(pid, 'SIGKILL');
    } catch {
      return;
    }
    await waitFor(() => !this.inNamespace(pid), `the fence watchdog (${pid}) to exit`, 10_000, 50);
  }

  async restartBallast(): Promise<void> {
    await this.stopBallast();
    await this.startBallast();
  }

  ballastRunning(): boolean {
    const c = this.ballast?.child;
    return alive(c);
  }

  /** ballast's JSON log lines; a line caught half-written is skipped. */
  async logs(): Promise<LogLine[]> {
    let text = '';
    if (!this.ballast) return [];
    try {
      text = await readFile(this.ballast.logPath, 'utf8');
    } catch {
      return [];
    }
    const lines: LogLine[] = [];
    for (const line of text.split('\n')) {
      if (!line.trim()) continue;
      try {
        lines.push(JSON.parse(line) as LogLine);
      } catch {
        // the last line, still being written
      }
    }
    return lines;
  }

  /** The completed requests ballast logged, optionally for one method and one volume. */
  async requests(method?: string, volume?: string): Promise<LogLine[]> {
    return (await this.logs()).filter(
      (l) => l.message === 'request' && (method === undefined || l.request === method) && (volume === undefined || l.volume === volume),
    );
  }

  /** BallastProcess.requestCount, retried if it catches a log line half-written. */
  async count(method: string, volume?: string): Promise<number> {
    for (let attempt = 0; ; attempt += 1) {
      try {
        return await this.ballast.requestCount(method, volume);
      } catch (err) {
        if (!(err instanceof SyntaxError) || attempt > 20) throw err;
        await sleep(25);
      }
    }
  }

  /** Counts of every VolumeDriver/Plugin method, for one volume or overall. */
  async counts(volume?: string): Promise<Record<string, number>> {
    const out: Record<string, number> = {};
    for (const l of await this.requests(undefined, volume)) out[String(l.request)] = (out[String(l.request)] ?? 0) + 1;
    return out;
  }

  /**
   * Asserts exact request counts (as BallastProcess.requestCount reports them). Waits briefly for
   * counts still below the expectation, since ballast logs a request as it answers it.
   */
  async expectCounts(expected: Record<string, number>, volume?: string, baseline: Record<string, number> = {}): Promise<void> {
    const deadline = Date.now() + 3_000;
    let actual: Record<string, number> = {};
    for (;;) {
      actual = {};
      for (const method of Object.keys(expected)) actual[method] = (await this.count(method, volume)) - (baseline[method] ?? 0);
      const below = Object.keys(expected).some((m) => actual[m]! < expected[m]!);
      if (!below || Date.now() > deadline) break;
      await sleep(50);
    }
    const wrong = Object.keys(expected).filter((m) => actual[m] !== expected[m]);
    if (wrong.length) {
      throw new Error(
        `unexpected ballast request counts${volume ? ` for volume ${volume}` : ''}` +
          `${Object.keys(baseline).length ? ' (since the baseline)' : ''}:\n` +
          wrong.map((m) => `  ${m}: expected ${expected[m]}, got ${actual[m]}`).join('\n') +
          `\nall counts: ${JSON.stringify(await this.counts(volume))}\n${await this.diagnostics()}`,
      );
    }
  }

  /** A snapshot of the counts, to assert deltas with expectCounts(..., baseline). */
  async baseline(volume?: string): Promise<Record<string, number>> {
    return this.counts(volume);
  }

  /** ballast mounts under its mount root, as the namespace sees them. */
  ballastMounts(volume?: string): string[] {
    const root = volume ? join(this.ballast.mountRoot, volume) : this.ballast.mountRoot;
    return mountsUnder(root, this.nsMountinfo).filter((m) => m !== this.ballast.mountRoot);
  }

  /** Loop devices backed by files under ballast's loop root (or one volume's dir). */
  ballastLoops(volume?: string): string[] {
    return loopDevicesUnder(volume ? join(this.loopRoot, volume) : this.loopRoot);
  }

  /** Entries of the loop root (volume dirs and any staging leftovers), and change markers left in .rev. */
  async loopRootEntries(): Promise<string[]> {
    const list = (dir: string) => readdir(dir).catch(() => [] as string[]);
    const markers = (await list(join(this.loopRoot, '.rev'))).map((m) => `.rev/${m}`);
    return [...(await list(this.loopRoot)).filter((e) => e !== '.rev'), ...markers].sort();
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

  /** Runs docker expecting it to fail; returns stderr. */
  async fails(args: string[], options: RunOptions = {}): Promise<string> {
    const result = await this.docker(args, options);
    if (result.code === 0 || result.timedOut) {
      throw new Error(`docker command was expected to fail:\n${describeResult(result)}\n${await this.diagnostics()}`);
    }
    return result.stderr;
  }

  /** The `ballast` operator command against this harness's daemon, inside its namespace. */
  ballastCli(args: string[], options: RunOptions = {}): Promise<CommandResult> {
    return runCommand([...this.nsPrefix(), process.execPath, BALLAST_BIN, '--config', this.ballast.configPath, ...args], { timeoutMs: 90_000, ...options });
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

  /** Removes every ballast volume dockerd knows. */
  async removeAllBallastVolumes(): Promise<void> {
    const names = (await this.ok(['volume', 'ls', '-q', '--filter', `driver=${PLUGIN}`])).split('\n').filter(Boolean);
    if (names.length) await this.ok(['volume', 'rm', ...names]);
  }

  /**
   * The end-of-file check: with containers gone and volumes removed, ballast left no mount,
   * no loop device and no staging dir behind.
   */
  async assertNoLeftovers(): Promise<void> {
    await this.removeAllContainers();
    await this.removeAllBallastVolumes();
    const problems: string[] = [];
    const mounts = this.ballastMounts();
    const loops = this.ballastLoops();
    const entries = await this.loopRootEntries();
    const state = existsSync(join(this.ballast.stateDir, 'mounts.json'))
      ? (JSON.parse(readFileSync(join(this.ballast.stateDir, 'mounts.json'), 'utf8')) as { volumes: Record<string, unknown> })
      : { volumes: {} };
    if (mounts.length) problems.push(`mounts left under ${this.ballast.mountRoot}: ${mounts.join(', ')}`);
    if (loops.length) problems.push(`loop devices left for ${this.loopRoot}: ${loops.join(', ')}`);
    if (entries.length) problems.push(`entries left in the loop root: ${entries.join(', ')}`);
    if (Object.keys(state.volumes).length) problems.push(`ballast still records mounts: ${JSON.stringify(state.volumes)}`);
    if (mountsUnder(this.dir).length) problems.push(`mounts visible on the HOST under ${this.dir}: ${mountsUnder(this.dir).join(', ')}`);
    if (problems.length) throw new Error(`leftovers:\n  ${problems.join('\n  ')}\n${await this.diagnostics()}`);
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

  /** The tail of ballast's and dockerd's logs, for failure messages. */
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

  async diagnostics(ballastLines = 40, dockerdLines = 25): Promise<string> {
    const who = this.options.hostname ? ` of ${this.options.hostname}` : '';
    const ballast = (await this.logs())
      .slice(-ballastLines)
      .map((l) => {
        const { timestamp, level, message, ...rest } = l;
        return `  ${String(timestamp ?? '').slice(11, 23)} ${level} ${message} ${JSON.stringify(rest)}`;
      })
      .join('\n');
    let dockerd = '';
    try {
      dockerd = readFileSync(this.dockerdLog, 'utf8')
        .trimEnd()
        .split('\n')
        .filter((l) => !/module=grpc|loading plugin|skip loading plugin|starting signal loop|shim disconnected|cleaning up/.test(l))
        .slice(-dockerdLines)
        .map((l) => `  ${l}`)
        .join('\n');
    } catch {
      dockerd = '  (no dockerd log)';
    }
    return `--- ballast log tail${who} (${this.ballast?.logPath}) ---\n${ballast}\n--- dockerd log tail${who} (${this.dockerdLog}) ---\n${dockerd}`;
  }

  // ---- teardown --------------------------------------------------------------------------

  /** True when `pid` is a live (not zombie) process in the private mount namespace. */
  private inNamespace(pid: number): boolean {
    try {
      return readlinkSync(`/proc/${pid}/ns/mnt`) === this.nsInode && !/^\d+ \(.*\) Z/.test(readFileSync(`/proc/${pid}/stat`, 'utf8'));
    } catch {
      return false;
    }
  }

  /** IDs of the containers this harness's dockerd ever created (from its data root). */
  private containerIds(): string[] {
    try {
      return readdirSync(join(this.dataRoot, 'containers')).filter((id) => /^[0-9a-f]{64}$/.test(id));
    } catch {
      return [];
    }
  }

  /** Live processes in the cgroup of one of this dockerd's containers (after a crash they outlive it). */
  private containerPids(ids: string[]): number[] {
    if (!ids.length) return [];
    const pids: number[] = [];
    for (const entry of readdirSync('/proc')) {
      if (!/^\d+$/.test(entry)) continue;
      try {
        const cgroup = readFileSync(`/proc/${entry}/cgroup`, 'utf8');
        const stat = readFileSync(`/proc/${entry}/stat`, 'utf8');
        if (/^\d+ \(.*\) Z/.test(stat)) continue;
        // /docker/ID, /PARENT/ID with --cgroup-parent, or docker-ID.scope: IDs are 64 hex digits.
        if (ids.some((id) => cgroup.includes(`/${id}`) || cgroup.includes(`docker-${id}.scope`))) pids.push(Number(entry));
      } catch {
        // gone
      }
    }
    return pids;
  }

  /** PIDs in the private mount namespace, other than the holder. */
  private pidsInNamespace(): number[] {
    if (!this.nsInode) return [];
    const pids: number[] = [];
    for (const entry of readdirSync('/proc')) {
      if (!/^\d+$/.test(entry)) continue;
      const pid = Number(entry);
      if (pid === this.holder?.pid || pid === process.pid) continue;
      try {
        if (readlinkSync(`/proc/${pid}/ns/mnt`) === this.nsInode) pids.push(pid);
      } catch {
        // gone
      }
    }
    return pids;
  }

  /**
   * Always safe to call, even half-started: removes containers, stops dockerd, ballast and the
   * namespace holder (PIDs it started, and only those), then detaches and unmounts whatever was
   * left under the test dir and removes it. Throws, after cleaning, if anything had to be cleaned.
   */
  async teardown(options: { keepDir?: boolean } = {}): Promise<TeardownReport> {
    const report: TeardownReport = { hostMounts: [], loops: [], strayPids: [], errors: [] };
    const attempt = async (what: string, fn: () => Promise<unknown>) => {
      try {
        await fn();
      } catch (err) {
        report.errors.push(`${what}: ${(err as Error).message.split('\n')[0]}`);
      }
    };
    if (alive(this.dockerd)) await attempt('remove containers', () => this.removeAllContainers());
    await attempt('stop dockerd', () => this.stopDockerd());
    await attempt('stop ballast', () => this.stopBallast());
    // Expected to outlive ballast (it fences when ballast dies): stopped here, not a stray.
    await attempt('stop the fence watchdog', () => this.stopWatchdog());
    // Anything dockerd started (containerd, shims) lives in the namespace: it must be gone now.
    await attempt('wait for the namespace to empty', () =>
      waitFor(() => this.pidsInNamespace().length === 0, 'processes in the test namespace to exit', 15_000, 100),
    );
    // Container processes (own mount namespaces, docker cgroups) left by a dockerd that could not
    // remove them, e.g. after a crash: identified by the IDs in this harness's data root.
    const ids = this.containerIds();
    report.strayPids = [...this.pidsInNamespace(), ...this.containerPids(ids)];
    for (const pid of report.strayPids) {
      // Only processes inside this test's private namespace: nothing else can have entered it.
      try {
        process.kill(pid, 'SIGKILL');
      } catch {
        // gone
      }
    }
    await stopChild(this.holder, 'SIGKILL', 10_000);
    if (report.strayPids.length) {
      await waitFor(() => this.containerPids(ids).length === 0, 'container processes to exit', 10_000, 100).catch(() => undefined);
    }
    // Empty cgroups of this dockerd's containers (dockerd removes them itself when it can).
    for (const id of ids) {
      let controllers: string[] = [];
      try {
        controllers = readdirSync('/sys/fs/cgroup');
      } catch {
        break;
      }
      for (const dir of [...controllers.map((c) => `/sys/fs/cgroup/${c}/docker/${id}`), `/sys/fs/cgroup/docker/${id}`, `/sys/fs/cgroup/system.slice/docker-${id}.scope`]) {
        if (existsSync(dir)) {
          try {
            rmdirSync(dir);
          } catch (err) {
            report.errors.push(`rmdir ${dir}: ${(err as Error).message}`);
          }
        }
      }
    }
    // The cgroup parent named for this harness alone (cluster hosts), in every hierarchy.
    const parent = this.options.cgroupParent;
    if (parent) {
      let controllers: string[] = [];
      try {
        controllers = readdirSync('/sys/fs/cgroup');
      } catch {
        // no cgroup fs
      }
      for (const dir of [...controllers.map((c) => join('/sys/fs/cgroup', c, parent)), join('/sys/fs/cgroup', parent)]) {
        if (existsSync(dir)) await attempt(`remove cgroup ${dir}`, async () => removeCgroupTree(dir));
      }
    }
    // The namespace is gone with its last process; its mounts go with it. Let the kernel finish.
    await attempt('wait for the namespace mounts to go', () =>
      waitFor(() => mountsUnder(this.dir).length === 0, 'host mounts under the test dir to go', 5_000, 100).catch(() => true),
    );
    await attempt('clean up', async () => {
      const cleaned = cleanUpUnder(this.dir);
      report.hostMounts = cleaned.mounts;
      report.loops = cleaned.loops;
    });
    const keep = options.keepDir ?? process.env.BALLAST_TEST_KEEP === '1';
    if (!keep && report.hostMounts.length === 0) {
      await attempt('remove the test dir', () => rm(this.dir, { recursive: true, force: true, maxRetries: 3 }));
    }
    return report;
  }

  /** teardown() for afterAll: throws when it had to clean up something a passing suite should not leave. */
  async teardownAndCheck(): Promise<void> {
    const report = await this.teardown();
    const problems = [
      ...(report.hostMounts.length ? [`host mounts: ${report.hostMounts.join(', ')}`] : []),
      ...(report.loops.length ? [`loop devices: ${report.loops.join(', ')}`] : []),
      ...(report.strayPids.length ? [`stray processes in the namespace: ${report.strayPids.join(', ')}`] : []),
      ...report.errors,
    ];
    if (problems.length) throw new Error(`teardown of ${this.dir} had to clean up:\n  ${problems.join('\n  ')}`);
  }
}

/** rmdir of a cgroup and the (empty) cgroups below it, deepest first. */
function removeCgroupTree(path: string): void {
  for (const entry of readdirSync(path, { withFileTypes: true })) {
    if (entry.isDirectory()) removeCgroupTree(join(path, entry.name));
  }
  rmdirSync(path);
}

/**
 * A root filesystem tarball for busybox:local (the machine's static busybox and its applets),
 * written to DIR/busybox.tar; `extra(root)` may add files before it is packed.
 */
export async function buildBusyboxTar(dir: string, options: { name?: string; extra?: (root: string) => Promise<void> | void } = {}): Promise<string> {
  const name = options.name ?? 'busybox';
  const root = join(dir, `${name}-root`);
  mkdirSync(join(root, 'bin'), { recursive: true });
  mkdirSync(join(root, 'tmp'), { recursive: true });
  mkdirSync(join(root, 'etc'), { recursive: true });
  // Image content at a path a volume can be mounted on: dockerd copies it into a new volume.
  writeFileSync(join(root, 'etc', 'image-release'), `${name}:local for ballast tests\n`);
  const busybox = ['/bin/busybox', '/usr/bin/busybox'].find((p) => existsSync(p));
  if (!busybox) throw new Error('no /bin/busybox: run scripts/install-deps.sh (busybox-static)');
  copyFileSync(busybox, join(root, 'bin/busybox'));
  for (const applet of APPLETS) symlinkSync('busybox', join(root, 'bin', applet));
  await options.extra?.(root);
  const tar = join(dir, `${name}.tar`);
  const tarred = await runCommand(['tar', '-C', root, '-cf', tar, '.'], { timeoutMs: 30_000 });
  if (tarred.code !== 0) throw new Error(`tar failed: ${describeResult(tarred)}`);
  await rm(root, { recursive: true, force: true });
  return tar;
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

/**
 * Wraps a test body so that any failure (a plain expect() included) carries the tail of
 * ballast's and dockerd's logs, unless the message already has them.
 */
export function withDiagnostics(harness: () => { diagnostics(): Promise<string> } | undefined, body: () => Promise<void>): () => Promise<void> {
  return async () => {
    try {
      await body();
    } catch (err) {
      const h = harness();
      if (h && err instanceof Error && !err.message.includes('--- ballast log tail')) {
        err.message += `\n${await h.diagnostics().catch((e: Error) => `(no diagnostics: ${e.message})`)}`;
      }
      throw err;
    }
  };
}

/** A long-running container command that exits promptly on SIGTERM (busybox sh as PID 1 ignores it otherwise). */
export function loopScript(body: string, intervalSeconds = 0.2): string {
  return `trap 'exit 0' TERM; while true; do ${body}; sleep ${intervalSeconds} & wait $!; done`;
}

/**
 * One private dockerd for a whole test file: started in beforeAll, torn down (and checked
 * for leftovers) in afterAll. `it` is test() with the logs' tails added to any failure.
 */
export function dockerSuite(options: HarnessOptions, timeoutMs: number) {
  const suite = {
    harness: undefined as DockerHarness | undefined,
    /** The running harness; throws if beforeAll has not started it. */
    get h(): DockerHarness {
      if (!suite.harness) throw new Error('the docker harness is not running');
      return suite.harness;
    },
    it: (name: string, body: () => Promise<void>, timeout = timeoutMs) => test(name, withDiagnostics(() => suite.harness, body), timeout),
  };
  beforeAll(async () => {
    suite.harness = await DockerHarness.start(options);
  }, 180_000);
  afterAll(async () => {
    await suite.harness?.teardownAndCheck();
  }, 180_000);
  return suite;
}
