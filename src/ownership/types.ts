import { BackendUnavailable } from '../errors.js';

/** Who this daemon is: stable across restarts (hostId) and per kernel boot (bootId). */
export interface HostIdentity {
  hostId: string;
  bootId: string;
  hostname: string;
}

export interface Holder {
  hostId: string;
  bootId: string;
  hostname: string;
  /** The holder's host-lease generation when it took the volume (0 on backends without host leases). */
  hostGeneration: number;
}

/**
 * A host's liveness record in one backend (sanlock's delta lease): the host advances
 * `renewSeq` every `renewEverySeconds`; others judge it dead when it has not moved for
 * `leaseSeconds` on their own monotonic clock. `generation` rises when the host comes back
 * with a new boot id: everything it held in an earlier boot is lost.
 */
export interface HostLease {
  hostId: string;
  bootId: string;
  hostname: string;
  generation: number;
  renewSeq: number;
  leaseSeconds: number;
  renewEverySeconds: number;
  /** For people reading the file; never compared across hosts. */
  renewedAtWall: string;
}

/**
 * A host's lease record is there but cannot be parsed (empty, cut off mid-write: a crash on a
 * full disk). Others count that host alive; the host itself rewrites its own record from
 * `progress`, how far it had got by what survived beside the record (undefined: nothing did).
 */
export class HostLeaseDamaged extends BackendUnavailable {
  constructor(
    message: string,
    /** The file and what is wrong with it. */
    readonly damage: string,
    readonly progress?: { generation: number; renewSeq: number },
  ) {
    super(message);
  }
}

/** Where a backend keeps host leases: one record per host, written only by that host. */
export interface HostLeaseStore {
  /** The host's record as stored now: what a holder is judged by. Throws HostLeaseDamaged for a record that cannot be parsed. */
  readHostLease(hostId: string): Promise<HostLease | undefined>;
  /**
   * Every host's lease, its renewSeq current as of this call: called by every daemon every
   * round, so a store may answer from what it read before plus a cheaper sign of progress (file
   * roots: one listing, see drivers/host-beacons.ts). renewedAtWall may then be older than renewSeq.
   */
  listHostLeases(): Promise<HostLease[]>;
  writeHostLease(lease: HostLease): Promise<void>;
}

/**
 * A volume's ownership record, kept in the backend's metadata beside the volume.
 * `generation` rises on every acquisition and is the fencing token.
 */
export type OwnershipRecord =
  | { state: 'free'; generation: number; updatedAt: string }
  | { state: 'held'; holder: Holder; generation: number; updatedAt: string };

export interface Versioned<T> {
  value: T;
  /** The metadata revision this value was read at: the compare-and-swap precondition. */
  revision: number;
}

/** What a backend provides so the lease can be kept in its metadata. */
export interface OwnershipStore {
  /** The current record, or undefined when the volume does not exist. */
  readOwnership(name: string): Promise<Versioned<OwnershipRecord> | undefined>;
  /** Writes `next` only if the metadata is still at `expectedRevision`; throws StaleRevision otherwise. */
  writeOwnership(name: string, expectedRevision: number, next: OwnershipRecord): Promise<number>;
}

export const FREE_OWNERSHIP: OwnershipRecord = Object.freeze({ state: 'free', generation: 0, updatedAt: new Date(0).toISOString() });
