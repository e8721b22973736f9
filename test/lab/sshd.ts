import { spawn, execFileSync, type ChildProcess } from 'node:child_process';
import { createHash } from 'node:crypto';
import { existsSync, mkdirSync, readdirSync, readFileSync } from 'node:fs';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { freeTcpPort, tcpAccepts } from './net.js';

// A private sshd for integration tests: its own host key, client key, authorized_keys and
// config in a temp dir, listening on 127.0.0.1 at a free port. It never touches /etc/ssh or
// the system sshd, and it is only ever stopped by its own PID (and the PIDs of its descendants,
// found through /proc).

const SSHD = '/usr/sbin/sshd'; // sshd refuses to start unless run by its absolute path
const PRIVSEP_DIR = '/run/sshd';

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

/** Root, sshd and ssh-keygen, or an error naming the package to install. */
export function requireSshd(): void {
  if (process.getuid?.() !== 0) throw new Error('this test needs root (it runs a private sshd and logs in as root)');
  const keygen = (() => {
    try {
      execFileSync('sh', ['-c', 'command -v ssh-keygen'], { stdio: 'ignore' });
      return true;
    } catch {
      return false;
    }
  })();
  if (!existsSync(SSHD) || !keygen) throw new Error(`this test needs ${SSHD} and ssh-keygen: apt-get install openssh-server`);
}

/** OpenSSH's "SHA256:<base64, unpadded>" fingerprint of a public key line ("ssh-ed25519 AAAA... comment"). */
export function fingerprintOf(publicKeyLine: string): string {
  const blob = Buffer.from(publicKeyLine.trim().split(/\s+/)[1] ?? '', 'base64');
  return `SHA256:${createHash('sha256').update(blob).digest('base64').replace(/=+$/, '')}`;
}

/** A process as /proc shows it; the start time tells a PID apart from a later reuse of it. */
interface ProcEntry {
  pid: number;
  ppid: number;
  state: string;
  startTime: string;
}

function readProc(pid: number): ProcEntry | undefined {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    // The command name (field 2) may hold spaces and parentheses: parse after the last ')'.
    const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    return { pid, state: fields[0]!, ppid: Number(fields[1]), startTime: fields[19]! };
  } catch {
    return undefined;
  }
}

/** True while the process exists and is not a zombie. */
export function processAlive(pid: number): boolean {
  const entry = readProc(pid);
  return entry !== undefined && entry.state !== 'Z';
}

function descendantsOf(pid: number): ProcEntry[] {
  const all = readdirSync('/proc')
    .filter((name) => /^\d+$/.test(name))
    .map((name) => readProc(Number(name)))
    .filter((e): e is ProcEntry => e !== undefined);
  const out: ProcEntry[] = [];
  const parents = new Set([pid]);
  for (let grew = true; grew; ) {
    grew = false;
    for (const e of all) {
      if (parents.has(e.ppid) && !parents.has(e.pid)) {
        parents.add(e.pid);
        out.push(e);
        grew = true;
      }
    }
  }
  return out;
}

/** Signals the process only if it is still the one we listed (same PID, same start time). */
function signalIfSame(entry: ProcEntry, signal: NodeJS.Signals): void {
  if (readProc(entry.pid)?.startTime !== entry.startTime) return;
  try {
    process.kill(entry.pid, signal);
  } catch {
    // Exited meanwhile.
  }
}

export class PrivateSshd {
  readonly host = '127.0.0.1';
  readonly username = 'root';
  private child?: ChildProcess;
  private output = '';
  private exited = true;

  private constructor(
    readonly dir: string,
    readonly port: number,
    readonly privateKeyPath: string,
    readonly hostKeySha256: string,
  ) {}

  /** Keys, config and a running sshd; the temp dir is removed again if it cannot start. */
  static async start(): Promise<PrivateSshd> {
    requireSshd();
    // The privilege separation directory sshd insists on. Created when missing and then left
    // in place: a system or another test's sshd may rely on it as well.
    if (!existsSync(PRIVSEP_DIR)) mkdirSync(PRIVSEP_DIR, { mode: 0o755 });
    const dir = await mkdtemp(join(tmpdir(), 'ballast-sshd-'));
    try {
      const keygen = (file: string) => execFileSync('ssh-keygen', ['-q', '-t', 'ed25519', '-N', '', '-C', '', '-f', join(dir, file)], { stdio: 'ignore' });
      keygen('host_key');
      keygen('client_key');
      await writeFile(join(dir, 'authorized_keys'), await readFile(join(dir, 'client_key.pub')), { mode: 0o600 });
      const hostKeySha256 = fingerprintOf(await readFile(join(dir, 'host_key.pub'), 'utf8'));
      for (let attempt = 0; ; attempt++) {
        const sshd = new PrivateSshd(dir, await freeTcpPort(), join(dir, 'client_key'), hostKeySha256);
        try {
          await sshd.launch();
          return sshd;
        } catch (err) {
          await sshd.stop({ keepDir: true });
          if (attempt === 2) throw err; // the port was taken between the probe and the bind, three times
        }
      }
    } catch (err) {
      await rm(dir, { recursive: true, force: true });
      throw err;
    }
  }

