import { CommandFailed } from '../../src/errors.js';
import type { Exec, ExecOptions, ExecResult } from '../../src/exec.js';

/** A scripted reply: matched against the joined argv by prefix or regular expression. */
export interface ScriptedReply {
  match: string | RegExp;
  exitCode?: number;
  stdout?: string;
  stderr?: string;
  timedOut?: boolean;
  /** Use this reply once, then fall through to later ones. */
  once?: boolean;
}

/**
 * The Exec fake for unit tests: records every argv and answers from a script, judging
 * exit codes exactly as CommandRunner does. Its real counterpart is exercised by the
 * integration tests (test/integration/loop-*.test.ts) with the same command sequences.
 */
export class FakeExec implements Exec {
  readonly calls: string[][] = [];
  private readonly replies: ScriptedReply[] = [];

  reply(...replies: ScriptedReply[]): this {
    this.replies.push(...replies);
    return this;
  }

  /** No superblock bytes from scripted devices: a Filesystem on this fake never opens a real device. */
  async readExt4Superblock(): Promise<Buffer> {
    return Buffer.alloc(0);
  }

  get commands(): string[] {
    return this.calls.map((argv) => argv.join(' '));
  }

  async run(argv: readonly string[], options: ExecOptions = {}): Promise<ExecResult> {
    this.calls.push([...argv]);
    const line = argv.join(' ');
    const index = this.replies.findIndex((r) => (typeof r.match === 'string' ? line.startsWith(r.match) : r.match.test(line)));
    const reply = index >= 0 ? this.replies[index]! : { match: '' };
    if (reply.once) this.replies.splice(index, 1);
    const exitCode = reply.exitCode ?? 0;
    const ok = !reply.timedOut && (options.okExitCodes ?? [0]).includes(exitCode);
    if (!ok) throw new CommandFailed([...argv], exitCode, reply.stderr ?? '', reply.timedOut ?? false);
    return { stdout: reply.stdout ?? '', stderr: reply.stderr ?? '', exitCode };
  }
}

/** FakeExec that also keeps each call's timeout. */
export class TimedExec extends FakeExec {
  readonly timeouts: (number | undefined)[] = [];
  override run(argv: readonly string[], options: ExecOptions = {}): Promise<ExecResult> {
    this.timeouts.push(options.timeoutMs);
    return super.run(argv, options);
  }
}
