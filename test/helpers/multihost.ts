import { copyFileSync, existsSync, mkdirSync, readdirSync, readFileSync } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import { randomBytes } from 'node:crypto';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { cleanUpUnder, loopDevicesUnder, mountsUnder } from './cleanup.js';
import {
  buildBusyboxTar,
  describeResult,
  DockerHarness,
  IMAGE,
  PLUGIN,
  runCommand,
  sleep,
  waitFor,
  type TeardownReport,
} from './dockerd.js';
import { requireRootAndTools } from './root.js';

// Several Docker "hosts" on one machine (lab-notes.md, "Several Docker hosts on one machine").
//
// Each host is a DockerHarness (test/helpers/dockerd.ts) whose namespace holder is started in a
// network namespace of its own (`ip netns add bt-<pid>-<id>-hN`, one end of a veth pair, the
// other end on a bridge `btbr<id>` that only these namespaces use, addresses 10.250.X.N/24),
// with a UTS namespace of its own (hostname hN) and a private mount namespace. Inside it run the
// host's dockerd (own data root, exec root, API socket, /run/docker/plugins, /etc/docker,
// /run/containerd, cgroup parent) and its `ballast serve` (own state dir and mount root), and
// every ballast uses the SAME loop root, shared: true: the hosts' "shared storage". Loop devices
// are one kernel-wide resource, so exclusion between hosts is ballast's lease, which is what the
// tests prove. The bridge has no address: traffic flows only among the namespaces.

/**
 * Host leases for tests: takeover 6 s after a holder stops renewing, renewal every second,
 * self-fence after 4 s without renewal, a Mount waits up to 20 s for a holder to let go.
 */
export const LEASE = { seconds: 6, renew_every: 1, fence_after: 4, mount_wait: 20 };
export type LeaseSettings = typeof LEASE;

export const SQLITE_IMAGE = 'sqlite:local';

export interface ClusterOptions {
  /** Short name for the temp dir. */
  name: string;
  /** Number of hosts, h1..hN (default 2). */
  hosts?: number;
  /** Merged over LEASE (e.g. a shorter mount_wait). */
  leaseSettings?: Partial<LeaseSettings>;
  /** Extra ballast config keys, for every host or per host name. Merged last. */
  ballastConfig?: Record<string, unknown> | ((host: string) => Record<string, unknown>);
  /** Also build and import sqlite:local (busybox + the machine's sqlite3 and its libraries). */
  sqliteImage?: boolean;
}

export interface ClusterTeardownReport {
  hosts: Record<string, TeardownReport>;
  /** Loop devices / mounts under the cluster dir (the shared root) left after the hosts stopped. */
  loops: string[];
  hostMounts: string[];
  errors: string[];
}

/** Runs a command that must succeed (network setup); throws with its output otherwise. */
async function must(argv: string[], timeoutMs = 15_000): Promise<string> {
  const result = await runCommand(argv, { timeoutMs });
  if (result.code !== 0) throw new Error(`command failed:\n${describeResult(result)}`);
  return result.stdout;
}

export class Cluster {
  readonly id: string;
  readonly sharedRoot: string;
  readonly bridge: string;
  /** The first three octets of the hosts' /24, e.g. "10.250.37". */
  readonly subnet: string;
  readonly hosts: DockerHarness[] = [];
  /** The lease settings the hosts run with. */
  lease: LeaseSettings;
  /** Hosts in the swarm, manager first. */
  swarmNodes: DockerHarness[] = [];
  private readonly names: string[];
  private readonly netnsCreated: string[] = [];
  private readonly vethsCreated: string[] = [];
  private bridgeCreated = false;
  private forwardRule?: string[];
  private busyboxTar?: string;
  private sqliteTar?: string;

  private constructor(
    readonly dir: string,
    readonly options: ClusterOptions,
  ) {
    this.id = randomBytes(3).toString('hex');
    this.sharedRoot = join(dir, 'shared', 'loop');
    this.bridge = `btbr${this.id}`;
    this.subnet = `10.250.${20 + (process.pid % 200)}`;
    this.names = Array.from({ length: options.hosts ?? 2 }, (_, i) => `h${i + 1}`);
    this.lease = { ...LEASE, ...options.leaseSettings };
  }

