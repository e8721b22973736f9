import { execa } from 'execa';
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
  input?: string;
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

function mask(text: string, secrets: readonly string[] | undefined): string {
  let out = text;
  for (const secret of secrets ?? []) if (secret) out = out.split(secret).join('***');
  return out;
}

/** Runs commands with execa: no shell, a timeout on every call, argv and exit code logged. */
export class CommandRunner implements Exec {
  constructor(
    private readonly log: Logger,
    private readonly defaultTimeoutMs = DEFAULT_COMMAND_TIMEOUT_MS,
  ) {}

  async run(argv: readonly string[], options: ExecOptions = {}): Promise<ExecResult> {
    const [file, ...args] = argv;
    if (!file) throw new Error('Exec.run needs a command');
    const timeout = options.timeoutMs ?? this.defaultTimeoutMs;
    const started = performance.now();
    const subprocess = execa(file, args, {
      reject: false,
      timeout,
      forceKillAfterDelay: FORCE_KILL_MS,
      ...(options.input !== undefined ? { input: options.input } : { stdin: 'ignore' as const }),
      env: { LC_ALL: 'C' },
    });
    const shownArgv = argv.map((a) => mask(a, options.redact));
    // execa settles only once the command has exited and its output pipes have closed. Neither
    // happens when the command is stuck in the kernel (state D: SIGKILL waits for the syscall) or
    // left a child holding its output: stop waiting then, so the caller's bound holds.
    let timer: ReturnType<typeof setTimeout> | undefined;
    const abandoned = new Promise<undefined>((resolve) => (timer = setTimeout(() => resolve(undefined), timeout + FORCE_KILL_MS + EXIT_GRACE_MS)));
    const result = await Promise.race([subprocess, abandoned]);
    clearTimeout(timer);
    if (result === undefined) {
      subprocess.stdout?.destroy();
      subprocess.stderr?.destroy();
      const durationMs = Math.round(performance.now() - started);
      this.log.error('command', { argv: shownArgv, pid: subprocess.pid, timedOut: true, stuck: true, durationMs });
      metrics.commandFailed(shownArgv[0], undefined, true);
      throw new CommandFailed(
        shownArgv,
        undefined,
        `still running ${durationMs} ms after it started, though it was killed at ${timeout} ms: it is stuck in the kernel (a device or server that stopped answering), or a process it started holds its output; ballast stopped waiting for it`,
        true,
      );
    }
    const exitCode = result.exitCode;
    const stderr = mask(String(result.stderr ?? ''), options.redact);
    const ok = !result.timedOut && exitCode !== undefined && (options.okExitCodes ?? [0]).includes(exitCode);
    this.log.log(ok ? 'debug' : 'warn', 'command', {
      argv: shownArgv,
      exitCode,
      timedOut: result.timedOut,
      durationMs: Math.round(performance.now() - started),
      ...(ok ? {} : { stderr: stderr.slice(0, 2000) }),
    });
    if (!ok) metrics.commandFailed(shownArgv[0], exitCode, result.timedOut);
    if (!ok) throw new CommandFailed(shownArgv, exitCode, stderr || String(result.message ?? ''), result.timedOut);
    return { stdout: String(result.stdout ?? ''), stderr, exitCode: exitCode ?? 0 };
  }
}
