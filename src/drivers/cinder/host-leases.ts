import { BackendUnavailable } from '../../errors.js';
import type { HostLease } from '../../ownership/types.js';

/** The Cinder volume whose metadata holds the host leases, one key per host, each written only by its host. */
// Never a volume's name: those are "ballast-<name>".
export const HOST_LEASES_VOLUME = 'ballast_host_leases';

export const hostLeaseKey = (hostId: string) => `host.${hostId}`;

/** Short keys: a value holds 255 characters at most, and a host id alone may take 64. */
interface Encoded {
  b: string;
  n: string;
  g: number;
  s: number;
  l: number;
  r: number;
  w: string;
}

export function encodeHostLease(lease: HostLease): string {
  const encoded: Encoded = { b: lease.bootId, n: lease.hostname.slice(0, 100), g: lease.generation, s: lease.renewSeq, l: lease.leaseSeconds, r: lease.renewEverySeconds, w: lease.renewedAtWall };
  return JSON.stringify(encoded);
}

export function decodeHostLease(hostId: string, value: string): HostLease {
  try {
    const e = JSON.parse(value) as Encoded;
    if (typeof e.b === 'string' && [e.g, e.s, e.l, e.r].every(Number.isFinite)) {
      return { hostId, bootId: e.b, hostname: String(e.n), generation: e.g, renewSeq: e.s, leaseSeconds: e.l, renewEverySeconds: e.r, renewedAtWall: String(e.w) };
    }
  } catch {
    // reported below
  }
  throw new BackendUnavailable(`the host lease of ${hostId} in Cinder volume ${HOST_LEASES_VOLUME} is not one ballast wrote: ${JSON.stringify(value.slice(0, 80))}`);
}
