import { execFile, execFileSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdir, mkdtemp, open, readdir, readFile, rm, stat } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import type { IscsiBackendConfig } from '../../src/config/schema.js';
import { RemoteFileStore } from '../../src/drivers/array-host/exec-file-store.js';
import { SshExec } from '../../src/drivers/array-host/ssh-exec.js';
import type { FileStore } from '../../src/drivers/file-store.js';
import type { CopyProgress } from '../../src/drivers/image-copy.js';
import { IscsiDriver } from '../../src/drivers/iscsi/iscsi-driver.js';
import { VolumeAlreadyExists, type NewVolume, type SnapshotCapable, type VolumeRecord } from '../../src/drivers/types.js';
import { BackendUnavailable, InvalidOption, SnapshotExists, SnapshotNotFound, VolumeNotFound } from '../../src/errors.js';
import { CommandRunner, type Exec } from '../../src/exec.js';
import type { Initiator } from '../../src/export.js';
import { silentLogger } from '../../src/log.js';
import { cleanUpUnder } from '../helpers/cleanup.js';
import { BALLAST_BIN, BallastProcess } from '../lab/ballast.js';
import { callOk, callPlugin } from '../helpers/plugin-client.js';
import { requireRootAndTools } from '../helpers/root.js';
import { PrivateSshd, requireSshd } from '../lab/sshd.js';
import { Tgtd, readCapacity, requireTgtTools } from '../lab/tgtd.js';

// Snapshots and clones on the iSCSI backend, for real: a tgtd of the test's own, image pools on
// the array host reached two ways (this host's command runner, and a private sshd on 127.0.0.1),
// on ext4 (a sparse copy), xfs with reflink (shared extents) and a full tmpfs (a copy that fails).
// The data is checked byte for byte in the images; each clone is checked as tgtd serves it.
// The last part runs `ballast serve` and the CLI on an iscsi profile (dist/: npm run build first).
requireTgtTools();
requireSshd();
requireRootAndTools('losetup', 'mkfs.xfs', 'mount', 'umount');

const MiB = 1024 ** 2;
const T = 60_000;
const PREFIX = 'iqn.2026-12.dev.ballast.snap';
const HOST1: Initiator = { hostId: 'h1', iqn: `${PREFIX}:host1` };
const run = (...argv: string[]) => execFileSync(argv[0]!, argv.slice(1), { encoding: 'utf8', timeout: 60_000 });

let tgtd: Tgtd | undefined;
let sshd: PrivateSshd | undefined;
let ssh: SshExec | undefined;
let work: string;
/** A 512 MiB xfs with reflink, and a 48 MiB tmpfs, mounted under `work`. */
let xfs: string;
let small: string;

function array(): Tgtd {
  if (!tgtd) throw new Error('tgtd did not start (see beforeAll)');
  return tgtd;
}

type ArrayHost = { exec: Exec; files?: FileStore };
const arrayHosts: [string, () => ArrayHost][] = [
  ['this host', () => ({ exec: new CommandRunner(silentLogger(), 10_000) })],
  ['over SSH', () => ({ exec: ssh!, files: new RemoteFileStore(ssh!) })],
];

function backendConfig(pool: string): IscsiBackendConfig {
  return { portals: [array().portal], target_prefix: PREFIX, array: { tgt_control_port: array().controlPort }, pool, multipath: true, reservations: true };
}

function volume(name: string, sizeBytes = 64 * MiB): NewVolume {
  return { name, profile: 'gold', sizeBytes, fstype: 'ext4', mkfsOpts: [], mountOpts: [], readonly: false };
}

/** Writes `data` into the file at each offset. */
async function writeAt(path: string, ...chunks: [number, Buffer][]): Promise<void> {
  const handle = await open(path, 'r+');
  try {
    for (const [offset, data] of chunks) await handle.write(data, 0, data.length, offset);
  } finally {
    await handle.close();
  }
}