  static async start(options: ClusterOptions): Promise<Cluster> {
    requireRootAndTools('ip', 'nsenter', 'unshare', 'hostname', 'setpriv', 'dockerd', 'losetup', 'busybox', ...(options.sqliteImage ? ['sqlite3', 'ldd'] : []));
    const dir = await mkdtemp(join(tmpdir(), `ballast-cluster-${options.name}-`));
    const c = new Cluster(dir, options);
    try {
      mkdirSync(c.sharedRoot, { recursive: true });
      await c.createNetwork();
      c.busyboxTar = await buildBusyboxTar(dir);
      if (options.sqliteImage) c.sqliteTar = await buildSqliteTar(dir);
      const started = await Promise.allSettled(c.names.map((name) => c.startHost(name)));
      for (const r of started) if (r.status === 'fulfilled') c.hosts.push(r.value);
      c.hosts.sort((a, b) => a.label.localeCompare(b.label, undefined, { numeric: true }));
      const failed = started.find((r): r is PromiseRejectedResult => r.status === 'rejected');
      if (failed) throw failed.reason;
      await c.checkNetwork();
    } catch (err) {
      const report = await c.teardown().catch((e: Error) => ({ errors: [e.message] }));
      throw new Error(`could not start the cluster: ${(err as Error).message}\nteardown: ${JSON.stringify(report)}`);
    }
    return c;
  }

  // ---- hosts -----------------------------------------------------------------------------

  /** A host by name ("h1") or 1-based number. */
  host(which: string | number): DockerHarness {
    const name = typeof which === 'number' ? `h${which}` : which;
    const h = this.hosts.find((x) => x.label === name);
    if (!h) throw new Error(`no host ${name} in the cluster (hosts: ${this.hosts.map((x) => x.label).join(', ')})`);
    return h;
  }

  get h1(): DockerHarness {
    return this.host(1);
  }

  get h2(): DockerHarness {
    return this.host(2);
  }

  get h3(): DockerHarness {
    return this.host(3);
  }

  /** The host's address on the cluster network. */
  addressOf(h: DockerHarness | string): string {
    const name = typeof h === 'string' ? h : h.label;
    return `${this.subnet}.${this.names.indexOf(name) + 1}`;
  }

  netnsOf(name: string): string {
    return `bt-${process.pid}-${this.id}-${name}`;
  }

  private vethOf(name: string): string {
    return `bt${this.id}${name}`; // at most 15 characters
  }

  private async startHost(name: string): Promise<DockerHarness> {
    const extra = typeof this.options.ballastConfig === 'function' ? this.options.ballastConfig(name) : (this.options.ballastConfig ?? {});
    const h = await DockerHarness.start({
      name: `${this.options.name}-${name}`,
      dir: join(this.dir, name),
      netns: this.netnsOf(name),
      hostname: name,
      loopRoot: this.sharedRoot,
      cgroupParent: `ballast-test-${this.id}-${name}`,
      busyboxTar: this.busyboxTar,
      ballastConfig: {
        host: { id: name },
        backends: { loop: { root: this.sharedRoot, shared: true } },
        lease: this.lease,
        ...extra,
      },
    });
    try {
      if (this.sqliteTar) await h.importImage(this.sqliteTar, SQLITE_IMAGE);
    } catch (err) {
      await h.teardown().catch(() => undefined);
      throw err;
    }
    return h;
  }

  // ---- network ---------------------------------------------------------------------------

