import { AttachFailed, errorMessage } from '../../errors.js';
import type { Exec } from '../../exec.js';
import { exportOf, type Export, type FcExport } from '../../export.js';
import type { Logger } from '../../log.js';
import { Multipath } from '../iscsi/multipath.js';
import { reservationKey, ScsiReservations } from '../iscsi/reservations.js';
import { oneLogicalUnit, RESCAN_AT_MS, waitDisksGone, type ScsiAttacherOptions } from '../scsi-paths.js';
import { formatHctl, ScsiSysfs, type FcRemotePort, type Hctl } from '../scsi-sysfs.js';
import type { AttachContext, Attacher } from '../types.js';

export type FcAttacherOptions = ScsiAttacherOptions;

/** One path to the LUN: the array port an HBA logged in to, and the disk behind it. */
interface LunPath {
  port: FcRemotePort;
  address: Hctl;
  disk?: string;
}


/**
 * The LUN numbers this attacher accepts. The kernel numbers a LUN by scsilun_to_int() of its
 * 8-byte address (the L of H:C:T:L in sysfs), and turns the L written to hostH/scan back with
 * int_to_scsilun(): LUN N travels as bytes (N >> 8, N & 0xff). LIO encodes REPORT LUNS with
 * int_to_scsilun() and decodes each command's LUN with scsilun_to_int(), so LUN N is N on both
 * sides: no translation, as with os-brick's default addressing_mode "SAM". Up to 16383, byte 0
 * keeps address method 00b; from 16384 on the same bytes read as flat-space LUN N - 16384 (what
 * os-brick's "SAM2"/"SAM3-flat" modes add for arrays that address LUNs >= 256 that way).
 */
const MAX_LUN = 16_383;

const NO_HBA = 'no Fibre Channel HBA (/sys/class/fc_host is empty): is the HBA driver loaded (lpfc, qla2xxx, or fcoe with an FCoE port created)?';

const isTargetPort = (p: FcRemotePort) => p.roles.includes('FCP Target');
const describePort = (p: FcRemotePort) => `${p.name} ${p.wwpn} ${p.state} [${p.roles.join(', ') || 'no roles'}]${p.targetId < 0 ? ' scsi_target_id -1' : ''}`;

/**
 * Fibre Channel attach, os-brick's FibreChannelConnector sequence: find the array's target ports
 * among each HBA's remote ports, scan exactly the LUN on each (channel, target id, LUN), wait for
 * every path's disk, check they are one logical unit, then reservations and the dm-multipath map.
 * Detach finds the paths again from sysfs: flush the map, flush and delete the disks.
 */
export class FcAttacher implements Attacher {
  readonly transport = 'fc' as const;
  private readonly sysfs: ScsiSysfs;
  private readonly multipath: Multipath;
  private readonly reservations: ScsiReservations;
  private readonly sleep: (ms: number) => Promise<void>;

  constructor(
    private readonly exec: Exec,
    private readonly log: Logger,
    private readonly options: FcAttacherOptions,
  ) {
    this.sleep = options.sleep ?? ((ms) => new Promise((r) => setTimeout(r, ms)));
    this.sysfs = new ScsiSysfs(options.root ?? '/', options.commandTimeoutMs);
    this.multipath = new Multipath(exec, this.sysfs, { timeoutMs: options.commandTimeoutMs, pollMs: options.pollMs, sleep: this.sleep });
    this.reservations = new ScsiReservations(exec, log, options.commandTimeoutMs);
  }

  /** This host's initiator port WWPNs, which the array puts in its ACLs (every HBA, up or not). */
  async identify(): Promise<{ wwpns: string[] }> {
    const hosts = await this.sysfs.fcHosts();
    if (hosts.length === 0) throw new AttachFailed(NO_HBA);
    return { wwpns: hosts.map((h) => h.wwpn) };
  }

