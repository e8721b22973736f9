import { spawn, execFileSync, type ChildProcess } from 'node:child_process';
import { existsSync, rmSync } from 'node:fs';
import { execa } from 'execa';
import { freeTcpPort, tcpAccepts } from './net.js';

// A private tgtd (the Linux SCSI target daemon) for integration tests, and the initiator-side
// view of it through libiscsi's command-line tools (iscsi-ls, iscsi-inq, iscsi-readcapacity16).
//
// The daemon gets a control port of its own (`tgtd -C N`: its management socket is
// /run/tgtd/socket.N, locked by /run/tgtd/socket.N.lock) and a portal on 127.0.0.1 at a free
// port, so it never touches a tgtd the system or another test runs. It is only ever stopped
// by its own PID.

const TOOLS: [string, string][] = [
  ['tgtd', 'tgt'],
  ['tgtadm', 'tgt'],
  ['iscsi-ls', 'libiscsi-bin'],
  ['iscsi-inq', 'libiscsi-bin'],
  ['iscsi-readcapacity16', 'libiscsi-bin'],
];

/** Root and the tgt and libiscsi tools, or an error naming the package to install. */
export function requireTgtTools(): void {
  if (process.getuid?.() !== 0) throw new Error('this test needs root (tgtd opens its control socket under /run/tgtd)');
  const missing = TOOLS.filter(([tool]) => {
    try {
      execFileSync('sh', ['-c', `command -v ${tool}`], { stdio: 'ignore' });
      return false;
    } catch {
      return true;
    }
  });
  if (missing.length) {
    const packages = [...new Set(missing.map(([, pkg]) => pkg))];
    throw new Error(`this test needs ${missing.map(([t]) => t).join(', ')}: apt-get install ${packages.join(' ')}`);
  }
}

/** tgtadm's -C takes 0..32767 (a short); 0 is the system tgtd's default socket. */
const CONTROL_PORT_MIN = 1000;
const CONTROL_PORT_MAX = 32767;
const SOCKET_DIR = '/run/tgtd';

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

export interface ToolResult {
  exitCode: number | undefined;
  stdout: string;
  stderr: string;
  timedOut: boolean;
  durationMs: number;
}

/** Runs a command with a hard timeout; never throws for a non-zero exit. */
export async function runTool(argv: string[], timeoutMs = 5_000): Promise<ToolResult> {
  const started = performance.now();
  const [file, ...args] = argv;
  const r = await execa(file!, args, { reject: false, timeout: timeoutMs, forceKillAfterDelay: 1_000, stdin: 'ignore', env: { LC_ALL: 'C' } });
  return {
    exitCode: r.exitCode,
    stdout: String(r.stdout ?? ''),
    stderr: String(r.stderr ?? ''),
    timedOut: Boolean(r.timedOut),
    durationMs: performance.now() - started,
  };
}

function tgtadmArgs(controlPort: number, args: string[]): string[] {
  return ['tgtadm', '-C', String(controlPort), '--lld', 'iscsi', ...args];
}

/** True when some tgtd answers on this control port (ours or anybody's). */
async function controlPortAnswers(controlPort: number): Promise<boolean> {
  const r = await runTool(tgtadmArgs(controlPort, ['--mode', 'target', '--op', 'show']), 2_000);
  return r.exitCode === 0;
}

/** A control port no tgtd uses or has used: no socket file, no lock file, nobody answering. */
export async function unusedControlPort(): Promise<number> {
  for (let attempt = 0; attempt < 50; attempt++) {
    const port = CONTROL_PORT_MIN + Math.floor(Math.random() * (CONTROL_PORT_MAX - CONTROL_PORT_MIN + 1));
    if (existsSync(`${SOCKET_DIR}/socket.${port}`) || existsSync(`${SOCKET_DIR}/socket.${port}.lock`)) continue;
    if (await controlPortAnswers(port)) continue;
    return port;
  }
  throw new Error('found no unused tgtd control port in 50 tries');
}

/** A tgt target as `tgtadm --op show` prints it, parsed here independently of src/. */
export interface ShownTarget {
  tid: number;
  iqn: string;
  /** LUN number to backing-store path (LUN 0, the controller, has none). */
  luns: Map<number, string | undefined>;
  acl: string[];
  accounts: string[];
}