  private async createNetwork(): Promise<void> {
    await must(['ip', 'link', 'add', this.bridge, 'type', 'bridge']);
    this.bridgeCreated = true;
    await must(['ip', 'link', 'set', this.bridge, 'up']);
    for (const name of this.names) {
      const ns = this.netnsOf(name);
      const veth = this.vethOf(name);
      await must(['ip', 'netns', 'add', ns]);
      this.netnsCreated.push(ns);
      await must(['ip', 'link', 'add', veth, 'type', 'veth', 'peer', 'name', `${veth}p`]);
      this.vethsCreated.push(veth);
      await must(['ip', 'link', 'set', `${veth}p`, 'netns', ns]);
      await must(['ip', '-n', ns, 'link', 'set', `${veth}p`, 'name', 'eth0']);
      await must(['ip', '-n', ns, 'addr', 'add', `${this.addressOf(name)}/24`, 'dev', 'eth0']);
      await must(['ip', '-n', ns, 'link', 'set', 'eth0', 'up']);
      await must(['ip', '-n', ns, 'link', 'set', 'lo', 'up']);
      await must(['ip', 'link', 'set', veth, 'master', this.bridge]);
      await must(['ip', 'link', 'set', veth, 'up']);
    }
    // A FORWARD policy of DROP (any dockerd with iptables sets it) also drops bridged traffic
    // when br_netfilter is active: accept this bridge's own traffic, and only that.
    const forward = await runCommand(['iptables', '-S', 'FORWARD'], { timeoutMs: 15_000 });
    if (forward.code === 0 && /^-P FORWARD DROP/m.test(forward.stdout)) {
      const rule = ['FORWARD', '-i', this.bridge, '-o', this.bridge, '-j', 'ACCEPT'];
      await must(['iptables', '-I', ...rule]);
      this.forwardRule = rule;
    }
  }

  /** Every host reaches every other over the cluster network (busybox ping, bounded). */
  private async checkNetwork(): Promise<void> {
    if (this.names.length < 2) return;
    const checks = this.names.map((name, i) => {
      const peer = this.names[(i + 1) % this.names.length]!;
      return runCommand(['nsenter', `--net=/run/netns/${this.netnsOf(name)}`, 'busybox', 'ping', '-c', '1', '-W', '3', this.addressOf(peer)], {
        timeoutMs: 10_000,
      }).then((r) => (r.code === 0 ? '' : `${name} -> ${peer}: ${describeResult(r)}`));
    });
    const failures = (await Promise.all(checks)).filter(Boolean);
    if (failures.length) throw new Error(`the cluster network does not work:\n${failures.join('\n')}`);
  }

  private async removeNetwork(errors: string[]): Promise<void> {
    const attempt = async (argv: string[]) => {
      const r = await runCommand(argv, { timeoutMs: 15_000 });
      if (r.code !== 0) errors.push(`${argv.join(' ')}: ${r.stderr.trim()}`);
    };
    if (this.forwardRule) {
      await attempt(['iptables', '-D', ...this.forwardRule]);
      this.forwardRule = undefined;
    }
    const links = await this.linkNames();
    for (const veth of this.vethsCreated.splice(0)) if (links.has(veth)) await attempt(['ip', 'link', 'del', veth]);
    if (this.bridgeCreated && links.has(this.bridge)) await attempt(['ip', 'link', 'del', this.bridge]);
    this.bridgeCreated = false;
    for (const ns of this.netnsCreated.splice(0)) if (existsSync(`/run/netns/${ns}`)) await attempt(['ip', 'netns', 'del', ns]);
  }

  private async linkNames(): Promise<Set<string>> {
    const r = await runCommand(['ip', '-o', 'link', 'show'], { timeoutMs: 15_000 });
    return new Set(
      r.stdout
        .split('\n')
        .map((l) => /^\d+: ([^:@]+)/.exec(l)?.[1])
        .filter((n): n is string => !!n),
    );
  }

  // ---- swarm -----------------------------------------------------------------------------

