import { createHash } from 'node:crypto';
import { Mutex } from 'async-mutex';
import type { LioBackendConfig } from '../../config/schema.js';
import { BackendUnavailable, BallastError, InvalidRequest, VolumeNotFound, errorMessage } from '../../errors.js';
import type { Exec } from '../../exec.js';
import type { Export, Initiator } from '../../export.js';
import type { Logger } from '../../log.js';
import type { FileStore } from '../file-store.js';
import { poolSnapshots } from '../array-host/pool-snapshots.js';
import type { SnapshotCapable } from '../types.js';
import { arrayPool, FileVolumes } from '../file-volumes.js';
import { volumeTargetIqn } from '../iscsi/iscsi-driver.js';
import {
  addLun,
  addPortal,
  createStorageObject,
  ensurePrDirectory,
  ensureTpg,
  LioConfigfs,
  LunTaken,
  mapLun,
  removeAcl,
  removeIscsiTarget,
  removeLun,
  removeStorageObject,
  setAttribute,
  setSecret,
  unmapLun,
  wwpnToConfigfs,
  type LioChange,
  type LioState,
} from './configfs.js';

/** The iSCSI target of a volume serves it as its LUN 0. */
const ISCSI_LUN = 0;

/**
 * Volumes on a Linux array running LIO, the kernel's SCSI target: images (or LVM logical
 * volumes) and metadata in a pool on the array host, as for tgt, served over iSCSI (a target
 * per volume) or Fibre Channel (a LUN on every configured FC target port, mapped in the ACLs of
 * the holder's initiator WWPNs only). A volume's LIO objects exist while some host has it
 * exported and are found again by name, so a restarted daemon reconciles instead of adding.
 * Each export or unexport is one read and one batch of changes (two round trips to the array).
 * LIO implements PREEMPT AND ABORT: a new holder's reservation aborts the old one's queued commands.
 */
export class LioDriver extends FileVolumes {
  readonly kind = 'lio';
  private readonly lio: LioConfigfs;
  /** The array's configfs is one shared tree: change it one request at a time (other hosts retry on conflicts). */
  private readonly lock = new Mutex();
  private readonly objectPrefix: string;
  private prDirectoryReady = false;
  /** Copies made on the array host beside each image (as on tgt); a clone is a new volume, with a LUN of its own. */
  readonly snapshots: SnapshotCapable;

  constructor(
    pool: string,
    private readonly backend: LioBackendConfig,
    readonly transport: 'iscsi' | 'fc',
    arrayHost: { exec: Exec; files?: FileStore },
    commandTimeoutMs: number,
    log: Logger,
    private readonly volumeGroup?: string,
    /** Base bound on copying an image for a snapshot or clone (it grows with the data); default commandTimeoutMs. */
    copyTimeoutMs = commandTimeoutMs,
  ) {
    super(arrayPool(pool, arrayHost, commandTimeoutMs, volumeGroup), log);
    this.lio = new LioConfigfs(arrayHost.exec, commandTimeoutMs);
    this.snapshots = poolSnapshots(this, { pool, arrayHost: { exec: arrayHost.exec, files: this.files }, commandTimeoutMs, copyTimeoutMs, volumeGroup }, log);
    // Two pools on one array never share an object name.
    this.objectPrefix = `ballast-${createHash('sha256').update(pool).digest('hex').slice(0, 6)}`;
  }

  /** The volume's storage object: "fileio_0/<prefix>-<name>", or iblock_0 for a logical volume. */
  storageObject(name: string): string {
    return `${this.volumeGroup ? 'iblock_0' : 'fileio_0'}/${this.objectPrefix}-${name}`;
  }

  /** The unit serial LIO reports (VPD 0x80) and derives the LUN's WWID from: fixed per volume. */
  private serial(name: string): string {
    const h = createHash('sha256').update(`${this.root}\0${name}`).digest('hex');
    return `${h.slice(0, 8)}-${h.slice(8, 12)}-${h.slice(12, 16)}-${h.slice(16, 20)}-${h.slice(20, 32)}`;
  }

  override async checkHealth(): Promise<void> {
    await super.checkHealth();
    await this.arrayCall('read the configuration', () => this.lio.read());
  }

  async export(name: string, initiator: Initiator): Promise<Export> {
    const current = await this.read(name);
    if (!current) throw new VolumeNotFound(name);
    const path = await this.imageAtRecordedSize(name);
    const exp = await this.arrayCall(`export volume ${name}`, () =>
      this.lock.runExclusive(async () => {
        const state = await this.lio.read();
        const object = this.storageObject(name);
        const served = state.storageObjects.get(object);
        if (served && served.path !== path) throw new BackendUnavailable(`LIO object ${object} serves ${served.path}, not volume ${name} (${path})`);
        const prepare: LioChange[] = [];
        if (this.backend.reservations && !this.prDirectoryReady) prepare.push(ensurePrDirectory());
        if (!served) prepare.push(createStorageObject(object, path, current.value.sizeBytes, this.serial(name)));
        const exp = this.transport === 'fc' ? await this.exportFc(name, object, initiator, state, prepare) : await this.exportIscsi(name, object, initiator, state, prepare);
        this.prDirectoryReady ||= this.backend.reservations;
        return exp;
      }),
    );
    this.log.info('volume exported', { volume: name, transport: this.transport, initiator: initiator.iqn ?? initiator.wwpns });
    return exp;
  }