  async attach(exp: Export, context: AttachContext): Promise<string> {
    const fc = exportOf(exp, 'fc');
    if (!Number.isInteger(fc.lun) || fc.lun < 0 || fc.lun > MAX_LUN) throw new AttachFailed(`FC LUN ${fc.lun} is out of range (0 to ${MAX_LUN})`);
    const paths = await this.readyPaths(fc); // nothing scanned yet if this fails: nothing to undo
    try {
      await this.waitForDisks(fc, paths);
      await this.checkSameLun(fc, paths);
      const disks = paths.map((p) => p.disk!);
      // Before anything reads or writes the volume: from here on the former holder cannot write.
      if (fc.reservations) await this.reservations.take(disks, reservationKey(context.hostId, context.generation));
      const existingMap = await this.multipath.findMap(disks);
      if (fc.multipath || disks.length > 1 || existingMap) return await this.multipath.ensureMap(disks);
      return `/dev/${disks[0]}`;
    } catch (err) {
      this.log.warn('FC attach failed: undoing what it did', { lun: fc.lun, targets: fc.targetWwpns, error: errorMessage(err) });
      await this.detach(fc, '', context).catch((undoErr) => this.log.error('undoing a failed FC attach failed', { lun: fc.lun, error: errorMessage(undoErr) }));
      throw err instanceof AttachFailed ? err : new AttachFailed(`cannot attach FC LUN ${fc.lun} of ${fc.targetWwpns.join(', ')}: ${errorMessage(err)}`);
    }
  }

  /** Finds the LUN's paths again from sysfs (any port state), so a detach after a restart cleans up as well. */
  async detach(exp: Export, _device: string, context: AttachContext): Promise<void> {
    const fc = exportOf(exp, 'fc');
    const disks = await this.disks(fc);
    const map = await this.multipath.findMap(disks);
    if (fc.reservations && disks.length) await this.reservations.drop(disks, reservationKey(context.hostId, context.generation));
    if (map) {
      const name = await this.sysfs.dmName(map);
      if (name) await this.multipath.flush(name);
    }
    for (const disk of disks) {
      // Flush a path's own buffers only when it was used directly (os-brick bug #1897787).
      if (!map) await this.exec.run(['blockdev', '--flushbufs', `/dev/${disk}`], { timeoutMs: this.options.commandTimeoutMs });
      await this.sysfs.delete(disk);
    }
    await waitDisksGone(this.sysfs, disks, this.sleep, this.options.pollMs);
  }

  /** Rescans every path for the new capacity, then has multipathd resize the map over them. */
  async refreshSize(exp: Export, device: string): Promise<boolean> {
    const fc = exportOf(exp, 'fc');
    const paths = (await this.paths(fc)).filter((p) => p.disk);
    const up = paths.filter((p) => p.port.state === 'Online');
    if (up.length === 0 || up.length < paths.length) {
      throw new AttachFailed(`cannot grow ${device} online: only ${up.length} of ${paths.length} paths are up (every path must see the new size)`);
    }
    for (const path of up) await this.sysfs.rescan(path.disk!);
    const map = await this.multipath.findMap(up.map((p) => p.disk!));
    const name = map && (await this.sysfs.dmName(map));
    if (name) await this.exec.run(['multipathd', 'resize', 'map', name], { timeoutMs: this.options.commandTimeoutMs });
    return true;
  }

  async isAttached(exp: Export, device: string): Promise<boolean> {
    const disks = await this.disks(exportOf(exp, 'fc'));
    if (disks.length === 0) return false;
    if (device.startsWith('/dev/mapper/')) {
      const map = await this.multipath.findMap(disks);
      return map !== undefined && `/dev/mapper/${await this.sysfs.dmName(map)}` === device;
    }
    return disks.some((d) => `/dev/${d}` === device);
  }

  /** The LUN's address (and disk, once the kernel made it) behind every remote port with one of the export's WWPNs. */
  private async paths(fc: FcExport): Promise<LunPath[]> {
    const paths: LunPath[] = [];
    for (const port of await this.sysfs.fcRemotePorts()) {
      if (!fc.targetWwpns.includes(port.wwpn) || port.targetId < 0) continue;
      const address = { host: port.host, channel: port.channel, target: port.targetId, lun: fc.lun };
      paths.push({ port, address, disk: await this.sysfs.blockDevice(address) });
    }
    return paths;
  }

  private async disks(fc: FcExport): Promise<string[]> {
    return (await this.paths(fc)).map((p) => p.disk).filter((d): d is string => d !== undefined);
  }

