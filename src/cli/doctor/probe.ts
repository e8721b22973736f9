import { constants } from 'node:fs';
import { access, readdir, readFile, readlink, stat } from 'node:fs/promises';
import { request } from 'node:http';
import { basename, join } from 'node:path';
import { CommandFailed, errorMessage } from '../../errors.js';
import type { Exec } from '../../exec.js';
import { socketIsLive } from '../../plugin/listen.js';
import { settledWithin } from '../../util/settled-within.js';

/**
 * loaded: a module inserted with modprobe; builtin: compiled into the kernel; available: not
 * loaded, but the kernel's modules directory has it; absent: not there either; unknown: the
 * kernel's modules directory is missing, so whether it is built in cannot be told.
 */
export type ModuleState = 'loaded' | 'builtin' | 'available' | 'absent' | 'unknown';

/** What writing a file in a directory showed, and this host's clock around the write (ms). */
export type WriteTest =
  | { outcome: 'written'; before: number; after: number; mtimeMs: number }
  | { outcome: 'missing'; ancestor: string; ancestorWritable: boolean }
  | { outcome: 'failed'; error: string }
  | { outcome: 'timeout' };

export interface HttpReply {
  status: number;
  body: string;
}

/** Everything doctor asks of the host: the one edge unit tests fake. */
export interface Probe {
  /** Whether a path exists (symlinks followed). */
  exists(path: string): Promise<boolean>;
  /** A file's text; undefined when it cannot be read. */
  readText(path: string): Promise<string | undefined>;
  /** A directory's entries; [] when it cannot be read. */
  list(path: string): Promise<string[]>;
  /** Where an executable is found on PATH; undefined when it is not. */
  which(tool: string): Promise<string | undefined>;
  /** Whether a live (not zombie) process of this executable name is visible in /proc. */
  processRunning(name: string): Promise<boolean>;
  /** Whether something listens on the abstract Unix socket "@name" (e.g. systemd socket activation). */
  abstractSocketListening(name: string): Promise<boolean>;
  moduleState(name: string): Promise<ModuleState>;
  /** Creates, stats and removes a file in `dir` in a child process killed after `timeoutMs`. */
  writeTest(dir: string, timeoutMs: number): Promise<WriteTest>;
  /** Whether something accepts connections on a Unix socket. */
  socketAnswers(path: string, timeoutMs: number): Promise<boolean>;
  /** An HTTP GET over a Unix socket; rejects on connection errors and after `timeoutMs`. */
  httpGet(socketPath: string, path: string, timeoutMs: number): Promise<HttpReply>;
}

/** Bound on reads of local pseudo-filesystems (/proc, /sys, /etc, PATH directories). */
const LOCAL_READ_MS = 2_000;

async function bounded<T>(work: Promise<T>, fallback: T, ms = LOCAL_READ_MS): Promise<T> {
  return (await settledWithin(work.catch(() => fallback), ms)) ?? fallback;
}

// Run as `node -e WRITE_TEST DIR`: prints one JSON WriteTest. In a child process so that a hung
// NFS server blocks the child, which is killed, and never this process (a blocked fs call in
// Node's thread pool would keep it alive past its own timeout).
const WRITE_TEST = `(() => {
  const fs = require('fs'), path = require('path');
  const dir = process.argv[1];
  const say = (o) => process.stdout.write(JSON.stringify(o));
  try {
    if (!fs.statSync(dir).isDirectory()) return say({ outcome: 'failed', error: dir + ' is not a directory' });
  } catch (e) {
    if (e.code !== 'ENOENT') return say({ outcome: 'failed', error: e.message });
    let up = path.dirname(dir);
    while (!fs.existsSync(up)) up = path.dirname(up);
    try { fs.accessSync(up, fs.constants.W_OK); return say({ outcome: 'missing', ancestor: up, ancestorWritable: true }); }
    catch { return say({ outcome: 'missing', ancestor: up, ancestorWritable: false }); }
  }
  const file = path.join(dir, '.ballast-doctor-' + process.pid + '-' + Date.now());
  const before = Date.now();
  try {
    const fd = fs.openSync(file, 'wx');
    try { fs.writeSync(fd, 'ballast doctor\\n'); fs.fsyncSync(fd); } finally { fs.closeSync(fd); }
    const mtimeMs = fs.statSync(file).mtimeMs;
    say({ outcome: 'written', before, after: Date.now(), mtimeMs });
  } catch (e) {
    say({ outcome: 'failed', error: e.message });
  } finally {
    try { fs.unlinkSync(file); } catch {}
  }
})()`;

export interface HostProbeOptions {
  exec: Exec;
  /** The PATH the daemon's commands are looked up in. */
  path: string;
  /** `uname -r`: which /lib/modules directory lists the built-in modules. */
  kernelRelease: string;
  /** Prefix of /proc, /sys, /dev, /etc and /lib/modules (a temp tree in tests); default "/". */
  root?: string;
}

