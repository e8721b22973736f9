import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { AttachFailed, errorMessage } from '../../errors.js';
import type { Exec } from '../../exec.js';
import { exportOf, type Export, type VmdkExport } from '../../export.js';
import type { Logger } from '../../log.js';
import { ScsiSysfs } from '../scsi-sysfs.js';
import type { Attacher } from '../types.js';

export interface VmdkAttacherOptions {
  /** Bound on each command (blockdev). */
  commandTimeoutMs: number;
  /** How long to wait for a hot-added disk to appear, and for a deleted one to go. Default 30 s. */
  deviceWaitMs?: number;
  pollMs?: number;
  /** "/" in production; a fixture tree (sys/) in unit tests. */
  root?: string;
  sleep?: (ms: number) => Promise<void>;
  /** This VM's BIOS UUID as configured (backends.vmdk.vm_uuid): overrides what the firmware says. */
  vmUuid?: string;
}

/** Seconds after the first scan at which a disk that has not appeared is scanned for again. */
const RESCAN_AT_MS = [2_000, 5_000, 10_000];

/**
 * Parses /sys/class/dmi/id/product_serial of a VMware VM, which holds the BIOS UUID vCenter
 * knows, byte for byte:  "VMware-42 03 94 2f ce 98 3f 27-45 5c 46 3d 34 b8 af 41"
 * -> "4203942f-ce98-3f27-455c-463d34b8af41". product_uuid is not used first because on virtual
 * hardware 13 and later (SMBIOS 2.7) Linux shows its first three fields byte-swapped (VMware KB
 * 53609; the vSphere CSI driver and Kubernetes' cloud provider read the serial for this reason).
 */
export function vmwareSerialUuid(serial: string): string | undefined {
  const match = /^VMware-([0-9a-f ]{23})-([0-9a-f ]{23})$/i.exec(serial.trim());
  if (!match) return undefined;
  const hex = `${match[1]}${match[2]}`.replace(/ /g, '').toLowerCase();
  if (!/^[0-9a-f]{32}$/.test(hex)) return undefined;
  return `${hex.slice(0, 8)}-${hex.slice(8, 12)}-${hex.slice(12, 16)}-${hex.slice(16, 20)}-${hex.slice(20)}`;
}

/**
 * The guest side of a vSphere virtual disk. The driver attaches the disk to this VM
 * (ReconfigVM_Task); here the kernel is made to see it and it is found by its UUID, which
 * with disk.EnableUUID=TRUE the guest reads as the disk's WWN: /sys/block/sdX/device/wwid is
 * "naa.<diskUuid>" (a 16-byte NAA designator, so 32 hex digits). Detach is the guest half of
 * the os-brick order: flush the buffers, delete the SCSI device, wait until the kernel let go;
 * only then does the driver remove the disk from the VM. Unmounting is the caller's.
 */
export class VmdkAttacher implements Attacher {
  readonly transport = 'vmdk' as const;
  private readonly sysfs: ScsiSysfs;
  private readonly sleep: (ms: number) => Promise<void>;
  private readonly root: string;

  constructor(
    private readonly exec: Exec,
    private readonly log: Logger,
    private readonly options: VmdkAttacherOptions,
  ) {
    this.root = options.root ?? '/';
    this.sleep = options.sleep ?? ((ms) => new Promise((r) => setTimeout(r, ms)));
    this.sysfs = new ScsiSysfs(this.root);
  }

  /** This VM's BIOS UUID, which the driver looks the VM up by in vCenter. */
  async identify(): Promise<{ vmUuid: string }> {
    if (this.options.vmUuid) return { vmUuid: this.options.vmUuid.trim().toLowerCase() };
    const dmi = join(this.root, 'sys', 'class', 'dmi', 'id');
    const serial = await readFile(join(dmi, 'product_serial'), 'utf8').catch(() => '');
    const fromSerial = vmwareSerialUuid(serial);
    if (fromSerial) return { vmUuid: fromSerial };
    const file = join(dmi, 'product_uuid');
    let uuid: string;
    try {
      uuid = (await readFile(file, 'utf8')).trim().toLowerCase();
    } catch (err) {
      throw new AttachFailed(
        `cannot read this VM's BIOS UUID from ${file}: ${errorMessage(err)} (it is readable by root only; ` +
          'run ballast as root, or set backends.vmdk.vm_uuid to the VM\'s BIOS UUID as vCenter shows it)',
      );
    }
    if (!/^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/.test(uuid)) {
      throw new AttachFailed(`${file} holds ${JSON.stringify(uuid)}, not a UUID; set backends.vmdk.vm_uuid to the VM's BIOS UUID as vCenter shows it`);
    }
    return { vmUuid: uuid };
  }

  /** Scans every SCSI host and waits for the disk with the export's UUID; an attached disk is found at once. */
  async attach(exp: Export): Promise<string> {
    const disk = exportOf(exp, 'vmdk');
    const wwid = wwidOf(disk);
    const present = await this.find(disk, wwid);
    if (present) return `/dev/${present}`;
    const found = await this.waitForDisk(disk, wwid);
    this.log.info('vSphere disk appeared', { file: disk.file, disk: found });
    return `/dev/${found}`;
  }

  /** Finds the disk again by UUID (the device name may have changed since a restart): flush, delete, wait until gone. */
  async detach(exp: Export, device: string): Promise<void> {
    const disk = exportOf(exp, 'vmdk');
    const found = await this.find(disk, wwidOf(disk));
    if (!found) return;
    if (device && device !== `/dev/${found}`) this.log.info('the vSphere disk has another name now', { file: disk.file, was: device, now: `/dev/${found}` });
    const holders = await this.sysfs.holders(found);
    if (holders.length > 0) {
      throw new AttachFailed(`cannot detach ${disk.file}: /dev/${found} is still in use by ${holders.join(', ')} (a multipath map or LVM volume on it)`);
    }
    await this.exec.run(['blockdev', '--flushbufs', `/dev/${found}`], { timeoutMs: this.options.commandTimeoutMs });
    await this.sysfs.delete(found);
    await this.waitGone(disk, found);
  }