  /**
   * The paths to scan: Online FCP target ports with a SCSI target id. An Online target port at
   * -1 logged in before the array let this host in, and the kernel gives it a target id only at
   * a fresh login (fcoe-lab pitfall 1); writing "0 -1 L" to scan is refused.
   */
  private async readyPaths(fc: FcExport): Promise<LunPath[]> {
    const online = (p: FcRemotePort) => p.state === 'Online' && isTargetPort(p);
    const notReady = (await this.sysfs.fcRemotePorts()).filter((p) => fc.targetWwpns.includes(p.wwpn) && online(p) && p.targetId < 0);
    if (notReady.length) this.log.warn('FC target ports without a SCSI target id are not used', { ports: notReady.map(describePort) });
    const paths = (await this.paths(fc)).filter((p) => online(p.port));
    if (paths.length > 0) return paths;
    if (notReady.length) {
      throw new AttachFailed(
        `FC target port ${notReady.map((p) => `${p.name} (${p.wwpn})`).join(', ')} is Online but not ready: scsi_target_id is -1. ` +
          'It logged in before the array let this host in, and the kernel assigns a target id only at a fresh login: ' +
          'reset the link (or wait until dev_loss_tmo removes the port) and attach again',
      );
    }
    throw await this.noTargetPort(fc);
  }

  private async noTargetPort(fc: FcExport): Promise<AttachFailed> {
    const hosts = await this.sysfs.fcHosts();
    if (hosts.length === 0) return new AttachFailed(NO_HBA);
    const rports = await this.sysfs.fcRemotePorts();
    const seen = hosts.map((h) => {
      const mine = rports.filter((p) => p.host === h.host).map(describePort);
      return `host${h.host}: port_name ${h.wwpn} ${h.state}, rports seen: ${mine.join(', ') || 'none'}`;
    });
    return new AttachFailed(
      `no Online FCP target port with WWPN ${fc.targetWwpns.join(' or ')} is visible from this host's HBAs (${seen.join('; ')}); ` +
        "check zoning/cabling and that the array registered this host's WWPNs",
    );
  }

  /** Scans exactly the LUN on each path that has no disk yet, and waits (bounded) until every path has one. */
  private async waitForDisks(fc: FcExport, paths: LunPath[]): Promise<void> {
    const waitMs = this.options.deviceWaitMs ?? 20_000;
    const started = Date.now();
    const rescans = [0, ...RESCAN_AT_MS];
    for (;;) {
      for (const path of paths) path.disk = await this.sysfs.blockDevice(path.address);
      const missing = paths.filter((p) => !p.disk);
      if (missing.length === 0) return;
      const elapsed = Date.now() - started;
      if (rescans.length > 0 && elapsed >= rescans[0]!) {
        rescans.shift();
        for (const path of missing) await this.scan(path);
      }
      if (elapsed > waitMs) {
        const hosts = new Map((await this.sysfs.fcHosts()).map((h) => [h.host, h.wwpn]));
        const where = missing.map((p) => `host${p.address.host} (${hosts.get(p.address.host)}) -> ${p.port.wwpn} (${formatHctl(p.address)})`);
        throw new AttachFailed(`LUN ${fc.lun} did not appear on ${where.join(', ')} within ${waitMs / 1000} s; does the array map that LUN to this host's WWPN?`);
      }
      await this.sleep(this.options.pollMs ?? 250);
    }
  }

  private async scan(path: LunPath): Promise<void> {
    try {
      await this.sysfs.scan(path.address);
    } catch (err) {
      if (err instanceof AttachFailed) throw err; // stuck: ScsiSysfs says which write and how long
      // EINVAL: a LUN above the HBA driver's max_lun (lpfc_max_luns), or a port that lost its target id.
      throw new AttachFailed(`the kernel refused to scan ${formatHctl(path.address)} (host${path.address.host}/scan): ${errorMessage(err)}`);
    }
  }

  /** Every path must lead to the same logical unit, or multipath would join two volumes. */
  private async checkSameLun(fc: FcExport, paths: LunPath[]): Promise<void> {
    const { same, wwids } = await oneLogicalUnit(this.sysfs, paths.map((p) => p.disk!));
    if (!same) {
      const seen = paths.map((p, i) => `${p.disk}@${formatHctl(p.address)} via ${p.port.wwpn}: ${wwids[i] ?? 'no wwid'}`);
      throw new AttachFailed(`the paths to FC LUN ${fc.lun} lead to different or unidentified devices (${seen.join(', ')}); refusing to join them`);
    }
  }
}
