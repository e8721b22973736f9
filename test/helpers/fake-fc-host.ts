import { existsSync } from 'node:fs';
import { mkdir, readdir, readFile, symlink, writeFile } from 'node:fs/promises';
import { dirname, join, relative } from 'node:path';
import { CommandFailed } from '../../src/errors.js';
import type { ExecOptions, ExecResult } from '../../src/exec.js';
import { FakeIscsiHost } from './fake-iscsi-host.js';

/** A remote port as an HBA sees it after the array's port logged in. */
export interface FakeRport {
  wwpn: string;
  state?: string;
  roles?: string;
  targetId?: number;
}

/**
 * The initiator side of a Fibre Channel host for unit tests of the FC attacher, laid out as
 * the FCoE lab's kernel shows it (/work/shared/research/fcoe-lab.md): /sys/class/fc_host/hostH,
 * /sys/class/fc_remote_ports/rport-H:0-N and /sys/class/scsi_host/hostH as symlinks into
 * /sys/devices, with the same attribute texts ("0x2000525400000201", "FCP Target, FCP
 * Initiator", scsi_target_id "-1"). `targets` maps a target port WWPN to the LUNs the array
 * offers through it. multipath, multipathd, sg_persist and blockdev are FakeIscsiHost's.
 *
 * `settle()` (the attacher's injected sleep) plays the kernel: a write "C T L" to hostH/scan
 * probes that LUN behind the Online FCP target port with that target id, as fc_user_scan does,
 * and a LUN the array offers there becomes bus/scsi/devices/H:C:T:L/block/sdX. A scan file
 * holds only the last write until settle() reads it, so `scans` sees one write per host per settle.
 */
export class FakeFcHost extends FakeIscsiHost {
  /** Every scan the kernel received, in order: "host0: 0 0 3". */
  readonly scans: string[] = [];
  private readonly hbas: number[] = [];
  private readonly rportCount = new Map<number, number>();

  override async init(): Promise<void> {
    await super.init();
    await mkdir(this.sys('class', 'fc_host'), { recursive: true });
    await mkdir(this.sys('class', 'fc_remote_ports'), { recursive: true });
  }

  private device(host: number, ...parts: string[]): string {
    return this.sys('devices', 'pci0000:00', `0000:00:0${4 + host}.0`, `ctlr_${host}`, `host${host}`, ...parts);
  }

  /** Links /sys/class/<cls>/<name> to a directory under /sys/devices, as the kernel does. */
  private async link(cls: string, name: string, target: string): Promise<void> {
    const at = this.sys('class', cls, name);
    await symlink(relative(dirname(at), target), at);
  }

  private async attrs(dir: string, values: Record<string, string>): Promise<void> {
    await mkdir(dir, { recursive: true });
    for (const [name, value] of Object.entries(values)) await writeFile(join(dir, name), `${value}\n`);
  }

  /** An HBA port (an FCoE port over a NIC in the lab) with its SCSI host. */
  async addHba(host: number, wwpn: string, state = 'Online'): Promise<void> {
    const fcHost = this.device(host, 'fc_host', `host${host}`);
    await this.attrs(fcHost, { port_name: `0x${wwpn}`, node_name: `0x1000${wwpn.slice(4)}`, port_state: state, port_type: 'NPort (fabric via point-to-point)', dev_loss_tmo: '60' });
    const scsiHost = this.device(host, 'scsi_host', `host${host}`);
    await this.attrs(scsiHost, { proc_name: 'fcoe' });
    await writeFile(join(scsiHost, 'scan'), '');
    await this.link('fc_host', `host${host}`, fcHost);
    await this.link('scsi_host', `host${host}`, scsiHost);
    this.hbas.push(host);
  }

  /** A remote port of HBA `host`; returns its name, "rport-H:0-N". */
  async addRport(host: number, rport: FakeRport): Promise<string> {
    const n = this.rportCount.get(host) ?? 0;
    this.rportCount.set(host, n + 1);
    const name = `rport-${host}:0-${n}`;
    const dir = this.device(host, name, 'fc_remote_ports', name);
    await this.attrs(dir, { port_name: `0x${rport.wwpn}`, node_name: `0x1000${rport.wwpn.slice(4)}`, port_id: `0x00${rport.wwpn.slice(-4)}` });
    await this.link('fc_remote_ports', name, dir);
    await this.setRport(name, { state: 'Online', roles: 'FCP Target, FCP Initiator', targetId: 0, ...rport });
    return name;
  }

  /** Changes a remote port as a link event or a new login would. */
  async setRport(name: string, change: Omit<FakeRport, 'wwpn'>): Promise<void> {
    const values: Record<string, string> = {};
    if (change.state !== undefined) values.port_state = change.state;
    if (change.roles !== undefined) values.roles = change.roles;
    if (change.targetId !== undefined) values.scsi_target_id = String(change.targetId);
    await this.attrs(this.sys('class', 'fc_remote_ports', name), values);
  }

  /** Every external command must be bounded; a command on a disk already deleted fails as the kernel's would. */
  override async run(argv: readonly string[], options: ExecOptions = {}): Promise<ExecResult> {
    if (options.timeoutMs === undefined) throw new Error(`FakeFcHost: ${argv.join(' ')} has no timeout`);
    const disk = argv.find((a) => /^\/dev\/sd[a-z]+$/.test(a))?.slice(5);
    if (disk && (await this.deleted(disk))) {
      this.calls.push([...argv]);
      throw new CommandFailed([...argv], 1, `/dev/${disk}: No such device`, false);
    }
    if (argv[0] === 'multipath' && argv[1] === '-f') {
      for (const dm of await this.maps()) {
        if ((await readFile(this.sys('block', dm, 'dm', 'name'), 'utf8')).trim() !== argv[2]) continue;
        for (const slave of await readdir(this.sys('block', dm, 'slaves'))) {
          if (await this.deleted(slave)) throw new Error(`FakeFcHost: map ${argv[2]} flushed after its path ${slave} was deleted`);
        }
      }
    }
    return super.run(argv, options);
  }

  private async deleted(disk: string): Promise<boolean> {
    const mark = this.sys('block', disk, 'device', 'delete');
    return !existsSync(mark) || (await this.readSys(mark)) === '1';
  }

  override async settle(): Promise<void> {
    for (const host of this.hbas) {
      const scanFile = this.sys('class', 'scsi_host', `host${host}`, 'scan');
      const request = await this.readSys(scanFile);
      if (!request) continue;
      await writeFile(scanFile, '');
      this.scans.push(`host${host}: ${request}`);
      await this.scan(host, request);
    }
    await super.settle(); // deletes and multipathd
  }

  /** fc_user_scan: only Online ports with the FCP Target role and that channel and target id are probed. */
  private async scan(host: number, request: string): Promise<void> {
    const [channel, target, lun] = request.split(' ').map(Number);
    for (const name of await readdir(this.sys('class', 'fc_remote_ports'))) {
      if (!name.startsWith(`rport-${host}:${channel}-`)) continue;
      const attr = async (file: string) => (await readFile(this.sys('class', 'fc_remote_ports', name, file), 'utf8')).trim();
      if ((await attr('port_state')) !== 'Online' || !(await attr('roles')).includes('FCP Target')) continue;
      if (Number(await attr('scsi_target_id')) !== target) continue;
      const offered = this.targets.get((await attr('port_name')).slice(2))?.find((l) => l.lun === lun);
      const hctl = `${host}:${channel}:${target}:${lun}`;
      if (offered && !existsSync(this.sys('bus', 'scsi', 'devices', hctl))) await this.addDisk(hctl, offered.wwid);
    }
  }
}
