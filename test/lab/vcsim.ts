import { execFileSync, spawn, type ChildProcess } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import { existsSync, mkdirSync, readFileSync, renameSync, rmSync } from 'node:fs';
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import axios from 'axios';
import { REPO_ROOT } from './ballast.js';

// vcsim for tests: govmomi's vCenter simulator, built from Debian's govmomi sources with the
// small main in test/vcsim/ (cached by the hash of that file), listening on 127.0.0.1 at a port
// of its own, stopped by its own PID.

const SOURCE_DIR = join(REPO_ROOT, 'test', 'vcsim'); // also from the compiled benchmarks in dist-bench/
const CACHE_DIR = '/var/cache/ballast-test';
const GOPATH = '/usr/share/gocode';
const GOVMOMI = `${GOPATH}/src/github.com/vmware/govmomi/simulator`;
const READY_MS = 60_000;

export interface Vcsim {
  /** "http(s)://127.0.0.1:PORT/sdk", without credentials. */
  url: string;
  username: string;
  password: string;
  datacenter: string;
  /** In name order; `dir` is the local directory vcsim keeps the datastore in. */
  datastores: Array<{ name: string; moid: string; dir: string }>;
  /** In name order; `uuid` is the VM's BIOS UUID (config.uuid). */
  vms: Array<{ name: string; moid: string; uuid: string }>;
  /** The HTTPS certificate (PEM) when started with tls. */
  certPem?: string;
  pid: number;
  /** Changes to `moid` are answered NoPermission (naming `privilege`) until allow(). */
  deny(moid: string, privilege: string): Promise<void>;
  allow(moid: string): Promise<void>;
  stop(): Promise<void>;
}

export interface VcsimOptions {
  vms?: number;
  datastores?: number;
  /** vcsim drops sessions idle this long (default: never). */
  idleTimeoutSeconds?: number;
  tls?: boolean;
  /** Milliseconds vcsim waits before serving these methods (e.g. { ReconfigVM_Task: 5000 }). */
  methodDelayMs?: Record<string, number>;
}

/** The vcsim binary, built once per version of main.go; fails naming the packages when Go or govmomi is missing. */
export function vcsimBinary(): string {
  const source = readFileSync(join(SOURCE_DIR, 'main.go'));
  const binary = join(CACHE_DIR, `vcsim-${createHash('sha256').update(source).digest('hex').slice(0, 16)}`);
  if (existsSync(binary)) return binary;
  if (!existsSync('/usr/bin/go') || !existsSync(GOVMOMI)) {
    throw new Error('vcsim tests need Go and govmomi\'s simulator sources: apt-get install golang-go golang-github-vmware-govmomi-dev (bash scripts/install-deps.sh does)');
  }
  mkdirSync(CACHE_DIR, { recursive: true });
  // Build under a name of our own, then rename: parallel jest workers never see half a binary.
  const partial = `${binary}.${process.pid}.${randomBytes(3).toString('hex')}`;
  try {
    execFileSync('go', ['build', '-o', partial, '.'], {
      cwd: SOURCE_DIR,
      env: { ...process.env, GO111MODULE: 'off', GOPATH, GOCACHE: join(CACHE_DIR, 'go-build'), GOFLAGS: '', CGO_ENABLED: '0' },
      stdio: ['ignore', 'ignore', 'pipe'],
      timeout: 300_000,
    });
    renameSync(partial, binary);
  } finally {
    rmSync(partial, { force: true });
  }
  return binary;
}

export async function startVcsim(options: VcsimOptions = {}): Promise<Vcsim> {
  const binary = vcsimBinary();
  const work = await mkdtemp(join(tmpdir(), 'ballast-vcsim-'));
  const username = 'ballast';
  const password = randomBytes(12).toString('hex');
  const certFile = join(work, 'cert.pem');
  const args = ['-vms', String(options.vms ?? 2), '-datastores', String(options.datastores ?? 2), '-username', username, '-password', password];
  if (options.idleTimeoutSeconds) args.push('-idle-timeout', `${options.idleTimeoutSeconds}s`);
  if (options.tls) args.push('-tls', '-cert-out', certFile);
  if (options.methodDelayMs) args.push('-method-delay', Object.entries(options.methodDelayMs).map(([m, ms]) => `${m}=${ms}`).join(','));
  const child = spawn(binary, args, { stdio: ['ignore', 'pipe', 'pipe'], cwd: work });
  let stderr = '';
  child.stderr!.on('data', (chunk: Buffer) => (stderr = (stderr + chunk.toString()).slice(-4000)));

  const stop = async () => {
    await stopChild(child);
    await rm(work, { recursive: true, force: true });
  };
  let ready: { url: string; datacenter: string; datastores: Vcsim['datastores']; vms: Vcsim['vms'] };
  try {
    ready = JSON.parse(await firstLine(child, READY_MS, () => stderr));
  } catch (err) {
    await stop();
    throw err;
  }
  const control = (path: string) => async (moid: string, privilege = '') => {
    const origin = new URL(ready.url).origin;
    const https = options.tls ? { httpsAgent: new (await import('node:https')).Agent({ rejectUnauthorized: false }) } : {};
    await axios.post(`${origin}/ballast/${path}?moid=${encodeURIComponent(moid)}&privilege=${encodeURIComponent(privilege)}`, '', https);
  };
  return {
    ...ready,
    username,
    password,
    ...(options.tls ? { certPem: await readFile(certFile, 'utf8') } : {}),
    pid: child.pid!,
    deny: control('deny'),
    allow: control('allow'),
    stop,
  };
}

function firstLine(child: ChildProcess, timeoutMs: number, stderr: () => string): Promise<string> {
  return new Promise((resolve, reject) => {
    let out = '';
    const timer = setTimeout(() => reject(new Error(`vcsim was not ready within ${timeoutMs / 1000} s: ${stderr()}`)), timeoutMs);
    child.stdout!.on('data', (chunk: Buffer) => {
      out += chunk.toString();
      const newline = out.indexOf('\n');
      if (newline >= 0) {
        clearTimeout(timer);
        resolve(out.slice(0, newline));
      }
    });
    child.once('exit', (code) => {
      clearTimeout(timer);
      reject(new Error(`vcsim exited with ${code} before it was ready: ${stderr()}`));
    });
  });
}

/** SIGTERM to our own child, SIGKILL after 5 s. */
async function stopChild(child: ChildProcess): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return;
  const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
  child.kill('SIGTERM');
  const timer = setTimeout(() => child.kill('SIGKILL'), 5_000);
  await exited;
  clearTimeout(timer);
}