  /** Takes this host's mapping away; once no host maps the volume any more, its LUNs, target and storage object go. */
  async unexport(name: string, initiator: Initiator): Promise<void> {
    await this.arrayCall(`unexport volume ${name}`, () =>
      this.lock.runExclusive(async () => {
        const state = await this.lio.read();
        const object = this.storageObject(name);
        if (this.transport === 'fc') {
          const lun = this.fcLunOf(state, object);
          if (lun === undefined) return;
          const mine = new Set(initiator.wwpns ?? []);
          const othersMap = this.fcPorts().some((port) => [...(state.fc.get(port)?.acls ?? [])].some(([who, m]) => !mine.has(who) && m.get(lun) === lun));
          if (othersMap) await this.lio.apply(...this.fcPorts().flatMap((port) => [...mine].map((wwpn) => unmapLun(fcTpg(port), wwpnToConfigfs(wwpn), lun))));
          else await this.lio.apply(...this.removeFcLun(state, lun), removeStorageObject(object));
        } else if (initiator.iqn) {
          const iqn = volumeTargetIqn(this.iscsi().target_prefix, name);
          const othersMap = [...(state.iscsi.get(iqn)?.acls.keys() ?? [])].some((who) => who !== initiator.iqn);
          if (othersMap) await this.lio.apply(removeAcl(this.iscsiTpg(name), initiator.iqn));
          else await this.lio.apply(removeIscsiTarget(iqn), removeStorageObject(object));
        }
      }),
    );
  }

  /** Nobody can reach a volume being destroyed: its LUNs, target and storage object go first. */
  protected override async withdraw(name: string): Promise<void> {
    await this.arrayCall(`remove the LUNs of volume ${name}`, () =>
      this.lock.runExclusive(async () => {
        const state = await this.lio.read();
        const object = this.storageObject(name);
        const lun = this.transport === 'fc' ? this.fcLunOf(state, object) : undefined;
        const unexported = this.transport === 'fc' ? (lun === undefined ? [] : this.removeFcLun(state, lun)) : [removeIscsiTarget(volumeTargetIqn(this.iscsi().target_prefix, name))];
        await this.lio.apply(...unexported, removeStorageObject(object));
      }),
    );
  }

  /**
   * LIO reads a file's size when the storage object is made (a logical volume's at every
   * command): a file volume in use keeps its old size until it is next exported afresh.
   */
  protected override async resized(name: string): Promise<void> {
    if (!this.volumeGroup) this.log.info('LIO serves a file volume at the size it had when exported: it grows at its next mount', { volume: name });
  }

  /** What LIO shows now (for tests and diagnostics). */
  describeArray(): Promise<LioState> {
    return this.arrayCall('read the configuration', () => this.lio.read());
  }

  // ---- Fibre Channel: one LUN number per volume, the same on every target port.

  private fcPorts(): string[] {
    if (!this.backend.fc) throw new InvalidRequest('backends.lio.fc is not configured (the FC target ports)');
    return this.backend.fc.target_wwpns;
  }

  private fcLunOf(state: LioState, object: string): number | undefined {
    for (const port of this.fcPorts()) {
      for (const [lun, served] of state.fc.get(port)?.luns ?? []) if (served === object) return lun;
    }
    return undefined;
  }

  private async exportFc(name: string, object: string, initiator: Initiator, first: LioState, prepare: LioChange[]): Promise<Export> {
    const wwpns = initiator.wwpns ?? [];
    if (wwpns.length === 0) throw new InvalidRequest(`host ${initiator.hostId} has no FC initiator ports; cannot export volume ${name} to it over FC`);
    const ports = this.fcPorts();
    let state = first;
    let before = prepare;
    for (let attempt = 1; ; attempt++) {
      const lun = this.fcLunOf(state, object) ?? freeLun(state, ports);
      const changes = [...before];
      for (const port of ports) {
        const tpg = state.fc.get(port);
        const served = tpg?.luns.get(lun);
        if (served !== undefined && served !== object) throw new BackendUnavailable(`LUN ${lun} of FC port ${port} serves ${served}, not volume ${name}`);
        changes.push(ensureTpg(fcTpg(port)));
        if (served === undefined) changes.push(addLun(fcTpg(port), lun, object));
        // Only the holder sees the LUN: a host that lost the lease loses the mapping too.
        for (const [other, mapped] of tpg?.acls ?? []) {
          if (!wwpns.includes(other) && mapped.get(lun) === lun) changes.push(unmapLun(fcTpg(port), wwpnToConfigfs(other), lun));
        }
        for (const wwpn of wwpns) {
          const mapped = tpg?.acls.get(wwpn)?.get(lun);
          if (mapped !== undefined && mapped !== lun) throw new BackendUnavailable(`the ACL of ${wwpn} on FC port ${port} maps LUN ${lun} to LUN ${mapped}; fix the array's ACL`);
          changes.push(mapLun(fcTpg(port), wwpnToConfigfs(wwpn), lun));
        }
      }
      try {
        await this.lio.apply(...changes);
      } catch (err) {
        // Another host's daemon took that LUN number meanwhile: read again and pick another.
        if (!(err instanceof LunTaken) || attempt >= 5) throw err;
        state = await this.lio.read();
        before = state.storageObjects.has(object) ? [] : before;
        continue;
      }
      return { transport: 'fc', targetWwpns: [...ports], lun, multipath: this.backend.multipath, reservations: this.backend.reservations };
    }
  }