export function parseShow(text: string): ShownTarget[] {
  const out: ShownTarget[] = [];
  let t: ShownTarget | undefined;
  let section = '';
  let lun = -1;
  for (const raw of text.split('\n')) {
    const head = /^Target (\d+): (\S+)$/.exec(raw);
    if (head) {
      t = { tid: Number(head[1]), iqn: head[2]!, luns: new Map(), acl: [], accounts: [] };
      out.push(t);
      section = '';
      continue;
    }
    const line = raw.trim();
    if (!t || !line) continue;
    // Section headings sit at indentation 4; their contents deeper.
    if (/^ {4}\S.*:$/.test(raw)) {
      section = line;
      continue;
    }
    if (section === 'LUN information:') {
      const m = /^LUN: (\d+)$/.exec(line);
      if (m) t.luns.set((lun = Number(m[1])), undefined);
      const p = /^Backing store path: (.*)$/.exec(line);
      if (p && p[1] !== 'None') t.luns.set(lun, p[1]);
    } else if (section === 'ACL information:') t.acl.push(line);
    else if (section === 'Account information:') t.accounts.push(line);
  }
  return out;
}

/** A tgtd of this test's own. */
export class Tgtd {
  private output = '';
  private exited = false;

  private constructor(
    private readonly child: ChildProcess,
    readonly controlPort: number,
    readonly iscsiPort: number,
  ) {
    child.stdout?.on('data', (d: Buffer) => (this.output += d.toString()));
    child.stderr?.on('data', (d: Buffer) => (this.output += d.toString()));
    child.once('exit', () => (this.exited = true));
  }

  get pid(): number {
    return this.child.pid!;
  }

  get portal(): string {
    return `127.0.0.1:${this.iscsiPort}`;
  }

  get running(): boolean {
    return !this.exited;
  }

  /** What tgtd printed (it logs to stderr in the foreground). */
  get log(): string {
    return this.output;
  }

  /** Starts tgtd and waits until it answers tgtadm and accepts TCP on its portal. */
  static async start(readyTimeoutMs = 10_000): Promise<Tgtd> {
    let lastError: unknown;
    for (let attempt = 0; attempt < 3; attempt++) {
      const controlPort = await unusedControlPort();
      const iscsiPort = await freeTcpPort();
      const child = spawn('tgtd', ['-f', '-C', String(controlPort), '--iscsi', `portal=127.0.0.1:${iscsiPort}`], {
        stdio: ['ignore', 'pipe', 'pipe'],
      });
      const tgtd = new Tgtd(child, controlPort, iscsiPort);
      const spawned = await new Promise<Error | undefined>((resolve) => {
        child.once('spawn', () => resolve(undefined));
        child.once('error', (err) => resolve(err));
      });
      if (spawned) throw new Error(`cannot start tgtd (package tgt): ${spawned.message}`);
      try {
        await tgtd.waitReady(readyTimeoutMs);
        return tgtd;
      } catch (err) {
        lastError = err;
        await tgtd.stop();
      }
    }
    throw lastError;
  }

