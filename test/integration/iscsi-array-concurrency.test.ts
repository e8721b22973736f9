import { readdir } from 'node:fs/promises';
import { join } from 'node:path';
import type { IscsiDriver } from '../../src/drivers/iscsi/iscsi-driver.js';
import { VolumeAlreadyExists } from '../../src/drivers/types.js';
import { BackendUnavailable, StaleRevision } from '../../src/errors.js';
import type { Exec, ExecOptions, ExecResult } from '../../src/exec.js';
import type { OwnershipRecord } from '../../src/ownership/types.js';
import { HOST1, HOST2, MiB, PREFIX, T, array, newDriver, newPool, shownTarget, useTgtd, volume } from '../helpers/iscsi-array-lab.js';
import { Tgtd, readCapacity, unusedControlPort } from '../lab/tgtd.js';

// The iSCSI backend driver against a real tgtd of this test's own (its own control port and
// portal on 127.0.0.1) when more than one driver works at once: compare-and-swap of the
// metadata, drivers ("hosts") on one pool exporting together, a target id taken by another
// daemon, and an array that is unreachable or hung. Provisioning, ACL and CHAP as a host sees
// them are in iscsi-array.test.ts.

useTgtd();

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

describe('IscsiDriver against a real tgtd', () => {
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

  /** The error a call fails with, and how long it took to fail. */
  async function timedFailure(call: () => Promise<unknown>): Promise<{ err: unknown; ms: number }> {
    const started = performance.now();
    const err = await call().then(
      () => undefined,
      (e: unknown) => e,
    );
    return { err, ms: performance.now() - started };
  }

  it('array unreachable: export and checkHealth fail fast with BackendUnavailable naming the control port', async () => {
    const pool = await newPool();
    const port = await unusedControlPort();
    const up = newDriver(pool);
    await up.create(volume('down1')); // created while the array answers
    const down = newDriver(pool, { controlPort: port });

    for (const call of [() => down.export('down1', HOST1), () => down.checkHealth()]) {
      const { err, ms } = await timedFailure(call);
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
        const { err, ms } = await timedFailure(call);
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
});
