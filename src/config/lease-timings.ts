import { z } from 'zod';

/**
 * The lease timings. A user sets the one they care about (usually `seconds`); the others are
 * derived from it in the proportions of the defaults (20 / 12 / 2), so `lease: {seconds: 10}`
 * alone is a valid configuration. What was derived is kept in `derived`, for `config check`.
 */
const DEFAULT_SECONDS = 20;
const FENCE_SHARE = 0.6; // fence_after = 12 of 20
const DEFAULT_RENEW = 2;

export const leaseTimings = z
  .strictObject({
    /** Another host may take this host's volumes after its lease went this long without renewal. */
    seconds: z.number().positive().max(300).optional(),
    /** How often this host renews its lease (one write per backend). */
    renew_every: z.number().positive().max(60).optional(),
    /** This host stops using its volumes (self-fence) after this long without a renewal. */
    fence_after: z.number().positive().max(300).optional(),
    /** How long a Mount waits for another host to release a volume (under Docker's 120 s). */
    mount_wait: z.number().nonnegative().max(110).default(60),
  })
  .default({ mount_wait: 60 })
  .transform(deriveTimings)
  .refine((l) => l.renew_every * 2 <= l.fence_after && l.fence_after + 1 <= l.seconds, {
    // The extra second covers the watchdog's poll and the shutdown itself.
    message: 'expected renew_every * 2 <= fence_after <= seconds - 1, so a host fences itself before others may take its volumes',
  });

export interface LeaseTimings {
  seconds: number;
  renew_every: number;
  fence_after: number;
  mount_wait: number;
  /** One line per timing that was not set but derived, e.g. "fence_after = 6 (0.6 x seconds)". */
  derived: string[];
}

const tenths = (n: number) => Math.round(n * 10) / 10;

function deriveTimings(set: { seconds?: number; renew_every?: number; fence_after?: number; mount_wait: number }): LeaseTimings {
  const derived: string[] = [];
  const explicit = set.seconds !== undefined || set.fence_after !== undefined || set.renew_every !== undefined;
  const note = (line: string) => {
    if (explicit) derived.push(line);
  };

  let seconds = set.seconds;
  if (seconds === undefined) {
    if (set.fence_after !== undefined) {
      seconds = Math.max(set.fence_after + 1, Math.ceil(set.fence_after / FENCE_SHARE));
      note(`seconds = ${seconds} (fence_after / ${FENCE_SHARE}, at least fence_after + 1)`);
    } else if (set.renew_every !== undefined) {
      seconds = Math.max(DEFAULT_SECONDS, set.renew_every * 10);
      note(`seconds = ${seconds} (the default, or 10 x renew_every when larger)`);
    } else {
      seconds = DEFAULT_SECONDS;
    }
  }
  let fence_after = set.fence_after;
  if (fence_after === undefined) {
    fence_after = Math.min(tenths(seconds * FENCE_SHARE), tenths(seconds - 1));
    if (set.renew_every !== undefined) fence_after = Math.min(Math.max(fence_after, set.renew_every * 2), tenths(seconds - 1));
    note(`fence_after = ${fence_after} (${FENCE_SHARE} x seconds, at most seconds - 1)`);
  }
  let renew_every = set.renew_every;
  if (renew_every === undefined) {
    renew_every = Math.max(0.1, Math.min(DEFAULT_RENEW, tenths(fence_after / 2)));
    note(`renew_every = ${renew_every} (${DEFAULT_RENEW}, or fence_after / 2 when smaller)`);
  }
  return { seconds, renew_every, fence_after, mount_wait: set.mount_wait, derived };
}
