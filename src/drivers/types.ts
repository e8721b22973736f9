import type { Fstype } from '../config/schema.js';
import type { Export } from '../export.js';
import type { OwnershipRecord, OwnershipStore, Versioned } from '../ownership/types.js';


/** A volume as its backend stores it. */
export interface VolumeRecord {
  name: string;
  profile: string;
  sizeBytes: number;
  fstype: Fstype;
  mkfsOpts: string[];
  mountOpts: string[];
  readonly: boolean;
  createdAt: string;
  ownership: OwnershipRecord;
}

export type NewVolume = Omit<VolumeRecord, 'createdAt' | 'ownership'>;

/** An array-side driver: provisions volumes and keeps their metadata. Never runs host-side commands. */
export interface BackendDriver extends OwnershipStore {
  /** "loop", later "iscsi", "vmdk". */
  readonly kind: string;
  /** "global" when every host sees the same volumes. */
  readonly scope: 'local' | 'global';
  /** Creates the volume, exactly once across hosts; throws VolumeExists with the existing record otherwise. */
  create(volume: NewVolume): Promise<VolumeRecord>;
  /** Deletes the volume and its data. Deleting a missing volume succeeds. */
  destroy(name: string): Promise<void>;
  /** The volume's record, or undefined if it does not exist. Cheap: Get calls this. */
  read(name: string): Promise<Versioned<VolumeRecord> | undefined>;
  list(): Promise<VolumeRecord[]>;
  /** Raises the provisioned size; the filesystem grows at the next mount. */
  grow(name: string, sizeBytes: number): Promise<VolumeRecord>;
  /** Makes the volume reachable from this host. */
  export(name: string): Promise<Export>;
  unexport(name: string): Promise<void>;
  /** Throws BackendUnavailable when the backend cannot be used now. */
  checkHealth(): Promise<void>;
}

export class VolumeAlreadyExists extends Error {
  constructor(readonly existing: VolumeRecord) {
    super(`volume ${existing.name} already exists`);
  }
}
