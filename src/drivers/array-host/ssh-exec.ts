import { createHash } from 'node:crypto';
import { readFile } from 'node:fs/promises';
import { Semaphore } from 'async-mutex';
import { Client, type ClientChannel } from 'ssh2';
import { BackendUnavailable, CommandFailed, errorMessage } from '../../errors.js';
import { DEFAULT_COMMAND_TIMEOUT_MS, type Exec, type ExecOptions, type ExecResult } from '../../exec.js';
import type { Logger } from '../../log.js';
import { metrics } from '../../metrics/registry.js';

export interface SshSettings {
  host: string;
  port: number;
  username: string;
  privateKeyPath: string;
  /** The server's host key as OpenSSH prints it ("SHA256:..."); any other key is refused. */
  hostKeySha256?: string;
  /** Bound on TCP connect plus SSH handshake and login. Default 10 s. */
  connectTimeoutMs?: number;
  /** Commands in flight on the connection at once; sshd's MaxSessions defaults to 10. Default 8. */
  maxChannels?: number;
}

// The timeout is enforced on the array host by coreutils' timeout: SIGTERM to the command's
// whole process group, SIGKILL KILL_AFTER_S later, like CommandRunner locally. Signalling over
// SSH cannot do it: sshd refuses signal requests on root sessions (it skips privilege
// separation for root), and closing a channel leaves the command running.
const KILL_AFTER_S = 2;
/** When the remote timeout has not ended the command by then, the connection is stuck: give up locally. */
const LOCAL_GRACE_MS = KILL_AFTER_S * 1000 + 1_000;
/** timeout's exit status when it had to stop the command. */
const EXIT_TIMEDOUT = 124;

