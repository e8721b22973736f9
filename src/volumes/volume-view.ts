import { formatSize } from '../config/size.js';
import type { BackendDriver, VolumeRecord } from '../drivers/index.js';
import { describeHolder } from '../ownership/lease.js';
import { describeIoLimits } from './options.js';
import { totalRefs, type MountedVolume } from './mount-state.js';

/** What Get and List report about a volume. */
export interface VolumeView {
  name: string;
  mountpoint: string;
  createdAt: string;
  status: Record<string, unknown>;
}

/** What this host knows beside the record: its own mount of the volume, and the holder's lease age. */
export interface LocalState {
  hostId: string;
  local: MountedVolume | undefined;
  /** The mount point Docker may use: set only while containers mount it. */
  mountpoint: string;
  leaseAge: (hostId: string) => { renewedSecondsAgo?: number };
  /** Why the backend could not be read just now (the view is of the last record seen). */
  unhealthy: string | undefined;
}

/** Records that stand in for a volume whose record was never read (VolumeIndex): nothing in them is known. */
const UNREAD = new WeakSet<VolumeRecord>();

/** A volume seen in the backend's listing whose record could not be read: only its name is known. */
export function unreadRecord(name: string): VolumeRecord {
  const record: VolumeRecord = {
    name,
    profile: '',
    sizeBytes: 0,
    fstype: 'ext4',
    mkfsOpts: [],
    mountOpts: [],
    readonly: false,
    createdAt: '',
    ownership: { state: 'free', generation: 0, updatedAt: '' },
  };
  UNREAD.add(record);
  return record;
}

/** "damaged: <file> ...: <fix>" for a VolumeDamaged message, "unavailable: ..." for any other failure. */
function health(unhealthy: string | undefined): string {
  if (unhealthy === undefined) return 'ok';
  const damage = /^volume \S+ is damaged: ([^]*)$/.exec(unhealthy);
  return damage ? `damaged: ${damage[1]}` : `unavailable: ${unhealthy}`;
}

/** Get's and List's answer for one volume: the record, this host's mount, the lease, the health. */
export function volumeView(driver: BackendDriver, record: VolumeRecord, here: LocalState): VolumeView {
  const { local } = here;
  const ownership = record.ownership;
  const attachment = local ? { host: here.hostId, device: local.device, mountpoint: local.mountpoint, mounts: totalRefs(local) } : 'detached';
  if (UNREAD.has(record)) {
    return { name: record.name, mountpoint: here.mountpoint, createdAt: '', status: { backend: driver.kind, attachment, health: health(here.unhealthy ?? 'its record was not read yet') } };
  }
  return {
    name: record.name,
    mountpoint: here.mountpoint,
    createdAt: record.createdAt,
    status: {
      size: formatSize(record.sizeBytes),
      sizeBytes: record.sizeBytes,
      fstype: record.fstype,
      profile: record.profile,
      backend: driver.kind,
      readonly: record.readonly,
      ...(record.mountOpts.length ? { mountopts: record.mountOpts.join(',') } : {}),
      ...(record.mkfsOpts.length ? { mkfsopts: record.mkfsOpts.join(' ') } : {}),
      ...(record.ioLimits ? { ioLimits: describeIoLimits(record.ioLimits), ioLimitsBy: driver.ioLimitsBy ?? 'cgroup block IO throttle, per container' } : {}),
      ...(record.encryption ? { encrypted: 'LUKS2' } : {}),
      attachment,
      lease:
        ownership.state === 'held'
          ? {
              state: 'held',
              holder: describeHolder(ownership),
              generation: ownership.generation,
              since: ownership.updatedAt,
              ...here.leaseAge(ownership.holder.hostId),
            }
          : { state: 'free', generation: ownership.generation },
      ...(local?.fenced ? { fenced: local.fenced } : {}),
      health: health(here.unhealthy),
    },
  };
}
