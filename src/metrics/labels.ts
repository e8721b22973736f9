/** What a label value becomes when it is not one a dashboard can rely on. */
export const OTHER = 'other';

const SAFE = /^[A-Za-z0-9_.:-]{1,64}$/;

/**
 * Keeps one label's values few and harmless: a value that is not a short plain word, or a new
 * value once `max` distinct ones were seen, is reported as "other". A free-form value (a path,
 * an error text, a secret by mistake) never becomes a series of its own.
 */
export class LabelGuard {
  private readonly seen = new Set<string>();

  constructor(private readonly max: number) {}

  value(raw: string | undefined): string {
    if (raw === undefined || !SAFE.test(raw)) return OTHER;
    if (this.seen.has(raw)) return raw;
    if (this.seen.size >= this.max) return OTHER;
    this.seen.add(raw);
    return raw;
  }
}

/** The tool of a failed command: argv[0]'s basename, never an argument. */
export function toolOf(argv0: string | undefined): string {
  return (argv0 ?? '').split('/').pop() ?? '';
}

/** An exit code as a label: 0-255, "timeout" when the command was killed at its bound, else "none". */
export function exitCodeLabel(exitCode: number | undefined, timedOut: boolean): string {
  if (timedOut) return 'timeout';
  if (exitCode === undefined || !Number.isInteger(exitCode) || exitCode < 0 || exitCode > 255) return 'none';
  return String(exitCode);
}