  private async waitReady(timeoutMs: number): Promise<void> {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      // Answering while our child is alive means the answer is ours: tgtd exits when it
      // cannot take the control socket's lock.
      if (this.exited) throw new Error(`tgtd -C ${this.controlPort} exited at start:\n${this.output}`);
      if ((await controlPortAnswers(this.controlPort)) && (await tcpAccepts('127.0.0.1', this.iscsiPort)) && !this.exited) return;
      if (Date.now() > deadline) throw new Error(`tgtd -C ${this.controlPort} (portal ${this.portal}) not ready after ${timeoutMs} ms:\n${this.output}`);
      await sleep(50);
    }
  }

  /** `tgtadm --lld iscsi ARGS` against this tgtd; throws on failure. */
  async tgtadm(args: string[]): Promise<string> {
    const r = await runTool(tgtadmArgs(this.controlPort, args), 5_000);
    if (r.exitCode !== 0) throw new Error(`tgtadm ${args.join(' ')} failed (${r.exitCode}${r.timedOut ? ', timed out' : ''}): ${r.stderr}`);
    return r.stdout;
  }

  async targets(): Promise<ShownTarget[]> {
    return parseShow(await this.tgtadm(['--mode', 'target', '--op', 'show']));
  }

  /** SIGSTOP: the control socket still accepts connections but nothing answers. */
  pause(): void {
    if (!this.exited) process.kill(this.pid, 'SIGSTOP');
  }

  resume(): void {
    if (!this.exited) process.kill(this.pid, 'SIGCONT');
  }

  private async waitExit(ms: number): Promise<boolean> {
    const deadline = Date.now() + ms;
    while (!this.exited && Date.now() < deadline) await sleep(20);
    return this.exited;
  }

  /**
   * Stops this tgtd only, by its PID: first its targets and tgtadm's "system delete" (tgtd
   * 1.0.85 ignores SIGTERM), then SIGTERM, then SIGKILL. Then removes its socket files.
   */
  async stop(): Promise<void> {
    if (!this.exited) {
      this.resume();
      // tgtd refuses "system delete" while it has targets: remove them first.
      const shown = await runTool(tgtadmArgs(this.controlPort, ['--mode', 'target', '--op', 'show']), 3_000);
      for (const t of shown.exitCode === 0 ? parseShow(shown.stdout) : []) {
        await runTool(tgtadmArgs(this.controlPort, ['--mode', 'target', '--op', 'delete', '--force', '--tid', String(t.tid)]), 3_000);
      }
      await runTool(['tgtadm', '-C', String(this.controlPort), '--mode', 'system', '--op', 'delete', '--force'], 3_000);
      if (!(await this.waitExit(2_000))) {
        this.child.kill('SIGTERM');
        if (!(await this.waitExit(1_000))) {
          this.child.kill('SIGKILL');
          await this.waitExit(5_000);
        }
      }
    }
    if (this.exited) {
      // Ours alone: this process held the lock until it died.
      for (const f of [`${SOCKET_DIR}/socket.${this.controlPort}`, `${SOCKET_DIR}/socket.${this.controlPort}.lock`]) rmSync(f, { force: true });
    }
  }
}

// --- the initiator side: libiscsi's tools ---

export interface Chap {
  username: string;
  password: string;
}

export function iscsiUrl(portal: string, target?: string, lun?: number, chap?: Chap): string {
  const auth = chap ? `${chap.username}%${chap.password}@` : '';
  return `iscsi://${auth}${portal}${target ? `/${target}${lun !== undefined ? `/${lun}` : ''}` : ''}`;
}

/** Discovery (SendTargets) as `initiator`, then each target's LUNs: { iqn: { lun: "Type (Size:..)" } }. */
export async function discover(initiator: string, portal: string, chap?: Chap): Promise<{ targets: Map<string, Map<number, string>>; result: ToolResult }> {
  const result = await runTool(['iscsi-ls', '-s', '-i', initiator, iscsiUrl(portal, undefined, undefined, chap)]);
  const targets = new Map<string, Map<number, string>>();
  let current: Map<number, string> | undefined;
  for (const line of result.stdout.split('\n')) {
    const t = /^Target:(\S+) Portal:/.exec(line);
    if (t) targets.set(t[1]!, (current = new Map()));
    const l = /^Lun:(\d+)\s+(.*)$/.exec(line);
    if (l && current) current.set(Number(l[1]), l[2]!.trim());
  }
  return { targets, result };
}

/** A standard INQUIRY on the LUN, as `initiator` (a full login). */
export async function inquiry(initiator: string, portal: string, target: string, lun: number, chap?: Chap): Promise<ToolResult> {
  return runTool(['iscsi-inq', '-i', initiator, iscsiUrl(portal, target, lun, chap)]);
}

/** READ CAPACITY (16): the last LBA and the block length, as `initiator`. */
export async function readCapacity(
  initiator: string,
  portal: string,
  target: string,
  lun: number,
  chap?: Chap,
): Promise<{ lastLba: number; blockLength: number; result: ToolResult }> {
  const result = await runTool(['iscsi-readcapacity16', '-i', initiator, iscsiUrl(portal, target, lun, chap)]);
  if (result.exitCode !== 0) throw new Error(`iscsi-readcapacity16 as ${initiator} on ${target}/${lun} failed (${result.exitCode}): ${result.stderr}${result.stdout}`);
  const lba = /^RETURNED LOGICAL BLOCK ADDRESS:(\d+)$/m.exec(result.stdout);
  const len = /^LOGICAL BLOCK LENGTH IN BYTES:(\d+)$/m.exec(result.stdout);
  if (!lba || !len) throw new Error(`unexpected iscsi-readcapacity16 output: ${result.stdout}`);
  return { lastLba: Number(lba[1]), blockLength: Number(len[1]), result };
}