  /**
   * `docker swarm init` on h1 (advertising its cluster address) and `swarm join` of `workers`
   * (default: every other host). ballast is activated on every node first (`docker volume ls`):
   * a v1 plugin appears in a node's description only once activated there, and the scheduler
   * places a task with a ballast mount only on nodes whose description lists it. Waits (bounded)
   * until every node is ready and lists the plugin.
   */
  async initSwarm(workers: DockerHarness[] = this.hosts.slice(1), timeoutMs = 90_000): Promise<void> {
    const manager = this.hosts[0]!;
    await Promise.all([manager, ...workers].map((h) => h.ok(['volume', 'ls', '-q'])));
    const addr = this.addressOf(manager);
    await manager.ok(['swarm', 'init', '--advertise-addr', addr, '--listen-addr', `${addr}:2377`], { timeoutMs: 60_000 });
    this.swarmNodes = [manager];
    const token = (await manager.ok(['swarm', 'join-token', '-q', 'worker'])).trim();
    for (const w of workers) {
      const wa = this.addressOf(w);
      await w.ok(['swarm', 'join', '--token', token, '--advertise-addr', wa, '--listen-addr', `${wa}:2377`, `${addr}:2377`], { timeoutMs: 60_000 });
      this.swarmNodes.push(w);
    }
    await this.waitForSwarmNodes(timeoutMs);
  }

  /** Waits until every swarm node is Ready and its description lists the ballast volume plugin. */
  async waitForSwarmNodes(timeoutMs = 90_000): Promise<void> {
    const manager = this.swarmNodes[0];
    if (!manager) throw new Error('no swarm');
    let last = '';
    await waitFor(
      async () => {
        const states = await Promise.all(
          this.swarmNodes.map(async (h) => {
            const r = await manager.docker(['node', 'inspect', h.label, '--format', '{{.Status.State}} {{json .Description.Engine.Plugins}}'], { timeoutMs: 15_000 });
            return `${h.label}: ${r.code === 0 ? r.stdout.trim() : r.stderr.trim()}`;
          }),
        );
        last = states.join('\n');
        return states.every((s) => / ready /.test(s) && s.includes(`{"Type":"Volume","Name":"${PLUGIN}"}`));
      },
      'every swarm node to be ready with the ballast plugin in its description',
      timeoutMs,
      1_000,
      async () => `node states:\n${last}`,
    );
  }

  /** Service tasks as the manager lists them: node, desired state, current state, error. */
  async serviceTasks(service: string): Promise<{ id: string; node: string; desired: string; state: string; error: string }[]> {
    const manager = this.swarmNodes[0];
    if (!manager) throw new Error('no swarm');
    const out = await manager.ok(['service', 'ps', service, '--no-trunc', '--format', '{{.ID}}|{{.Node}}|{{.DesiredState}}|{{.CurrentState}}|{{.Error}}']);
    return out
      .split('\n')
      .filter(Boolean)
      .map((l) => {
        const [id = '', node = '', desired = '', state = '', error = ''] = l.split('|');
        return { id, node, desired, state, error };
      });
  }

  /** The running container of `service` on host `h`, if any. */
  async serviceContainer(h: DockerHarness, service: string): Promise<string | undefined> {
    const r = await h.docker(['ps', '-q', '--filter', `label=com.docker.swarm.service.name=${service}`], { timeoutMs: 15_000 });
    return r.code === 0 ? r.stdout.split('\n').filter(Boolean)[0] : undefined;
  }

  /**
   * Removes every service (their tasks' containers go, unmounting their volumes), waits
   * (bounded) for those containers to go, then every node leaves the swarm (workers first).
   */
  async leaveSwarm(): Promise<string[]> {
    const errors: string[] = [];
    const manager = this.swarmNodes[0];
    if (!manager) return errors;
    const services = await manager.docker(['service', 'ls', '-q'], { timeoutMs: 15_000 });
    const ids = services.stdout.split('\n').filter(Boolean);
    if (ids.length) {
      const r = await manager.docker(['service', 'rm', ...ids], { timeoutMs: 30_000 });
      if (r.code !== 0) errors.push(`service rm: ${r.stderr.trim()}`);
      await waitFor(
        async () => {
          for (const h of this.swarmNodes) {
            const ps = await h.docker(['ps', '-aq', '--filter', 'label=com.docker.swarm.service.id'], { timeoutMs: 15_000 });
            if (ps.code === 0 && ps.stdout.trim()) return false;
          }
          return true;
        },
        'service containers to go',
        45_000,
        500,
      ).catch((err: Error) => errors.push(err.message.split('\n')[0]!));
    }
    for (const h of [...this.swarmNodes.slice(1), manager]) {
      const r = await h.docker(['swarm', 'leave', '--force'], { timeoutMs: 45_000 });
      if (r.code !== 0 && !/not part of a swarm/.test(r.stderr)) errors.push(`${h.label}: swarm leave: ${r.stderr.trim()}`);
    }
    this.swarmNodes = [];
    return errors;
  }

