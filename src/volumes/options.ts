import { InvalidOption } from '../errors.js';
import { FSTYPES, type Config, type Fstype } from '../config/schema.js';
import { formatSize, parseSize, SIZE_SYNTAX } from '../config/size.js';
import type { CloneSource, IoLimits, VolumeEncryption } from '../drivers/types.js';
import { isValidVolumeName } from './names.js';

/** What a user asked for with --opt / driver_opts: only the options actually given. */
export interface RequestedOptions {
  sizeBytes?: number;
  fstype?: Fstype;
  profile?: string;
  mkfsOpts?: string[];
  mountOpts?: string[];
  readonly?: boolean;
  /** A clone: the new volume starts with this volume's data, or its snapshot's. */
  from?: CloneSource;
  ioLimits?: IoLimits;
  /** LUKS2 under the filesystem (encrypted=true). */
  encrypted?: boolean;
}

/** A volume's full, resolved specification (requested options plus configured defaults). */
export interface VolumeSpec {
  name: string;
  profile: string;
  sizeBytes: number;
  fstype: Fstype;
  mkfsOpts: string[];
  mountOpts: string[];
  readonly: boolean;
  ioLimits?: IoLimits;
  /** Set by the manager once it found the key (encryption-keys.ts). */
  encryption?: VolumeEncryption;
}

export const VALID_OPTIONS = ['size', 'fstype', 'profile', 'mkfsopts', 'mountopts', 'readonly', 'from', 'read_iops', 'write_iops', 'read_bps', 'write_bps', 'encrypted'] as const;

/** xfsprogs 5.19 and later refuse filesystems under 300 MiB. */
const MIN_SIZE: Record<Fstype, number> = { ext4: 16 * 1024 ** 2, xfs: 300 * 1024 ** 2 };

// mkfs and mount options are passed as argv elements (no shell), but a "/" could still name
// another device to mkfs, so paths are refused outright.
const MKFS_TOKEN = /^[A-Za-z0-9_=,.:+-]+$/;
const MOUNT_OPTION = /^[A-Za-z0-9_=.:+-]+$/;
const MOUNT_OPTIONS_REFUSED = new Set(['bind', 'rbind', 'remount', 'move', 'loop']);

function parseBoolean(key: string, value: string): boolean {
  const v = value.trim().toLowerCase();
  if (v === '' || v === 'true' || v === 'yes' || v === '1' || v === 'on') return true;
  if (v === 'false' || v === 'no' || v === '0' || v === 'off') return false;
  throw new InvalidOption(`option ${key}=${value}: expected true or false`);
}

function parseMkfsOpts(value: string): string[] {
  const tokens = value.trim().split(/\s+/).filter(Boolean);
  for (const token of tokens) {
    if (!MKFS_TOKEN.test(token)) {
      throw new InvalidOption(`option mkfsopts: ${JSON.stringify(token)} is not allowed: mkfs options are letters, digits and _ = , . : + - (no paths)`);
    }
  }
  return tokens;
}

function parseMountOpts(value: string): string[] {
  const options = value.split(',').map((o) => o.trim()).filter(Boolean);
  for (const option of options) {
    if (!MOUNT_OPTION.test(option) || MOUNT_OPTIONS_REFUSED.has(option)) {
      throw new InvalidOption(`option mountopts: ${JSON.stringify(option)} is not allowed: give a comma-separated list such as noatime,discard`);
    }
  }
  return options;
}

function parseIops(key: string, value: string): number {
  const n = Number(value.trim());
  if (!/^\d+$/.test(value.trim()) || n < 1 || n > 10_000_000) throw new InvalidOption(`option ${key}=${value}: expected a whole number of operations per second, 1 or more`);
  return n;
}

/** `VOLUME` or `VOLUME@SNAPSHOT`, both valid names. */
function parseCloneSource(value: string): CloneSource {
  const [volume, snapshot, ...more] = value.split('@');
  if (more.length || !isValidVolumeName(volume) || (snapshot !== undefined && !isValidVolumeName(snapshot))) {
    throw new InvalidOption(`option from=${value}: expected VOLUME or VOLUME@SNAPSHOT (names of letters, digits, _ . -)`);
  }
  return snapshot === undefined ? { volume } : { volume, snapshot };
}

