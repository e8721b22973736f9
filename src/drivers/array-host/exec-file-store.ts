import { posix } from 'node:path';
import { CommandFailed } from '../../errors.js';
import type { Exec } from '../../exec.js';
import type { FileStore } from '../file-store.js';
import { siblingTempPath } from '../../util/atomic-file.js';
import type { SshSettings } from './ssh-exec.js';

// Remote commands print strerror(3) texts (LC_ALL=C); these give back the errno codes callers
// judge. dash says "Directory nonexistent" where bash says "No such file or directory".
const ERRNO_BY_TEXT: [string, string][] = [
  ['No such file or directory', 'ENOENT'],
  ['Directory nonexistent', 'ENOENT'],
  ['File exists', 'EEXIST'],
  ['cannot overwrite existing file', 'EEXIST'], // bash's noclobber
  ['Directory not empty', 'ENOTEMPTY'],
  ['Not a directory', 'ENOTDIR'],
  ['with directory', 'ENOTDIR'], // mv: cannot overwrite non-directory 'b' with directory 'a'
  ['Is a directory', 'EISDIR'],
  ['with non-directory', 'EISDIR'], // mv: cannot overwrite directory 'b' with non-directory
  ['Permission denied', 'EACCES'],
  ['Operation not permitted', 'EPERM'],
  ['No space left on device', 'ENOSPC'],
  ['Disk quota exceeded', 'EDQUOT'],
  ['Read-only file system', 'EROFS'],
  ['Invalid cross-device link', 'EXDEV'],
  ['Device or resource busy', 'EBUSY'],
  ['Input/output error', 'EIO'],
];

/** The errno of the last stderr line that names one. */
export function errnoFromStderr(stderr: string): string | undefined {
  for (const line of stderr.trim().split('\n').reverse()) {
    const hit = ERRNO_BY_TEXT.find(([text]) => line.includes(text));
    if (hit) return hit[1];
  }
  return undefined;
}

export class RemoteFileError extends Error {
  constructor(
    readonly code: string,
    readonly path: string,
    message: string,
    options: { cause: unknown },
  ) {
    super(message, options);
    this.name = 'RemoteFileError';
  }
}

// The few operations that need more than one command are sh one-liners taking their paths as
// positional parameters ("$1"), never spliced into the script. Each is one round trip, which
// keeps a compare-and-swap (guard, read, replace, unguard) at four.

/**
 * `set -C` (noclobber) makes the shell create with O_EXCL: the exclusive create. Once it
 * succeeded the file is ours, so a failed write (a full disk) removes it, as LocalFileStore's
 * does: an empty or partial guard file would lock its volume until judged stale.
 */
const WRITE_NEW = 'set -C && exec 3> "$1" || exit; { cat >&3 && sync -- "$1"; } || { s=$?; rm -f -- "$1"; exit $s; }';
/** $1 target, $2 temp sibling, $3 directory. */
const WRITE_ATOMIC = 'set -C && cat > "$2" && sync -- "$2" && mv -T -- "$2" "$1" && sync -- "$3" || { s=$?; rm -f -- "$2"; exit $s; }';
const CREATE_SPARSE = 'umask 077 && set -C && : > "$1" && truncate -s "$2" -- "$1" && sync -- "$1"';
/** mv copies when rename(2) says EXDEV; refusing different file systems up front keeps it a rename. $3 and $4 are the parents. */
const RENAME_ACROSS_DIRS =
  'a=$(stat -L -c %d -- "$3") && b=$(stat -L -c %d -- "$4") || exit; ' +
  '[ "$a" = "$b" ] || { echo "cannot move $1 to $2: Invalid cross-device link" >&2; exit 1; }; exec mv -T -- "$1" "$2"';
/** Like truncate(2): no file, no create. */
const TRUNCATE = 'stat -L -c %s -- "$1" > /dev/null && exec truncate -c -s "$2" -- "$1"';
const ENSURE_WRITABLE_DIR = 'mkdir -p -m 700 -- "$1" || exit; test -r "$1" && test -w "$1" || { echo "$1: Permission denied" >&2; exit 1; }';

const sh = (script: string, ...args: string[]) => ['sh', '-c', script, 'sh', ...args];

const isMissing = (err: unknown) => err instanceof RemoteFileError && (err.code === 'ENOENT' || err.code === 'ENOTDIR');

