import { FSTYPES, type Fstype } from '../../config/schema.js';
import { BackendUnavailable, InvalidOption } from '../../errors.js';
import type { OwnershipRecord } from '../../ownership/types.js';
import type { NewVolume, VolumeRecord } from '../types.js';

/**
 * A ballast volume's record in its Cinder volume's metadata: string keys and values of at most
 * 255 characters each (Cinder's limits), one key per field so that no value outgrows its limit.
 * `ballast.volume` marks the volume as ballast's; `ballast.rev` counts the writes of the record.
 */
export type Metadata = Record<string, string>;

export const KEY = {
  volume: 'ballast.volume',
  profile: 'ballast.profile',
  fstype: 'ballast.fstype',
  mkfs: 'ballast.mkfs',
  mount: 'ballast.mount',
  readonly: 'ballast.readonly',
  created: 'ballast.created',
  rev: 'ballast.rev',
  /** "<free|held> <generation> <updatedAt>" */
  owner: 'ballast.owner',
  /** "<hostId> <bootId> <hostGeneration>" of the holder, "" when free. */
  holder: 'ballast.holder',
  holderName: 'ballast.holder_name',
  /** The holder's Cinder attachment: the reservation that keeps every other host out. */
  attachment: 'ballast.attachment',
  /** Where an encrypted volume's key is: "profile", or "key_dir NAME"; absent for a plain volume. */
  encryption: 'ballast.encryption',
} as const;

const MAX_VALUE = 255;

function limited(key: string, value: string): string {
  if (value.length > MAX_VALUE) throw new InvalidOption(`${key} would be ${value.length} characters in Cinder's metadata, where a value holds at most ${MAX_VALUE}: use fewer or shorter options`);
  return value;
}

/** The metadata a new volume is created with: its record, free, at revision 0. */
export function newVolumeMetadata(volume: NewVolume, createdAt: string): Metadata {
  return {
    [KEY.volume]: volume.name,
    [KEY.profile]: volume.profile,
    [KEY.fstype]: volume.fstype,
    [KEY.mkfs]: limited('mkfs options', JSON.stringify(volume.mkfsOpts)),
    [KEY.mount]: limited('mount options', JSON.stringify(volume.mountOpts)),
    [KEY.readonly]: String(volume.readonly),
    [KEY.created]: createdAt,
    [KEY.rev]: '0',
    ...(volume.encryption ? { [KEY.encryption]: volume.encryption.key === 'profile' ? 'profile' : `key_dir ${volume.encryption.name}` } : {}),
    ...ownershipMetadata({ state: 'free', generation: 0, updatedAt: createdAt }, ''),
  };
}

export function ownershipMetadata(record: OwnershipRecord, attachmentId: string): Metadata {
  const holder = record.state === 'held' ? record.holder : undefined;
  return {
    [KEY.owner]: `${record.state} ${record.generation} ${record.updatedAt}`,
    [KEY.holder]: holder ? `${holder.hostId} ${holder.bootId} ${holder.hostGeneration}` : '',
    [KEY.holderName]: holder ? holder.hostname.slice(0, MAX_VALUE) : '',
    [KEY.attachment]: attachmentId,
  };
}

/** Thrown for metadata ballast did not write (edited by hand): the message says which key. */
function broken(name: string, key: string, value: string | undefined): never {
  throw new BackendUnavailable(`the Cinder metadata of volume ${name} has ${key}=${JSON.stringify(value)}, which ballast did not write`);
}

function stringArray(name: string, key: string, value: string | undefined): string[] {
  try {
    const parsed: unknown = JSON.parse(value ?? '');
    if (Array.isArray(parsed) && parsed.every((v) => typeof v === 'string')) return parsed;
  } catch {
    // reported below
  }
  return broken(name, key, value);
}

export function ownershipOf(name: string, meta: Metadata): OwnershipRecord {
  const [state, generationText, updatedAt] = (meta[KEY.owner] ?? '').split(' ');
  const generation = Number(generationText);
  if (!Number.isSafeInteger(generation) || !updatedAt) broken(name, KEY.owner, meta[KEY.owner]);
  if (state === 'free') return { state, generation, updatedAt };
  const [hostId, bootId, hostGenerationText] = (meta[KEY.holder] ?? '').split(' ');
  const hostGeneration = Number(hostGenerationText);
  if (state !== 'held' || !hostId || !bootId || !Number.isSafeInteger(hostGeneration)) broken(name, KEY.holder, meta[KEY.holder]);
  return { state, generation, updatedAt, holder: { hostId, bootId, hostGeneration, hostname: meta[KEY.holderName] ?? '' } };
}

export function revisionOf(name: string, meta: Metadata): number {
  const rev = Number(meta[KEY.rev]);
  return Number.isSafeInteger(rev) && rev >= 0 ? rev : broken(name, KEY.rev, meta[KEY.rev]);
}

export function recordOf(name: string, meta: Metadata, sizeGiB: number): VolumeRecord {
  const fstype = meta[KEY.fstype] as Fstype;
  if (!FSTYPES.includes(fstype)) broken(name, KEY.fstype, meta[KEY.fstype]);
  return {
    name,
    profile: meta[KEY.profile] ?? broken(name, KEY.profile, undefined),
    sizeBytes: sizeGiB * 2 ** 30,
    fstype,
    mkfsOpts: stringArray(name, KEY.mkfs, meta[KEY.mkfs]),
    mountOpts: stringArray(name, KEY.mount, meta[KEY.mount]),
    readonly: meta[KEY.readonly] === 'true',
    createdAt: meta[KEY.created] ?? '',
    ownership: ownershipOf(name, meta),
    ...encryptionOf(name, meta),
  };
}

function encryptionOf(name: string, meta: Metadata): Pick<VolumeRecord, 'encryption'> {
  const value = meta[KEY.encryption];
  if (value === undefined) return {};
  if (value === 'profile') return { encryption: { key: 'profile' } };
  const [kind, keyName] = value.split(' ');
  return kind === 'key_dir' && keyName ? { encryption: { key: 'key_dir', name: keyName } } : broken(name, KEY.encryption, value);
}
