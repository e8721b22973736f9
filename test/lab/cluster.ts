import { existsSync, mkdirSync, readdirSync, readFileSync } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { cleanUpUnder, loopDevicesUnder, mountsUnder } from '../helpers/cleanup.js';
import { requireRootAndTools } from '../helpers/root.js';
import { buildBusyboxTar, buildSqliteTar, SQLITE_IMAGE } from './busybox-image.js';
import { ClusterNetwork } from './cluster-network.js';
import { sleep, waitFor } from './command.js';
import type { TeardownReport } from './docker-namespace.js';
import { DockerHarness, PLUGIN } from './docker-harness.js';

// Several Docker "hosts" on one machine (lab-notes.md, "Several Docker hosts on one machine").
//
// Each host is a DockerHarness (docker-harness.ts) whose namespace holder is started in a
// network namespace of its own on the cluster network (cluster-network.ts), with a UTS
// namespace of its own (hostname hN) and a private mount namespace. Inside it run the
// host's dockerd (own data root, exec root, API socket, /run/docker/plugins, /etc/docker,
// /run/containerd, cgroup parent) and its `ballast serve` (own state dir and mount root), and
// every ballast uses the SAME loop root, shared: true: the hosts' "shared storage". Loop devices
// are one kernel-wide resource, so exclusion between hosts is ballast's lease, which is what the
// tests prove.

/**
 * Host leases for tests: takeover 6 s after a holder stops renewing, renewal every second,
 * self-fence after 4 s without renewal, a Mount waits up to 20 s for a holder to let go.
 */
export const LEASE = { seconds: 6, renew_every: 1, fence_after: 4, mount_wait: 20 };
export type LeaseSettings = typeof LEASE;

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

export class Cluster {
  readonly sharedRoot: string;
  readonly network: ClusterNetwork;
  readonly hosts: DockerHarness[] = [];
  /** The lease settings the hosts run with. */
  lease: LeaseSettings;
  /** Hosts in the swarm, manager first. */
  swarmNodes: DockerHarness[] = [];
  private busyboxTar?: string;
  private sqliteTar?: string;

  private constructor(
    readonly dir: string,
    readonly options: ClusterOptions,
  ) {
    this.sharedRoot = join(dir, 'shared', 'loop');
    this.network = new ClusterNetwork(Array.from({ length: options.hosts ?? 2 }, (_, i) => `h${i + 1}`));
    this.lease = { ...LEASE, ...options.leaseSettings };
  }

  static async start(options: ClusterOptions): Promise<Cluster> {
    requireRootAndTools('ip', 'nsenter', 'unshare', 'hostname', 'setpriv', 'dockerd', 'losetup', 'busybox', ...(options.sqliteImage ? ['sqlite3', 'ldd'] : []));
    const dir = await mkdtemp(join(tmpdir(), `ballast-cluster-${options.name}-`));
    const c = new Cluster(dir, options);
    try {
      mkdirSync(c.sharedRoot, { recursive: true });
      await c.network.create();
      c.busyboxTar = await buildBusyboxTar(dir);
      if (options.sqliteImage) c.sqliteTar = await buildSqliteTar(dir);
      const started = await Promise.allSettled(c.network.names.map((name) => c.startHost(name)));
      for (const r of started) if (r.status === 'fulfilled') c.hosts.push(r.value);
      c.hosts.sort((a, b) => a.label.localeCompare(b.label, undefined, { numeric: true }));
      const failed = started.find((r): r is PromiseRejectedResult => r.status === 'rejected');
      if (failed) throw failed.reason;
      await c.network.check();
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
    return this.network.addressOf(name);
  }

  private async startHost(name: string): Promise<DockerHarness> {
    const extra = typeof this.options.ballastConfig === 'function' ? this.options.ballastConfig(name) : (this.options.ballastConfig ?? {});
    const h = await DockerHarness.start({
      name: `${this.options.name}-${name}`,
      dir: join(this.dir, name),
      netns: this.network.netnsOf(name),
      hostname: name,
      loopRoot: this.sharedRoot,
      cgroupParent: `ballast-test-${this.network.id}-${name}`,
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
    await this.network.remove(report.errors).catch((err: Error) => report.errors.push(`network: ${err.message}`));
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
