// The error catalogue. Every message is written for the person at the `docker` prompt:
// the plugin layer returns `message` verbatim as the protocol's Err. Codes are stable
// and never reused.

export type ErrorKind = 'invalid' | 'not-found' | 'conflict' | 'unavailable' | 'system';

export abstract class BallastError extends Error {
  abstract readonly code: string;
  abstract readonly kind: ErrorKind;
  constructor(message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = new.target.name;
  }
}

/** A request or option the user can fix. */
export class InvalidRequest extends BallastError {
  readonly code = 'BALLAST_INVALID_REQUEST';
  readonly kind = 'invalid';
}

export class InvalidVolumeName extends BallastError {
  readonly code = 'BALLAST_INVALID_NAME';
  readonly kind = 'invalid';
  constructor(readonly volume: string) {
    super(
      `invalid volume name ${JSON.stringify(volume)}: a name is 1 to 128 characters of ` +
        `letters, digits, '_', '.' and '-', and starts with a letter or digit`,
    );
  }
}

export class InvalidOption extends BallastError {
  readonly code = 'BALLAST_INVALID_OPTION';
  readonly kind = 'invalid';
}

export class VolumeNotFound extends BallastError {
  readonly code = 'BALLAST_VOLUME_NOT_FOUND';
  readonly kind = 'not-found';
  constructor(readonly volume: string) {
    super(`volume ${volume} does not exist`);
  }
}

export class VolumeExists extends BallastError {
  readonly code = 'BALLAST_VOLUME_EXISTS';
  readonly kind = 'conflict';
}

export class SnapshotNotFound extends BallastError {
  readonly code = 'BALLAST_SNAPSHOT_NOT_FOUND';
  readonly kind = 'not-found';
  constructor(
    readonly volume: string,
    readonly snapshot: string,
  ) {
    super(`volume ${volume} has no snapshot ${snapshot} (ballast snapshot ls ${volume} lists them)`);
  }
}

export class SnapshotExists extends BallastError {
  readonly code = 'BALLAST_SNAPSHOT_EXISTS';
  readonly kind = 'conflict';
}

/** The backend has no snapshot mechanism (yet): said with the backend's name. */
export class NotSupported extends BallastError {
  readonly code = 'BALLAST_NOT_SUPPORTED';
  readonly kind = 'invalid';
}

export class VolumeInUse extends BallastError {
  readonly code = 'BALLAST_VOLUME_IN_USE';
  readonly kind = 'conflict';
}

/** The volume's ownership lease is held by another host. */
export class LeaseHeld extends BallastError {
  readonly code = 'BALLAST_LEASE_HELD';
  readonly kind = 'conflict';
}

/** The holder looks dead but the storage cannot fence it: an operator must release the volume. */
export class TakeoverNeedsOperator extends BallastError {
  readonly code = 'BALLAST_TAKEOVER_NEEDS_OPERATOR';
  readonly kind = 'conflict';
}

/** A compare-and-swap lost against a concurrent writer, or a stale fencing generation. */
export class StaleRevision extends BallastError {
  readonly code = 'BALLAST_STALE_REVISION';
  readonly kind = 'conflict';
}

export class ConfigError extends BallastError {
  readonly code = 'BALLAST_CONFIG';
  readonly kind = 'invalid';
}

/** An encrypted volume's key is missing, unsafe, or opens none of its key slots. */
export class EncryptionKeyUnusable extends BallastError {
  readonly code = 'BALLAST_ENCRYPTION_KEY';
  readonly kind = 'invalid';
}

/** A backend (a storage root, an array) cannot be reached or used right now. */
export class BackendUnavailable extends BallastError {
  readonly code: string = 'BALLAST_BACKEND_UNAVAILABLE';
  readonly kind = 'unavailable';
}

/**
 * A volume's metadata file cannot be understood (truncated, not JSON, or fields missing). A
 * BackendUnavailable, so Get still answers with the last record seen; nothing acts on the volume
 * until the file is fixed.
 */
export class VolumeDamaged extends BackendUnavailable {
  override readonly code = 'BALLAST_VOLUME_DAMAGED';
  constructor(
    readonly volume: string,
    readonly file: string,
    readonly problem: string,
    readonly fix: string,
  ) {
    super(`volume ${volume} is damaged: ${file} ${problem}; ballast changed nothing: ${fix}`);
  }
}

export class Timeout extends BallastError {
  readonly code = 'BALLAST_TIMEOUT';
  readonly kind = 'unavailable';
}

/** This host could not attach a volume (log in, find its device) or detach it cleanly. */
export class AttachFailed extends BallastError {
  readonly code = 'BALLAST_ATTACH_FAILED';
  readonly kind = 'unavailable';
}

export class CommandFailed extends BallastError {
  readonly code = 'BALLAST_COMMAND_FAILED';
  readonly kind = 'system';
  constructor(
    readonly argv: readonly string[],
    readonly exitCode: number | undefined,
    readonly stderr: string,
    readonly timedOut: boolean,
  ) {
    const what = timedOut ? 'timed out' : `exited with code ${exitCode ?? 'unknown'}`;
    const detail = stderr.trim().split('\n').slice(-3).join(' ').slice(0, 400);
    super(`command '${argv.join(' ')}' ${what}${detail ? `: ${detail}` : ''}`);
  }
}

/** Wraps whatever escaped an operation as "<op> <volume>: <cause>", once (moby's OpErr). */
export class OperationError extends BallastError {
  readonly code: string;
  readonly kind: ErrorKind;
  constructor(
    readonly op: string,
    readonly volume: string,
    override readonly cause: unknown,
  ) {
    super(`${op} ${volume}: ${cause instanceof Error ? cause.message : String(cause)}`, { cause });
    this.code = cause instanceof BallastError ? cause.code : 'BALLAST_INTERNAL';
    this.kind = cause instanceof BallastError ? cause.kind : 'system';
  }
}

export function errorMessage(err: unknown): string {
  return err instanceof Error ? err.message : String(err);
}

/**
 * The ways a password travels in ballast's API requests: as is, JSON-escaped, URL-encoded, and
 * inside an HTTP Basic header. What a server says back is quoted in errors, and a server may
 * echo the request: these are masked there (`redact`).
 */
export function secretForms(user: string, password: string): string[] {
  return [password, JSON.stringify(password).slice(1, -1), encodeURIComponent(password), Buffer.from(`${user}:${password}`).toString('base64')];
}

/** `text` with every occurrence of each secret replaced by ***. */
export function redact(text: string, secrets: readonly string[]): string {
  let out = text;
  for (const secret of secrets) if (secret) out = out.split(secret).join('***');
  return out;
}

/** Whether `err` is a Node system error with one of these codes (ENOENT, EEXIST...). */
export function isErrno(err: unknown, ...codes: string[]): boolean {
  return codes.includes((err as NodeJS.ErrnoException)?.code ?? '');
}
