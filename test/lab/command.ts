import { spawn, type ChildProcess } from 'node:child_process';
import { closeSync, openSync } from 'node:fs';

// Running the lab's commands and processes: every command bounded by a timeout, every wait
// bounded and explained when it fails. Shared by every harness under test/lab and by bench/.

export interface CommandResult {
  argv: string[];
  code: number | null;
  signal: NodeJS.Signals | null;
  stdout: string;
  stderr: string;
  timedOut: boolean;
  ms: number;
}

export interface RunOptions {
  timeoutMs?: number;
  /** Text for stdin, or { file } to feed a file. */
  input?: string | { file: string };
  env?: NodeJS.ProcessEnv;
  cwd?: string;
}

export interface Background {
  child: ChildProcess;
  /** Resolves when the command ends (or is killed by its timeout). */
  done: Promise<CommandResult>;
  /** True while the command still runs. */
  running(): boolean;
  /** SIGKILL to this one child, if it still runs. */
  kill(): void;
}

/** Starts a command with a hard timeout (SIGKILL to that one child). Never throws for a failing command. */
export function startCommand(argv: string[], options: RunOptions = {}): Background {
  const started = Date.now();
  const timeoutMs = options.timeoutMs ?? 60_000;
  let stdinFd: number | undefined;
  let stdin: 'pipe' | 'ignore' | number = 'ignore';
  if (typeof options.input === 'string') stdin = 'pipe';
  else if (options.input) stdin = stdinFd = openSync(options.input.file, 'r');
  const child = spawn(argv[0]!, argv.slice(1), {
    stdio: [stdin, 'pipe', 'pipe'],
    env: options.env ?? process.env,
    cwd: options.cwd,
  });
  if (stdinFd !== undefined) closeSync(stdinFd);
  if (typeof options.input === 'string') child.stdin?.end(options.input);
  let stdout = '';
  let stderr = '';
  let timedOut = false;
  child.stdout?.on('data', (chunk: Buffer) => (stdout += chunk.toString()));
  child.stderr?.on('data', (chunk: Buffer) => (stderr += chunk.toString()));
  const timer = setTimeout(() => {
    timedOut = true;
    child.kill('SIGKILL');
  }, timeoutMs);
  const done = new Promise<CommandResult>((resolve) => {
    const finish = (code: number | null, signal: NodeJS.Signals | null) => {
      clearTimeout(timer);
      resolve({ argv, code, signal, stdout, stderr, timedOut, ms: Date.now() - started });
    };
    child.once('error', (err) => {
      stderr += `\n${err.message}`;
      finish(null, null);
    });
    child.once('close', finish);
  });
  return {
    child,
    done,
    running: () => child.exitCode === null && child.signalCode === null,
    kill: () => {
      if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
    },
  };
}

export function runCommand(argv: string[], options: RunOptions = {}): Promise<CommandResult> {
  return startCommand(argv, options).done;
}

export function describeResult(result: CommandResult): string {
  const status = result.timedOut ? `timed out after ${result.ms} ms` : `exit ${result.code ?? result.signal}`;
  return `$ ${result.argv.join(' ')}\n  -> ${status}\n  stdout: ${clip(result.stdout)}\n  stderr: ${clip(result.stderr)}`;
}

function clip(text: string, max = 3000): string {
  const t = text.trim();
  return t.length > max ? `...${t.slice(-max)}` : t;
}

export const sleep = (ms: number) => new Promise<void>((resolve) => setTimeout(resolve, ms));

/** True while `child` has neither exited nor been killed. */
export function alive(child: ChildProcess | undefined): boolean {
  return !!child && child.exitCode === null && child.signalCode === null;
}

/** Resolves true once `child` has exited, false after `ms` (the timer never outlives the wait). */
export function exitWithin(child: ChildProcess, ms: number): Promise<boolean> {
  if (!alive(child)) return Promise.resolve(true);
  return new Promise((resolve) => {
    const timer = setTimeout(() => {
      child.off('exit', onExit);
      resolve(false);
    }, ms);
    const onExit = () => {
      clearTimeout(timer);
      resolve(true);
    };
    child.once('exit', onExit);
  });
}

/** Sends `signal` to a child this harness started, then SIGKILL if it outlives `graceMs`. */
export async function stopChild(child: ChildProcess | undefined, signal: NodeJS.Signals, graceMs: number): Promise<void> {
  if (!child || !alive(child)) return;
  child.kill(signal);
  if (await exitWithin(child, graceMs)) return;
  child.kill('SIGKILL');
  await exitWithin(child, 10_000);
}

/** Thrown from a waitFor() condition to stop waiting at once (e.g. the process being waited for died). */
export class GiveUp extends Error {}

/**
 * Polls `condition` until it returns a truthy value; throws `what` (plus `explain()`) after
 * `timeoutMs`, or at once when the condition throws GiveUp.
 */
export async function waitFor<T>(
  condition: () => Promise<T> | T,
  what: string,
  timeoutMs = 30_000,
  intervalMs = 100,
  explain?: () => Promise<string>,
): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  let lastError: unknown;
  for (;;) {
    try {
      const value = await condition();
      if (value) return value;
    } catch (err) {
      lastError = err;
      if (err instanceof GiveUp) {
        throw new Error(`gave up waiting for ${what}: ${err.message}${explain ? `\n${await explain()}` : ''}`);
      }
    }
    if (Date.now() > deadline) {
      const detail = lastError ? `\nlast error: ${(lastError as Error).message ?? String(lastError)}` : '';
      throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}${detail}${explain ? `\n${await explain()}` : ''}`);
    }
    await sleep(intervalMs);
  }
}
