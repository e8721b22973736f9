import { execFileSync } from 'node:child_process';
import { closeSync, constants, openSync, readSync } from 'node:fs';
import { mkdir, readdir, readFile, rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { CommandFailed } from '../../src/errors.js';
import type { Exec, ExecOptions, ExecResult } from '../../src/exec.js';

/** A LUN the fake array offers: the WWID every path of it shows. */
export interface FakeLun {
  lun: number;
  wwid: string;
}

interface Session {
  id: number;
  host: number;
  portal: string;
  iqn: string;
}

/**
 * The initiator side of a host for unit tests of the iSCSI attacher: iscsiadm, multipath,
 * multipathd and blockdev answered from a small model, and a sysfs tree under `root` that
 * changes as the kernel's would (`settle()`, called from the attacher's injected sleep,
 * plays the kernel: scans make disks, deletes remove them). Its real counterpart is the VM
 * lab (test/integration/vm), which runs the same attacher against Debian's kernel.
 */
export class FakeIscsiHost implements Exec {
  readonly calls: string[][] = [];
  readonly sessions: Session[] = [];
  readonly nodes = new Map<string, Map<string, string>>();
  /** target IQN -> LUNs; a portal not in `portals` refuses logins. */
  readonly targets = new Map<string, FakeLun[]>();
  portals = new Set<string>();
  chap?: { username: string; password: string };
  /** multipathd builds maps by itself (find_multipaths no); false: only when told (`multipathd add path`). */
  autoMultipath = true;
  /** argv prefixes that time out, or fail with an exit code a number of times. */
  readonly faults: { match: string; exitCode?: number; timedOut?: boolean; times: number }[] = [];
  /** Persistent reservations per logical unit (WWID): each path's registered key and the holder. */
  readonly reservations = new Map<string, { keys: Map<string, string>; holder?: string }>();
  private nextSession = 1;
  private nextDisk = 0;
  private nextDm = 0;
  /** Map name -> dm-N. */
  private readonly dmNames = new Map<string, string>();
  /** sysfs files whose writes never return (see hang()). */
  private readonly hung = new Set<string>();

  constructor(readonly root: string) {}

  get commands(): string[] {
    return this.calls.map((argv) => argv.join(' '));
  }

  protected sys(...parts: string[]): string {
    return join(this.root, 'sys', ...parts);
  }

  async init(initiatorIqn = 'iqn.2026-11.dev.ballast:host1'): Promise<void> {
    await mkdir(join(this.root, 'etc', 'iscsi'), { recursive: true });
    await writeFile(join(this.root, 'etc', 'iscsi', 'initiatorname.iscsi'), `## comment\nInitiatorName=${initiatorIqn}\n`);
    for (const dir of [this.sys('block'), this.sys('bus', 'scsi', 'devices'), this.sys('class', 'iscsi_host'), this.sys('class', 'scsi_host')]) {
      await mkdir(dir, { recursive: true });
    }
  }

  async run(argv: readonly string[], options: ExecOptions = {}): Promise<ExecResult> {
    this.calls.push([...argv]);
    const line = argv.join(' ');
    const fault = this.faults.find((f) => f.times > 0 && line.startsWith(f.match));
    if (fault) {
      fault.times -= 1;
      throw new CommandFailed([...argv], fault.timedOut ? undefined : fault.exitCode, 'injected fault', fault.timedOut ?? false);
    }
    const { exitCode = 0, stdout = '' } = await this.answer([...argv]);
    if (!(options.okExitCodes ?? [0]).includes(exitCode)) throw new CommandFailed([...argv], exitCode, `exit ${exitCode}`, false);
    return { stdout, stderr: '', exitCode };
  }

  private async answer(argv: string[]): Promise<{ exitCode?: number; stdout?: string }> {
    const [cmd, ...args] = argv;
    const opt = (flag: string) => args[args.indexOf(flag) + 1]!;
    if (cmd === 'iscsiadm' && opt('-m') === 'session') {
      if (this.sessions.length === 0) return { exitCode: 21 };
      return { stdout: this.sessions.map((s) => `tcp: [${s.id}] ${s.portal},1 ${s.iqn} (non-flash)\n`).join('') };
    }
    if (cmd === 'iscsiadm' && opt('-m') === 'node') {
      const key = `${opt('-T')} ${opt('-p')}`;
      if (args.includes('new')) this.nodes.set(key, new Map());
      else if (args.includes('update')) {
        if (!this.nodes.has(key)) return { exitCode: 21 };
        this.nodes.get(key)!.set(opt('-n'), opt('-v'));
      } else if (args.includes('delete')) return this.nodes.delete(key) ? {} : { exitCode: 21 };
      else if (args.includes('--login')) return this.login(opt('-T'), opt('-p'), this.nodes.get(key));
      else if (args.includes('--logout')) return this.logout(opt('-T'), opt('-p'));
      return {};
    }
    if (cmd === 'multipath' && args[0] === '-a') return {};
    if (cmd === 'multipathd' && args[0] === 'add') {
      await this.buildMaps(true);
      return {};
    }
    if (cmd === 'multipath' && args[0] === '-f') return this.flushMap(args[1]!);
    if (cmd === 'multipathd' && args[0] === 'resize') return this.dmNames.has(args[2]!) ? {} : { exitCode: 1 };
    if (cmd === 'blockdev') return {};
    if (cmd === 'sg_persist') return this.persist(args);
    throw new Error(`FakeIscsiHost: unexpected command ${argv.join(' ')}`);
  }

  /** sg_persist against the model: the SPC-3 rules ballast relies on, for type 5. */
  private async persist(args: string[]) {
    const disk = args.at(-1)!.replace('/dev/', '');
    const wwid = (await readFile(this.sys('block', disk, 'device', 'wwid'), 'utf8')).trim();
    const lu = this.reservations.get(wwid) ?? { keys: new Map<string, string>() };
    this.reservations.set(wwid, lu);
    const opt = (flag: string) => (args.includes(flag) ? BigInt(args[args.indexOf(flag) + 1]!) : 0n).toString(16);
    const [rk, sark] = [`0x${opt('-K')}`, `0x${opt('-S')}`];
    const conflict = { exitCode: 24 }; // sg_persist: reservation conflict
    if (args.includes('-i') && args.includes('-k')) {
      const keys = [...lu.keys.values()];
      return { stdout: keys.length ? `  PR generation=0x1, ${keys.length} registered reservation keys follow:\n${keys.map((k) => `    ${k}\n`).join('')}` : '  PR generation=0x0, there are NO registered reservation keys\n' };
    }
    if (args.includes('-i') && args.includes('-r')) {
      return { stdout: lu.holder ? `  PR generation=0x1, Reservation follows:\n    Key=${lu.holder}\n    scope: LU_SCOPE,  type: Write Exclusive, registrants only\n` : '  PR generation=0x0, there is NO reservation held\n' };
    }
    if (args.includes('-I')) lu.keys.set(disk, sark);
    else if (args.includes('-A') || args.includes('-P')) {
      if (![...lu.keys.values()].includes(rk)) return conflict;
      for (const [path, key] of lu.keys) if (key === sark) lu.keys.delete(path);
      if (lu.holder === sark) lu.holder = rk;
    } else if (args.includes('-R')) {
      if (lu.keys.get(disk) !== rk || (lu.holder && lu.holder !== rk)) return conflict;
      lu.holder = rk;
    } else if (args.includes('-G')) {
      if (lu.keys.get(disk) !== rk) return conflict;
      lu.keys.delete(disk);
      if (lu.holder === rk && ![...lu.keys.values()].includes(rk)) lu.holder = undefined;
    } else throw new Error(`FakeIscsiHost: unexpected sg_persist ${args.join(' ')}`);
    return {};
  }

  private async login(iqn: string, portal: string, node: Map<string, string> | undefined) {
    if (!node) return { exitCode: 21 };
    if (!this.targets.has(iqn) || !this.portals.has(portal)) return { exitCode: 8 }; // iscsid: connection failed
    if (this.chap && (node.get('node.session.auth.username') !== this.chap.username || node.get('node.session.auth.password') !== this.chap.password)) {
      return { exitCode: 24 }; // login authentication failed
    }
    if (this.sessions.some((s) => s.iqn === iqn && s.portal === portal)) return { exitCode: 15 };
    const session = { id: this.nextSession, host: this.nextSession + 1, portal, iqn };
    this.nextSession += 1;
    this.sessions.push(session);
    // As the kernel does with manual scan: the session and its target id, no target directory yet.
    await mkdir(this.sys('class', 'iscsi_host', `host${session.host}`, 'device', `session${session.id}`), { recursive: true });
    await mkdir(this.sys('class', 'iscsi_session', `session${session.id}`), { recursive: true });
    await writeFile(this.sys('class', 'iscsi_session', `session${session.id}`, 'target_id'), '0\n');
    await mkdir(this.sys('class', 'scsi_host', `host${session.host}`), { recursive: true });
    await writeFile(this.sys('class', 'scsi_host', `host${session.host}`, 'scan'), '');
    return {};
  }

  private async logout(iqn: string, portal: string) {
    const index = this.sessions.findIndex((s) => s.iqn === iqn && s.portal === portal);
    if (index < 0) return { exitCode: 21 };
    const [session] = this.sessions.splice(index, 1);
    await rm(this.sys('class', 'iscsi_host', `host${session!.host}`), { recursive: true, force: true });
    await rm(this.sys('class', 'iscsi_session', `session${session!.id}`), { recursive: true, force: true });
    return {};
  }

  /**
   * Makes a sysfs file (the path under /sys) one whose write never returns, as a scan or a delete
   * does while the kernel waits on a target that stopped answering: a FIFO nobody reads, whose
   * open(2) blocks. releaseHung() must run after the test, or the writes keep libuv's threads.
   */
  async hang(...sysPath: string[]): Promise<void> {
    const file = this.sys(...sysPath);
    await rm(file, { force: true });
    execFileSync('mkfifo', [file]);
    this.hung.add(file);
  }

  /** Lets the writes stuck in hang()'s files return: opens each for reading and drains it. */
  releaseHung(): void {
    for (const file of this.hung) {
      const fd = openSync(file, constants.O_RDONLY | constants.O_NONBLOCK);
      try {
        readSync(fd, Buffer.alloc(4096));
      } catch {
        // nothing written yet (EAGAIN): the writer's open() returns all the same
      } finally {
        closeSync(fd);
      }
    }
    this.hung.clear();
  }

  /** A sysfs file as the fake kernel reads it; "" for a hung one (reading it would release the writer). */
  protected async readSys(file: string): Promise<string> {
    if (this.hung.has(file)) return '';
    return (await readFile(file, 'utf8').catch(() => '')).trim();
  }

  /** What the kernel and udev would have done by now: answer scans, deletes, and multipathd's uevents. */
  async settle(): Promise<void> {
    for (const session of this.sessions) {
      const scanFile = this.sys('class', 'scsi_host', `host${session.host}`, 'scan');
      const request = await this.readSys(scanFile);
      if (!request) continue;
      await writeFile(scanFile, '');
      const lun = Number(request.split(' ')[2]);
      const offered = this.targets.get(session.iqn)?.find((l) => l.lun === lun);
      if (offered) await this.addDisk(`${session.host}:0:0:${lun}`, offered.wwid);
    }
    for (const disk of await this.disks()) {
      const deleted = (await this.readSys(this.sys('block', disk, 'device', 'delete'))) === '1';
      if (deleted) await this.removeDisk(disk);
    }
    if (this.autoMultipath) await this.buildMaps(false);
  }

  async disks(): Promise<string[]> {
    return (await readdir(this.sys('block'))).filter((d) => d.startsWith('sd'));
  }

  async maps(): Promise<string[]> {
    return (await readdir(this.sys('block'))).filter((d) => d.startsWith('dm-'));
  }

  protected async addDisk(hctl: string, wwid: string): Promise<void> {
    const disk = `sd${String.fromCharCode(97 + this.nextDisk++)}`;
    await mkdir(this.sys('bus', 'scsi', 'devices', hctl, 'block', disk), { recursive: true });
    await mkdir(this.sys('block', disk, 'device'), { recursive: true });
    await mkdir(this.sys('block', disk, 'holders'), { recursive: true });
    await writeFile(this.sys('block', disk, 'device', 'wwid'), `${wwid}\n`);
    await writeFile(this.sys('block', disk, 'device', 'delete'), '');
    await writeFile(this.sys('block', disk, 'hctl'), hctl);
  }

  private async removeDisk(disk: string): Promise<void> {
    const hctl = await readFile(this.sys('block', disk, 'hctl'), 'utf8');
    const holders = await readdir(this.sys('block', disk, 'holders'));
    if (holders.length > 0) throw new Error(`FakeIscsiHost: ${disk} deleted while ${holders.join(', ')} holds it (the kernel would hang I/O)`);
    await rm(this.sys('bus', 'scsi', 'devices', hctl), { recursive: true, force: true });
    await rm(this.sys('block', disk), { recursive: true, force: true });
  }

  /** Groups disks with one WWID into a map named by it (user_friendly_names no). */
  private async buildMaps(forced: boolean): Promise<void> {
    const byWwid = new Map<string, string[]>();
    for (const disk of await this.disks()) {
      const wwid = (await readFile(this.sys('block', disk, 'device', 'wwid'), 'utf8')).trim();
      byWwid.set(wwid, [...(byWwid.get(wwid) ?? []), disk]);
    }
    for (const [wwid, disks] of byWwid) {
      if (!forced && disks.length < 2) continue;
      const name = `3${wwid.replace(/^naa\./, '')}`;
      let dm = this.dmNames.get(name);
      if (!dm) {
        dm = `dm-${this.nextDm++}`;
        this.dmNames.set(name, dm);
        await mkdir(this.sys('block', dm, 'dm'), { recursive: true });
        await mkdir(this.sys('block', dm, 'slaves'), { recursive: true });
        await writeFile(this.sys('block', dm, 'dm', 'uuid'), `mpath-${name}\n`);
        await writeFile(this.sys('block', dm, 'dm', 'name'), `${name}\n`);
        await mkdir(join(this.root, 'dev', 'mapper'), { recursive: true });
        await writeFile(join(this.root, 'dev', 'mapper', name), ''); // udev's node
      }
      for (const disk of disks) {
        await mkdir(this.sys('block', dm, 'slaves', disk), { recursive: true });
        await mkdir(this.sys('block', disk, 'holders', dm), { recursive: true });
      }
    }
  }


  private async flushMap(name: string) {
    const dm = this.dmNames.get(name);
    if (!dm) return { exitCode: 1 };
    for (const disk of await readdir(this.sys('block', dm, 'slaves'))) await rm(this.sys('block', disk, 'holders', dm), { recursive: true, force: true });
    await rm(this.sys('block', dm), { recursive: true, force: true });
    await rm(join(this.root, 'dev', 'mapper', name), { force: true });
    this.dmNames.delete(name);
    return {};
  }
}