/** Where the files are: SshExec, or any Exec (this host's own runs the same commands locally). */
export interface FileHost extends Exec {
  readonly settings: Pick<SshSettings, 'username' | 'host'>;
  /** For messages: "user@host:port". */
  readonly target: string;
}

/**
 * Files on an array host, through SSH and coreutils there, with LocalFileStore's semantics:
 * the same exclusive creates, atomic replaces and renames, and the same errno codes.
 */
export class RemoteFileStore implements FileStore {
  constructor(private readonly ssh: FileHost) {}

  describe(path: string): string {
    return `${this.ssh.settings.username}@${this.ssh.settings.host}:${path}`;
  }

  async ensureWritableDir(path: string): Promise<void> {
    await this.run(path, sh(ENSURE_WRITABLE_DIR, path));
  }

  async mkdir(path: string): Promise<void> {
    await this.run(path, ['mkdir', '-p', '-m', '700', '--', path]);
  }

  readFile(path: string): Promise<string | undefined> {
    return this.unlessMissing(this.run(path, ['cat', '--', path]));
  }

  async writeNew(path: string, data: string): Promise<void> {
    await this.run(path, sh(WRITE_NEW, path), data);
  }

  async writeAtomic(path: string, data: string): Promise<void> {
    await this.run(path, sh(WRITE_ATOMIC, path, siblingTempPath(path), posix.dirname(path)), data);
  }

  async createSparse(path: string, size: number): Promise<void> {
    await this.run(path, sh(CREATE_SPARSE, path, String(size)));
  }

  async fsyncDir(path: string): Promise<void> {
    await this.run(path, ['sync', '--', path]);
  }

  async rename(from: string, to: string): Promise<void> {
    // -T: onto an existing directory is a rename onto it (ENOTEMPTY unless empty), never a move into it.
    const [fromDir, toDir] = [posix.dirname(posix.resolve(from)), posix.dirname(posix.resolve(to))];
    await this.run(from, fromDir === toDir ? ['mv', '-T', '--', from, to] : sh(RENAME_ACROSS_DIRS, from, to, fromDir, toDir));
  }

  async removeTree(path: string): Promise<void> {
    await this.run(path, ['rm', '-rf', '--', path]);
  }

  async unlink(path: string): Promise<void> {
    await this.run(path, ['rm', '--', path]);
  }

  async readdir(path: string): Promise<string[] | undefined> {
    // The trailing slash makes a regular file fail (ENOTDIR) instead of listing itself.
    const out = await this.unlessMissing(this.run(path, ['ls', '-A1', '--', path.endsWith('/') ? path : `${path}/`]));
    return out?.split('\n').filter((name) => name !== '');
  }

  async stat(path: string): Promise<{ size: number; mtimeMs: number } | undefined> {
    // %Y is whole seconds; the fraction comes from %y ("2026-01-02 03:04:05.123456789 +0000").
    const out = await this.unlessMissing(this.run(path, ['stat', '-L', '-c', '%s %Y %y', '--', path]));
    if (out === undefined) return undefined;
    const [size, seconds, , time] = out.trim().split(' ');
    const fraction = /\.(\d+)$/.exec(time ?? '')?.[1] ?? '0';
    return { size: Number(size), mtimeMs: Number(seconds) * 1000 + Math.floor(Number(`0.${fraction}`) * 1000) };
  }

  async truncate(path: string, size: number): Promise<void> {
    await this.run(path, sh(TRUNCATE, path, String(size)));
  }

  private async unlessMissing(pending: Promise<string>): Promise<string | undefined> {
    try {
      return await pending;
    } catch (err) {
      if (isMissing(err)) return undefined;
      throw err;
    }
  }

  /** stdout of the command; a failure naming an errno becomes a RemoteFileError with that code. */
  private async run(path: string, argv: string[], input?: string): Promise<string> {
    try {
      return (await this.ssh.run(argv, input === undefined ? {} : { input })).stdout;
    } catch (err) {
      // 125-127: the tool itself could not be run (timeout failed, not executable, not found):
      // never a file's errno, or a host without `cat` would look like one without volumes.
      const code = err instanceof CommandFailed && !err.timedOut && (err.exitCode ?? 0) < 125 ? errnoFromStderr(err.stderr) : undefined;
      if (!code) throw err;
      const detail = (err as CommandFailed).stderr.trim().split('\n').pop();
      throw new RemoteFileError(code, path, `${code}: ${detail} (on ${this.ssh.target})`, { cause: err });
    }
  }
}
