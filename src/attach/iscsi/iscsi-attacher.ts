import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { AttachFailed, errorMessage } from '../../errors.js';
import type { Exec } from '../../exec.js';
import { exportOf, type Export, type IscsiExport } from '../../export.js';
import type { Logger } from '../../log.js';
import type { AttachContext, Attacher } from '../types.js';
import { Iscsiadm, type IscsiSession } from './iscsiadm.js';
import { Multipath } from './multipath.js';
import { reservationKey, ScsiReservations } from './reservations.js';
import { oneLogicalUnit, RESCAN_AT_MS, waitDisksGone, type ScsiAttacherOptions } from '../scsi-paths.js';
import { formatHctl, ScsiSysfs, type Hctl } from '../scsi-sysfs.js';

export type IscsiAttacherOptions = ScsiAttacherOptions;

/** One path to the LUN: the session it came through and its disk. */
interface LunPath {
  session: IscsiSession;
  address: Hctl;
  disk?: string;
}


/**
 * iSCSI attach, os-brick's sequence: a node record per portal (manual scan, manual startup,
 * CHAP), one login per portal (an existing session is reused), a scan of exactly the LUN,
 * a bounded wait for its disk, and with several portals the dm-multipath map. Detach: flush
 * the map, flush and delete the disks, and log out only of sessions no other LUN uses.
 */
export class IscsiAttacher implements Attacher {
  readonly transport = 'iscsi' as const;
  private readonly iscsiadm: Iscsiadm;
  private readonly sysfs: ScsiSysfs;
  private readonly multipath: Multipath;
  private readonly reservations: ScsiReservations;
  private readonly sleep: (ms: number) => Promise<void>;

  constructor(
    private readonly exec: Exec,
    private readonly log: Logger,
    private readonly options: IscsiAttacherOptions,
  ) {
    this.sleep = options.sleep ?? ((ms) => new Promise((r) => setTimeout(r, ms)));
    this.iscsiadm = new Iscsiadm(exec, { timeoutMs: options.commandTimeoutMs, root: options.root, sleep: this.sleep });
    this.sysfs = new ScsiSysfs(options.root ?? '/', options.commandTimeoutMs);
    this.multipath = new Multipath(exec, this.sysfs, { timeoutMs: options.commandTimeoutMs, pollMs: options.pollMs, sleep: this.sleep });
    this.reservations = new ScsiReservations(exec, log, options.commandTimeoutMs);
  }

  /** This host's initiator name, which the array puts in the target's ACL. */
  async identify(): Promise<{ iqn?: string }> {
    const file = join(this.options.root ?? '/', 'etc', 'iscsi', 'initiatorname.iscsi');
    let text: string;
    try {
      text = await readFile(file, 'utf8');
    } catch (err) {
      throw new AttachFailed(`cannot read this host's iSCSI initiator name from ${file}: ${errorMessage(err)} (is open-iscsi installed?)`);
    }
    const iqn = /^\s*InitiatorName\s*=\s*(\S+)/m.exec(text)?.[1];
    if (!iqn) throw new AttachFailed(`${file} holds no InitiatorName= line`);
    return { iqn };
  }

  async attach(exp: Export, context: AttachContext): Promise<string> {
    const target = exportOf(exp, 'iscsi');
    try {
      // `iscsiadm -m session` once before the logins and once after: each run costs a fork and
      // a round trip to iscsid, and an attach in a loaded VM ran it up to 6 times.
      const before = await this.iscsiadm.sessions();
      for (const portal of target.portals) await this.login(target, portal, before);
      const paths = await this.waitForDisks(target, await this.iscsiadm.sessions());
      await this.checkSameLun(target, paths);
      const disks = paths.map((p) => p.disk!);
      // Before anything reads or writes the volume: from here on the former holder cannot write.
      if (target.reservations) await this.reservations.take(disks, reservationKey(context.hostId, context.generation));
      const existingMap = await this.multipath.findMap(disks);
      if (target.multipath || target.portals.length > 1 || existingMap) return await this.multipath.ensureMap(disks);
      return `/dev/${disks[0]}`;
    } catch (err) {
      this.log.warn('iSCSI attach failed: undoing what it did', { target: target.iqn, error: errorMessage(err) });
      await this.detach(target, '', context).catch((undoErr) => this.log.error('undoing a failed iSCSI attach failed', { target: target.iqn, error: errorMessage(undoErr) }));
      throw err instanceof AttachFailed ? err : new AttachFailed(`cannot attach iSCSI target ${target.iqn} LUN ${target.lun}: ${errorMessage(err)}`);
    }
  }

  /** Finds the LUN's paths again from the sessions, so a detach after a restart cleans up as well. */
  async detach(exp: Export, _device: string, context: AttachContext): Promise<void> {
    const target = exportOf(exp, 'iscsi');
    const sessions = await this.iscsiadm.sessions();
    const disks = (await this.paths(target, sessions)).map((p) => p.disk).filter((d): d is string => d !== undefined);
    const map = await this.multipath.findMap(disks);
    if (target.reservations && disks.length) await this.reservations.drop(disks, reservationKey(context.hostId, context.generation));
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
    // Logging out of one portal leaves the other portals' sessions as they were.
    for (const portal of target.portals) {
      const session = sessions.find((s) => s.iqn === target.iqn && s.portal === portal);
      if (session && (await this.otherLuns(session, target.lun)).length > 0) {
        this.log.info('keeping an iSCSI session other LUNs use', { target: target.iqn, portal });
        continue;
      }
      if (session) await this.iscsiadm.logout(target.iqn, portal);
      await this.iscsiadm.deleteNode(target.iqn, portal);
    }
  }