  // ---- checks and diagnostics ------------------------------------------------------------

  /** Tails of every host's ballast and dockerd logs (but those already in `message`). */
  async diagnostics(message = ''): Promise<string> {
    const hosts = this.hosts.filter((h) => !message.includes(`--- ballast log tail of ${h.label} `));
    const parts = await Promise.all(hosts.map((h) => h.diagnostics(30, 15).catch((e: Error) => `(no diagnostics for ${h.label}: ${e.message})`)));
    return parts.join('\n');
  }

  /**
   * The end-of-file check: with every container (and service) gone and every ballast volume
   * removed, no host has a ballast mount or a mount reference left, no loop device is bound to
   * the shared root and the shared root holds nothing but the host leases.
   */
  async assertNoLeftovers(): Promise<void> {
    for (const e of await this.leaveSwarm()) throw new Error(`leaving the swarm: ${e}`);
    for (const h of this.hosts) await h.removeAllContainers();
    // Another host's Remove reaches this host's List within one renewal interval (the volume
    // index): wait that long, so the listing names only volumes that still exist.
    await sleep(2 * LEASE.renew_every * 1000);
    await this.hosts[0]!.removeAllBallastVolumes();
    const problems: string[] = [];
    for (const h of this.hosts) {
      const mounts = h.ballastMounts();
      if (mounts.length) problems.push(`${h.label}: mounts left under ${h.ballast.mountRoot}: ${mounts.join(', ')}`);
      const statePath = join(h.ballast.stateDir, 'mounts.json');
      if (existsSync(statePath)) {
        const state = JSON.parse(readFileSync(statePath, 'utf8')) as { volumes: Record<string, unknown> };
        if (Object.keys(state.volumes).length) problems.push(`${h.label}: ballast still records mounts: ${JSON.stringify(state.volumes)}`);
      }
    }
    const loops = loopDevicesUnder(this.sharedRoot);
    if (loops.length) problems.push(`loop devices left for the shared root: ${loops.join(', ')}`);
    const markers = existsSync(join(this.sharedRoot, '.rev')) ? readdirSync(join(this.sharedRoot, '.rev')).map((m) => `.rev/${m}`) : [];
    const entries = [...readdirSync(this.sharedRoot).filter((e) => e !== '.hosts' && e !== '.rev'), ...markers];
    if (entries.length) problems.push(`entries left in the shared root: ${entries.join(', ')}`);
    if (mountsUnder(this.dir).length) problems.push(`mounts visible on the HOST under ${this.dir}: ${mountsUnder(this.dir).join(', ')}`);
    if (problems.length) throw new Error(`leftovers:\n  ${problems.join('\n  ')}\n${await this.diagnostics()}`);
  }

  // ---- teardown --------------------------------------------------------------------------