/** One word for a POSIX shell: single quotes, with ' written as '\''. */
export function shellQuote(word: string): string {
  if (word.includes('\0')) throw new Error('a command argument cannot contain a NUL byte');
  return `'${word.replace(/'/g, `'\\''`)}'`;
}

/**
 * The command line sshd hands to the login shell. C locale, so errors read the same on every
 * host; `exec`, so no shell waits in between.
 */
export function remoteCommandLine(argv: readonly string[], timeoutMs: number): string {
  const seconds = (Math.max(timeoutMs, 1) / 1000).toFixed(3); // timeout reads 0 as "no limit"
  return `export LC_ALL=C; exec timeout -k ${KILL_AFTER_S} ${seconds} ${argv.map(shellQuote).join(' ')}`;
}

function mask(text: string, secrets: readonly string[] | undefined): string {
  let out = text;
  for (const secret of secrets ?? []) if (secret) out = out.split(secret).join('***');
  return out;
}

/** OpenSSH's fingerprint form: "SHA256:" and the unpadded base64 digest of the key blob. */
function fingerprint(key: Buffer): string {
  return `SHA256:${createHash('sha256').update(key).digest('base64').replace(/=+$/, '')}`;
}

const normalizeFingerprint = (fp: string) => (fp.startsWith('SHA256:') ? fp : `SHA256:${fp}`).replace(/=+$/, '');

/** An error from ssh2's exec() meaning the exec request was never sent: safe to retry on a new connection. */
class NotStarted extends Error {}

interface Outcome {
  stdout: string;
  stderr: string;
  exitCode: number | undefined;
  /** Why there is no exit code: a signal, or the connection went away. */
  lost?: string;
  timedOut: boolean;
}

/** One authenticated ssh2 connection. */
class SshConnection {
  closed = false;

  private constructor(private readonly client: Client) {
    client.once('close', () => (this.closed = true));
  }

  static open(settings: SshSettings, privateKey: Buffer, target: string, log: Logger): Promise<SshConnection> {
    const timeoutMs = settings.connectTimeoutMs ?? 10_000;
    const expected = settings.hostKeySha256 && normalizeFingerprint(settings.hostKeySha256);
    return new Promise((resolve, reject) => {
      const client = new Client();
      let offered: string | undefined;
      const fail = (why: string) => {
        clearTimeout(timer);
        client.destroy();
        reject(new BackendUnavailable(`cannot connect to ${target}: ${why}`));
      };
      const timer = setTimeout(() => fail(`no SSH session within ${timeoutMs} ms`), timeoutMs);
      client.on('error', (err) => {
        if (expected && offered && offered !== expected) fail(`host key ${offered} does not match the configured ${expected}; refusing to log in`);
        else fail(err.message);
      });
      client.once('ready', () => {
        clearTimeout(timer);
        client.setNoDelay(true); // requests are small packets; Nagle would hold each for an ACK
        client.removeAllListeners('error');
        // Errors after login (a reset, failed keepalives) end in 'close'; running commands see it there.
        client.on('error', (err) => log.warn('ssh connection error', { target, error: err.message }));
        resolve(new SshConnection(client));
      });
      client.connect({
        host: settings.host,
        port: settings.port,
        username: settings.username,
        privateKey,
        readyTimeout: timeoutMs,
        keepaliveInterval: 15_000,
        keepaliveCountMax: 3,
        hostVerifier: expected
          ? (key: Buffer) => {
              offered = fingerprint(key);
              return offered === expected;
            }
          : undefined,
      });
    });
  }

  /** Runs one command line (see remoteCommandLine) and collects what it printed and how it ended. */
  exec(command: string, input: string | Buffer | undefined, timeoutMs: number): Promise<Outcome> {
    const started = performance.now();
    return new Promise((resolve, reject) => {
      const collect = (channel: ClientChannel) => {
        const stdout: Buffer[] = [];
        const stderr: Buffer[] = [];
        let exit: { code?: number; signal?: string } = {};
        const finish = (stuck: boolean) => {
          clearTimeout(timer);
          const { code, signal } = exit;
          // 124: timeout sent SIGTERM; SIGKILL (KILL_AFTER_S later) takes timeout itself along.
          const timedOut = stuck || (performance.now() - started >= timeoutMs && (code === EXIT_TIMEDOUT || signal === 'SIGKILL'));
          const lost = code !== undefined ? undefined : signal ? `killed by signal ${signal}` : 'the SSH connection closed before the command finished';
          resolve({ stdout: Buffer.concat(stdout).toString('utf8'), stderr: Buffer.concat(stderr).toString('utf8'), exitCode: code, lost, timedOut });
        };
        const timer = setTimeout(() => {
          channel.close();
          finish(true);
        }, timeoutMs + LOCAL_GRACE_MS);
        channel.on('data', (d: Buffer) => stdout.push(d));
        channel.stderr.on('data', (d: Buffer) => stderr.push(d));
        channel.on('exit', (code: number | null, signal?: string) => (exit = { code: code ?? undefined, signal }));
        channel.once('close', () => finish(false));
        channel.end(input ?? ''); // then EOF, like stdin: 'ignore' locally
      };
      try {
        this.client.exec(command, (err, channel) => {
          if (!err) return collect(channel);
          // ssh2 reports a connection lost before the channel opened as "No response from
          // server", and a refused open with a reason; no exec request went out then.
          reject(err.message === 'No response from server' || 'reason' in err ? new NotStarted(err.message) : err);
        });
      } catch (err) {
        reject(new NotStarted(errorMessage(err))); // "Not connected"
      }
    });
  }

  end(): Promise<void> {
    if (this.closed) return Promise.resolve();
    return new Promise((resolve) => {
      const timer = setTimeout(() => {
        this.client.destroy();
        resolve();
      }, 2_000);
      this.client.once('close', () => {
        clearTimeout(timer);
        resolve();
      });
      this.client.end();
    });
  }
}

/**
 * Runs commands on another host over one persistent SSH connection, opened on first use and
 * again after it drops. Each command gets its own channel; its argv is quoted word by word for
 * the remote shell, so no argument is ever interpreted there.
 *
 * The timeout runs on the remote side from the command's start; connecting is bounded by
 * connectTimeoutMs on its own.
 */
export class SshExec implements Exec {
  private connection?: Promise<SshConnection>;
  private readonly channels: Semaphore;

  constructor(
    readonly settings: SshSettings,
    private readonly log: Logger,
    private readonly defaultTimeoutMs = DEFAULT_COMMAND_TIMEOUT_MS,
  ) {
    this.channels = new Semaphore(settings.maxChannels ?? 8);
  }

  /** "user@host:port", for messages. */
  get target(): string {
    return `${this.settings.username}@${this.settings.host}:${this.settings.port}`;
  }

  run(argv: readonly string[], options: ExecOptions = {}): Promise<ExecResult> {
    return this.execute(argv, options.input, options);
  }

  /** Like run, with `input` written to the command's stdin (then EOF). */
  runWithInput(argv: readonly string[], input: string, options: ExecOptions = {}): Promise<ExecResult> {
    return this.execute(argv, input, options);
  }

  /** Ends the connection; a later run opens a new one. */
  async close(): Promise<void> {
    const connection = this.connection;
    this.connection = undefined;
    await (await connection?.catch(() => undefined))?.end();
  }

  private async execute(argv: readonly string[], input: string | Buffer | undefined, options: ExecOptions): Promise<ExecResult> {
    if (!argv[0]) throw new Error('Exec.run needs a command');
    const timeoutMs = options.timeoutMs ?? this.defaultTimeoutMs;
    const command = remoteCommandLine(argv, timeoutMs);
    const started = performance.now();
    const outcome = await this.channels
      .runExclusive(async () => {
        try {
          return await (await this.connected()).exec(command, input, timeoutMs);
        } catch (err) {
          if (!(err instanceof NotStarted)) throw err;
          // The connection died before the command went out (the server restarted, say): once more, on a new one.
          return (await this.connected()).exec(command, input, timeoutMs);
        }
      })
      .catch((err: unknown) => {
        if (err instanceof BackendUnavailable) throw err;
        throw new BackendUnavailable(`cannot run ${argv[0]} on ${this.target}: ${errorMessage(err)}`);
      });

    const shownArgv = argv.map((a) => mask(a, options.redact));
    const stderr = mask(outcome.stderr, options.redact);
    const { exitCode, timedOut } = outcome;
    const ok = !timedOut && exitCode !== undefined && (options.okExitCodes ?? [0]).includes(exitCode);
    this.log.log(ok ? 'debug' : 'warn', 'command', {
      target: this.target,
      argv: shownArgv,
      exitCode,
      timedOut,
      durationMs: Math.round(performance.now() - started),
      ...(ok ? {} : { stderr: stderr.slice(0, 2000) }),
    });
    if (!ok) {
      const why = timedOut ? `no result within ${timeoutMs} ms on ${this.target}` : outcome.lost && `${outcome.lost} (${this.target})`;
      metrics.commandFailed(shownArgv[0], timedOut ? undefined : exitCode, timedOut);
      throw new CommandFailed(shownArgv, timedOut ? undefined : exitCode, [stderr, why].filter(Boolean).join('\n'), timedOut);
    }
    return { stdout: outcome.stdout, stderr, exitCode: exitCode ?? 0 };
  }

  /** The live connection, opening one (once, however many callers wait) when there is none. */
  private async connected(): Promise<SshConnection> {
    for (let attempt = 0; ; attempt++) {
      const pending = (this.connection ??= this.open());
      let connection: SshConnection;
      try {
        connection = await pending;
      } catch (err) {
        if (this.connection === pending) this.connection = undefined; // the next call tries afresh
        throw err;
      }
      if (!connection.closed || attempt === 1) return connection;
      if (this.connection === pending) this.connection = undefined; // dropped since: replace it
    }
  }

  private async open(): Promise<SshConnection> {
    let key: Buffer;
    try {
      key = await readFile(this.settings.privateKeyPath);
    } catch (err) {
      throw new BackendUnavailable(`cannot connect to ${this.target}: cannot read the private key: ${errorMessage(err)}`);
    }
    const connection = await SshConnection.open(this.settings, key, this.target, this.log);
    this.log.debug('ssh connected', { target: this.target });
    return connection;
  }
}
