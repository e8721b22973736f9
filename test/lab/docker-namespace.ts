import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync, mkdirSync, readdirSync, readFileSync, readlinkSync, rmdirSync } from 'node:fs';
import { rm } from 'node:fs/promises';
import { join } from 'node:path';
import { cleanUpUnder, mountsUnder } from '../helpers/cleanup.js';
import { alive, GiveUp, stopChild, waitFor } from './command.js';

// The private namespace a lab dockerd and its ballast run in, which never disturbs anything else
// on the machine.
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
// (test/lab/cluster.ts): the holder is started inside that network namespace with a UTS
// namespace of its own, and nsPrefix() enters all three namespaces.

export interface NamespaceOptions {
  /** Short name used in the temp dir and compose project names. */
  name: string;
  /** The harness dir (created if missing); default a new temp dir. */
  dir?: string;
  /**
   * One "host" of a multi-host cluster (test/lab/cluster.ts): the namespace holder is
   * started inside this network namespace (a name under /run/netns), and dockerd, ballast and
   * every command run through nsPrefix() join it.
   */
  netns?: string;
  /** A UTS namespace of its own with this hostname (dockerd's node name, ballast's hostname). */
  hostname?: string;
  /** dockerd --cgroup-parent: a name unique to this harness, whose cgroups teardown removes. */
  cgroupParent?: string;
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

export type Attempt = (what: string, fn: () => Promise<unknown>) => Promise<void>;

export class DockerNamespace {
  readonly dataRoot: string;
  readonly execRoot: string;
  readonly etcDir: string;
  /** The private /etc/docker/plugins: spec files written here are seen by this dockerd only. */
  readonly pluginSpecDir: string;
  holder?: ChildProcess;
  private nsInode = '';

  protected constructor(
    readonly dir: string,
    readonly options: NamespaceOptions,
  ) {
    this.dataRoot = join(dir, 'data');
    this.execRoot = join(dir, 'exec');
    this.etcDir = join(dir, 'etc');
    this.pluginSpecDir = join(this.etcDir, 'plugins');
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

  protected async startHolder(): Promise<void> {
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

  /** True when `pid` is a live (not zombie) process in the private mount namespace. */
  protected inNamespace(pid: number): boolean {
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

  /** Stops what runs in the namespace (dockerd, ballast) before teardown empties it. */
  protected async stopServices(_attempt: Attempt): Promise<void> {}

  /**
   * Always safe to call, even half-started: stops what runs in the namespace (containers,
   * dockerd, ballast: PIDs this harness started, and only those) and the namespace holder, then
   * detaches and unmounts whatever was left under the test dir and removes it. Reports anything
   * it had to clean.
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
    await this.stopServices(attempt);
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
