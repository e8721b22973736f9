/** What `ballast config check` shows in place of a secret. */
export const MASK = '********';

/** Setting names whose value is a secret itself (a *_file setting names a path and is shown). */
const SECRET_KEY = /(^|_)(password|secret|token)$/;

/**
 * The configuration as `ballast config check` prints it: every inline secret (a CHAP password) and
 * the password of any URL written as https://user:password@host masked, so the output can be pasted
 * into a bug report.
 */
export function maskSecrets(value: unknown, key = ''): unknown {
  if (typeof value === 'string') return SECRET_KEY.test(key) ? MASK : value.replace(/^([a-z][a-z0-9+.-]*:\/\/[^/:@\s]*):[^/@\s]*@/i, `$1:${MASK}@`);
  if (Array.isArray(value)) return value.map((item) => maskSecrets(item));
  if (value && typeof value === 'object') return Object.fromEntries(Object.entries(value).map(([k, v]) => [k, maskSecrets(v, k)]));
  return value;
}
