import { transportsInUse, type Transport } from '../../config/host-packages.js';
import { FSTYPES, type Config, type Fstype } from '../../config/schema.js';

/** A directory several hosts share, whose file times come from another clock (an NFS server's). */
export interface SharedRoot {
  path: string;
  /** The setting that names it, for the report: "backends.loop.root", "backends.powerflex.metadata_root". */
  setting: string;
  /** loop: volume images and metadata (the loop fence applies); metadata: an array backend's records and leases. */
  kind: 'loop' | 'metadata';
}

/** What the configured profiles need of this host. Backends no profile uses need nothing. */
export interface Needs {
  transports: Set<Transport>;
  /** Every fstype a volume may ask for (the `fstype` option takes any of them). */
  fstypes: readonly Fstype[];
  /** Some SCSI profile (iSCSI or FC) goes through a dm-multipath map: multipathd and dm_multipath. */
  multipath: boolean;
  /** Some SCSI profile fences with SCSI-3 persistent reservations: sg_persist. */
  reservations: boolean;
  /** The iscsi backend's tgtd runs on this host (no array.ssh). */
  localTgt: boolean;
  /** The lio backend's target runs in this kernel (no array.ssh). */
  localLio: boolean;
  sharedRoots: SharedRoot[];
}

export function needsOf(config: Config): Needs {
  const needs: Needs = { transports: transportsInUse(config), fstypes: FSTYPES, multipath: false, reservations: false, localTgt: false, localLio: false, sharedRoots: [] };
  const { backends } = config;
  const scsi = (multipath: boolean, paths: number, reservations: boolean) => {
    // One path without multipath is used as the bare disk; several always go through a map.
    needs.multipath ||= multipath || paths > 1;
    needs.reservations ||= reservations;
  };
  const shared = (path: string, setting: string, kind: SharedRoot['kind'] = 'metadata') => {
    if (!needs.sharedRoots.some((r) => r.path === path)) needs.sharedRoots.push({ path, setting, kind });
  };
  for (const [name, profile] of Object.entries(config.profiles)) {
    switch (profile.backend) {
      case 'loop':
        if (backends.loop.shared) shared(profile.root ?? backends.loop.root, profile.root ? `profiles.${name}.root` : 'backends.loop.root', 'loop');
        break;
      case 'iscsi':
        if (!backends.iscsi) break;
        scsi(backends.iscsi.multipath, backends.iscsi.portals.length, backends.iscsi.reservations);
        needs.localTgt ||= !backends.iscsi.array.ssh;
        break;
      case 'lio': {
        const lio = backends.lio;
        if (!lio) break;
        const paths = (profile.transport ?? lio.transport) === 'fc' ? (lio.fc?.target_wwpns.length ?? 1) : (lio.iscsi?.portals.length ?? 1);
        scsi(lio.multipath, paths, lio.reservations);
        needs.localLio ||= !lio.array.ssh;
        break;
      }
      case 'cinder':
        if (backends.cinder) scsi(backends.cinder.multipath, 1, backends.cinder.reservations);
        break;
      case 'dellsc':
        if (!backends.dellsc) break;
        scsi(backends.dellsc.multipath, 1, backends.dellsc.reservations);
        shared(backends.dellsc.metadata_root, 'backends.dellsc.metadata_root');
        break;
      case 'scbe':
        if (!backends.scbe) break;
        scsi(backends.scbe.multipath, backends.scbe.iscsi.portals.length, backends.scbe.reservations);
        shared(backends.scbe.metadata_root, 'backends.scbe.metadata_root');
        break;
      case 'powerflex':
        if (backends.powerflex) shared(backends.powerflex.metadata_root, 'backends.powerflex.metadata_root');
        break;
      case 'vmdk':
        break;
    }
  }
  return needs;
}
