import type { Config } from './schema.js';

/**
 * The Debian packages this host needs for what the configuration uses. `scripts/start.sh`
 * installs these (through `ballast config packages`), so a loop-only host never gets the iSCSI,
 * multipath or NVMe tools, and a host with an iSCSI profile gets them without a flag.
 */
export const BASE_PACKAGES = ['util-linux', 'mount', 'e2fsprogs', 'xfsprogs', 'cryptsetup-bin'] as const; // cryptsetup: encrypted=true
const SCSI_MULTIPATH = ['multipath-tools', 'sg3-utils'] as const; // dm-multipath maps, SCSI-3 reservations
const ISCSI = ['open-iscsi', ...SCSI_MULTIPATH] as const;
const NVME_TCP = ['nvme-cli'] as const;

export const ALL_TRANSPORTS = ['loop', 'iscsi', 'fc', 'nvme-tcp', 'vmdk'] as const;
export type Transport = (typeof ALL_TRANSPORTS)[number];

/** The transport each configured profile attaches over. */
export function transportsInUse(config: Config): Set<Transport> {
  const used = new Set<Transport>();
  for (const profile of Object.values(config.profiles)) {
    switch (profile.backend) {
      case 'loop':
        used.add('loop');
        break;
      case 'lio':
        used.add((profile.transport ?? config.backends.lio?.transport) === 'fc' ? 'fc' : 'iscsi');
        break;
      case 'powerflex':
        used.add('nvme-tcp');
        break;
      case 'vmdk':
        used.add('vmdk');
        break;
      case 'iscsi':
      case 'cinder':
      case 'dellsc':
      case 'scbe':
        used.add('iscsi');
        break;
    }
  }
  return used;
}

export function packagesFor(transports: Iterable<Transport>): string[] {
  const packages = new Set<string>(BASE_PACKAGES);
  for (const transport of transports) {
    if (transport === 'iscsi') ISCSI.forEach((p) => packages.add(p));
    if (transport === 'fc') SCSI_MULTIPATH.forEach((p) => packages.add(p));
    if (transport === 'nvme-tcp') NVME_TCP.forEach((p) => packages.add(p));
  }
  return [...packages];
}
