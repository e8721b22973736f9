import { readdir, stat } from 'node:fs/promises';
import { join } from 'node:path';
import { VOLUME_LUN } from '../../src/drivers/iscsi/iscsi-driver.js';
import type { Initiator } from '../../src/export.js';
import { HOST1, HOST2, MiB, PREFIX, T, array, newDriver, newPool, shownTarget, useTgtd, volume } from '../helpers/iscsi-array-lab.js';
import { discover, inquiry, readCapacity, type Chap } from '../lab/tgtd.js';

// The iSCSI backend driver against a real tgtd of this test's own (its own control port and
// portal on 127.0.0.1), checked from the outside the way a host would see it: libiscsi's
// iscsi-ls (discovery), iscsi-inq (a full login + INQUIRY) and iscsi-readcapacity16.
// Provisioning, the ACL, CHAP, destroy, grow and odd names here; concurrent drivers and an
// unreachable or hung array in iscsi-array-concurrency.test.ts.

const CHAP: Chap = { username: 'ballast', password: 'secret-secret-12' };

useTgtd();

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
