import { spawn } from 'node:child_process';
import { CommandFailed } from './errors.js';
import type { Logger } from './log.js';
import { metrics } from './metrics/registry.js';

export interface ExecOptions {
  /** Exit codes that count as success; anything else throws CommandFailed. Default [0]. */
  okExitCodes?: readonly number[];
  /** Hard bound on the command; it is killed (SIGTERM, then SIGKILL 2 s later) when it passes. */
  timeoutMs?: number;
  /** Strings to mask in logs and errors (CHAP secrets, passwords). */
  redact?: readonly string[];
  /** Written to the command's stdin, then EOF (a secret goes this way, never in argv). Default: no stdin. */
  input?: string | Buffer;
}

export interface ExecResult {
  stdout: string;
  stderr: string;
  exitCode: number;
}

/** The one door through which ballast runs external commands. */
export interface Exec {
  run(argv: readonly string[], options?: ExecOptions): Promise<ExecResult>;
}

export const DEFAULT_COMMAND_TIMEOUT_MS = 30_000;
/** SIGTERM at the timeout, SIGKILL this much later. */
const FORCE_KILL_MS = 2_000;
/** After the SIGKILL, how long to wait for the command to be gone before giving up on it. */
const EXIT_GRACE_MS = 3_000;
/** Output kept per stream; the rest is dropped (no command ballast runs prints near this). */
const MAX_OUTPUT_BYTES = 16 << 20;

function mask(text: string, secrets: readonly string[] | undefined): string {
  let out = text;
  for (const secret of secrets ?? []) if (secret) out = out.split(secret).join('***');
  return out;
}

/** How a child ended: an exit code, a signal, or a failure to start it at all. */
interface Ended {
  exitCode?: number;
  startError?: string;
  timedOut: boolean;
  stdout: string;
  stderr: string;
}

/** Collects a stream's text, up to MAX_OUTPUT_BYTES. */
function collect(stream: NodeJS.ReadableStream | null): () => string {
  const chunks: Buffer[] = [];
  let size = 0;
  stream?.on('data', (chunk: Buffer) => {
    if (size >= MAX_OUTPUT_BYTES) return;
    chunks.push(chunk);
    size += chunk.length;
  });
  // Like a shell's $(...): one trailing newline is not part of the answer.
  return () => Buffer.concat(chunks).toString('utf8').replace(/\r?\n$/, '');
}

/**
 * Spawns argv without a shell and settles once it has exited and its output pipes closed (or it
 * could not start). Kills it at the timeout: SIGTERM, then SIGKILL FORCE_KILL_MS later.
 */
function spawnBounded(argv: readonly string[], timeoutMs: number, input: string | Buffer | undefined): { pid?: number; ended: Promise<Ended>; dropOutput(): void } {
  const [file, ...args] = argv;
  const child = spawn(file!, args, { stdio: [input === undefined ? 'ignore' : 'pipe', 'pipe', 'pipe'], env: { ...process.env, LC_ALL: 'C' } });
  const stdout = collect(child.stdout);
  const stderr = collect(child.stderr);
  if (input !== undefined) {
    child.stdin!.on('error', () => undefined); // a command that exits without reading its input: EPIPE
    child.stdin!.end(input);
  }
  let timedOut = false;
  let forceKill: NodeJS.Timeout | undefined;
  const terminate = setTimeout(() => {
    timedOut = true;
    child.kill('SIGTERM');
    forceKill = setTimeout(() => child.kill('SIGKILL'), FORCE_KILL_MS);
  }, timeoutMs);
  const ended = new Promise<Ended>((resolve) => {
    const finish = (end: Omit<Ended, 'timedOut' | 'stdout' | 'stderr'>) => {
      clearTimeout(terminate);
      clearTimeout(forceKill);
      resolve({ ...end, timedOut, stdout: stdout(), stderr: stderr() });
    };
    child.once('error', (err) => finish({ startError: err.message }));
    child.once('close', (code) => finish(code === null ? {} : { exitCode: code }));
  });
  return {
    pid: child.pid,
    ended,
    dropOutput: () => {
      child.stdout?.destroy();
      child.stderr?.destroy();
    },
  };
}

/**
 * Runs commands without a shell, a timeout on every call, argv and exit code logged. Plain
 * node:child_process rather than execa: measured here, execa 9 added 1.5-4 ms to every command
 * (bench/RESULTS.md), and a Mount runs four of them.
 */
export class CommandRunner implements Exec {
  constructor(
    private readonly log: Logger,
    private readonly defaultTimeoutMs = DEFAULT_COMMAND_TIMEOUT_MS,
  ) {}

  async run(argv: readonly string[], options: ExecOptions = {}): Promise<ExecResult> {
    if (!argv[0]) throw new Error('Exec.run needs a command');
    const timeout = options.timeoutMs ?? this.defaultTimeoutMs;
    const started = performance.now();
    const child = spawnBounded(argv, timeout, options.input);
    const shownArgv = argv.map((a) => mask(a, options.redact));
    // A command stuck in the kernel (state D: SIGKILL waits for the syscall), or one that left a
    // child holding its output, never settles: stop waiting then, so the caller's bound holds.
    let timer: ReturnType<typeof setTimeout> | undefined;
    const abandoned = new Promise<undefined>((resolve) => (timer = setTimeout(() => resolve(undefined), timeout + FORCE_KILL_MS + EXIT_GRACE_MS)));
    const result = await Promise.race([child.ended, abandoned]);
    clearTimeout(timer);
    if (result === undefined) {
      child.dropOutput();
      const durationMs = Math.round(performance.now() - started);
      this.log.error('command', { argv: shownArgv, pid: child.pid, timedOut: true, stuck: true, durationMs });
      metrics.commandFailed(shownArgv[0], undefined, true);
      throw new CommandFailed(
        shownArgv,
        undefined,
        `still running ${durationMs} ms after it started, though it was killed at ${timeout} ms: it is stuck in the kernel (a device or server that stopped answering), or a process it started holds its output; ballast stopped waiting for it`,
        true,
      );
    }
    const { exitCode, timedOut } = result;
    const stderr = mask(result.stderr, options.redact);
    const ok = !timedOut && exitCode !== undefined && (options.okExitCodes ?? [0]).includes(exitCode);
    const level = ok ? 'debug' : 'warn';
    if (this.log.isLevelEnabled(level)) {
      this.log.log(level, 'command', {
        argv: shownArgv,
        exitCode,
        timedOut,
        durationMs: Math.round(performance.now() - started),
        ...(ok ? {} : { stderr: stderr.slice(0, 2000) }),
      });
    }
    if (!ok) metrics.commandFailed(shownArgv[0], exitCode, timedOut);
    if (!ok) throw new CommandFailed(shownArgv, exitCode, stderr || mask(result.startError ?? '', options.redact), timedOut);
    return { stdout: result.stdout, stderr, exitCode: exitCode ?? 0 };
  }
}