const same = async (a: string, b: string) => Buffer.compare(await readFile(a), await readFile(b)) === 0;
const allocated = async (path: string) => (await stat(path)).blocks * 512;
/** The pool's entries other than its bookkeeping (.hosts, .rev). */
const poolEntries = async (pool: string) => (await readdir(pool)).filter((e) => !['.hosts', '.rev'].includes(e)).sort();

beforeAll(async () => {
  work = await mkdtemp(join(tmpdir(), 'ballast-iscsi-snap-'));
  tgtd = await Tgtd.start();
  sshd = await PrivateSshd.start();
  ssh = new SshExec({ host: sshd.host, port: sshd.port, username: sshd.username, privateKeyPath: sshd.privateKeyPath, hostKeySha256: sshd.hostKeySha256 }, silentLogger(), 10_000);
  xfs = join(work, 'xfs');
  small = join(work, 'small');
  await mkdir(xfs);
  await mkdir(small);
  run('truncate', '-s', '512M', join(work, 'xfs.img'));
  run('mkfs.xfs', '-q', '-m', 'reflink=1', join(work, 'xfs.img'));
  run('mount', '-o', 'loop', join(work, 'xfs.img'), xfs);
  run('mount', '-t', 'tmpfs', '-o', 'size=48m,mode=0700', 'tmpfs', small);
}, T);

afterAll(async () => {
  try {
    await ssh?.close();
    await sshd?.stop();
    await tgtd?.stop();
    if (tgtd?.running) throw new Error(`tgtd pid ${tgtd.pid} did not stop`);
  } finally {
    if (work) {
      cleanUpUnder(work);
      await rm(work, { recursive: true, force: true });
    }
  }
}, T);

