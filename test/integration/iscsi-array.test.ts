import { mkdtemp, readdir, rm, stat } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { IscsiBackendConfig } from '../../src/config/schema.js';
import { IscsiDriver, VOLUME_LUN } from '../../src/drivers/iscsi/iscsi-driver.js';
import { VolumeAlreadyExists, type NewVolume } from '../../src/drivers/types.js';
import { BackendUnavailable, StaleRevision } from '../../src/errors.js';
import { CommandRunner, type Exec, type ExecOptions, type ExecResult } from '../../src/exec.js';
import type { Initiator } from '../../src/export.js';
import { silentLogger } from '../../src/log.js';
import type { OwnershipRecord } from '../../src/ownership/types.js';
import { Tgtd, discover, inquiry, readCapacity, requireTgtTools, unusedControlPort, type Chap } from '../lab/tgtd.js';

// The iSCSI backend driver against a real tgtd of this test's own (its own control port and
// portal on 127.0.0.1), checked from the outside the way a host would see it: libiscsi's
// iscsi-ls (discovery), iscsi-inq (a full login + INQUIRY) and iscsi-readcapacity16.

const MiB = 1024 ** 2;
const T = 30_000;
const PREFIX = 'iqn.2026-11.dev.ballast.test';
const COMMAND_TIMEOUT_MS = 10_000;
const HOST1: Initiator = { hostId: 'h1', iqn: `${PREFIX}:host1` };
const HOST2: Initiator = { hostId: 'h2', iqn: `${PREFIX}:host2` };
const CHAP: Chap = { username: 'ballast', password: 'secret-secret-12' };

let tgtd: Tgtd | undefined;
let work: string | undefined;

function array(): Tgtd {
  if (!tgtd) throw new Error('tgtd did not start (see beforeAll)');
  return tgtd;
}

async function newPool(): Promise<string> {
  return mkdtemp(join(work!, 'pool-'));
}

function backendConfig(pool: string, options: { controlPort?: number; chap?: Chap } = {}): IscsiBackendConfig {
  return {
    portals: [array().portal],
    target_prefix: PREFIX,
    array: { tgt_control_port: options.controlPort ?? array().controlPort },
    pool,
    multipath: true,
    reservations: true,
    ...(options.chap ? { chap: { ...options.chap } } : {}),
  };
}

interface DriverOptions {
  controlPort?: number;
  chap?: Chap;
  commandTimeoutMs?: number;
  /** Wraps the real CommandRunner (to watch or interfere with tgtadm calls). */
  wrap?: (real: Exec) => Exec;
}

function newDriver(pool: string, options: DriverOptions = {}): IscsiDriver {
  const timeout = options.commandTimeoutMs ?? COMMAND_TIMEOUT_MS;
  const real = new CommandRunner(silentLogger(), timeout);
  return new IscsiDriver(pool, backendConfig(pool, options), { exec: options.wrap ? options.wrap(real) : real }, timeout, silentLogger());
}

const argAfter = (argv: readonly string[], flag: string) => argv[argv.indexOf(flag) + 1];

/**
 * Another daemon on the same array, simulated: just before the driver's first
 * `tgtadm --mode target --op new --tid N`, a target named `thief` takes tid N.
 */
class TidThief implements Exec {
  stolen?: number;
  constructor(
    private readonly real: Exec,
    private readonly thief: string,
  ) {}

  async run(argv: readonly string[], options?: ExecOptions): Promise<ExecResult> {
    if (this.stolen === undefined && argAfter(argv, '--mode') === 'target' && argAfter(argv, '--op') === 'new') {
      this.stolen = Number(argAfter(argv, '--tid'));
      await array().tgtadm(['--mode', 'target', '--op', 'new', '--tid', String(this.stolen), '--targetname', this.thief]);
    }
    return this.real.run(argv, options);
  }
}

function volume(name: string, sizeBytes = 64 * MiB): NewVolume {
  return { name, profile: 'gold', sizeBytes, fstype: 'ext4', mkfsOpts: [], mountOpts: [], readonly: false };
}