  /** Rescans every path for the new capacity, then has multipathd resize the map over them. */
  async refreshSize(exp: Export, device: string): Promise<boolean> {
    const target = exportOf(exp, 'iscsi');
    const disks = (await this.paths(target)).map((p) => p.disk).filter((d): d is string => d !== undefined);
    if (disks.length < target.portals.length) {
      throw new AttachFailed(`cannot grow ${device} online: only ${disks.length} of ${target.portals.length} paths are up (every path must see the new size)`);
    }
    for (const disk of disks) await this.sysfs.rescan(disk);
    const map = await this.multipath.findMap(disks);
    const name = map && (await this.sysfs.dmName(map));
    if (name) await this.exec.run(['multipathd', 'resize', 'map', name], { timeoutMs: this.options.commandTimeoutMs });
    return true;
  }

  async isAttached(exp: Export, device: string): Promise<boolean> {
    const target = exportOf(exp, 'iscsi');
    const disks = (await this.paths(target)).map((p) => p.disk).filter((d): d is string => d !== undefined);
    if (disks.length === 0) return false;
    if (device.startsWith('/dev/mapper/')) {
      const map = await this.multipath.findMap(disks);
      return map !== undefined && `/dev/mapper/${await this.sysfs.dmName(map)}` === device;
    }
    return disks.some((d) => `/dev/${d}` === device);
  }

  private async login(target: IscsiExport, portal: string, sessions: IscsiSession[]): Promise<void> {
    const { iqn } = target;
    await this.iscsiadm.createNode(iqn, portal);
    // Only the LUN we ask for appears (open-iscsi PR #40), and nothing logs in at boot:
    // after a reboot, ballast decides again who may use the volume.
    await this.iscsiadm.updateNode(iqn, portal, 'node.session.scan', 'manual').catch((err) =>
      this.log.warn('this iscsiadm cannot set manual scan; every LUN of the target will appear', { target: iqn, error: errorMessage(err) }),
    );
    await this.iscsiadm.updateNode(iqn, portal, 'node.startup', 'manual');
    if (target.chap) {
      await this.iscsiadm.updateNode(iqn, portal, 'node.session.auth.authmethod', 'CHAP');
      await this.iscsiadm.updateNode(iqn, portal, 'node.session.auth.username', target.chap.username);
      await this.iscsiadm.updateNodeSecret(iqn, portal, 'node.session.auth.password', target.chap.password);
    }
    const existing = sessions.find((s) => s.iqn === iqn && s.portal === portal);
    if (existing) return; // a duplicate login makes iscsiadm fail (os-brick)
    await this.iscsiadm.login(iqn, portal);
  }

  /** The LUN's address (and disk, once the kernel made it) under every session to the target. */
  private async paths(target: IscsiExport, sessions?: IscsiSession[]): Promise<LunPath[]> {
    const paths: LunPath[] = [];
    for (const session of sessions ?? (await this.iscsiadm.sessions())) {
      if (session.iqn !== target.iqn || !target.portals.includes(session.portal)) continue;
      const scsiTarget = await this.sysfs.sessionTarget(session.id);
      if (!scsiTarget) continue;
      const address = { ...scsiTarget, lun: target.lun };
      paths.push({ session, address, disk: await this.sysfs.blockDevice(address) });
    }
    return paths;
  }

  /** Polls sysfs only: the sessions, just logged in, stay as they are meanwhile. */
  private async waitForDisks(target: IscsiExport, sessions: IscsiSession[]): Promise<LunPath[]> {
    const waitMs = this.options.deviceWaitMs ?? 20_000;
    const started = Date.now();
    const rescans = [0, ...RESCAN_AT_MS];
    for (;;) {
      const paths = await this.paths(target, sessions);
      if (paths.length === target.portals.length && paths.every((p) => p.disk)) return paths;
      const elapsed = Date.now() - started;
      if (rescans.length > 0 && elapsed >= rescans[0]!) {
        rescans.shift();
        for (const path of paths.filter((p) => !p.disk)) await this.sysfs.scan(path.address);
      }
      if (elapsed > waitMs) {
        const found = paths.filter((p) => p.disk).map((p) => `${p.session.portal} -> /dev/${p.disk}`);
        throw new AttachFailed(
          `LUN ${target.lun} of iSCSI target ${target.iqn} did not appear within ${waitMs / 1000} s ` +
            `(${paths.length} of ${target.portals.length} portals logged in${found.length ? `; found ${found.join(', ')}` : ''}); does the target export that LUN to this host?`,
        );
      }
      await this.sleep(this.options.pollMs ?? 250);
    }
  }

  /** Every path must lead to the same logical unit, or multipath would join two volumes. */
  private async checkSameLun(target: IscsiExport, paths: LunPath[]): Promise<void> {
    const { same, wwids } = await oneLogicalUnit(this.sysfs, paths.map((p) => p.disk!));
    if (!same) {
      const seen = paths.map((p) => `${p.disk}@${formatHctl(p.address)}`).join(', ');
      throw new AttachFailed(`the portals of ${target.iqn} lead to different or unidentified devices (${seen}: ${[...new Set(wwids)].join(', ')})`);
    }
  }

  private async otherLuns(session: IscsiSession, lun: number): Promise<number[]> {
    const scsiTarget = await this.sysfs.sessionTarget(session.id);
    if (!scsiTarget) return [];
    const others = [];
    for (const other of await this.sysfs.lunsOfTarget(scsiTarget)) {
      if (other !== lun && (await this.sysfs.blockDevice({ ...scsiTarget, lun: other }))) others.push(other);
    }
    return others;
  }
}
