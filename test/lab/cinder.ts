import { spawn, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { closeSync, existsSync, mkdirSync, openSync, readdirSync, readFileSync, readlinkSync } from 'node:fs';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { REPO_ROOT } from './ballast.js';
import { GiveUp, describeResult, exitWithin, runCommand, waitFor } from './command.js';
import { freeTcpPort, tcpAccepts } from './net.js';
import { requireRootAndTools } from '../helpers/root.js';

// A real OpenStack Cinder (Debian 12's Zed 21.x) on 127.0.0.1, all in one temp dir: RabbitMQ,
// cinder-api (noauth), cinder-scheduler, cinder-volume with test/fixtures/cinder's driver (sparse
// files exported by Cinder's TgtAdm through the lab's tgtd). Each service runs under reaper.py
// (see there), leader of its own process group, and is stopped by SIGTERM to that group. Cinder
// runs tgtadm without a control port, so tgtd owns port 0 in a mount namespace of the lab's (a
// tmpfs on /run/tgtd, the lab's dir over /var/lib/cinder/volumes where tgt-admin reads targets),
// which cinder-volume joins with nsenter. Recipe and traps: /work/shared/research/arrays.md, 1.

const FIXTURES = join(REPO_ROOT, 'test/fixtures/cinder');
const PYTHON = '/usr/bin/python3'; // Debian's, Cinder's: PATH may find another one first
const RABBIT = '/usr/lib/rabbitmq/bin/rabbitmq-server';
const TGT_TARGETS = '/var/lib/cinder/volumes';
export const API_VERSION = 'volume 3.70';
const READY_TIMEOUT_MS = 120_000;
// os-services from 3.49 on asks the scheduler over RPC (backend_state): a call sent before the
// scheduler listens is lost, and the request hangs 60 s. Readiness polls read the database only,
// and ask the scheduler with a short timeout.
const DB_ONLY: RequestOptions = { version: 'volume 3.0', timeoutMs: 5_000 };
/** Every process of a lab inherits MARKER=<its state dir>: how labProcesses() finds them. */
const MARKER = 'BALLAST_CINDER_LAB';

export type RequestOptions = { version?: string; timeoutMs?: number };

export interface CinderLab {
  url: string; // http://127.0.0.1:PORT/v3
  projectId: string; // hex, as Cinder's project_id_regex wants: the API is under `${url}/${projectId}`
  token: string; // the X-Auth-Token under noauth: "admin:<projectId>"
  iscsiPortal: string; // tgtd's portal, as connection_info names it: 127.0.0.1:PORT
  stateDir: string; // the temp dir (config, logs, database, volume files); stop() removes it
  readyMs: number; // from launch until scheduler and volume service were up and the scheduler knew the pool
  /** JSON to `${url}/${projectId}${path}` with the token and API_VERSION (or `version`); throws only when nothing answers in time. */
  request<T = any>(method: string, path: string, body?: unknown, options?: RequestOptions): Promise<{ status: number; body: T }>;
  stopApi(): Promise<void>; // cinder-api only; scheduler and volume service keep running
  startApi(): Promise<void>; // cinder-api again, on its port; resolves once it answers
  diagnostics(): Promise<string>; // the tail of every service's logs
  apiErrors(): string; // cinder-api's ERROR lines and tracebacks (its HTTP 500s), the last 60 lines of them
  newApiErrors(): string; // apiErrors() when they changed since the last call, else ''
  stop(): Promise<void>; // every process of the lab (by process group, never by name); then removes stateDir
}

/** Live (non-zombie) processes of the lab whose state dir is `stateDir`. */
export function labProcesses(stateDir: string): number[] {
  const environ = (pid: string) => { try { return readFileSync(`/proc/${pid}/environ`, 'latin1').split('\0'); } catch { return []; } };
  return readdirSync('/proc').filter((p) => /^\d+$/.test(p) && environ(p).includes(`${MARKER}=${stateDir}`)).map(Number);
}

/**
 * Starts a lab, or stops what it started and throws. capacityGb: the backend's total (default 20).
 * targetAddress: the portal address Cinder gives in connection_info (default 127.0.0.1; the VM
 * lab's guests reach this host's loopback as 10.0.2.2). tgtd listens on 127.0.0.1 either way.
 */
export async function startCinderLab(options: { capacityGb?: number; targetAddress?: string } = {}): Promise<CinderLab> {
  // Fails loudly, naming what is missing (scripts/install-deps.sh installs it all).
  requireRootAndTools('cinder-api', 'cinder-scheduler', 'cinder-volume', 'cinder-manage', 'privsep-helper', RABBIT, 'epmd',
    'tgtd', 'tgtadm', 'tgt-admin', 'unshare', 'nsenter', PYTHON);
  const lab = new Lab(await mkdtemp(join(tmpdir(), 'ballast-cinder-')), options.capacityGb ?? 20, options.targetAddress ?? '127.0.0.1');
  try {
    await lab.start();
    return lab;
  } catch (err) {
    await lab.stop().catch((e: Error) => console.error(`stopping the Cinder lab that failed to start: ${e.message}`));
    throw err;
  }
}

/** `child` is reaper.py, leader of the service's process group; `graceMs` before it SIGKILLs. */
type Service = { name: string; child: ChildProcess; graceMs: number };

const alive = (s: Service | undefined) => !!s && s.child.exitCode === null && s.child.signalCode === null;

/** Waits for every step to settle (so none goes on behind a failure), then throws the first failure. */
async function settled(steps: Promise<unknown>[]): Promise<void> {
  const failed = (await Promise.allSettled(steps)).find((r) => r.status === 'rejected');
  if (failed) throw failed.reason;
}

/** SIGTERM to the service's process group; resolves once its reaper, so all of it, has exited. */
async function stopService(s: Service | undefined): Promise<void> {
  if (!s || !alive(s)) return;
  process.kill(-s.child.pid!, 'SIGTERM');
  if (!(await exitWithin(s.child, s.graceMs + 10_000))) throw new Error(`${s.name} (process group ${s.child.pid}) outlived its grace time and SIGKILL`);
}

class Lab implements CinderLab {
  readonly projectId = randomBytes(16).toString('hex');
  readonly token = `admin:${this.projectId}`;
  url = '';
  iscsiPortal = '';
  readyMs = 0;
  private ports = { api: 0, amqp: 0, epmd: 0, dist: 0, iscsi: 0 };
  private readonly services = new Map<string, Service>();

  constructor(
    readonly stateDir: string,
    private readonly capacityGb: number,
    private readonly targetAddress: string,
  ) {}

  private get conf(): string {
    return join(this.stateDir, 'cinder.conf');
  }

  async start(): Promise<void> {
    const started = Date.now();
    const free = new Set<number>();
    while (free.size < 5) free.add(await freeTcpPort());
    const [api, amqp, epmd, dist, iscsi] = [...free] as [number, number, number, number, number];
    this.ports = { api, amqp, epmd, dist, iscsi };
    this.url = `http://127.0.0.1:${this.ports.api}/v3`;
    this.iscsiPortal = `127.0.0.1:${this.ports.iscsi}`;
    await this.writeConfig();
    // Cinder's services need the schema (cinder-volume also tgtd), not RabbitMQ: they retry
    // connecting to it, so their slow start (Python imports) overlaps RabbitMQ's.
    const cinder = async () => {
      await settled([this.startTgtd(), this.syncDb()]);
      this.launch('cinder-scheduler', ['cinder-scheduler', '--config-file', this.conf], 5_000);
      this.launch('cinder-volume', ['nsenter', `--mount=/proc/${this.tgtdPid()}/ns/mnt`, 'cinder-volume', '--config-file', this.conf], 5_000);
      await this.startApi();
    };
    await settled([this.startRabbit(), cinder()]);
    await this.waitReady();
    this.readyMs = Date.now() - started;
  }

  private async writeConfig(): Promise<void> {
    for (const d of ['logs', 'lock', 'volumes', 'targets', 'rabbit/home']) mkdirSync(join(this.stateDir, d), { recursive: true });
    const { api, amqp, iscsi } = this.ports;
    const values: Record<string, unknown> = { DIR: this.stateDir, API_PORT: api, AMQP_PORT: amqp, ISCSI_PORT: iscsi, CAPACITY_GB: this.capacityGb, TARGET_IP: this.targetAddress };
    const template = readFileSync(join(FIXTURES, 'cinder.conf'), 'utf8');
    await writeFile(this.conf, template.replace(/@([A-Z_]+)@/g, (_, name: string) => String(values[name])));
    await writeFile(join(this.stateDir, 'rabbit/enabled_plugins'), '[].\n');
    await writeFile(join(this.stateDir, 'rabbit/rabbitmq.conf'), '');
  }

  /** Starts `argv` under reaper.py in a new process group, its output appended to logs/NAME.out. */
  private launch(name: string, argv: string[], graceMs: number, env: Record<string, string> = {}): void {
    const out = openSync(join(this.stateDir, 'logs', `${name}.out`), 'a');
    const child = spawn(PYTHON, [join(FIXTURES, 'reaper.py'), String(graceMs / 1000), ...argv], {
      detached: true,
      stdio: ['ignore', out, out],
      env: { ...process.env, ...env, PYTHONPATH: FIXTURES, [MARKER]: this.stateDir },
    });
    closeSync(out);
    child.once('error', (err) => console.error(`${name}: ${err.message}`));
    this.services.set(name, { name, child, graceMs });
  }

  /** Polls `ready` until true; gives up at once, with every log's tail, when one of `watched` exits. */
  private async until(watched: string[], what: string, ready: () => Promise<boolean>, timeoutMs = 60_000): Promise<void> {
    await waitFor(async () => {
      for (const s of watched.map((n) => this.services.get(n)!)) if (!alive(s)) throw new GiveUp(`${s.name} exited (${s.child.exitCode ?? s.child.signalCode})`);
      return ready();
    }, what, timeoutMs, 200, () => this.diagnostics());
  }

  private async startRabbit(): Promise<void> {
    const dir = join(this.stateDir, 'rabbit');
    this.launch('rabbitmq', [RABBIT], 15_000, {
      HOME: join(dir, 'home'), // its Erlang cookie
      RABBITMQ_NODENAME: `rabbit-${this.projectId.slice(0, 8)}@localhost`,
      RABBITMQ_NODE_IP_ADDRESS: '127.0.0.1', RABBITMQ_NODE_PORT: String(this.ports.amqp), RABBITMQ_DIST_PORT: String(this.ports.dist),
      RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS: '-kernel inet_dist_use_interface {127,0,0,1}',
      ERL_EPMD_ADDRESS: '127.0.0.1', ERL_EPMD_PORT: String(this.ports.epmd),
      RABBITMQ_MNESIA_BASE: join(dir, 'mnesia'), RABBITMQ_LOG_BASE: join(this.stateDir, 'logs'), RABBITMQ_PID_FILE: join(dir, 'rabbit.pid'),
      RABBITMQ_CONFIG_FILE: join(dir, 'rabbitmq.conf'), RABBITMQ_ENABLED_PLUGINS_FILE: join(dir, 'enabled_plugins'),
      RABBITMQ_CONF_ENV_FILE: '/dev/null', // not /etc/rabbitmq/rabbitmq-env.conf
    });
    await this.until(['rabbitmq'], 'RabbitMQ to accept AMQP', () => tcpAccepts('127.0.0.1', this.ports.amqp));
  }

  /** tgtd's PID (the reaper's child): in the lab's mount namespace once tgtd runs. */
  private tgtdPid(): number {
    const reaper = this.services.get('tgtd')!.child.pid!;
    return Number(readFileSync(`/proc/${reaper}/task/${reaper}/children`, 'utf8').split(' ')[0]); // 0 before the fork
  }

  private async startTgtd(): Promise<void> {
    for (const d of ['/run/tgtd', TGT_TARGETS]) mkdirSync(d, { recursive: true }); // mount points
    const script = `set -e
mount -t tmpfs -o mode=0755,size=1m ballast-cinder-tgtd /run/tgtd
mount --bind '${join(this.stateDir, 'targets')}' ${TGT_TARGETS}
exec tgtd -f -C 0 --iscsi portal=${this.iscsiPortal}`;
    this.launch('tgtd', ['unshare', '--mount', '--propagation', 'private', 'sh', '-c', script], 500); // tgtd 1.0.85 ignores SIGTERM
    const ownNamespace = readlinkSync('/proc/self/ns/mnt');
    await this.until(['tgtd'], 'tgtd to answer tgtadm and accept iSCSI', async () => {
      const pid = this.tgtdPid();
      if (!pid || readlinkSync(`/proc/${pid}/ns/mnt`) === ownNamespace) return false; // not unshared yet
      const show = await runCommand(['nsenter', `--mount=/proc/${pid}/ns/mnt`, 'tgtadm', '--mode', 'target', '--op', 'show'], { timeoutMs: 5_000 });
      return show.code === 0 && (await tcpAccepts('127.0.0.1', this.ports.iscsi));
    }, 15_000);
  }

  private async syncDb(): Promise<void> {
    const r = await runCommand(['cinder-manage', '--config-file', this.conf, 'db', 'sync'], { timeoutMs: 120_000 });
    if (r.code !== 0) throw new Error(`cinder-manage db sync failed:\n${describeResult(r)}`);
  }

  async startApi(): Promise<void> {
    if (alive(this.services.get('cinder-api'))) throw new Error('cinder-api already runs');
    this.launch('cinder-api', ['cinder-api', '--config-file', this.conf], 5_000);
    const answers = async () => (await this.request('GET', '/os-services', undefined, DB_ONLY).catch(() => ({ status: 0 }))).status === 200;
    await this.until(['cinder-api'], 'cinder-api to answer', answers);
  }

  async stopApi(): Promise<void> {
    await stopService(this.services.get('cinder-api'));
  }

  private async waitReady(): Promise<void> {
    type Services = { services: { binary: string; state: string }[] };
    await this.until([...this.services.keys()], 'cinder-scheduler and cinder-volume to be up and the scheduler to know the pool', async () => {
      const { services } = (await this.request<Services>('GET', '/os-services', undefined, DB_ONLY)).body;
      if (!['cinder-scheduler', 'cinder-volume'].every((b) => services.some((s) => s.binary === b && s.state === 'up'))) return false;
      return (await this.request<{ pools: unknown[] }>('GET', '/scheduler-stats/get_pools', undefined, { timeoutMs: 5_000 })).body.pools.length > 0;
    }, READY_TIMEOUT_MS);
  }

  async request<T = any>(method: string, path: string, body?: unknown, options: RequestOptions = {}): Promise<{ status: number; body: T }> {
    const res = await fetch(`${this.url}/${this.projectId}${path}`, {
      method,
      headers: { 'X-Auth-Token': this.token, 'OpenStack-API-Version': options.version ?? API_VERSION, 'Content-Type': 'application/json', Accept: 'application/json' },
      body: body === undefined ? undefined : JSON.stringify(body),
      signal: AbortSignal.timeout(options.timeoutMs ?? 30_000),
    });
    const text = await res.text();
    return { status: res.status, body: (text ? JSON.parse(text) : undefined) as T };
  }

  async diagnostics(): Promise<string> {
    const dir = join(this.stateDir, 'logs');
    const tail = (f: string) => readFileSync(join(dir, f), 'utf8').trimEnd().split('\n').slice(-30).join('\n');
    return (existsSync(dir) ? readdirSync(dir) : []).map((f) => `--- ${f} (last 30 lines)\n${tail(f)}`).join('\n');
  }

  private apiErrorsSeen = '';
  newApiErrors(): string {
    const errors = this.apiErrors();
    if (errors === this.apiErrorsSeen) return '';
    this.apiErrorsSeen = errors;
    return errors;
  }

  apiErrors(): string {
    const file = join(this.stateDir, 'logs', 'cinder-api.out');
    if (!existsSync(file)) return '';
    const lines = readFileSync(file, 'utf8').split('\n');
    // An ERROR line and the traceback lines Cinder logs under it (they start with the same timestamp and pid and ERROR).
    return lines.filter((l) => / ERROR /.test(l)).slice(-60).join('\n');
  }

  async stop(): Promise<void> {
    // RabbitMQ's clients first; a service that failed to stop shows up among the processes left.
    for (const phase of [['cinder-volume', 'cinder-scheduler', 'cinder-api'], ['rabbitmq', 'tgtd']]) {
      await Promise.allSettled(phase.map((name) => stopService(this.services.get(name))));
    }
    const left = labProcesses(this.stateDir);
    if (left.length) throw new Error(`Cinder lab processes still run: ${left.join(', ')}; kept ${this.stateDir}`);
    await rm(this.stateDir, { recursive: true, force: true });
  }
}