/** Parses Docker's Opts map (possibly null) into typed options; unknown keys are errors. */
export function parseVolumeOptions(opts: Record<string, string> | null | undefined, config: Config): RequestedOptions {
  const requested: RequestedOptions = {};
  for (const [rawKey, rawValue] of Object.entries(opts ?? {})) {
    const key = rawKey.toLowerCase();
    const value = String(rawValue);
    switch (key) {
      case 'size': {
        const bytes = parseSize(value);
        if (bytes === undefined || bytes <= 0) throw new InvalidOption(`option size=${value}: expected ${SIZE_SYNTAX}`);
        requested.sizeBytes = bytes;
        break;
      }
      case 'fstype':
        if (!(FSTYPES as readonly string[]).includes(value)) {
          throw new InvalidOption(`option fstype=${value}: expected one of ${FSTYPES.join(', ')}`);
        }
        requested.fstype = value as Fstype;
        break;
      case 'profile':
        if (!config.profiles[value]) {
          throw new InvalidOption(`option profile=${value}: no such profile; configured profiles: ${Object.keys(config.profiles).join(', ')}`);
        }
        requested.profile = value;
        break;
      case 'mkfsopts':
        requested.mkfsOpts = parseMkfsOpts(value);
        break;
      case 'mountopts':
        requested.mountOpts = parseMountOpts(value);
        break;
      case 'readonly':
        requested.readonly = parseBoolean(key, value);
        break;
      case 'encrypted':
        requested.encrypted = parseBoolean(key, value);
        break;
      case 'from':
        requested.from = parseCloneSource(value);
        break;
      case 'read_iops':
      case 'write_iops':
        (requested.ioLimits ??= {})[key === 'read_iops' ? 'readIops' : 'writeIops'] = parseIops(key, value);
        break;
      case 'read_bps':
      case 'write_bps': {
        const bytes = parseSize(value);
        if (bytes === undefined || bytes < 1 || !Number.isInteger(bytes)) throw new InvalidOption(`option ${key}=${value}: expected bytes per second, ${SIZE_SYNTAX}`);
        (requested.ioLimits ??= {})[key === 'read_bps' ? 'readBps' : 'writeBps'] = bytes;
        break;
      }
      default:
        throw new InvalidOption(`unknown option ${JSON.stringify(rawKey)}: valid options are ${VALID_OPTIONS.join(', ')}`);
    }
  }
  return requested;
}

/** The profile's default IO limits (profiles.P.read_iops ...), for volumes that give none. */
function profileIoLimits(config: Config, profile: string): IoLimits | undefined {
  const p = config.profiles[profile];
  if (!p) return undefined;
  const limits: IoLimits = {
    ...(p.read_iops !== undefined ? { readIops: p.read_iops } : {}),
    ...(p.write_iops !== undefined ? { writeIops: p.write_iops } : {}),
    ...(p.read_bps !== undefined ? { readBps: p.read_bps } : {}),
    ...(p.write_bps !== undefined ? { writeBps: p.write_bps } : {}),
  };
  return Object.keys(limits).length ? limits : undefined;
}

/** Fills in configured defaults and checks the size against the filesystem minimum and the configured maximum. */
export function resolveSpec(name: string, requested: RequestedOptions, config: Config): VolumeSpec {
  const spec: VolumeSpec = {
    name,
    profile: requested.profile ?? config.defaults.profile,
    sizeBytes: requested.sizeBytes ?? config.defaults.size,
    fstype: requested.fstype ?? config.defaults.fstype,
    mkfsOpts: requested.mkfsOpts ?? [],
    mountOpts: requested.mountOpts ?? [],
    readonly: requested.readonly ?? false,
  };
  const ioLimits = requested.ioLimits ?? profileIoLimits(config, spec.profile);
  if (ioLimits) spec.ioLimits = ioLimits;
  const min = MIN_SIZE[spec.fstype];
  if (spec.sizeBytes < min) {
    throw new InvalidOption(`option size=${formatSize(spec.sizeBytes)}: an ${spec.fstype} volume must be at least ${formatSize(min)}`);
  }
  if (spec.sizeBytes > config.limits.max_size) {
    throw new InvalidOption(`option size=${formatSize(spec.sizeBytes)}: the largest volume allowed is ${formatSize(config.limits.max_size)} (limits.max_size)`);
  }
  return spec;
}

/** The options in `requested` that an existing volume does not match, described for the user. */
export function optionConflicts(existing: VolumeSpec, requested: RequestedOptions): string[] {
  const conflicts: string[] = [];
  const differs = (key: string, have: string, want: string) => {
    if (have !== want) conflicts.push(`${key} is ${have || '(none)'}, asked ${want || '(none)'}`);
  };
  if (requested.sizeBytes !== undefined) differs('size', formatSize(existing.sizeBytes), formatSize(requested.sizeBytes));
  if (requested.fstype !== undefined) differs('fstype', existing.fstype, requested.fstype);
  if (requested.profile !== undefined) differs('profile', existing.profile, requested.profile);
  if (requested.mkfsOpts !== undefined) differs('mkfsopts', existing.mkfsOpts.join(' '), requested.mkfsOpts.join(' '));
  if (requested.mountOpts !== undefined) differs('mountopts', existing.mountOpts.join(','), requested.mountOpts.join(','));
  if (requested.readonly !== undefined) differs('readonly', String(existing.readonly), String(requested.readonly));
  if (requested.ioLimits !== undefined) differs('io limits', describeIoLimits(existing.ioLimits), describeIoLimits(requested.ioLimits));
  if (requested.encrypted !== undefined) differs('encrypted', String(existing.encryption !== undefined), String(requested.encrypted));
  return conflicts;
}

/** IO limits as the options give them: read_bps=1 MiB, write_iops=100. */
export function describeIoLimits(limits: IoLimits | undefined): string {
  if (!limits) return '';
  const parts: string[] = [];
  if (limits.readIops) parts.push(`read_iops=${limits.readIops}`);
  if (limits.writeIops) parts.push(`write_iops=${limits.writeIops}`);
  if (limits.readBps) parts.push(`read_bps=${formatSize(limits.readBps)}`);
  if (limits.writeBps) parts.push(`write_bps=${formatSize(limits.writeBps)}`);
  return parts.join(',');
}
