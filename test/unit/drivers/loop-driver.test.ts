import { mkdtemp, readdir, rm, stat, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { LoopDriver } from '../../../src/drivers/loop-driver.js';
import { VolumeAlreadyExists, type NewVolume } from '../../../src/drivers/types.js';
import { BackendUnavailable, StaleRevision, VolumeDamaged, VolumeInUse } from '../../../src/errors.js';
import { silentLogger } from '../../../src/log.js';

const spec = (name: string, sizeBytes = 64 * 1024 ** 2): NewVolume => ({
  name, profile: 'default', sizeBytes, fstype: 'ext4', mkfsOpts: [], mountOpts: [], readonly: false,
});

describe('LoopDriver', () => {
  let root: string;
  let driver: LoopDriver;
  beforeEach(async () => {
    root = await mkdtemp(join(tmpdir(), 'ballast-loop-'));
    driver = new LoopDriver({ root, shared: false }, silentLogger());
  });
  afterEach(() => rm(root, { recursive: true, force: true }));

  it('creates a sparse image and a metadata sidecar, and reads it back', async () => {
    await driver.create(spec('v1'));
    const image = await stat(join(root, 'v1', 'disk.img'));
    expect(image.size).toBe(64 * 1024 ** 2);
    expect(image.blocks * 512).toBeLessThan(1024 * 1024); // sparse
    const read = await driver.read('v1');
    expect(read?.revision).toBe(1);
    expect(read?.value).toMatchObject({ name: 'v1', sizeBytes: 64 * 1024 ** 2, ownership: { state: 'free', generation: 0 } });
    expect((await driver.list()).map((v) => v.name)).toEqual(['v1']);
  });

  it('creates a name exactly once when many creators race (one rename wins)', async () => {
    const others = Array.from({ length: 8 }, () => new LoopDriver({ root, shared: true }, silentLogger()));
    const results = await Promise.allSettled(others.map((d) => d.create(spec('race'))));
    expect(results.filter((r) => r.status === 'fulfilled')).toHaveLength(1);
    for (const r of results) if (r.status === 'rejected') expect(r.reason).toBeInstanceOf(VolumeAlreadyExists);
    expect((await readdir(root)).filter((e) => !e.startsWith('.'))).toEqual(['race']);
    expect((await readdir(root)).filter((e) => e.startsWith('.'))).toEqual(['.rev']); // no staging dir left
    expect(await readdir(join(root, '.rev'))).toEqual(['race@1']);
  });

  it('writes ownership only by compare-and-swap on the revision', async () => {
    await driver.create(spec('v'));
    const held = { state: 'held' as const, holder: { hostId: 'a', bootId: 'b', hostname: 'h', hostGeneration: 0 }, generation: 1, updatedAt: 'now' };
    expect(await driver.writeOwnership('v', 1, held)).toBe(2);
    await expect(driver.writeOwnership('v', 1, { state: 'free', generation: 1, updatedAt: 'x' })).rejects.toThrow(StaleRevision);
    expect((await driver.readOwnership('v'))?.value).toEqual(held);
  });

  it('lists changes from the markers, and drops the markers of a volume deleted by hand', async () => {
    await driver.create(spec('kept'));
    await driver.create(spec('gone'));
    await driver.writeOwnership('kept', 1, { state: 'free', generation: 1, updatedAt: 'x' });
    await rm(join(root, 'gone'), { recursive: true });
    const listing = await driver.changes();
    expect(listing?.names).toEqual(['kept']);
    expect([...(listing?.revisions ?? [])]).toEqual([['kept', [2]]]);
    expect(await readdir(join(root, '.rev'))).toEqual(['kept@2']);
  });

  it('refuses to destroy a held volume and destroys a free one completely', async () => {
    await driver.create(spec('v'));
    await driver.writeOwnership('v', 1, { state: 'held', holder: { hostId: 'a', bootId: 'b', hostname: 'h', hostGeneration: 0 }, generation: 1, updatedAt: 'x' });
    await expect(driver.destroy('v')).rejects.toThrow(VolumeInUse);
    await driver.writeOwnership('v', 2, { state: 'free', generation: 1, updatedAt: 'x' });
    expect(await readdir(join(root, '.rev'))).toEqual(['v@3']); // moved before each metadata write
    await driver.destroy('v');
    expect(await readdir(root)).toEqual(['.rev']);
    expect(await readdir(join(root, '.rev'))).toEqual([]);
    await driver.destroy('v'); // a missing volume is already destroyed
  });

  it('grows the image and the record, and refuses to shrink', async () => {
    await driver.create(spec('v'));
    await driver.grow('v', 128 * 1024 ** 2);
    expect((await stat(join(root, 'v', 'disk.img'))).size).toBe(128 * 1024 ** 2);
    expect((await driver.read('v'))?.value.sizeBytes).toBe(128 * 1024 ** 2);
    await expect(driver.grow('v', 16 * 1024 ** 2)).rejects.toThrow(/can grow but not shrink/);
  });

  it.each([
    ['empty', '', /is empty \(0 bytes: truncated\)/],
    ['not JSON', '{"v":1,"rev', /is not valid JSON \(.+\)/],
    ['not a record', '{"v":1}', /is not a volume record \(revision: .+\)/],
  ])('reports a record that is %s as damaged (a kind of unavailable), naming the volume, the file and the fix', async (_what, content, problem) => {
    await driver.create(spec('v'));
    await writeFile(join(root, 'v', 'meta.json'), content);
    await expect(driver.read('v')).rejects.toThrow(BackendUnavailable);
    await expect(driver.read('v')).rejects.toThrow(VolumeDamaged);
    await expect(driver.read('v')).rejects.toThrow(new RegExp(`^volume v is damaged: ${join(root, 'v', 'meta.json')} ${problem.source}; ballast changed nothing: .*move ${join(root, 'v')} out of the root`));
  });

  it('reports scope global only for a shared root', () => {
    expect(driver.scope).toBe('local');
    expect(new LoopDriver({ root, shared: true }, silentLogger()).scope).toBe('global');
  });
});