  /** Has the kernel re-read the capacity vCenter grew: the filesystem can then grow online. */
  async refreshSize(exp: Export, device: string): Promise<boolean> {
    const disk = exportOf(exp, 'vmdk');
    const found = await this.find(disk, wwidOf(disk));
    if (!found) throw new AttachFailed(`cannot grow ${device} online: the disk of ${disk.file} (UUID ${disk.diskUuid}) is not attached to this VM`);
    await this.sysfs.rescan(found);
    return true;
  }

  async isAttached(exp: Export, device: string): Promise<boolean> {
    const disk = exportOf(exp, 'vmdk');
    const name = /^\/dev\/(sd[a-z]+)$/.exec(device)?.[1];
    if (!name) return false;
    return (await this.sysfs.wwid(name))?.toLowerCase() === wwidOf(disk);
  }

  /**
   * The disk whose WWID is the export's. Two would mean two disks with one UUID (a copied
   * .vmdk keeps its UUID): using either could write to the wrong volume, so that fails.
   */
  private async find(disk: VmdkExport, wwid: string): Promise<string | undefined> {
    const matches: string[] = [];
    for (const name of await this.sysfs.disks()) {
      if ((await this.sysfs.wwid(name))?.toLowerCase() === wwid) matches.push(name);
    }
    if (matches.length > 1) {
      throw new AttachFailed(`disks ${matches.map((m) => `/dev/${m}`).join(', ')} all have UUID ${disk.diskUuid} (of ${disk.file}): one is a copy; give it a new UUID before using either`);
    }
    return matches[0];
  }

  /**
   * Hot-added disks show up by themselves on PVSCSI; other controllers (LSI Logic, SATA) need
   * a scan. Scans again at RESCAN_AT_MS in case the first came before the hypervisor finished.
   * The scans run beside the polling, not before it: a wildcard scan returns only when every
   * target was probed, and one that raced with the hot-add took 6 s in the VM lab while the
   * disk it found was there after 0.9 s.
   */
  private async waitForDisk(disk: VmdkExport, wwid: string): Promise<string> {
    const waitMs = this.options.deviceWaitMs ?? 30_000;
    const started = Date.now();
    const rescans = [...RESCAN_AT_MS];
    let scanning = false;
    const scan = () => {
      if (scanning) return; // the kernel would only queue another one behind it
      scanning = true;
      void this.rescanHosts()
        .catch(() => undefined)
        .finally(() => (scanning = false));
    };
    scan();
    for (;;) {
      const found = await this.find(disk, wwid);
      if (found) return found;
      const elapsed = Date.now() - started;
      if (elapsed > waitMs) {
        throw new AttachFailed(
          `the disk ${disk.file} (UUID ${disk.diskUuid}) did not appear in this VM within ${waitMs / 1000} s of scanning every SCSI host; ` +
            `is it attached to this VM, and is disk.EnableUUID=TRUE set on the VM (without it the guest cannot see a disk's UUID)?`,
        );
      }
      if (rescans.length > 0 && elapsed >= rescans[0]!) {
        rescans.shift();
        scan();
      }
      await this.sleep(this.options.pollMs ?? 250);
    }
  }

  /**
   * Writes "- - -" to every SCSI host's scan, all at once (a scan blocks until the host is
   * probed). iSCSI hosts are left out: a wildcard scan there would bring in every LUN of the
   * target, which the iSCSI attacher deliberately scans one at a time. Never fails: a host
   * that cannot be scanned is logged.
   */
  private async rescanHosts(): Promise<void> {
    const started = Date.now();
    const hosts = [];
    for (const host of await this.sysfs.scsiHosts()) if (!(await this.sysfs.isIscsiHost(host))) hosts.push(host);
    await Promise.all(
      hosts.map((host) =>
        this.sysfs.scanAll(host).catch((err: unknown) => this.log.warn('cannot scan a SCSI host', { host: `host${host}`, error: errorMessage(err) })),
      ),
    );
    this.log.debug('scanned SCSI hosts', { hosts: hosts.map((h) => `host${h}`), durationMs: Date.now() - started });
  }

  private async waitGone(disk: VmdkExport, name: string): Promise<void> {
    const waitMs = this.options.deviceWaitMs ?? 30_000;
    const deadline = Date.now() + waitMs;
    while (await this.sysfs.exists(name)) {
      if (Date.now() > deadline) throw new AttachFailed(`/dev/${name} (${disk.file}) did not go away within ${waitMs / 1000} s of deleting it`);
      await this.sleep(this.options.pollMs ?? 250);
    }
  }
}

/**
 * The WWID the kernel shows for the export's disk. The driver hands over 32 hex digits; dashes
 * and capitals are tolerated, and the length is left to the driver (the VM lab's qemu disks carry
 * 8-byte WWNs, and the rule "wwid = naa.<diskUuid>" is the same for them).
 */
function wwidOf(disk: VmdkExport): string {
  const hex = disk.diskUuid.replace(/-/g, '').toLowerCase();
  if (!/^[0-9a-f]+$/.test(hex)) throw new AttachFailed(`the disk ${disk.file} has UUID ${JSON.stringify(disk.diskUuid)}, which is not hex digits`);
  return `naa.${hex}`;
}