  /**
   * Always safe to call, even half-started: leaves the swarm, tears every host down (containers,
   * dockerd, ballast and its watchdog, the namespace holder: PIDs this harness started, only
   * those), detaches loop devices and unmounts what is left under the cluster dir, then deletes
   * the iptables rule, veths, bridge and network namespaces it created, and the dir.
   */
  async teardown(options: { keepDir?: boolean } = {}): Promise<ClusterTeardownReport> {
    const report: ClusterTeardownReport = { hosts: {}, loops: [], hostMounts: [], errors: [] };
    try {
      report.errors.push(...(await this.leaveSwarm()));
    } catch (err) {
      report.errors.push(`leave swarm: ${(err as Error).message.split('\n')[0]}`);
    }
    const reports = await Promise.all(
      this.hosts.map((h) => h.teardown({ keepDir: true }).catch((e: Error) => ({ hostMounts: [], loops: [], strayPids: [], errors: [e.message] }))),
    );
    this.hosts.forEach((h, i) => (report.hosts[h.label] = reports[i]!));
    try {
      await waitFor(() => mountsUnder(this.dir).length === 0, 'host mounts under the cluster dir to go', 5_000, 100).catch(() => true);
      const cleaned = cleanUpUnder(this.dir);
      report.loops = cleaned.loops;
      report.hostMounts = cleaned.mounts;
    } catch (err) {
      report.errors.push(`clean up: ${(err as Error).message}`);
    }
    await this.removeNetwork(report.errors).catch((err: Error) => report.errors.push(`network: ${err.message}`));
    const keep = options.keepDir ?? process.env.BALLAST_TEST_KEEP === '1';
    if (!keep && report.hostMounts.length === 0 && mountsUnder(this.dir).length === 0) {
      await rm(this.dir, { recursive: true, force: true, maxRetries: 3 }).catch((err: Error) => report.errors.push(`rm: ${err.message}`));
    }
    return report;
  }

  /** teardown() for afterAll: throws when it had to clean up something a passing suite should not leave. */
  async teardownAndCheck(): Promise<void> {
    const report = await this.teardown();
    const problems: string[] = [];
    for (const [name, r] of Object.entries(report.hosts)) {
      if (r.hostMounts.length) problems.push(`${name}: host mounts: ${r.hostMounts.join(', ')}`);
      if (r.loops.length) problems.push(`${name}: loop devices: ${r.loops.join(', ')}`);
      if (r.strayPids.length) problems.push(`${name}: stray processes in the namespace: ${r.strayPids.join(', ')}`);
      problems.push(...r.errors.map((e) => `${name}: ${e}`));
    }
    if (report.loops.length) problems.push(`loop devices bound to the shared root: ${report.loops.join(', ')}`);
    if (report.hostMounts.length) problems.push(`host mounts: ${report.hostMounts.join(', ')}`);
    problems.push(...report.errors);
    if (problems.length) throw new Error(`teardown of ${this.dir} had to clean up:\n  ${problems.join('\n  ')}`);
  }
}

/**
 * sqlite:local: busybox:local plus the machine's /usr/bin/sqlite3 and the shared libraries ldd
 * names for it (and the dynamic loader), at the same paths. Built once per cluster.
 */
