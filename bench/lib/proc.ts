import { spawn, type ChildProcess, type SpawnOptions } from 'node:child_process';
import { openSync, closeSync } from 'node:fs';

export interface RunOptions {
  /** Hard bound: SIGTERM when it passes, SIGKILL 2 s later. Required: nothing here runs unbounded. */
  timeoutMs: number;
  /** A cleanup command: still allowed once the bench is aborting. */
  cleanup?: boolean;
  env?: NodeJS.ProcessEnv;
  /** Exit codes that count as success; default [0]. */
  okExitCodes?: readonly number[];
}

export interface RunResult {
  stdout: string;
  stderr: string;
  exitCode: number;
  /** Wall time from spawn to exit, in ms. */
  ms: number;
}

export class CommandError extends Error {}

const MAX_CAPTURE = 1 << 20;

/** Commands running now, so an abort can stop them (by their PIDs). */
const inFlight = new Set<ChildProcess>();
let aborting = false;

/**
 * After an interrupt, the bench's own code may still be running: from now on it may start no
 * new command (only cleanup ones), and the commands it is waiting on are killed.
 */
export function abortCommands(): void {
  aborting = true;
  for (const child of inFlight) child.kill('SIGKILL');
}

export function isAborting(): boolean {
  return aborting;
}

/** Runs argv without a shell, captures output, and rejects on a bad exit code or a timeout. */
export function run(argv: readonly string[], options: RunOptions): Promise<RunResult> {
  const [file, ...args] = argv;
  if (!file) throw new Error('run: empty argv');
  if (aborting && !options.cleanup) return Promise.reject(new CommandError(`${argv.join(' ')}: not started, the bench is aborting`));
  return new Promise((resolve, reject) => {
    const started = performance.now();
    const child = spawn(file, args, { stdio: ['ignore', 'pipe', 'pipe'], env: options.env ?? process.env });
    inFlight.add(child);
    child.once('exit', () => inFlight.delete(child));
    let stdout = '';
    let stderr = '';
    child.stdout!.on('data', (c: Buffer) => {
      if (stdout.length < MAX_CAPTURE) stdout += c.toString();
    });
    child.stderr!.on('data', (c: Buffer) => {
      if (stderr.length < MAX_CAPTURE) stderr += c.toString();
    });
    let timedOut = false;
    let killTimer: NodeJS.Timeout | undefined;
    const timer = setTimeout(() => {
      timedOut = true;
      child.kill('SIGTERM');
      killTimer = setTimeout(() => child.kill('SIGKILL'), 2_000);
    }, options.timeoutMs);
    child.once('error', (err) => {
      clearTimeout(timer);
      clearTimeout(killTimer);
      reject(new CommandError(`${argv.join(' ')}: ${err.message}`));
    });
    child.once('close', (code, signal) => {
      clearTimeout(timer);
      clearTimeout(killTimer);
      const ms = performance.now() - started;
      const exitCode = code ?? -1;
      if (timedOut) return reject(new CommandError(`${argv.join(' ')}: timed out after ${options.timeoutMs} ms`));
      if (!(options.okExitCodes ?? [0]).includes(exitCode)) {
        const why = signal ? `killed by ${signal}` : `exit ${exitCode}`;
        return reject(new CommandError(`${argv.join(' ')}: ${why}: ${stderr.trim().slice(0, 2000)}`));
      }
      resolve({ stdout, stderr, exitCode, ms });
    });
  });
}

/**
 * argv prefix for long-lived processes. `setpriv --pdeathsig SIGKILL` gives the command a
 * parent-death signal, so if the bench is killed outright (no finally, no signal handler) its
 * daemons die with it instead of running on. `setsid` puts it in a session of its own, so a
 * Ctrl-C on the terminal reaches only the bench, which then stops everything in order (dockerd
 * before ballast, ballast before the namespace) instead of all of them dying at once. All three
 * tools, and nsenter/unshare after them, exec in place: the PID spawned is the daemon's PID.
 */
export const DIE_WITH_PARENT = ['setpriv', '--pdeathsig', 'SIGKILL', 'setsid'];

/** A long-lived process (namespace holder, dockerd, baseline server) whose output goes to a file. */
export function spawnLong(argv: readonly string[], logFile: string, options: SpawnOptions = {}): ChildProcess {
  const [file, ...args] = [...DIE_WITH_PARENT, ...argv];
  if (!file) throw new Error('spawnLong: empty argv');
  const fd = openSync(logFile, 'a');
  try {
    return spawn(file, args, { stdio: ['ignore', fd, fd], ...options });
  } finally {
    closeSync(fd);
  }
}

export function isRunning(child: ChildProcess): boolean {
  return child.exitCode === null && child.signalCode === null;
}

export function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

/** SIGTERM, wait up to graceMs, then SIGKILL; only ever the one child given, by its PID. */
export async function stopChild(child: ChildProcess, graceMs: number): Promise<void> {
  if (!isRunning(child)) return;
  const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
  child.kill('SIGTERM');
  await Promise.race([exited, sleep(graceMs)]);
  if (isRunning(child)) {
    child.kill('SIGKILL');
    await Promise.race([exited, sleep(5_000)]);
  }
}

/** Rejects when `promise` takes longer than `ms`. */
export async function withTimeout<T>(promise: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  try {
    return await Promise.race([
      promise,
      new Promise<never>((_, reject) => {
        timer = setTimeout(() => reject(new Error(`${what}: no answer within ${ms} ms`)), ms);
      }),
    ]);
  } finally {
    clearTimeout(timer);
  }
}
