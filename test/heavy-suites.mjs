// Which suites are heavy (test/heavy-suites.json), for the sequencer (test/long-suites-first.mjs)
// and the heavy slots (test/lab/heavy-slots.ts).
import { readFileSync } from 'node:fs';

const HEAVY = JSON.parse(readFileSync(new URL('./heavy-suites.json', import.meta.url), 'utf8')).paths;

/** `path`: relative to the repository root. */
export function isHeavySuite(path) {
  return HEAVY.some((heavy) => (heavy.endsWith('/') ? path.startsWith(heavy) : path === heavy));
}
