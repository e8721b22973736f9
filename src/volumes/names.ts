import { InvalidOption, InvalidVolumeName } from '../errors.js';

// Docker validates no plugin volume names on Linux; this is the only guard between a name
// and a path. Anything outside the pattern (slashes, "..", NUL, empty) never reaches disk.
const VOLUME_NAME = /^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$/;

export function isValidVolumeName(name: unknown): name is string {
  return typeof name === 'string' && VOLUME_NAME.test(name);
}

export function assertVolumeName(name: unknown): string {
  if (!isValidVolumeName(name)) throw new InvalidVolumeName(String(name));
  return name;
}

/** A volume as Docker names it: a plain name, or inline options naming one (`size=10G,fstype=xfs,name=db`). */
export interface RequestedName {
  name: string;
  /** The options given inline, as --opt would give them; undefined for a plain name. */
  inline?: Record<string, string>;
}

/**
 * Portworx's convention, `docker run --volume-driver ballast -v size=10G,name=db:/data`: a name
 * holding `=` is comma-separated KEY=VALUE pairs, one of them name=NAME (the volume's real name);
 * the others are volume options, with the same rules and errors as --opt.
 */
export function parseRequestedName(raw: unknown): RequestedName {
  if (typeof raw !== 'string' || !raw.includes('=')) return { name: assertVolumeName(raw) };
  const inline: Record<string, string> = {};
  for (const pair of raw.split(',')) {
    const eq = pair.indexOf('=');
    const key = pair.slice(0, eq).trim().toLowerCase();
    if (eq <= 0 || !key) throw new InvalidOption(`inline volume options ${JSON.stringify(raw).slice(0, 200)}: ${JSON.stringify(pair)} is not KEY=VALUE (expected e.g. size=10G,fstype=xfs,name=db)`);
    if (key in inline) throw new InvalidOption(`inline volume options ${JSON.stringify(raw).slice(0, 200)}: ${key} is given twice`);
    inline[key] = pair.slice(eq + 1).trim();
  }
  const { name, ...options } = inline;
  if (name === undefined) throw new InvalidOption(`inline volume options ${JSON.stringify(raw).slice(0, 200)}: name=NAME is missing (the volume's name, e.g. size=10G,name=db)`);
  return { name: assertVolumeName(name), inline: options };
}

/** Inline options and Docker's Opts together; the same key in both must agree. */
export function mergeInline(inline: Record<string, string> | undefined, opts: Record<string, string> | null | undefined): Record<string, string> | null | undefined {
  if (!inline) return opts;
  for (const [key, value] of Object.entries(opts ?? {})) {
    const given = inline[key.toLowerCase()];
    if (given !== undefined && given !== String(value)) throw new InvalidOption(`option ${key} is ${JSON.stringify(given)} inline but ${JSON.stringify(value)} in the options`);
  }
  return { ...opts, ...inline };
}
