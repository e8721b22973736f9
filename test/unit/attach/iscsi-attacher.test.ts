import { mkdir, mkdtemp, readdir, readFile, rm, stat, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { IscsiAttacher } from '../../../src/attach/iscsi/iscsi-attacher.js';
import { reservationKey } from '../../../src/attach/iscsi/reservations.js';
import { AttachFailed, CommandFailed } from '../../../src/errors.js';
import type { ExecOptions, ExecResult } from '../../../src/exec.js';
import type { IscsiExport } from '../../../src/export.js';
import { silentLogger } from '../../../src/log.js';
import { FakeIscsiHost } from '../../helpers/fake-iscsi-host.js';

const IQN = 'iqn.2026-11.dev.ballast:pgdata';
const WWID = 'naa.60000000000000000e00000000010001';
const P1 = '10.0.0.5:3260';
const P2 = '10.0.1.5:3260';
const CTX = { hostId: 'host1', generation: 7 };

/**
 * FakeIscsiHost that also keeps each node record where open-iscsi does, in a file under root
 * (etc/iscsi/nodes/IQN/ADDRESS,PORT): `--op show` prints it with a set password masked, and a
 * login uses the password the file holds.
 */
class RecordFileHost extends FakeIscsiHost {
  /** An open-iscsi that keeps its records elsewhere: show never sees what ballast wrote. */
  recordsElsewhere = false;

  recordFile(iqn: string, portal: string): string {
    const [address, port] = portal.split(':');
    return join(this.root, 'etc', 'iscsi', 'nodes', iqn, `${address},${port}`);
  }

  override async run(argv: readonly string[], options?: ExecOptions): Promise<ExecResult> {
    const opt = (flag: string) => argv[argv.indexOf(flag) + 1]!;
    if (argv[0] !== 'iscsiadm' || opt('-m') !== 'node') return super.run(argv, options);
    const [iqn, portal] = [opt('-T'), opt('-p')];
    const file = this.recordFile(iqn, portal);
    const password = async () => (this.recordsElsewhere ? undefined : /^node\.session\.auth\.password = (.*)$/m.exec(await readFile(file, 'utf8'))?.[1]);
    if (argv.includes('show')) {
      this.calls.push([...argv]);
      const text = await readFile(file, 'utf8').catch(() => undefined);
      if (text === undefined) throw new CommandFailed([...argv], 21, 'No records found', false);
      const shown = text.replace(/^node\.session\.auth\.password = .*\n/m, '');
      return { stdout: (await password()) ? shown.replace('# END RECORD', 'node.session.auth.password = ********\n# END RECORD') : shown, stderr: '', exitCode: 0 };
    }
    if (argv.includes('--login') && this.nodes.has(`${iqn} ${portal}`)) {
      const secret = await password();
      if (secret) this.nodes.get(`${iqn} ${portal}`)!.set('node.session.auth.password', secret);
    }
    const result = await super.run(argv, options);
    if (argv.includes('new')) {
      const [address, port] = portal.split(':');
      await mkdir(dirname(file), { recursive: true });
      const fields = [`node.name = ${iqn}`, 'node.tpgt = -1', 'iface.iscsi_ifacename = default', `node.conn[0].address = ${address}`, `node.conn[0].port = ${port}`];
      await writeFile(file, ['# BEGIN RECORD 2.1.8', ...fields, '# END RECORD', ''].join('\n'), { mode: 0o600 });
    }
    if (argv.includes('delete')) await rm(file, { force: true });
    return result;
  }
}

describe('IscsiAttacher (fake iscsiadm and sysfs; the VM lab runs it against a real kernel)', () => {
  let root: string;
  let host: RecordFileHost;
  let attacher: IscsiAttacher;
  const exp = (over: Partial<IscsiExport> = {}): IscsiExport => ({ transport: 'iscsi', iqn: IQN, portals: [P1], lun: 1, multipath: false, reservations: false, ...over });

  beforeEach(async () => {
    root = await mkdtemp(join(tmpdir(), 'ballast-iscsi-'));
    host = new RecordFileHost(root);
    await host.init();
    host.portals = new Set([P1, P2]);
    host.targets.set(IQN, [{ lun: 1, wwid: WWID }]);
    attacher = new IscsiAttacher(host, silentLogger(), { commandTimeoutMs: 1_000, root, deviceWaitMs: 2_000, pollMs: 10, sleep: () => host.settle() });
  });
  afterEach(() => rm(root, { recursive: true, force: true }));

  const nodeCmd = (portal: string) => `iscsiadm -m node -T ${IQN} -p ${portal}`;

  it('reads the initiator name the array must let in', async () => {
    expect(await attacher.identify()).toEqual({ iqn: 'iqn.2026-11.dev.ballast:host1' });
  });

  it('attaches one portal in os-brick order: node record, manual scan and startup, login, a scan of exactly the LUN', async () => {
    host.autoMultipath = false;
    const device = await attacher.attach(exp(), CTX);
    expect(device).toBe('/dev/sda');
    expect(host.commands).toEqual([
      'iscsiadm -m session', // an existing session would be reused
      `${nodeCmd(P1)} --interface default --op new`,
      `${nodeCmd(P1)} --op update -n node.session.scan -v manual`,
      `${nodeCmd(P1)} --op update -n node.startup -v manual`,
      `${nodeCmd(P1)} --login`,
      'iscsiadm -m session', // then only sysfs: no disk yet, scan 0 0 1 on the session's SCSI host, there it is
    ]);
    expect(host.sessions).toHaveLength(1);
    expect(await attacher.isAttached(exp(), '/dev/sda')).toBe(true);
    expect(await attacher.isAttached(exp(), '/dev/sdb')).toBe(false);
  });

  it('detaches one portal: flush, delete the disk, log out, delete the node record', async () => {
    host.autoMultipath = false;
    await attacher.attach(exp(), CTX);
    host.calls.length = 0;
    await attacher.detach(exp(), '/dev/sda', CTX);
    expect(host.commands).toEqual([
      'iscsiadm -m session',
      'blockdev --flushbufs /dev/sda',
      `${nodeCmd(P1)} --logout`,
      `${nodeCmd(P1)} --op delete`,
    ]);
    expect(await host.disks()).toEqual([]);
    expect(host.sessions).toEqual([]);
    expect(host.nodes.size).toBe(0);
  });

  it('with two portals logs in to each and returns the multipath map; detach flushes the map before deleting paths', async () => {
    const e = exp({ portals: [P1, P2] });
    const device = await attacher.attach(e, CTX);
    expect(device).toBe('/dev/mapper/360000000000000000e00000000010001');
    expect(host.commands.filter((c) => c.endsWith('--login'))).toEqual([`${nodeCmd(P1)} --login`, `${nodeCmd(P2)} --login`]);
    expect((await host.disks()).sort()).toEqual(['sda', 'sdb']);
    expect(await attacher.isAttached(e, device)).toBe(true);
    host.calls.length = 0;
    await attacher.detach(e, device, CTX);
    expect(host.commands).toEqual([
      'iscsiadm -m session',
      'multipath -f 360000000000000000e00000000010001',
      `${nodeCmd(P1)} --logout`,
      `${nodeCmd(P1)} --op delete`,
      `${nodeCmd(P2)} --logout`,
      `${nodeCmd(P2)} --op delete`,
    ]);
    expect(await host.maps()).toEqual([]);
    expect(await host.disks()).toEqual([]);
    expect(host.sessions).toEqual([]);
  });

  it('grows online: rescans every path, then resizes the map; refuses while a path is down', async () => {
    const e = exp({ portals: [P1, P2] });
    const device = await attacher.attach(e, CTX);
    host.calls.length = 0;
    expect(await attacher.refreshSize(e, device)).toBe(true);
    expect(host.commands).toEqual(['iscsiadm -m session', 'multipathd resize map 360000000000000000e00000000010001']);
    for (const disk of ['sda', 'sdb']) expect(await readFile(join(root, 'sys', 'block', disk, 'device', 'rescan'), 'utf8')).toBe('1');
    await host.run(['iscsiadm', '-m', 'node', '-T', IQN, '-p', P2, '--logout']);
    await expect(attacher.refreshSize(e, device)).rejects.toThrow(/only 1 of 2 paths are up/);
  });

  it('with multipath set, goes through a map even over one portal', async () => {
    host.autoMultipath = false;
    expect(await attacher.attach(exp({ multipath: true }), CTX)).toBe('/dev/mapper/360000000000000000e00000000010001');
    expect(host.commands.filter((c) => c.startsWith('multipath'))).toEqual(['multipath -a /dev/sda', 'multipathd add path /dev/sda']);
  });

  it('forces the map with multipath -a and multipathd add path when multipathd did not build it', async () => {
    host.autoMultipath = false;
    const device = await attacher.attach(exp({ portals: [P1, P2] }), CTX);
    expect(device).toBe('/dev/mapper/360000000000000000e00000000010001');
    expect(host.commands.filter((c) => c.startsWith('multipath'))).toEqual(['multipath -a /dev/sda', 'multipathd add path /dev/sda', 'multipathd add path /dev/sdb']);
  });

  it('sets CHAP on the node record, the secret written into its file (0600) and on no command line', async () => {
    host.autoMultipath = false;
    host.chap = { username: 'ballast', password: 'secret-secret-12' };
    await attacher.attach(exp({ chap: { ...host.chap } }), CTX);
    expect(host.commands.filter((c) => c.includes('auth') || c.endsWith('show'))).toEqual([
      `${nodeCmd(P1)} --op update -n node.session.auth.authmethod -v CHAP`,
      `${nodeCmd(P1)} --op update -n node.session.auth.username -v ballast`,
      `${nodeCmd(P1)} --op show`, // where the record is
      `${nodeCmd(P1)} --op show`, // iscsiadm reads the secret back
    ]);
    expect(host.commands.filter((c) => c.includes('secret-secret-12'))).toEqual([]);
    const file = host.recordFile(IQN, P1);
    expect(await readFile(file, 'utf8')).toMatch(/\nnode\.session\.auth\.password = secret-secret-12\n# END RECORD\n$/);
    expect((await stat(file)).mode & 0o777).toBe(0o600);
    expect(host.sessions).toHaveLength(1);
  });

  it('does not log in when iscsiadm does not read the secret where ballast wrote it, and leaves no node record', async () => {
    host.chap = { username: 'ballast', password: 'secret-secret-12' };
    host.recordsElsewhere = true;
    const err = await attacher.attach(exp({ chap: { ...host.chap } }), CTX).catch((e: unknown) => e);
    expect((err as Error).message).toBe(`iscsiadm does not see the node.session.auth.password ballast wrote into ${host.recordFile(IQN, P1)}: is that where this open-iscsi keeps its node records?`);
    expect(host.commands.filter((c) => c.endsWith('--login'))).toEqual([]);
    expect(host.nodes.size).toBe(0);
  });

  it('a wrong CHAP secret fails with a clear error and leaves no node record, session or disk', async () => {
    host.chap = { username: 'ballast', password: 'secret-secret-12' };
    const err = await attacher.attach(exp({ chap: { username: 'ballast', password: 'wrong-wrong-wrong' } }), CTX).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(AttachFailed);
    expect((err as Error).message).toMatch(/cannot attach iSCSI target iqn.2026-11.dev.ballast:pgdata LUN 1: command 'iscsiadm .* --login' exited with code 24/);
    expect((err as Error).message).not.toContain('wrong-wrong-wrong');
    expect(host.sessions).toEqual([]);
    expect(host.nodes.size).toBe(0);
  });

  it('scans LUN numbers of 256 and more as the kernel numbers them', async () => {
    host.autoMultipath = false;
    host.targets.set(IQN, [{ lun: 300, wwid: WWID }]);
    const device = await attacher.attach(exp({ lun: 300 }), CTX);
    expect(device).toBe('/dev/sda');
    expect(await readdir(join(root, 'sys', 'bus', 'scsi', 'devices'))).toEqual(['2:0:0:300']);
  });

  it('reuses a session another volume on the same target already has, and keeps it while that LUN is attached', async () => {
    host.autoMultipath = false;
    host.targets.set(IQN, [{ lun: 1, wwid: WWID }, { lun: 2, wwid: 'naa.60000000000000000e00000000010002' }]);
    await attacher.attach(exp({ lun: 1 }), CTX);
    await attacher.attach(exp({ lun: 2 }), CTX);
    expect(host.commands.filter((c) => c.endsWith('--login'))).toHaveLength(1);
    expect(host.sessions).toHaveLength(1);
    await attacher.detach(exp({ lun: 1 }), '/dev/sda', CTX);
    expect(host.sessions).toHaveLength(1); // LUN 2 still uses it
    expect(host.commands.filter((c) => c.endsWith('--logout'))).toEqual([]);
    await attacher.detach(exp({ lun: 2 }), '/dev/sdb', CTX);
    expect(host.sessions).toEqual([]);
  });

  it('a LUN that never appears fails within the bound, naming the LUN, and logs out again', async () => {
    host.targets.set(IQN, [{ lun: 7, wwid: WWID }]);
    const started = Date.now();
    const err = await attacher.attach(exp({ lun: 1 }), CTX).catch((e: unknown) => e);
    expect(Date.now() - started).toBeLessThan(5_000);
    expect((err as Error).message).toMatch(/LUN 1 of iSCSI target iqn.2026-11.dev.ballast:pgdata did not appear within 2 s \(1 of 1 portals logged in\)/);
    expect(host.sessions).toEqual([]);
    expect(host.nodes.size).toBe(0);
  });

  it('a timed-out iscsiadm fails the attach and undoes the login', async () => {
    host.faults.push({ match: `${nodeCmd(P2)} --login`, timedOut: true, times: 1 });
    const err = await attacher.attach(exp({ portals: [P1, P2] }), CTX).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(AttachFailed);
    expect((err as Error).message).toMatch(/--login' timed out/);
    expect(host.sessions).toEqual([]);
    expect(await host.disks()).toEqual([]);
  });

  it('retries an iscsiadm call that fails with exit code 6 (database failure), and gives up after 3', async () => {
    host.autoMultipath = false;
    host.faults.push({ match: `${nodeCmd(P1)} --interface default --op new`, exitCode: 6, times: 2 });
    expect(await attacher.attach(exp(), CTX)).toBe('/dev/sda');
    expect(host.commands.filter((c) => c.endsWith('--op new'))).toHaveLength(3);
    await attacher.detach(exp(), '/dev/sda', CTX);
    host.faults.push({ match: `${nodeCmd(P1)} --interface default --op new`, exitCode: 6, times: 3 });
    await expect(attacher.attach(exp(), CTX)).rejects.toThrow(/exited with code 6/);
  });

  it('refuses paths that lead to different devices instead of joining them in one map', async () => {
    host.targets.set(IQN, [{ lun: 1, wwid: WWID }]);
    host.autoMultipath = false;
    // P1's path is already there; behind P2 answers another array that uses the same target name.
    await host.run(['iscsiadm', '-m', 'node', '-T', IQN, '-p', P1, '--op', 'new']);
    await host.run(['iscsiadm', '-m', 'node', '-T', IQN, '-p', P1, '--login']);
    await writeFile(join(root, 'sys', 'class', 'scsi_host', 'host2', 'scan'), '0 0 1');
    await host.settle();
    host.targets.set(IQN, [{ lun: 1, wwid: 'naa.6000000000000000ffff000000010001' }]);
    await expect(attacher.attach(exp({ portals: [P1, P2] }), CTX)).rejects.toThrow(/lead to different or unidentified devices/);
  });

  describe('SCSI-3 persistent reservations (the storage-side fence)', () => {
    const MINE = reservationKey('host1', 7);
    const e = () => exp({ portals: [P1, P2], reservations: true });

    it('derives a key from the host id and the lease generation', () => {
      expect(MINE).toMatch(/^0x[0-9a-f]{8}00000007$/);
      expect(reservationKey('host1', 8)).not.toBe(MINE);
      expect(reservationKey('host2', 7).slice(-8)).toBe('00000007');
      expect(reservationKey('host2', 7)).not.toBe(MINE);
    });

    it('registers on every path and reserves type 5 before the device is handed out', async () => {
      await attacher.attach(e(), CTX);
      expect(host.commands.filter((c) => c.startsWith('sg_persist'))).toEqual([
        `sg_persist -n -o -I -S ${MINE} /dev/sda`,
        `sg_persist -n -o -I -S ${MINE} /dev/sdb`,
        'sg_persist -n -i -k /dev/sda',
        'sg_persist -n -i -r /dev/sda',
        `sg_persist -n -o -R -T 5 -K ${MINE} /dev/sda`,
      ]);
      expect(host.reservations.get(WWID)).toEqual({ keys: new Map([['sda', MINE], ['sdb', MINE]]), holder: MINE });
    });

    it('a takeover preempts and aborts the former holder\'s key; detach unregisters and frees the reservation', async () => {
      const former = reservationKey('host0', 6);
      host.reservations.set(WWID, { keys: new Map([['remote-a', former], ['remote-b', former]]), holder: former });
      await attacher.attach(e(), CTX);
      expect(host.commands).toContain(`sg_persist -n -o -A -T 5 -K ${MINE} -S ${former} /dev/sda`);
      expect(host.reservations.get(WWID)).toEqual({ keys: new Map([['sda', MINE], ['sdb', MINE]]), holder: MINE });
      await attacher.detach(e(), '', CTX);
      expect(host.reservations.get(WWID)).toEqual({ keys: new Map(), holder: undefined });
    });

    it('falls back to PREEMPT where the array lacks PREEMPT AND ABORT (tgt 1.0.85)', async () => {
      const former = reservationKey('host0', 6);
      host.reservations.set(WWID, { keys: new Map([['remote-a', former]]), holder: former });
      host.faults.push({ match: 'sg_persist -n -o -A', exitCode: 5, times: 1 });
      await attacher.attach(e(), CTX);
      expect(host.commands).toContain(`sg_persist -n -o -P -T 5 -K ${MINE} -S ${former} /dev/sda`);
      expect(host.reservations.get(WWID)?.holder).toBe(MINE);
    });

    it('a reservation it cannot take fails the attach and leaves nothing attached', async () => {
      host.faults.push({ match: 'sg_persist -n -o -I', exitCode: 24, times: 1 });
      await expect(attacher.attach(e(), CTX)).rejects.toThrow(/cannot take the SCSI reservation with key 0x[0-9a-f]{16}: command 'sg_persist .*' exited with code 24/);
      expect(host.sessions).toEqual([]);
      expect(await host.disks()).toEqual([]);
      expect(await host.maps()).toEqual([]);
    });
  });
});
