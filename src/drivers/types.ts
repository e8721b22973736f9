import type { Fstype } from '../config/schema.js';
import type { Export, Initiator, Transport } from '../export.js';
import type { OwnershipRecord, OwnershipStore, Versioned } from '../ownership/types.js';
import type { CopyMethod, CopyProgress, CopyResult } from './image-copy.js';


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
  /** Per-volume IO limits, applied to every container that mounts it (absent: none). */
  ioLimits?: IoLimits;
  /** LUKS2 between the attached device and the filesystem (absent: none), and where its key is. */
  encryption?: VolumeEncryption;
}

/** Where an encrypted volume's key is found on each host: its profile's key_file, or KEY_DIR/NAME.key. */
export type VolumeEncryption = { key: 'profile' } | { key: 'key_dir'; name: string };

/** Throttles per container on the volume's device; each absent one is unlimited. */
export interface IoLimits {
  readIops?: number;
  writeIops?: number;
  /** Bytes per second. */
  readBps?: number;
  writeBps?: number;
}

export type NewVolume = Omit<VolumeRecord, 'createdAt' | 'ownership'>;

/** A point-in-time copy of a volume's data, kept by its backend beside the volume. */
export interface SnapshotRecord {
  volume: string;
  name: string;
  createdAt: string;
  sizeBytes: number;
  fstype: Fstype;
  /** How it was made: shared extents, or the data copied. */
  method: CopyMethod;
}

/** Where a clone's data comes from: a volume as it is now, or one of its snapshots. */
export interface CloneSource {
  volume: string;
  snapshot?: string;
}

/** Snapshots and clones, on backends that have them. */
export interface SnapshotCapable {
  /** Copies the volume's data as it is now into a new snapshot; the caller froze it or holds its lease. */
  createSnapshot(volume: VolumeRecord, name: string, onProgress?: (p: CopyProgress) => void): Promise<SnapshotRecord & CopyResult>;
  /** The snapshots of `volume`, or of every volume. */
  listSnapshots(volume?: string): Promise<SnapshotRecord[]>;
  removeSnapshot(volume: string, name: string): Promise<void>;
  /** Creates `volume` holding the data of `source`; for a live source the caller froze it or holds its lease. */
  createFrom(volume: NewVolume, source: CloneSource, onProgress?: (p: CopyProgress) => void): Promise<VolumeRecord & { method: CopyMethod }>;
}

/** An array-side driver: provisions volumes and keeps their metadata. Never runs host-side commands. */
export interface BackendDriver extends OwnershipStore {
  /** "loop", "iscsi", later "vmdk". */
  readonly kind: string;
  /** How hosts reach its volumes: which attacher takes its exports. */
  readonly transport: Transport;
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
  /** Makes the volume reachable from this host, and from no other where the storage can enforce that. */
  export(name: string, initiator: Initiator): Promise<Export>;
  unexport(name: string, initiator: Initiator): Promise<void>;
  /** Throws BackendUnavailable when the backend cannot be used now. */
  checkHealth(): Promise<void>;
  /** Volume names and their change markers, for the volume index; undefined (or absent) where none are kept. */
  changes?(): Promise<ChangeListing | undefined>;
  /** Fixes missing or outdated change markers of `name` after a reader read `revision`. */
  repairMarkers?(name: string, revision: number, seen: number[]): Promise<void>;
  /** Run once before the daemon serves; a thrown error stops it (a root that cannot be shared safely). */
  start?(): Promise<void>;
  /**
   * Whether another host may take a volume of a silent holder by itself (default automatic):
   * manual where the storage has no way to stop the former holder from writing.
   */
  readonly takeover?: 'automatic' | 'manual';
  /** Whether the volume's record keeps `ioLimits` (every backend whose records are files); others refuse the options. */
  readonly keepsIoLimits?: boolean;
  /** Who enforces `ioLimits` when the storage does ("PowerFlex setMappedSdcLimits, per mapping"); absent: the host's cgroup throttle. */
  readonly ioLimitsBy?: string;
  /** Whether the volume's record keeps `encryption`; a backend without it refuses encrypted=true. */
  readonly keepsEncryption?: boolean;
  /** Snapshots and clones; absent where the backend has none (yet). */
  readonly snapshots?: SnapshotCapable;
}

/** What a backend's root lists: volume names, and per name the revisions its change markers name. */
export interface ChangeListing {
  names: string[];
  revisions: Map<string, number[]>;
}

export class VolumeAlreadyExists extends Error {
  constructor(readonly existing: VolumeRecord) {
    super(`volume ${existing.name} already exists`);
  }
}