  /** Unmaps the LUN from every ACL and removes it from every port. */
  private removeFcLun(state: LioState, lun: number): LioChange[] {
    return this.fcPorts().flatMap((port) => [
      ...[...(state.fc.get(port)?.acls ?? [])].filter(([, mapped]) => mapped.get(lun) === lun).map(([who]) => unmapLun(fcTpg(port), wwpnToConfigfs(who), lun)),
      removeLun(fcTpg(port), lun),
    ]);
  }

  // ---- iSCSI: a target per volume, its ACL holding the holder's initiator name only.

  private iscsi(): NonNullable<LioBackendConfig['iscsi']> {
    if (!this.backend.iscsi) throw new InvalidRequest('backends.lio.iscsi is not configured (the portals)');
    return this.backend.iscsi;
  }

  private iscsiTpg(name: string): string {
    return `iscsi/${volumeTargetIqn(this.iscsi().target_prefix, name)}/tpgt_1`;
  }

  private async exportIscsi(name: string, object: string, initiator: Initiator, state: LioState, prepare: LioChange[]): Promise<Export> {
    if (!initiator.iqn) throw new InvalidRequest(`host ${initiator.hostId} has no iSCSI initiator name; cannot export volume ${name} to it`);
    const { portals, target_prefix: prefix, chap } = this.iscsi();
    const iqn = volumeTargetIqn(prefix, name);
    const tpg = this.iscsiTpg(name);
    const existing = state.iscsi.get(iqn);
    const served = existing?.luns.get(ISCSI_LUN);
    if (served !== undefined && served !== object) throw new BackendUnavailable(`target ${iqn} serves ${served}, not volume ${name}`);
    const changes = [...prepare, ensureTpg(tpg)];
    if (served === undefined) changes.push(addLun(tpg, ISCSI_LUN, object));
    // CHAP and explicit ACLs before the TPG is enabled: nobody gets in without both, not even briefly.
    changes.push(setAttribute(`${tpg}/attrib/generate_node_acls`, '0'), setAttribute(`${tpg}/attrib/authentication`, chap ? '1' : '0'));
    for (const portal of portals) if (!existing?.portals.includes(portal)) changes.push(addPortal(tpg, portal));
    // Only the holder may log in: a host that lost the lease loses its ACL.
    for (const other of existing?.acls.keys() ?? []) if (other !== initiator.iqn) changes.push(removeAcl(tpg, other));
    changes.push(mapLun(tpg, initiator.iqn, ISCSI_LUN));
    if (chap) changes.push(setAttribute(`${tpg}/acls/${initiator.iqn}/auth/userid`, chap.username), setSecret(`${tpg}/acls/${initiator.iqn}/auth/password`, chap.password));
    changes.push(setAttribute(`${tpg}/enable`, '1'));
    try {
      await this.lio.apply(...changes);
    } catch (err) {
      // Another host's daemon made the target a moment ago: once more, on what it made.
      if (!(err instanceof LunTaken)) throw err;
      return this.exportIscsi(name, object, initiator, await this.lio.read(), []);
    }
    return {
      transport: 'iscsi',
      iqn,
      portals: [...portals],
      lun: ISCSI_LUN,
      multipath: this.backend.multipath,
      reservations: this.backend.reservations,
      ...(chap ? { chap: { ...chap } } : {}),
    };
  }

  /** Any failure to change LIO becomes BackendUnavailable naming the array. */
  private async arrayCall<T>(what: string, call: () => Promise<T>): Promise<T> {
    try {
      return await call();
    } catch (err) {
      if (err instanceof BallastError && !(err.code === 'BALLAST_COMMAND_FAILED')) throw err;
      throw new BackendUnavailable(`cannot ${what} on the LIO array: ${errorMessage(err)}`);
    }
  }
}

const fcTpg = (port: string) => `fc/${wwpnToConfigfs(port)}/tpgt_1`;

/** The lowest LUN number no port serves and no ACL maps on any of them. */
function freeLun(state: LioState, ports: string[]): number {
  const used = new Set<number>();
  for (const port of ports) {
    const tpg = state.fc.get(port);
    for (const lun of tpg?.luns.keys() ?? []) used.add(lun);
    for (const mapped of tpg?.acls.values() ?? []) for (const lun of mapped.keys()) used.add(lun);
  }
  let lun = 0;
  while (used.has(lun)) lun++;
  return lun;
}
