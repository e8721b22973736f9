import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync } from 'node:fs';
import { chmod, mkdir, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { freeTcpPort, tcpAccepts } from './net.js';

// A private nfs-ganesha (userspace NFS server) for tests: NFSv4.1/4.2 only, on 127.0.0.1 at a
// free port (the VM lab's guests reach it as 10.0.2.2:PORT), exporting a fresh temp dir as
// /export. Everything it writes (config, log, recovery state, the export) is under one temp dir.
// Runs in the foreground, so the child's PID is ganesha itself; only ever stopped by that PID.
// Recipe: /work/shared/research/nfs-lab.md.

const PLUGINS_DIR = '/usr/lib/x86_64-linux-gnu/ganesha';
const NEEDED: Array<[string, string]> = [
  ['/usr/bin/ganesha.nfsd', 'nfs-ganesha'],
  [`${PLUGINS_DIR}/libfsalvfs.so`, 'nfs-ganesha-vfs'],
  ['/usr/sbin/mount.nfs4', 'nfs-common'],
];

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

/** Throws, naming the missing Debian package(s), unless a private ganesha can run here. */
export function requireGanesha(): void {
  if (process.getuid?.() !== 0) throw new Error('a private nfs-ganesha needs root (it exports with FSAL VFS, by file handle)');
  const missing = NEEDED.filter(([file]) => !existsSync(file));
  if (missing.length) {
    const packages = [...new Set(missing.map(([, pkg]) => pkg))];
    throw new Error(`missing ${missing.map(([f]) => f).join(', ')}: apt-get install ${packages.join(' ')}`);
  }
}

function config(port: number, leaseSeconds: number, recoveryDir: string, exportDir: string): string {
  return `NFS_CORE_PARAM {
  Protocols = 4; NFS_Port = ${port}; Bind_Addr = 127.0.0.1;
  Enable_NLM = false; Enable_RQUOTA = false; Enable_UDP = false;
  Plugins_Dir = ${PLUGINS_DIR};
}
NFSv4 {
  Graceless = true; Lease_Lifetime = ${leaseSeconds}; RecoveryRoot = ${recoveryDir};
  Minor_Versions = 1, 2; Only_Numeric_Owners = true;
}
EXPORT {
  Export_Id = 1; Path = ${exportDir}; Pseudo = /export;
  Access_Type = RW; Squash = No_Root_Squash; SecType = sys; Transports = TCP; Protocols = 4;
  FSAL { Name = VFS; }
}
`;
}

export class Ganesha {
  private exited = false;
  private output = '';

  private constructor(
    private readonly child: ChildProcess,
    private readonly dir: string,
    readonly port: number,
    readonly exportDir: string,
  ) {
    child.stdout?.on('data', (d: Buffer) => (this.output += d.toString()));
    child.stderr?.on('data', (d: Buffer) => (this.output += d.toString()));
    child.once('exit', () => (this.exited = true));
  }

  private get logFile(): string {
    return join(this.dir, 'ganesha.log');
  }

  /** Starts ganesha and waits until its port accepts TCP; retries on another port if it exits. */
  static async start(options: { leaseSeconds?: number } = {}): Promise<Ganesha> {
    requireGanesha();
    let lastError: unknown;
    for (let attempt = 0; attempt < 3; attempt++) {
      const dir = await mkdtemp(join(tmpdir(), 'ballast-ganesha-'));
      const exportDir = join(dir, 'export');
      const recoveryDir = join(dir, 'recovery');
      await mkdir(exportDir);
      await chmod(exportDir, 0o755);
      await mkdir(recoveryDir);
      const port = await freeTcpPort();
      const conf = join(dir, 'ganesha.conf');
      await writeFile(conf, config(port, options.leaseSeconds ?? 15, recoveryDir, exportDir));
      // setpriv execs ganesha (same PID); a crashed jest takes ganesha down with it.
      const argv = ['setpriv', '--pdeathsig', 'SIGKILL', 'ganesha.nfsd', '-F', '-f', conf, '-L', join(dir, 'ganesha.log'), '-p', join(dir, 'ganesha.pid')];
      const child = spawn(argv[0]!, argv.slice(1), { stdio: ['ignore', 'pipe', 'pipe'] });
      const ganesha = new Ganesha(child, dir, port, exportDir);
      const spawnError = await new Promise<Error | undefined>((resolve) => {
        child.once('spawn', () => resolve(undefined));
        child.once('error', (err) => resolve(err));
      });
      if (spawnError) {
        await rm(dir, { recursive: true, force: true });
        throw new Error(`cannot start ganesha.nfsd (package nfs-ganesha): ${spawnError.message}`);
      }
      try {
        await ganesha.waitReady(10_000);
        return ganesha;
      } catch (err) {
        lastError = err;
        await ganesha.stop();
      }
    }
    throw lastError;
  }

  private async waitReady(timeoutMs: number): Promise<void> {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      // Accepting while our child still runs means the port is ours: ganesha exits if it cannot bind.
      if (!this.exited && (await tcpAccepts('127.0.0.1', this.port)) && !this.exited) return;
      if (this.exited) throw new Error(`ganesha.nfsd (port ${this.port}) exited at start:\n${await this.tail()}`);
      if (Date.now() > deadline) throw new Error(`ganesha.nfsd not accepting on 127.0.0.1:${this.port} after ${timeoutMs} ms:\n${await this.tail()}`);
      await sleep(50);
    }
  }

  private async tail(): Promise<string> {
    return (await this.log()).split('\n').slice(-30).join('\n');
  }

  /** Ganesha's log so far (its log file, then anything it printed). */
  async log(): Promise<string> {
    const file = await readFile(this.logFile, 'utf8').catch(() => '');
    return this.output ? `${file}\n--- stdout/stderr\n${this.output}` : file;
  }

  private async waitExit(ms: number): Promise<boolean> {
    const deadline = Date.now() + ms;
    while (!this.exited && Date.now() < deadline) await sleep(20);
    return this.exited;
  }

  /** SIGTERM, then SIGKILL, by ganesha's own PID; then removes its temp dir (the export too). */
  async stop(): Promise<void> {
    if (!this.exited) {
      this.child.kill('SIGTERM');
      if (!(await this.waitExit(10_000))) {
        this.child.kill('SIGKILL');
        if (!(await this.waitExit(10_000))) throw new Error(`ganesha.nfsd (PID ${this.child.pid}) did not exit after SIGKILL`);
      }
    }
    await rm(this.dir, { recursive: true, force: true });
  }
}