async function buildSqliteTar(dir: string): Promise<string> {
  const ldd = await runCommand(['ldd', '/usr/bin/sqlite3'], { timeoutMs: 15_000 });
  if (ldd.code !== 0) throw new Error(`ldd /usr/bin/sqlite3 failed: ${describeResult(ldd)}`);
  const libs = ldd.stdout
    .split('\n')
    .map((l) => /=>\s*(\/\S+)/.exec(l)?.[1] ?? /^\s*(\/\S+)\s+\(/.exec(l)?.[1])
    .filter((p): p is string => !!p);
  if (!libs.some((l) => l.includes('libsqlite3'))) throw new Error(`ldd named no libsqlite3:\n${ldd.stdout}`);
  return buildBusyboxTar(dir, {
    name: 'sqlite',
    extra: (root) => {
      copyFileSync('/usr/bin/sqlite3', join(root, 'bin', 'sqlite3'));
      for (const lib of libs) {
        mkdirSync(join(root, dirname(lib)), { recursive: true });
        copyFileSync(lib, join(root, lib)); // follows the symlink: the real library under the linked name
      }
    },
  });
}

/** Wraps a test body so that a failure carries the log tails of every host not already in it. */
export function withClusterDiagnostics(cluster: () => Cluster | undefined, body: () => Promise<void>): () => Promise<void> {
  return async () => {
    try {
      await body();
    } catch (err) {
      const c = cluster();
      if (c && err instanceof Error) {
        const more = await c.diagnostics(err.message).catch((e: Error) => `(no diagnostics: ${e.message})`);
        if (more) err.message += `\n${more}`;
      }
      throw err;
    }
  };
}

/**
 * One cluster for a whole test file: started in beforeAll, torn down (and checked for
 * leftovers) in afterAll. `it` is test() with every host's log tails added to any failure.
 */
export function clusterSuite(options: ClusterOptions, timeoutMs: number) {
  const suite = {
    cluster: undefined as Cluster | undefined,
    get c(): Cluster {
      if (!suite.cluster) throw new Error('the cluster is not running');
      return suite.cluster;
    },
    it: (name: string, body: () => Promise<void>, timeout = timeoutMs) => test(name, withClusterDiagnostics(() => suite.cluster, body), timeout),
  };
  beforeAll(async () => {
    suite.cluster = await Cluster.start(options);
  }, 240_000);
  afterAll(async () => {
    await suite.cluster?.teardownAndCheck();
  }, 240_000);
  return suite;
}

// ---- helpers for the tests -----------------------------------------------------------------

/**
 * A container command that appends "TAG i" lines to /data/log, fsyncing each one (busybox
 * `sync FILE`), and records i in /acks/acked only once it is on disk. A failed write is recorded
 * in /acks/failed (its error text in /acks/errors) and the writer keeps trying: a host that
 * resumed writing after a fence would show up. /acks is a host directory bound into the container.
 */
export function ackedWriterScript(tag: string, intervalSeconds = 0.1): string {
  return [
    "trap 'exit 0' TERM",
    'i=0',
    'while true; do',
    '  i=$((i+1))',
    `  if { echo "${tag} $i" >> /data/log && sync /data/log; } 2>>/acks/errors; then echo $i >> /acks/acked; else echo $i >> /acks/failed; fi`,
    `  sleep ${intervalSeconds} & wait $!`,
    'done',
  ].join('\n');
}

/** Lines of a file the test can read directly (an /acks dir); [] when it does not exist yet. */
export function readLines(file: string): string[] {
  try {
    return readFileSync(file, 'utf8').split('\n').filter(Boolean);
  } catch {
    return [];
  }
}

/** Numbers recorded in an acks file. */
export function readNumbers(file: string): number[] {
  return readLines(file).map(Number).filter(Number.isFinite);
}

/** A fresh directory for a container's /acks, under the cluster dir. */
export function ackDir(cluster: Cluster, name: string): string {
  const d = join(cluster.dir, 'acks', name);
  mkdirSync(d, { recursive: true });
  return d;
}

/**
 * The wall-clock time (ms) of the first line of `h`'s ballast log matching `match`, at or after
 * `since` (ms); undefined if none.
 */
export async function logTime(h: DockerHarness, match: (l: Record<string, unknown>) => boolean, since = 0): Promise<number | undefined> {
  for (const l of await h.logs()) {
    const t = Date.parse(String(l.timestamp ?? ''));
    if (Number.isFinite(t) && t >= since && match(l)) return t;
  }
  return undefined;
}

export interface TakeoverAttempts {
  /** The container that finally ran on `h` with the volume mounted. */
  container: string;
  /** Every failed attempt: when it ended (ms) and docker's error. */
  failures: { at: number; stderr: string }[];
  /** When the successful `docker run -d` returned (ms). */
  succeededAt: number;
}

/**
 * Tries `docker run -d` of an idle container mounting `volume` on `h` until one starts
 * (bounded by `timeoutMs`); each failed attempt is recorded and its container removed.
 */
export async function mountUntilItWorks(h: DockerHarness, volume: string, name: string, image: string, timeoutMs: number): Promise<TakeoverAttempts> {
  const failures: { at: number; stderr: string }[] = [];
  const deadline = Date.now() + timeoutMs;
  for (let n = 1; Date.now() < deadline; n += 1) {
    const container = `${name}-${n}`;
    const r = await h.docker(
      ['run', '-d', '--name', container, '--network', 'none', '--stop-timeout', '5', '--volume-driver', PLUGIN, '-v', `${volume}:/data`, image, 'sh', '-c', "trap 'exit 0' TERM; while true; do sleep 0.5 & wait $!; done"],
      { timeoutMs: 150_000 },
    );
    if (r.code === 0) return { container, failures, succeededAt: Date.now() };
    failures.push({ at: Date.now(), stderr: r.stderr.trim() });
    await h.docker(['rm', '-f', container], { timeoutMs: 30_000 });
    await sleep(300);
  }
  throw new Error(
    `${h.label} could not mount ${volume} within ${timeoutMs} ms; last errors:\n${failures.slice(-3).map((f) => f.stderr).join('\n')}\n${await h.diagnostics()}`,
  );
}

/** Polls (every 50 ms) until `file` has a line; `seenAt` is when it was first seen (ms). */
export class FirstLineWatch {
  seenAt?: number;
  private readonly timer: NodeJS.Timeout;

  constructor(readonly file: string) {
    this.timer = setInterval(() => {
      if (this.seenAt === undefined && readLines(file).length > 0) this.seenAt = Date.now();
    }, 50);
  }

  stop(): void {
    clearInterval(this.timer);
  }
}

/** The "TAG i" lines of a writer's log, checked to be TAG 1..N in order; returns N. */
export function checkSequence(lines: string[], tag: string): number {
  const mine = lines.filter((l) => l.startsWith(`${tag} `));
  mine.forEach((l, i) => {
    if (l !== `${tag} ${i + 1}`) throw new Error(`line ${i + 1} of ${tag}'s log is "${l}", expected "${tag} ${i + 1}"`);
  });
  return mine.length;
}

/**
 * Starts a container on h1 that appends acknowledged (fsynced) lines to volume `v`, waits for
 * 20 of them, checks that h2 cannot mount `v` meanwhile (the error names h1), and waits for 20
 * more. Returns the ack directory and the file of acknowledged numbers.
 */
export async function writeAckedOnH1(c: Cluster, v: string, container: string): Promise<{ acks: string; acked: string }> {
  const { h1, h2 } = c;
  const acks = ackDir(c, `${container}-h1`);
  const acked = join(acks, 'acked');
  await h1.ok(['volume', 'create', '-d', PLUGIN, '--opt', 'size=32M', v]);
  await h1.run(['-d', '--name', container, '--stop-timeout', '5', '-v', `${v}:/data`, '-v', `${acks}:/acks`, IMAGE, 'sh', '-c', ackedWriterScript('h1')]);
  await waitFor(() => readNumbers(acked).length >= 20, 'h1 to acknowledge 20 writes', 30_000, 100, () => c.diagnostics());
  const live = await h2.fails(['run', '--rm', '--network', 'none', '--volume-driver', PLUGIN, '-v', `${v}:/data`, IMAGE, 'true']);
  if (!new RegExp(`volume ${v} is in use on host h1\\b.*lease renewed`).test(live)) throw new Error(`h2's refusal does not name h1's live lease: ${live}`);
  const seen = readNumbers(acked).length;
  await waitFor(() => readNumbers(acked).length >= seen + 20, 'h1 to keep writing', 30_000, 100);
  return { acks, acked };
}

/**
 * After a takeover: h2's copy of the log holds every line h1 acknowledged, in order, and at
 * most one more (written, not yet acknowledged, when the fence came). Returns what was
 * acknowledged and the log's checksum on h2, for later comparisons.
 */
export async function expectAckedWritesOnH2(c: Cluster, container: string, acked: string): Promise<{ ackedAtTakeover: number[]; sumAtTakeover: string }> {
  const ackedAtTakeover = readNumbers(acked);
  const lastAcked = Math.max(...ackedAtTakeover);
  const onH2 = (await c.h2.ok(['exec', container, 'cat', '/data/log'])).split('\n').filter(Boolean);
  const n = checkSequence(onH2, 'h1');
  if (n < lastAcked || n > lastAcked + 1) throw new Error(`h2 holds ${n} of h1's lines; h1 acknowledged ${lastAcked}`);
  return { ackedAtTakeover, sumAtTakeover: await c.h2.ok(['exec', container, 'md5sum', '/data/log']) };
}
