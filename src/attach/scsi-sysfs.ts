import { readdir, readFile, stat, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { AttachFailed } from '../errors.js';

/** A SCSI address: host, channel, target, LUN (as in /sys/bus/scsi/devices/H:C:T:L). */
export interface Hctl {
  host: number;
  channel: number;
  target: number;
  lun: number;
}

export const formatHctl = (a: Hctl) => `${a.host}:${a.channel}:${a.target}:${a.lun}`;

/** A Fibre Channel HBA port: /sys/class/fc_host/hostH. */
export interface FcHost {
  host: number;
  /** 16 lower-case hex digits, no "0x". */
  wwpn: string;
  /** "Online", "Linkdown", ... */
  state: string;
}

/** A port an HBA logged in to: /sys/class/fc_remote_ports/rport-H:C-N. */
export interface FcRemotePort {
  /** "rport-0:0-1" */
  name: string;
  host: number;
  channel: number;
  wwpn: string;
  /** "Online", "Blocked", ... */
  state: string;
  /** ["FCP Target", "FCP Initiator"] */
  roles: string[];
  /** The T of H:C:T:L; -1 while the kernel gave the port no SCSI target. */
  targetId: number;
}

/** sysfs prints WWNs as "0x%llx": "0x2000525400000201" -> "2000525400000201". */
const wwnOf = (text: string | undefined) => (text ?? '').replace(/^0x/i, '').toLowerCase();

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
 * The kernel's SCSI, iSCSI, Fibre Channel and device-mapper state as sysfs shows it. `root` is "/" in
 * production and a fixture tree in unit tests (the only fake of this edge; the VM lab
 * tests read the real sysfs through the same code).
 */
export class ScsiSysfs {
  /**
   * `writeTimeoutMs` bounds each write that makes the kernel talk to a device (scan, delete,
   * rescan): the kernel does the SCSI commands inside the write(2), uninterruptibly, and a target
   * that stopped answering or a blocked remote port keeps it there for minutes or for good.
   */
  constructor(
    readonly root = '/',
    private readonly writeTimeoutMs = 30_000,
  ) {}

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

  /** The FC HBA ports, by host number (port_name "0x2000525400000201", port_state "Online"). */
  async fcHosts(): Promise<FcHost[]> {
    const hosts: FcHost[] = [];
    for (const entry of await list(this.path('class', 'fc_host'))) {
      if (!/^host\d+$/.test(entry)) continue;
      const attr = (name: string) => readTrimmed(this.path('class', 'fc_host', entry, name));
      hosts.push({ host: Number(entry.slice(4)), wwpn: wwnOf(await attr('port_name')), state: (await attr('port_state')) ?? 'unknown' });
    }
    return hosts.sort((a, b) => a.host - b.host);
  }

  /**
   * Every remote port of every HBA. The directory name is rport-H:C-N (H the SCSI host, C the
   * channel); roles reads "FCP Target, FCP Initiator", scsi_target_id "0", or "-1" for a port
   * that is no SCSI target (yet).
   */
  async fcRemotePorts(): Promise<FcRemotePort[]> {
    const ports: FcRemotePort[] = [];
    for (const name of await list(this.path('class', 'fc_remote_ports'))) {
      const match = /^rport-(\d+):(\d+)-\d+$/.exec(name);
      if (!match) continue;
      const attr = (file: string) => readTrimmed(this.path('class', 'fc_remote_ports', name, file));
      const targetId = await attr('scsi_target_id');
      ports.push({
        name,
        host: Number(match[1]),
        channel: Number(match[2]),
        wwpn: wwnOf(await attr('port_name')),
        state: (await attr('port_state')) ?? 'unknown',
        roles: ((await attr('roles')) ?? '').split(',').map((r) => r.trim()).filter(Boolean),
        targetId: targetId !== undefined && /^\d+$/.test(targetId) ? Number(targetId) : -1,
      });
    }
    return ports.sort((a, b) => a.host - b.host || a.name.localeCompare(b.name));
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
    await this.write(this.path('class', 'scsi_host', `host${host}`, 'scan'), '- - -', `the scan of SCSI host ${host}`);
  }

  /** The SCSI disks the kernel has ("sda", "sdb", ...), whatever transport they came by. */
  async disks(): Promise<string[]> {
    return (await list(this.path('block'))).filter((entry) => /^sd[a-z]+$/.test(entry)).sort();
  }

  /** Asks the kernel to probe exactly one LUN (no wildcard scan: other LUNs stay invisible). */
  async scan(address: Hctl): Promise<void> {
    await this.write(this.path('class', 'scsi_host', `host${address.host}`, 'scan'), `${address.channel} ${address.target} ${address.lun}`, `the scan of LUN ${formatHctl(address)}`);
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
    await this.write(this.path('block', disk, 'device', 'delete'), '1', `the removal of ${disk}`);
  }

  /** Re-reads a disk's capacity after the array grew the LUN. */
  async rescan(disk: string): Promise<void> {
    await this.write(this.path('block', disk, 'device', 'rescan'), '1', `the rescan of ${disk}`);
  }

  /**
   * A write the caller stops waiting for after writeTimeoutMs. A stuck write cannot be cancelled:
   * it keeps one of libuv's threads until the kernel returns (scripts/start.sh gives the daemon
   * more of them), but the call that wanted it fails in time with the reason.
   */
  private async write(path: string, data: string, what: string): Promise<void> {
    let timer: NodeJS.Timeout | undefined;
    const stuck = new Promise<never>((_, reject) => {
      timer = setTimeout(
        () => reject(new AttachFailed(`${what} did not return within ${this.writeTimeoutMs / 1000} s (writing "${data}" to ${path}): the HBA or the storage behind it is not answering; check the paths (multipath -ll, the HBA's log in dmesg)`)),
        this.writeTimeoutMs,
      );
    });
    try {
      await Promise.race([writeFile(path, data), stuck]);
    } finally {
      clearTimeout(timer);
    }
  }
}
