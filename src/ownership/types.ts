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