/** True when `initiator` can log in to the volume's LUN and read its INQUIRY data. */
async function canLogIn(initiator: Initiator, target: string, chap?: Chap): Promise<boolean> {
  const r = await inquiry(initiator.iqn!, array().portal, target, VOLUME_LUN, chap);
  if (r.exitCode === 0) {
    expect(r.stdout).toMatch(/Peripheral Device Type:DIRECT_ACCESS/);
    return true;
  }
  return false;
}

/** Asserts the login is refused because of the ACL (not because the portal is down). */
async function expectRefused(initiator: Initiator, target: string): Promise<void> {
  const r = await inquiry(initiator.iqn!, array().portal, target, VOLUME_LUN);
  expect(r.exitCode).not.toBe(0);
  expect(`${r.stdout}${r.stderr}`).toMatch(/Target not found/);
}

/** The targets discovery shows `initiator`; discovery itself must work. */
async function visibleTo(initiator: Initiator, chap?: Chap): Promise<Map<string, Map<number, string>>> {
  const { targets, result } = await discover(initiator.iqn!, array().portal, chap);
  expect(result.exitCode).toBe(0);
  return targets;
}

async function shownTarget(iqn: string) {
  return (await array().targets()).find((t) => t.iqn === iqn);
}

beforeAll(async () => {
  requireTgtTools();
  work = await mkdtemp(join(tmpdir(), 'ballast-iscsi-'));
  tgtd = await Tgtd.start();
}, T);

afterAll(async () => {
  try {
    await tgtd?.stop();
    if (tgtd?.running) throw new Error(`tgtd pid ${tgtd.pid} did not stop`);
  } finally {
    if (work) await rm(work, { recursive: true, force: true });
  }
}, T);

