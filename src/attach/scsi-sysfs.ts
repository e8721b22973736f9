import { readdir, readFile, stat, writeFile } from 'node:fs/promises';
import { join } from 'node:path';

/** A SCSI address: host, channel, target, LUN (as in /sys/bus/scsi/devices/H:C:T:L). */
export interface Hctl {
  host: number;
  channel: number;
  target: number;
  lun: number;
}

export const formatHctl = (a: Hctl) => `${a.host}:${a.channel}:${a.target}:${a.lun}`;

async function list(dir: string): Promise<string[]> {
  try {
    return await readdir(dir);
  } catch {
    return [];
  }
}

async function readTrimmed(path: string): Promise<string | undefined> {
  try {
    return (await readFile(path, 'utf8')).trim();
  } catch {
    return undefined;
  }
}

/**
 * The kernel's SCSI, iSCSI and device-mapper state as sysfs shows it. `root` is "/" in
 * production and a fixture tree in unit tests (the only fake of this edge; the VM lab
 * tests read the real sysfs through the same code).
 */
export class ScsiSysfs {
  constructor(readonly root = '/') {}

  private path(...parts: string[]): string {
    return join(this.root, 'sys', ...parts);
  }

  /**
   * The SCSI host and target of an iSCSI session. With node.session.scan=manual the kernel
   * makes no targetH:C:T directory until something is scanned, so the target id comes from
   * the session's own attribute.
   */
  async sessionTarget(sessionId: number): Promise<Omit<Hctl, 'lun'> | undefined> {
    for (const host of await list(this.path('class', 'iscsi_host'))) {
      if (!(await list(this.path('class', 'iscsi_host', host, 'device'))).includes(`session${sessionId}`)) continue;
      const target = await readTrimmed(this.path('class', 'iscsi_session', `session${sessionId}`, 'target_id'));
      if (target === undefined || !/^\d+$/.test(target)) return undefined;
      return { host: Number(host.slice(4)), channel: 0, target: Number(target) };
    }
    return undefined;
  }

  /** The SCSI hosts (HBAs) the kernel has, by number ("host2" -> 2). */
  async scsiHosts(): Promise<number[]> {
    return (await list(this.path('class', 'scsi_host')))
      .filter((entry) => /^host\d+$/.test(entry))
      .map((entry) => Number(entry.slice(4)))
      .sort((a, b) => a - b);
  }

  /** True for the SCSI host of an iSCSI session: its LUNs are scanned one at a time, never by wildcard. */
  async isIscsiHost(host: number): Promise<boolean> {
    return (await list(this.path('class', 'iscsi_host'))).includes(`host${host}`);
  }

  /**
   * Asks the kernel to probe every channel, target and LUN of one host ("- - -"): what finds
   * a disk a hypervisor hot-added to an HBA that does not report it by itself.
   */
  async scanAll(host: number): Promise<void> {
    await writeFile(this.path('class', 'scsi_host', `host${host}`, 'scan'), '- - -');
  }

  /** The SCSI disks the kernel has ("sda", "sdb", ...), whatever transport they came by. */
  async disks(): Promise<string[]> {
    return (await list(this.path('block'))).filter((entry) => /^sd[a-z]+$/.test(entry)).sort();
  }

  /** Asks the kernel to probe exactly one LUN (no wildcard scan: other LUNs stay invisible). */
  async scan(address: Hctl): Promise<void> {
    await writeFile(this.path('class', 'scsi_host', `host${address.host}`, 'scan'), `${address.channel} ${address.target} ${address.lun}`);
  }

  /** The block device name (e.g. "sdb") at an address, once the kernel has made it. */
  async blockDevice(address: Hctl): Promise<string | undefined> {
    const names = await list(this.path('bus', 'scsi', 'devices', formatHctl(address), 'block'));
    return names[0];
  }

  /** Every LUN the kernel has under one SCSI target. */
  async lunsOfTarget(target: Omit<Hctl, 'lun'>): Promise<number[]> {
    const prefix = `${target.host}:${target.channel}:${target.target}:`;
    return (await list(this.path('bus', 'scsi', 'devices')))
      .filter((entry) => entry.startsWith(prefix))
      .map((entry) => Number(entry.slice(prefix.length)));
  }

  /** The kernel's name for the logical unit behind a disk (e.g. "naa.6000..."): equal on every path. */
  async wwid(disk: string): Promise<string | undefined> {
    return readTrimmed(this.path('block', disk, 'device', 'wwid'));
  }

  /** The device-mapper devices stacked on a disk (e.g. ["dm-0"]). */
  async holders(disk: string): Promise<string[]> {
    return (await list(this.path('block', disk, 'holders'))).filter((h) => h.startsWith('dm-'));
  }

  /** The disks under a device-mapper device. */
  async slaves(dm: string): Promise<string[]> {
    return list(this.path('block', dm, 'slaves'));
  }

  async dmUuid(dm: string): Promise<string | undefined> {
    return readTrimmed(this.path('block', dm, 'dm', 'uuid'));
  }

  async dmName(dm: string): Promise<string | undefined> {
    return readTrimmed(this.path('block', dm, 'dm', 'name'));
  }

  /** True when /dev/<relative> exists (udev made the node). */
  async deviceNodeExists(relative: string): Promise<boolean> {
    return stat(join(this.root, 'dev', relative)).then(
      () => true,
      () => false,
    );
  }

  async exists(disk: string): Promise<boolean> {
    return (await list(this.path('block'))).includes(disk);
  }

  /** Removes a SCSI disk from the kernel (after its data was flushed and nothing holds it). */
  async delete(disk: string): Promise<void> {
    await writeFile(this.path('block', disk, 'device', 'delete'), '1');
  }

  /** Re-reads a disk's capacity after the array grew the LUN. */
  async rescan(disk: string): Promise<void> {
    await writeFile(this.path('block', disk, 'device', 'rescan'), '1');
  }
}