describe.each(arrayHosts)('iSCSI snapshots and clones, the array host reached from %s', (where, arrayHost) => {
  const tag = where === 'this host' ? 'l' : 's';
  const newDriver = (pool: string) => new IscsiDriver(pool, backendConfig(pool), arrayHost(), 10_000, silentLogger(), undefined, 10_000);
  const snapshotsOf = (driver: IscsiDriver): SnapshotCapable => driver.snapshots;
  const newPool = (under = work) => mkdtemp(join(under, `pool-${tag}-`));

  it('snapshots, clones from the snapshot and from the live volume, byte for byte; each clone is a LUN of its own', async () => {
    const pool = await newPool();
    const driver = newDriver(pool);
    const snaps = snapshotsOf(driver);
    const v = await driver.create(volume('v', 32 * MiB));
    const image = driver.imagePath('v');
    // 3 MiB of data in three places, the rest holes.
    await writeAt(image, [0, randomBytes(MiB)], [20 * MiB, randomBytes(2 * MiB)], [32 * MiB - 4096, randomBytes(4096)]);
    const original = await readFile(image);

    const progress: CopyProgress[] = [];
    const snap = await snaps.createSnapshot(v, 's1', (p) => progress.push(p));
    expect(snap).toMatchObject({ volume: 'v', name: 's1', sizeBytes: 32 * MiB, fstype: 'ext4', method: 'copy', bytes: 32 * MiB });
    expect(snap.writtenBytes).toBeGreaterThanOrEqual(3 * MiB + 4096);
    expect(snap.writtenBytes).toBeLessThan(4 * MiB); // sparse: the holes stayed holes
    expect(progress.at(-1)).toEqual({ doneBytes: await allocated(image), totalBytes: await allocated(image) });
    const snapImage = join(pool, 'v', 'snapshots', 's1', 'disk.img');
    expect(Buffer.compare(await readFile(snapImage), original)).toBe(0);
    expect(await allocated(snapImage)).toBe(snap.writtenBytes);

    // The volume changes after the snapshot.
    await writeAt(image, [512, randomBytes(8192)], [25 * MiB, randomBytes(MiB)]);
    const changed = await readFile(image);
    expect(Buffer.compare(changed, original)).not.toBe(0);

    const fromSnap = await snaps.createFrom(volume('c-snap', 48 * MiB), { volume: 'v', snapshot: 's1' });
    expect(fromSnap).toMatchObject({ name: 'c-snap', sizeBytes: 48 * MiB, method: 'copy', ownership: { state: 'free' } });
    const fromLive = await snaps.createFrom(volume('c-live', 32 * MiB), { volume: 'v' });
    expect(fromLive).toMatchObject({ name: 'c-live', sizeBytes: 32 * MiB, method: 'copy' });
    const snapClone = await readFile(driver.imagePath('c-snap'));
    expect(snapClone.length).toBe(48 * MiB); // grown to the clone's size
    expect(Buffer.compare(snapClone.subarray(0, 32 * MiB), original)).toBe(0);
    expect(snapClone.subarray(32 * MiB).equals(Buffer.alloc(16 * MiB))).toBe(true);
    expect(Buffer.compare(await readFile(driver.imagePath('c-live')), changed)).toBe(0);
    expect((await driver.read('c-snap'))?.value).toMatchObject({ sizeBytes: 48 * MiB, fstype: 'ext4' });

    // The copies are their own: writing a clone changes neither the source nor the snapshot.
    await writeAt(driver.imagePath('c-snap'), [0, Buffer.alloc(MiB, 0x5a)]);
    expect(Buffer.compare(await readFile(image), changed)).toBe(0);
    expect(Buffer.compare(await readFile(snapImage), original)).toBe(0);

    // Exported, each clone is a target of its own whose LUN is its own image, at its own size.
    for (const name of ['v', 'c-snap', 'c-live']) await driver.export(name, HOST1);
    const shown = (await array().targets()).filter((t) => ['v', 'c-snap', 'c-live'].some((n) => t.iqn === driver.targetIqn(n)));
    expect(shown).toHaveLength(3);
    expect(new Set(shown.map((t) => t.tid)).size).toBe(3);
    for (const name of ['v', 'c-snap', 'c-live']) {
      const target = shown.find((t) => t.iqn === driver.targetIqn(name))!;
      expect(target.luns.get(1)).toBe(driver.imagePath(name));
      expect(target.acl).toEqual([HOST1.iqn]);
      const { lastLba } = await readCapacity(HOST1.iqn!, array().portal, target.iqn, 1);
      expect((lastLba + 1) * 512).toBe(name === 'c-snap' ? 48 * MiB : 32 * MiB);
    }
    // A snapshot is never served.
    expect((await array().targets()).flatMap((t) => [...t.luns.values()])).not.toContain(snapImage);

    expect(await snaps.listSnapshots('v')).toEqual([{ volume: 'v', name: 's1', createdAt: snap.createdAt, sizeBytes: 32 * MiB, fstype: 'ext4', method: 'copy' }]);
    expect((await snaps.listSnapshots()).map((s) => `${s.volume}@${s.name}`)).toEqual(['v@s1']);
    expect(await snaps.listSnapshots('c-snap')).toEqual([]);
    await snaps.removeSnapshot('v', 's1');
    expect(await snaps.listSnapshots('v')).toEqual([]);
    expect(await readdir(join(pool, 'v', 'snapshots'))).toEqual([]); // no .deleting-* left

    for (const name of ['v', 'c-snap', 'c-live']) {
      await driver.unexport(name, HOST1);
      await driver.destroy(name);
      expect(await driver.describeTarget(name)).toBeUndefined();
    }
    expect(await poolEntries(pool)).toEqual([]);
  }, T);

  it('refuses a missing source, a missing snapshot, a hostile or taken name with a clear error, and makes nothing', async () => {
    const pool = await newPool();
    const driver = newDriver(pool);
    const snaps = snapshotsOf(driver);
    const v = await driver.create(volume('v', 32 * MiB));
    await writeAt(driver.imagePath('v'), [MiB, randomBytes(MiB)]);
    await snaps.createSnapshot(v, 's1');
    const targetsBefore = (await array().targets()).map((t) => t.iqn);

    const refused = async (call: Promise<unknown>) => call.then(() => undefined, (err: unknown) => err);
    expect(await refused(snaps.createFrom(volume('c'), { volume: 'nosuch' }))).toBeInstanceOf(VolumeNotFound);
    expect(await refused(snaps.createFrom(volume('c'), { volume: 'nosuch', snapshot: 's1' }))).toBeInstanceOf(VolumeNotFound);
    const noSnap = await refused(snaps.createFrom(volume('c'), { volume: 'v', snapshot: 'nosnap' }));
    expect(noSnap).toBeInstanceOf(SnapshotNotFound);
    expect((noSnap as Error).message).toBe('volume v has no snapshot nosnap (ballast snapshot ls v lists them)');
    expect(await refused(snaps.createFrom(volume('c'), { volume: 'v', snapshot: '../v' }))).toBeInstanceOf(InvalidOption);
    expect(await refused(snaps.createFrom(volume('v'), { volume: 'v', snapshot: 's1' }))).toBeInstanceOf(VolumeAlreadyExists);
    for (const name of ['../../evil', '../v', 'a/b', '.hidden', '', 'x'.repeat(129), 'new\nline', '-rf']) {
      const err = await refused(snaps.createSnapshot(v, name));
      expect(err).toBeInstanceOf(InvalidOption);
      expect((err as Error).message).toMatch(/^snapshot name .* of volume v: expected letters, digits and _ \. -/);
      expect(await refused(snaps.removeSnapshot('v', name))).toBeInstanceOf(InvalidOption);
    }
    expect(await refused(snaps.createSnapshot(v, 's1'))).toBeInstanceOf(SnapshotExists);
    const ghost: VolumeRecord = { ...v, name: 'ghost' };
    expect(await refused(snaps.createSnapshot(ghost, 's'))).toBeInstanceOf(VolumeNotFound);
    expect(await refused(snaps.removeSnapshot('v', 'nosnap'))).toBeInstanceOf(SnapshotNotFound);

    // Nothing half-made on the array host: no volume, staging directory or stray snapshot; no target.
    expect(await poolEntries(pool)).toEqual(['v']);
    expect((await readdir(join(pool, 'v'))).sort()).toEqual(['disk.img', 'meta.json', 'snapshots']);
    expect(await readdir(join(pool, 'v', 'snapshots'))).toEqual(['s1']);
    expect((await array().targets()).map((t) => t.iqn)).toEqual(targetsBefore);
    expect((await driver.list()).map((r) => r.name)).toEqual(['v']);
    expect((await snaps.listSnapshots()).map((s) => `${s.volume}@${s.name}`)).toEqual(['v@s1']);
  }, T);

  it('racing creators of one snapshot (two hosts on one pool): exactly one wins, the others get SnapshotExists', async () => {
    const pool = await newPool();
    const drivers = [newDriver(pool), newDriver(pool), newDriver(pool)];
    const v = await drivers[0]!.create(volume('v', 16 * MiB));
    await writeAt(drivers[0]!.imagePath('v'), [0, randomBytes(MiB)]);
    const results = await Promise.allSettled(drivers.map((d) => d.snapshots.createSnapshot(v, 'same')));
    expect(results.filter((r) => r.status === 'fulfilled')).toHaveLength(1);
    for (const r of results) if (r.status === 'rejected') expect(r.reason).toBeInstanceOf(SnapshotExists);
    expect(await readdir(join(pool, 'v', 'snapshots'))).toEqual(['same']); // no .creating-* left
    expect(await same(drivers[0]!.imagePath('v'), join(pool, 'v', 'snapshots', 'same', 'disk.img'))).toBe(true);
  }, T);

  it('a copy that fails half-way (the pool is full) leaves no snapshot, no clone and no partial image', async () => {
    const pool = await newPool(small);
    const driver = newDriver(pool);
    const snaps = snapshotsOf(driver);
    const v = await driver.create(volume('v', 64 * MiB));
    await writeAt(driver.imagePath('v'), [0, Buffer.alloc(28 * MiB, 0xab)]); // 28 of 48 MiB: a second copy cannot fit
    const used = async () => Number(run('df', '--output=used', '-B1', small).split('\n')[1]);
    const before = await used();

    const snapErr = await snaps.createSnapshot(v, 's').then(() => undefined, (err: unknown) => err);
    expect(snapErr).toBeInstanceOf(BackendUnavailable);
    expect((snapErr as Error).message).toMatch(/^cannot snapshot volume v under .*No space left on device/s);
    const cloneErr = await snaps.createFrom(volume('c'), { volume: 'v' }).then(() => undefined, (err: unknown) => err);
    expect(cloneErr).toBeInstanceOf(BackendUnavailable);
    expect((cloneErr as Error).message).toMatch(/^cannot create volume c under .*No space left on device/s);

    expect(await poolEntries(pool)).toEqual(['v']);
    expect(await readdir(join(pool, 'v', 'snapshots'))).toEqual([]);
    expect(await snaps.listSnapshots()).toEqual([]);
    expect(await driver.read('c')).toBeUndefined();
    expect(await used()).toBeLessThanOrEqual(before + MiB); // the partial copies' space is back
    await driver.destroy('v');
  }, T);

  it('on xfs with reflink: the snapshot and the clone share extents, write nothing, and stay their own', async () => {
    const pool = await newPool(xfs);
    const driver = newDriver(pool);
    const snaps = snapshotsOf(driver);
    const v = await driver.create(volume('v', 32 * MiB));
    const image = driver.imagePath('v');
    await writeAt(image, [0, randomBytes(4 * MiB)], [24 * MiB, randomBytes(MiB)]);
    const original = await readFile(image);
    run('sync', image);
    const used = () => Number(run('df', '--output=used', '-B1', xfs).split('\n')[1]);
    const before = used();

    const snap = await snaps.createSnapshot(v, 's1');
    expect(snap).toMatchObject({ method: 'reflink', bytes: 32 * MiB, writtenBytes: 0 });
    const clone = await snaps.createFrom(volume('c', 48 * MiB), { volume: 'v', snapshot: 's1' });
    expect(clone).toMatchObject({ method: 'reflink', sizeBytes: 48 * MiB });
    expect(used() - before).toBeLessThan(MiB); // two copies of 5 MiB of data, and no space taken

    await writeAt(image, [4096, Buffer.alloc(4096, 0x11)]); // copy-on-write: only v's extent changes
    const snapImage = join(pool, 'v', 'snapshots', 's1', 'disk.img');
    expect(Buffer.compare(await readFile(snapImage), original)).toBe(0);
    const cloned = await readFile(driver.imagePath('c'));
    expect(Buffer.compare(cloned.subarray(0, 32 * MiB), original)).toBe(0);
    expect(cloned.length).toBe(48 * MiB);
    expect(await same(image, snapImage)).toBe(false);

    await driver.export('c', HOST1);
    const target = (await array().targets()).find((t) => t.iqn === driver.targetIqn('c'));
    expect(target?.luns.get(1)).toBe(driver.imagePath('c'));
    expect((await readCapacity(HOST1.iqn!, array().portal, target!.iqn, 1)).lastLba).toBe((48 * MiB) / 512 - 1);
    await driver.unexport('c', HOST1);
    await snaps.removeSnapshot('v', 's1');
    for (const name of ['v', 'c']) await driver.destroy(name);
    expect(await poolEntries(pool)).toEqual([]);
  }, T);
});