/** The real host. */
export class HostProbe implements Probe {
  private readonly root: string;

  constructor(private readonly options: HostProbeOptions) {
    this.root = options.root ?? '/';
  }

  private at(path: string): string {
    return join(this.root, path);
  }

  exists(path: string): Promise<boolean> {
    return bounded(stat(this.at(path)).then(() => true), false);
  }

  readText(path: string): Promise<string | undefined> {
    return bounded(readFile(this.at(path), 'utf8'), undefined);
  }

  list(path: string): Promise<string[]> {
    return bounded(readdir(this.at(path)), []);
  }

  async which(tool: string): Promise<string | undefined> {
    for (const dir of this.options.path.split(':').filter((d) => d.startsWith('/'))) {
      const file = join(dir, tool);
      const found = await bounded(
        access(file, constants.X_OK).then(async () => (await stat(file)).isFile()),
        false,
      );
      if (found) return file;
    }
    return undefined;
  }

  async processRunning(name: string): Promise<boolean> {
    const pids = (await this.list('/proc')).filter((entry) => /^\d+$/.test(entry));
    for (const pid of pids) {
      const comm = (await this.readText(`/proc/${pid}/comm`))?.trim();
      // comm is the executable's name unless the process renamed itself; exe catches that.
      const exe = comm === name ? name : await bounded(readlink(this.at(`/proc/${pid}/exe`)).then((p) => basename(p.replace(/ \(deleted\)$/, ''))), undefined);
      if (exe !== name) continue;
      // /proc/PID/stat: "PID (comm) STATE ..."; Z is a zombie, not a running daemon.
      const state = /\)\s+(\S)/.exec((await this.readText(`/proc/${pid}/stat`)) ?? '')?.[1];
      if (state && state !== 'Z' && state !== 'X') return true;
    }
    return false;
  }

  async abstractSocketListening(name: string): Promise<boolean> {
    // /proc/net/unix: "Num RefCount Protocol Flags Type St Inode Path"; Flags 00010000 is
    // __SO_ACCEPTCON, a listening socket. Abstract names are shown with a leading "@".
    const table = (await this.readText('/proc/net/unix')) ?? '';
    return table.split('\n').some((line) => {
      const fields = line.trim().split(/\s+/);
      return fields[7] === `@${name}` && (parseInt(fields[3] ?? '0', 16) & 0x10000) !== 0;
    });
  }

  async moduleState(name: string): Promise<ModuleState> {
    const module = name.replace(/-/g, '_');
    if (await this.exists(`/sys/module/${module}/initstate`)) return 'loaded';
    // A built-in module has /sys/module/NAME only when it has parameters: modules.builtin says the rest.
    if (await this.exists(`/sys/module/${module}`)) return 'builtin';
    const dir = `/lib/modules/${this.options.kernelRelease}`;
    const builtin = await this.readText(`${dir}/modules.builtin`);
    if (builtin === undefined) return 'unknown';
    const named = (list: string) => list.split('\n').some((line) => basename(line.split(':')[0]!.trim()).replace(/\.ko(\.\w+)?$/, '').replace(/-/g, '_') === module);
    if (named(builtin)) return 'builtin';
    return named((await this.readText(`${dir}/modules.dep`)) ?? '') ? 'available' : 'absent';
  }

  async writeTest(dir: string, timeoutMs: number): Promise<WriteTest> {
    try {
      const { stdout } = await this.options.exec.run([process.execPath, '-e', WRITE_TEST, dir], { timeoutMs });
      return JSON.parse(stdout) as WriteTest;
    } catch (err) {
      if (err instanceof CommandFailed && err.timedOut) return { outcome: 'timeout' };
      return { outcome: 'failed', error: errorMessage(err) };
    }
  }

  socketAnswers(path: string, timeoutMs: number): Promise<boolean> {
    return socketIsLive(path, timeoutMs);
  }

  httpGet(socketPath: string, path: string, timeoutMs: number): Promise<HttpReply> {
    return new Promise((resolve, reject) => {
      const req = request({ socketPath, path, method: 'GET', timeout: timeoutMs, headers: { host: 'docker' } }, (res) => {
        let body = '';
        res.setEncoding('utf8');
        res.on('data', (chunk: string) => (body += chunk));
        res.on('end', () => resolve({ status: res.statusCode ?? 0, body }));
        res.on('error', reject);
      });
      req.on('timeout', () => req.destroy(Object.assign(new Error(`no answer within ${timeoutMs} ms`), { code: 'ETIMEDOUT' })));
      req.on('error', reject);
      req.end();
    });
  }
}
