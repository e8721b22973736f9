import { existsSync, mkdirSync, readFileSync } from 'node:fs';
import { mkdtemp, readdir } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { loopDevicesUnder, mountsUnder } from '../helpers/cleanup.js';
import { requireRootAndTools } from '../helpers/root.js';
import { BALLAST_BIN, BallastProcess } from './ballast.js';
import { alive, GiveUp, runCommand, sleep, stopChild, waitFor, type CommandResult, type RunOptions } from './command.js';
import type { Attempt } from './docker-namespace.js';
import { DOCKER_BIN, DockerdHost, type DockerdOptions } from './dockerd.js';

// ballast registered as the volume plugin of a lab dockerd: both run in the harness's private
// namespace (docker-namespace.ts), ballast's socket in its private /run/docker/plugins. The
// harness reads ballast's log for request counts and checks that nothing is left behind.

export const PLUGIN = 'ballast';
export const PLUGIN_SOCKET = '/run/docker/plugins/ballast.sock';

export interface HarnessOptions extends DockerdOptions {
  /** Start ballast in beforeAll (default true); false to start it later with startBallast(). */
  startBallast?: boolean;
  /** Extra keys for ballast's config (merged over the harness defaults). */
  ballastConfig?: Record<string, unknown>;
  /** ballast's loop root when it is not the harness's own DIR/ballast/loop (a root shared by hosts). */
  loopRoot?: string;
}

/** A line of ballast's JSON log. */
type LogLine = Record<string, unknown>;

export class DockerHarness extends DockerdHost {
  declare readonly options: HarnessOptions;
  ballast!: BallastProcess;

  private constructor(dir: string, options: HarnessOptions) {
    super(dir, options);
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
      await h.startNamespace();
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

  /** ballast's loop root (shared by every host of a cluster). */
  get loopRoot(): string {
    return this.options.loopRoot ?? this.ballast.loopRoot;
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
    return this.ballast ? this.ballast.logs() : [];
  }

  /** The completed requests ballast logged, optionally for one method and one volume. */
  async requests(method?: string, volume?: string): Promise<LogLine[]> {
    return (await this.logs()).filter(
      (l) => l.message === 'request' && (method === undefined || l.request === method) && (volume === undefined || l.volume === volume),
    );
  }

  /** How many requests of `method` ballast served, optionally for one volume. */
  count(method: string, volume?: string): Promise<number> {
    return this.ballast.requestCount(method, volume);
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

  /** The `ballast` operator command against this harness's daemon, inside its namespace. */
  ballastCli(args: string[], options: RunOptions = {}): Promise<CommandResult> {
    return runCommand([...this.nsPrefix(), process.execPath, BALLAST_BIN, '--config', this.ballast.configPath, ...args], { timeoutMs: 90_000, ...options });
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

  protected override async stopServices(attempt: Attempt): Promise<void> {
    await super.stopServices(attempt);
    await attempt('stop ballast', () => this.stopBallast());
    // Expected to outlive ballast (it fences when ballast dies): stopped here, not a stray.
    await attempt('stop the fence watchdog', () => this.stopWatchdog());
  }

  /** The tails of ballast's and dockerd's logs, for failure messages. */
  override async diagnostics(ballastLines = 40, dockerdLines = 25): Promise<string> {
    const who = this.options.hostname ? ` of ${this.options.hostname}` : '';
    const ballast = (await this.logs())
      .slice(-ballastLines)
      .map((l) => {
        const { timestamp, level, message, ...rest } = l;
        return `  ${String(timestamp ?? '').slice(11, 23)} ${level} ${message} ${JSON.stringify(rest)}`;
      })
      .join('\n');
    return `--- ballast log tail${who} (${this.ballast?.logPath}) ---\n${ballast}\n--- dockerd log tail${who} (${this.dockerdLog}) ---\n${this.dockerdLogTail(dockerdLines)}`;
  }
}
