/**
 * How this host reaches a volume: produced by a backend driver, consumed by an attacher.
 * The one value that passes between the two layers, so neither imports the other.
 */
export type Export = LoopExport | IscsiExport | FcExport | NvmeTcpExport | VmdkExport;

export interface LoopExport {
  transport: 'loop';
  file: string;
  /**
   * Attach from an open file that holds an exclusive lock on the image (NFSv4: the server's
   * fence), waiting up to lockWaitSeconds for another host to lose it. Absent: plain losetup.
   */
  lock?: { waitSeconds: number };
}

export interface ChapCredentials {
  username: string;
  password: string;
}

export interface IscsiExport {
  transport: 'iscsi';
  /** The target's IQN; ballast exports one target per volume. */
  iqn: string;
  /** "address:port" as this host reaches the array; more than one means multipath. */
  portals: string[];
  lun: number;
  chap?: ChapCredentials;
  /** Use a dm-multipath map even over one portal (hosts run multipathd, which would grab the disk). */
  multipath: boolean;
  /** Fence at the array with SCSI-3 persistent reservations (the array supports them). */
  reservations: boolean;
}

export interface FcExport {
  transport: 'fc';
  /**
   * The array's target port WWPNs this host reaches the LUN through, 16 lower-case hex digits
   * ("2000525400000101"); each Online remote port with one of these names is a path.
   */
  targetWwpns: string[];
  /** The LUN number the array mapped the volume to for this host (256 and more allowed). */
  lun: number;
  /** Use a dm-multipath map even over one path (hosts run multipathd, which would grab the disk). */
  multipath: boolean;
  /** Fence at the array with SCSI-3 persistent reservations (the array supports them). */
  reservations: boolean;
}

export interface NvmeTcpExport {
  transport: 'nvme-tcp';
  /** The NVM subsystem's NQN ("nqn.2014-08.org.example:array1"). */
  subsystemNqn: string;
  /** "address:port" ("[v6]:port" for IPv6) as this host reaches the array; more than one is native NVMe multipath. */
  portals: string[];
  /** The namespace's NGUID, 32 lower-case hex digits, which the host reads in /sys/block/nvmeXnY/nguid. */
  nguid: string;
}

export interface VmdkExport {
  transport: 'vmdk';
  /**
   * The virtual disk's UUID as 32 lower-case hex digits. With disk.EnableUUID set on the VM
   * the guest sees it as the disk's WWN: /sys/block/sdX/device/wwid = "naa.<diskUuid>".
   */
  diskUuid: string;
  /** The disk file, "[datastore] ballast/<name>/disk.vmdk", for messages. */
  file: string;
}

export type Transport = Export['transport'];

/** Who asks for an export: what an array needs to let this host, and only this host, in. */
export interface Initiator {
  hostId: string;
  /** This host's iSCSI initiator name, for the target's ACL. */
  iqn?: string;
  /** This host's FC initiator port WWPNs (16 lower-case hex digits), for the array's ACLs. */
  wwpns?: string[];
  /** This host's NVMe host NQN (/etc/nvme/hostnqn), for the subsystem's allowed hosts. */
  nqn?: string;
  /** The vSphere VM this host runs in: its BIOS UUID (/sys/class/dmi/id/product_uuid), lower case. */
  vmUuid?: string;
}

/** Narrows an export to the transport an attacher handles; any other is a wiring bug. */
export function exportOf<T extends Transport>(exp: Export, transport: T): Extract<Export, { transport: T }> {
  if (exp.transport !== transport) throw new Error(`the ${transport} attacher got a ${exp.transport} export`);
  return exp as Extract<Export, { transport: T }>;
}