describe.each(arrayHosts)('through the daemon and the CLI, the array host reached from %s', (where) => {
  let daemon: BallastProcess | undefined;
  afterEach(async () => {
    await daemon?.stop();
    daemon = undefined;
  });

  const cli = async (...args: string[]) => {
    try {
      const { stdout, stderr } = await promisify(execFile)(process.execPath, [BALLAST_BIN, '--config', daemon!.configPath, ...args], { timeout: 60_000 });
      return { code: 0, stdout, stderr };
    } catch (err) {
      const e = err as { code?: number; stdout?: string; stderr?: string };
      return { code: e.code ?? -1, stdout: e.stdout ?? '', stderr: e.stderr ?? '' };
    }
  };

  it('ballast snapshot create/ls/rm and Create from=VOL@SNAP or from=VOL make iscsi volumes with the data; Remove waits for the snapshots', async () => {
    const pool = await mkdtemp(join(work, `pool-d${where === 'this host' ? 'l' : 's'}-`));
    const ssh = where === 'this host' ? {} : { ssh: { host: sshd!.host, port: sshd!.port, user: sshd!.username, private_key_file: sshd!.privateKeyPath, host_key_sha256: sshd!.hostKeySha256 } };
    daemon = await BallastProcess.create({
      dir: await mkdtemp(join(work, 'daemon-')),
      config: {
        backends: { loop: { root: join(work, 'unused-loop') }, iscsi: { portals: [array().portal], target_prefix: PREFIX, array: { tgt_control_port: array().controlPort, ...ssh }, pool, reservations: false } },
        profiles: { default: { backend: 'iscsi' } },
      },
    });
    await daemon.start();
    const socket = daemon.socket;
    const errOf = async (method: string, body: object) => String((await callPlugin(socket, method, body)).body.Err ?? '');

    await callOk(socket, 'VolumeDriver.Create', { Name: 'v', Opts: { size: '32M' } });
    const image = join(pool, 'v', 'disk.img');
    await writeAt(image, [0, randomBytes(MiB)], [20 * MiB, randomBytes(MiB)]);
    const original = await readFile(image);

    const made = await cli('snapshot', 'create', 'v', 's1');
    expect(made).toMatchObject({ code: 0, stdout: expect.stringMatching(/^v@s1: 32 MiB ext4, made by copy \(.+ written\)/) });
    expect((await cli('snapshot', 'ls', 'v')).stdout).toMatch(/^v\s+s1\s+32 MiB\s+ext4\s+copy\s/m);
    await writeAt(image, [0, randomBytes(4096)]);
    const changed = await readFile(image);

    await callOk(socket, 'VolumeDriver.Create', { Name: 'from-snap', Opts: { from: 'v@s1', size: '48M' } });
    await callOk(socket, 'VolumeDriver.Create', { Name: 'from-live', Opts: { from: 'v' } });
    const fromSnap = await readFile(join(pool, 'from-snap', 'disk.img'));
    expect(fromSnap.length).toBe(48 * MiB);
    expect(Buffer.compare(fromSnap.subarray(0, 32 * MiB), original)).toBe(0);
    expect(Buffer.compare(await readFile(join(pool, 'from-live', 'disk.img')), changed)).toBe(0);
    const listed = (await callOk(socket, 'VolumeDriver.List', {})).Volumes as { Name: string }[];
    expect(listed.map((l) => l.Name).sort()).toEqual(['from-live', 'from-snap', 'v']);

    expect(await errOf('VolumeDriver.Create', { Name: 'c', Opts: { from: 'v@nosnap' } })).toMatch(/volume v has no snapshot nosnap/);
    expect(await errOf('VolumeDriver.Create', { Name: 'c', Opts: { from: 'nosuch' } })).toMatch(/option from=nosuch: volume nosuch does not exist/);
    expect((await cli('snapshot', 'create', 'v', '../x')).stderr).toMatch(/snapshot name .*: expected letters, digits/);
    expect(await errOf('VolumeDriver.Remove', { Name: 'v' })).toMatch(/volume v has 1 snapshot\(s\) \(s1\): remove them first/);
    expect(await cli('volume', 'rm', '--with-snapshots', 'v')).toMatchObject({ code: 0 });
    expect(await poolEntries(pool)).toEqual(['from-live', 'from-snap']);
    expect((await cli('snapshot', 'ls')).stdout.trim().split('\n')).toHaveLength(1); // the header
  }, T);
});