describe('IscsiDriver against a real tgtd', () => {
  it('provisions: create + export gives target, LUN 1 and portals; host1 discovers it, logs in and reads the exact size', async () => {
    const pool = await newPool();
    const driver = newDriver(pool);
    const name = 'prov1';
    const record = await driver.create(volume(name));
    expect(record).toMatchObject({ name, sizeBytes: 64 * MiB, ownership: { state: 'free' } });
    expect((await stat(driver.imagePath(name))).size).toBe(64 * MiB);

    const exp = await driver.export(name, HOST1);
    const iqn = `${PREFIX}:${name}`;
    expect(exp).toEqual({ transport: 'iscsi', iqn, lun: 1, portals: [array().portal], multipath: true, reservations: true });
    expect(driver.targetIqn(name)).toBe(iqn);

    // The array's own view.
    const shown = await shownTarget(iqn);
    expect(shown?.luns.get(1)).toBe(driver.imagePath(name));
    expect(shown?.acl).toEqual([HOST1.iqn]);
    expect(shown?.accounts).toEqual([]);
    const described = await driver.describeTarget(name);
    expect(described).toMatchObject({ tid: shown!.tid, iqn, acl: [HOST1.iqn] });

    // The host's view.
    const visible = await visibleTo(HOST1);
    expect(visible.get(iqn)?.get(1)).toMatch(/^Type:DIRECT_ACCESS/);
    const cap = await readCapacity(HOST1.iqn!, array().portal, iqn, 1);
    expect(cap).toMatchObject({ lastLba: (64 * MiB) / 512 - 1, blockLength: 512 });
    expect(await canLogIn(HOST1, iqn)).toBe(true);

    // Exporting again to the same host changes nothing.
    expect(await driver.export(name, HOST1)).toEqual(exp);
    const again = await shownTarget(iqn);
    expect(again).toMatchObject({ tid: shown!.tid, acl: [HOST1.iqn] });
    expect((await array().targets()).filter((t) => t.iqn === iqn)).toHaveLength(1);
  }, T);

  it('ACL per IQN: only the host the volume was last exported to logs in or discovers it; unexport shuts everybody out', async () => {
    const driver = newDriver(await newPool());
    const name = 'acl1';
    const iqn = driver.targetIqn(name);
    await driver.create(volume(name));
    await driver.export(name, HOST1);

    expect(await canLogIn(HOST1, iqn)).toBe(true);
    await expectRefused(HOST2, iqn);
    expect((await visibleTo(HOST1)).has(iqn)).toBe(true);
    expect((await visibleTo(HOST2)).has(iqn)).toBe(false);

    // Handing the volume to host2 lets host2 in and host1 out.
    await driver.export(name, HOST2);
    expect((await shownTarget(iqn))?.acl).toEqual([HOST2.iqn]);
    expect(await canLogIn(HOST2, iqn)).toBe(true);
    await expectRefused(HOST1, iqn);
    expect((await visibleTo(HOST2)).has(iqn)).toBe(true);
    expect((await visibleTo(HOST1)).has(iqn)).toBe(false);

    // Unexport from a host not in the ACL is a no-op; from the holder, nobody is left.
    await driver.unexport(name, HOST1);
    expect(await canLogIn(HOST2, iqn)).toBe(true);
    await driver.unexport(name, HOST2);
    expect((await shownTarget(iqn))?.acl).toEqual([]);
    await expectRefused(HOST1, iqn);
    await expectRefused(HOST2, iqn);
    expect((await visibleTo(HOST1)).has(iqn)).toBe(false);
    expect((await visibleTo(HOST2)).has(iqn)).toBe(false);
    // The target stays (the volume still exists): exporting again is instant.
    expect(await shownTarget(iqn)).toBeDefined();
  }, T);

  it('CHAP: the export carries the credentials and the target refuses logins without them or with a wrong password', async () => {
    const driver = newDriver(await newPool(), { chap: CHAP });
    const name = 'chap1';
    const iqn = driver.targetIqn(name);
    await driver.create(volume(name));
    const exp = await driver.export(name, HOST1);
    expect(exp).toEqual({ transport: 'iscsi', iqn, lun: 1, portals: [array().portal], multipath: true, reservations: true, chap: CHAP });
    expect((await shownTarget(iqn))?.accounts).toEqual([CHAP.username]);

    const none = await inquiry(HOST1.iqn!, array().portal, iqn, 1);
    expect(none.exitCode).not.toBe(0);
    expect(`${none.stdout}${none.stderr}`).toMatch(/Authentication failure/);
    const wrong = await inquiry(HOST1.iqn!, array().portal, iqn, 1, { username: CHAP.username, password: 'wrong-password-1' });
    expect(wrong.exitCode).not.toBe(0);
    expect(`${wrong.stdout}${wrong.stderr}`).toMatch(/Authentication failure/);
    expect(await canLogIn(HOST1, iqn, CHAP)).toBe(true);
    const cap = await readCapacity(HOST1.iqn!, array().portal, iqn, 1, CHAP);
    expect(cap.lastLba).toBe((64 * MiB) / 512 - 1);
    // CHAP does not replace the ACL: host2 with the right secret is still refused.
    const other = await inquiry(HOST2.iqn!, array().portal, iqn, 1, CHAP);
    expect(other.exitCode).not.toBe(0);

    // A second export (say, to another host) keeps the account bound exactly once.
    await driver.export(name, HOST2);
    expect((await shownTarget(iqn))?.accounts).toEqual([CHAP.username]);
    expect(await canLogIn(HOST2, iqn, CHAP)).toBe(true);
  }, T);

  it('destroy after unexport removes the target from tgtd, from discovery, and the volume directory from the pool', async () => {
    const pool = await newPool();
    const driver = newDriver(pool);
    const name = 'gone1';
    const iqn = driver.targetIqn(name);
    await driver.create(volume(name));
    await driver.export(name, HOST1);
    expect(await canLogIn(HOST1, iqn)).toBe(true);
    await driver.unexport(name, HOST1);
    await driver.destroy(name);

    expect(await shownTarget(iqn)).toBeUndefined();
    expect(await driver.describeTarget(name)).toBeUndefined();
    expect((await visibleTo(HOST1)).has(iqn)).toBe(false);
    expect(await readdir(pool)).toEqual(['.rev']); // no volume dir, no .deleting-* left over
    expect(await readdir(join(pool, '.rev'))).toEqual([]); // nor its change marker
    expect(await driver.read(name)).toBeUndefined();
    await driver.destroy(name); // destroying a missing volume succeeds
  }, T);

  it('grow while exported: the LUN is reopened and the host reads the new capacity', async () => {
    const driver = newDriver(await newPool());
    const name = 'grow1';
    const iqn = driver.targetIqn(name);
    await driver.create(volume(name));
    await driver.export(name, HOST1);
    expect((await readCapacity(HOST1.iqn!, array().portal, iqn, 1)).lastLba).toBe((64 * MiB) / 512 - 1);

    const grown = await driver.grow(name, 128 * MiB);
    expect(grown.sizeBytes).toBe(128 * MiB);
    expect((await driver.read(name))?.value.sizeBytes).toBe(128 * MiB);
    expect((await stat(driver.imagePath(name))).size).toBe(128 * MiB);
    expect((await readCapacity(HOST1.iqn!, array().portal, iqn, 1)).lastLba).toBe((128 * MiB) / 512 - 1);
    // Same target, same backing file, LUN back online, ACL untouched.
    const shown = await shownTarget(iqn);
    expect(shown?.luns.get(1)).toBe(driver.imagePath(name));
    expect(shown?.acl).toEqual([HOST1.iqn]);
    expect(await canLogIn(HOST1, iqn)).toBe(true);
  }, T);

  it('metadata compare-and-swap under concurrency: one creator of 20, one writer of 10', async () => {
    const pool = await newPool();
    const driver = newDriver(pool);
    const name = 'cas1';

    const creates = await Promise.allSettled(Array.from({ length: 20 }, (_, i) => driver.create({ ...volume(name), profile: `p${i}` })));
    const created = creates.filter((r) => r.status === 'fulfilled');
    const refused = creates.filter((r): r is PromiseRejectedResult => r.status === 'rejected');
    expect(created).toHaveLength(1);
    expect(refused).toHaveLength(19);
    const winner = (created[0] as PromiseFulfilledResult<Awaited<ReturnType<IscsiDriver['create']>>>).value;
    for (const r of refused) {
      expect(r.reason).toBeInstanceOf(VolumeAlreadyExists);
      expect((r.reason as VolumeAlreadyExists).existing).toEqual(winner); // every loser sees the winner's record
    }
    expect(await readdir(pool)).toEqual(['.rev', name]); // no .creating-* left over

    const before = await driver.readOwnership(name);
    expect(before?.revision).toBe(1);
    const records: OwnershipRecord[] = Array.from({ length: 10 }, (_, i) => ({
      state: 'held',
      holder: { hostId: `host${i}`, bootId: `boot${i}`, hostname: `host${i}.test`, hostGeneration: 1 },
      generation: 1,
      updatedAt: new Date().toISOString(),
    }));
    const writes = await Promise.allSettled(records.map((next) => driver.writeOwnership(name, before!.revision, next)));
    const won = writes.flatMap((r, i) => (r.status === 'fulfilled' ? [{ i, revision: r.value }] : []));
    expect(won).toHaveLength(1);
    expect(won[0]!.revision).toBe(2);
    for (const r of writes) if (r.status === 'rejected') expect(r.reason).toBeInstanceOf(StaleRevision);
    expect(await driver.readOwnership(name)).toEqual({ value: records[won[0]!.i], revision: 2 });
    expect((await readdir(join(pool, name))).sort()).toEqual(['disk.img', 'meta.json']); // guard released, no temp files
  }, T);

  it('two drivers ("hosts") on one pool export 8 volumes at once: a target each, distinct tids, the right backing file', async () => {
    const pool = await newPool();
    const a = newDriver(pool);
    const b = newDriver(pool);
    // Distinct sizes, so the capacity the host reads proves which file backs which target.
    const names = Array.from({ length: 8 }, (_, i) => `multi${i}`);
    await Promise.all(names.map((n, i) => (i % 2 ? b : a).create(volume(n, (8 + i) * MiB))));
    const exports = await Promise.all(names.map((n, i) => (i % 2 ? b : a).export(n, i % 2 ? HOST2 : HOST1)));
    expect(exports.map((e) => (e.transport === 'iscsi' ? e.iqn : ''))).toEqual(names.map((n) => `${PREFIX}:${n}`));

    const shown = (await array().targets()).filter((t) => t.iqn.startsWith(`${PREFIX}:multi`));
    expect(shown.map((t) => t.iqn).sort()).toEqual(names.map((n) => `${PREFIX}:${n}`).sort());
    expect(new Set(shown.map((t) => t.tid)).size).toBe(8);
    for (const [i, n] of names.entries()) {
      const host = i % 2 ? HOST2 : HOST1;
      const t = shown.find((s) => s.iqn === `${PREFIX}:${n}`)!;
      expect(t.luns.get(1)).toBe(join(pool, n, 'disk.img'));
      expect(t.acl).toEqual([host.iqn]);
      const cap = await readCapacity(host.iqn!, array().portal, t.iqn, 1);
      expect(cap.lastLba).toBe(((8 + i) * MiB) / 512 - 1);
    }
  }, T);

  it('two drivers exporting the same new volume at once: both succeed on one target (the loser finds the winner\'s)', async () => {
    const pool = await newPool();
    const a = newDriver(pool);
    const b = newDriver(pool);
    for (let round = 0; round < 5; round++) {
      const name = `race${round}`;
      await a.create(volume(name, 16 * MiB));
      const results = await Promise.allSettled([a.export(name, HOST1), b.export(name, HOST1)]);
      expect(results.map((r) => (r.status === 'rejected' ? String(r.reason) : r.status))).toEqual(['fulfilled', 'fulfilled']);
      const shown = (await array().targets()).filter((t) => t.iqn === `${PREFIX}:${name}`);
      expect(shown).toHaveLength(1);
      expect(shown[0]!.luns.get(1)).toBe(join(pool, name, 'disk.img'));
    }
  }, T);

  it('a target id taken by another daemon between reading the table and creating: the driver takes the next one', async () => {
    const pool = await newPool();
    const thiefIqn = `${PREFIX}:someone-else`;
    let thief: TidThief | undefined;
    const driver = newDriver(pool, { wrap: (real) => (thief = new TidThief(real, thiefIqn)) });
    await driver.create(volume('tid1', 24 * MiB));
    try {
      const exp = await driver.export('tid1', HOST1);
      expect(exp).toMatchObject({ iqn: `${PREFIX}:tid1` });
      expect(thief!.stolen).toBeGreaterThan(0);
      const mine = await shownTarget(`${PREFIX}:tid1`);
      const theirs = await shownTarget(thiefIqn);
      expect(theirs?.tid).toBe(thief!.stolen);
      expect(theirs?.luns.get(1)).toBeUndefined(); // the driver put nothing on the other daemon's target
      expect(mine?.tid).toBe(thief!.stolen! + 1);
      expect(mine?.luns.get(1)).toBe(join(pool, 'tid1', 'disk.img'));
      expect(mine?.acl).toEqual([HOST1.iqn]);
      expect((await readCapacity(HOST1.iqn!, array().portal, mine!.iqn, 1)).lastLba).toBe((24 * MiB) / 512 - 1);
    } finally {
      const theirs = await shownTarget(thiefIqn);
      if (theirs) await array().tgtadm(['--mode', 'target', '--op', 'delete', '--force', '--tid', String(theirs.tid)]);
    }
  }, T);

  it('list() on a second driver over the same pool shows every volume the first created (docker volume ls on another host)', async () => {
    const pool = await newPool();
    const first = newDriver(pool);
    const names = ['ls-a', 'ls-b', 'ls-c', 'Ls_D'];
    for (const n of names) await first.create(volume(n, 16 * MiB));
    await first.export('ls-a', HOST1); // exported or not, listed the same

    const second = newDriver(pool);
    const listed = await second.list();
    expect(listed.map((v) => v.name).sort()).toEqual([...names].sort());
    for (const v of listed) expect(v).toMatchObject({ profile: 'gold', sizeBytes: 16 * MiB, fstype: 'ext4', ownership: { state: 'free' } });
    expect((await second.read('ls-b'))?.value).toEqual((await first.read('ls-b'))?.value);
  }, T);

  it('array unreachable: export and checkHealth fail fast with BackendUnavailable naming the control port', async () => {
    const pool = await newPool();
    const port = await unusedControlPort();
    const up = newDriver(pool);
    await up.create(volume('down1')); // created while the array answers
    const down = newDriver(pool, { controlPort: port });

    for (const call of [() => down.export('down1', HOST1), () => down.checkHealth()]) {
      const started = performance.now();
      const err = await call().then(
        () => undefined,
        (e: unknown) => e,
      );
      const ms = performance.now() - started;
      expect(err).toBeInstanceOf(BackendUnavailable);
      expect((err as Error).message).toContain(`control port ${port}`);
      expect(ms).toBeLessThan(5_000);
    }
    // Nothing was made on the array we do reach.
    expect(await shownTarget(up.targetIqn('down1'))).toBeUndefined();
  }, T);

  it('array hung (tgtd stopped with SIGSTOP): export and checkHealth give up after the command timeout, nothing half-created', async () => {
    const hung = await Tgtd.start();
    try {
      const pool = await newPool();
      const up = newDriver(pool, { controlPort: hung.controlPort });
      await up.create(volume('hung1'));
      const timeoutMs = 1_500;
      const driver = newDriver(pool, { controlPort: hung.controlPort, commandTimeoutMs: timeoutMs });
      hung.pause();
      for (const call of [() => driver.export('hung1', HOST1), () => driver.checkHealth()]) {
        const started = performance.now();
        const err = await call().then(
          () => undefined,
          (e: unknown) => e,
        );
        const ms = performance.now() - started;
        expect(err).toBeInstanceOf(BackendUnavailable);
        expect((err as Error).message).toContain(`control port ${hung.controlPort}`);
        expect((err as Error).message).toMatch(/timed out/);
        expect(ms).toBeGreaterThanOrEqual(timeoutMs - 100);
        expect(ms).toBeLessThan(5_000);
      }
      hung.resume();
      expect(await hung.targets()).toEqual([]);
      // And once it answers again, the same driver exports.
      await driver.export('hung1', HOST1);
      expect((await hung.targets()).map((t) => t.iqn)).toEqual([driver.targetIqn('hung1')]);
    } finally {
      await hung.stop();
      expect(hung.running).toBe(false);
    }
  }, T);

  it('odd names: "Data_01" gets a valid lower-case IQN distinct from "data-01"; both are exported and served at once', async () => {
    const pool = await newPool();
    const driver = newDriver(pool);
    await driver.create(volume('Data_01', 32 * MiB));
    await driver.create(volume('data-01', 48 * MiB));
    const odd = driver.targetIqn('Data_01');
    const plain = driver.targetIqn('data-01');
    expect(plain).toBe(`${PREFIX}:data-01`);
    expect(odd).not.toBe(plain);
    expect(odd).toMatch(new RegExp(`^${PREFIX.replace(/\./g, '\\.')}:[a-z0-9.-]+$`));
    expect(odd).toMatch(/:data-01-[0-9a-f]{8}$/);
    // A third spelling that folds to the same readable part still gets a name of its own.
    expect(driver.targetIqn('DATA_01')).not.toBe(odd);

    const [e1, e2] = await Promise.all([driver.export('Data_01', HOST1), driver.export('data-01', HOST1)]);
    expect(e1).toMatchObject({ iqn: odd, lun: 1 });
    expect(e2).toMatchObject({ iqn: plain, lun: 1 });
    const visible = await visibleTo(HOST1);
    expect(visible.has(odd) && visible.has(plain)).toBe(true);
    expect((await readCapacity(HOST1.iqn!, array().portal, odd, 1)).lastLba).toBe((32 * MiB) / 512 - 1);
    expect((await readCapacity(HOST1.iqn!, array().portal, plain, 1)).lastLba).toBe((48 * MiB) / 512 - 1);
    expect((await shownTarget(odd))?.luns.get(1)).toBe(join(pool, 'Data_01', 'disk.img'));
    expect((await shownTarget(plain))?.luns.get(1)).toBe(join(pool, 'data-01', 'disk.img'));
  }, T);
});