  get pid(): number | undefined {
    return this.exited ? undefined : this.child?.pid;
  }

  get log(): string {
    return this.output;
  }

  private config(): string {
    return [
      `ListenAddress ${this.host}`,
      `Port ${this.port}`,
      `HostKey ${join(this.dir, 'host_key')}`,
      `PidFile ${join(this.dir, 'sshd.pid')}`,
      `AuthorizedKeysFile ${join(this.dir, 'authorized_keys')}`,
      'PermitRootLogin prohibit-password',
      'PubkeyAuthentication yes',
      'PasswordAuthentication no',
      'KbdInteractiveAuthentication no',
      'UsePAM no',
      'StrictModes no',
      'UseDNS no',
      'PrintMotd no',
      'LogLevel ERROR',
      // Debian's bash sources ~/.bashrc for commands run by sshd unless it is a nested shell;
      // this host's root .bashrc spends ~200 ms in pyenv init, on every command.
      'SetEnv SHLVL=1',
      '',
    ].join('\n');
  }

  private async launch(readyTimeoutMs = 10_000): Promise<void> {
    const configPath = join(this.dir, 'sshd_config');
    await writeFile(configPath, this.config());
    this.output = '';
    const child = spawn(SSHD, ['-D', '-e', '-f', configPath], { stdio: ['ignore', 'pipe', 'pipe'] });
    this.child = child;
    this.exited = false;
    child.stdout?.on('data', (d: Buffer) => (this.output += d.toString()));
    child.stderr?.on('data', (d: Buffer) => (this.output += d.toString()));
    child.once('exit', () => (this.exited = true));
    const spawnError = await new Promise<Error | undefined>((resolve) => {
      child.once('spawn', () => resolve(undefined));
      child.once('error', (err) => resolve(err));
    });
    if (spawnError) throw new Error(`cannot start ${SSHD} (package openssh-server): ${spawnError.message}`);
    const deadline = Date.now() + readyTimeoutMs;
    // Accepting while our child is alive means the listener is ours: sshd exits when it cannot bind.
    while (!((await tcpAccepts(this.host, this.port)) && !this.exited)) {
      if (this.exited) throw new Error(`sshd on port ${this.port} exited at start:\n${this.output}`);
      if (Date.now() > deadline) throw new Error(`sshd on port ${this.port} not accepting after ${readyTimeoutMs} ms:\n${this.output}`);
      await sleep(20);
    }
  }

  /** Kills every connection this sshd serves (and the commands they run); the listener stays. */
  async dropConnections(): Promise<number> {
    if (!this.pid) return 0;
    const connections = descendantsOf(this.pid);
    for (const entry of connections) signalIfSame(entry, 'SIGKILL');
    await this.waitGone(connections, 2_000);
    return connections.length;
  }

  /** Stops and starts the listener on the same port, with the same keys. */
  async restart(): Promise<void> {
    await this.stop({ keepDir: true });
    await this.launch();
  }

  /** Stops the listener and everything under it by PID (SIGTERM, then SIGKILL), then removes the temp dir. */
  async stop(options: { keepDir?: boolean } = {}): Promise<void> {
    const child = this.child;
    if (child?.pid && !this.exited) {
      const listener = readProc(child.pid);
      const below = descendantsOf(child.pid);
      // Per-connection children outlive a stopped listener, so they are stopped as well.
      for (const entry of [...below, ...(listener ? [listener] : [])]) signalIfSame(entry, 'SIGTERM');
      if (!(await this.waitExit(2_000))) {
        child.kill('SIGKILL');
        await this.waitExit(5_000);
      }
      for (const entry of below) if (processAlive(entry.pid)) signalIfSame(entry, 'SIGKILL');
      await this.waitGone(below, 2_000);
    }
    if (!options.keepDir) await rm(this.dir, { recursive: true, force: true });
  }

  private async waitExit(ms: number): Promise<boolean> {
    const deadline = Date.now() + ms;
    while (!this.exited && Date.now() < deadline) await sleep(20);
    return this.exited;
  }

  private async waitGone(entries: ProcEntry[], ms: number): Promise<void> {
    const deadline = Date.now() + ms;
    while (entries.some((e) => processAlive(e.pid) && readProc(e.pid)?.startTime === e.startTime) && Date.now() < deadline) await sleep(20);
  }
}
