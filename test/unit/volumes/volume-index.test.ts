import { mkdtemp, readdir, rename, rm, unlink, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { LoopDriver } from '../../../src/drivers/loop-driver.js';
import type { NewVolume } from '../../../src/drivers/types.js';
import { silentLogger } from '../../../src/log.js';
import { VolumeIndex } from '../../../src/volumes/volume-index.js';
import { volumeView } from '../../../src/volumes/volume-view.js';

// Two "hosts" on one shared loop root: a changes volumes through its driver, b answers from its
// index. The clock is b's, moved by hand; MAX_AGE is lease.renew_every.
const MAX_AGE = 1_000;
const spec = (name: string): NewVolume => ({ name, profile: 'default', sizeBytes: 1 << 20, fstype: 'ext4', mkfsOpts: [], mountOpts: [], readonly: false });
const held = (hostId: string) => ({ state: 'held' as const, holder: { hostId, bootId: 'boot', hostname: hostId, hostGeneration: 1 }, generation: 1, updatedAt: 'now' });

describe('VolumeIndex on a root shared with another host', () => {
  let root: string;
  let a: LoopDriver;
  let b: LoopDriver;
  let index: VolumeIndex;
  let now: number;
  let reads: string[];

  beforeEach(async () => {
    root = await mkdtemp(join(tmpdir(), 'ballast-index-'));
    a = new LoopDriver({ root, shared: true }, silentLogger());
    b = new LoopDriver({ root, shared: true }, silentLogger());
    reads = [];
    const read = b.read.bind(b);
    b.read = (name: string) => (reads.push(name), read(name));
    now = 0;
    index = new VolumeIndex([b], MAX_AGE, 'b', silentLogger(), () => now);
  });

  afterEach(async () => {
    index.stop();
    await rm(root, { recursive: true, force: true });
  });

  const names = async () => (await index.all()).entries.map((e) => e.record.name).sort();

  it('sees a create, a grow, a takeover and a remove by the other host within one interval, reading only what changed', async () => {
    await a.create(spec('v1'));
    await a.create(spec('v2'));
    expect(await names()).toEqual(['v1', 'v2']);
    expect(reads.sort()).toEqual(['v1', 'v2']);

    // Nothing changed: a refresh is two readdirs and no read.
    reads = [];
    now += MAX_AGE + 1;
    expect(await names()).toEqual(['v1', 'v2']);
    expect(reads).toEqual([]);

    await a.grow('v1', 2 << 20);
    await a.writeOwnership('v2', 1, held('a'));
    await a.create(spec('v3'));
    now += MAX_AGE / 2; // still fresh: the old answer is allowed
    expect((await index.lookup('v1'))?.record.sizeBytes).toBe(1 << 20);
    now += MAX_AGE / 2 + 1; // older than one interval: b must have caught up
    expect((await index.lookup('v1'))?.record.sizeBytes).toBe(2 << 20);
    expect((await index.lookup('v2'))?.record.ownership).toEqual(held('a'));
    expect(await names()).toEqual(['v1', 'v2', 'v3']);
    expect(reads.sort()).toEqual(['v1', 'v2', 'v3']);

    await a.writeOwnership('v2', 2, held('c')); // c took it over
    await a.writeOwnership('v1', 2, { state: 'free', generation: 1, updatedAt: 'x' });
    await a.destroy('v1');
    now += MAX_AGE + 1;
    expect(await index.lookup('v1')).toBeUndefined();
    expect((await index.lookup('v2'))?.record.ownership).toEqual(held('c'));
    expect(await names()).toEqual(['v2', 'v3']);
  });

  it('keeps re-reading a volume whose marker moved without a metadata write (an aborted write) until one lands', async () => {
    await a.create(spec('v'));
    await index.refresh();
    await rename(join(root, '.rev', 'v@1'), join(root, '.rev', 'v@2')); // the writer died after moving the marker
    for (let round = 0; round < 3; round++) {
      reads = [];
      now += MAX_AGE + 1;
      expect((await index.lookup('v'))?.revision).toBe(1);
      expect(reads).toEqual(['v']);
    }
    await a.writeOwnership('v', 1, held('a')); // the next write absorbs the orphaned marker
    expect(await readdir(join(root, '.rev'))).toEqual(['v@2']);
    now += MAX_AGE + 1;
    expect((await index.lookup('v'))?.record.ownership).toEqual(held('a'));
    reads = [];
    now += MAX_AGE + 1;
    await index.lookup('v');
    expect(reads).toEqual([]);
  });

  it('puts back a lost marker and removes outdated ones', async () => {
    await a.create(spec('v'));
    await a.writeOwnership('v', 1, held('a'));
    await unlink(join(root, '.rev', 'v@2'));
    await index.refresh();
    expect(await readdir(join(root, '.rev'))).toEqual(['v@2']);
    await rm(join(root, '.rev'), { recursive: true }); // all of them, and their directory
    now += MAX_AGE + 1;
    await index.refresh();
    expect(await readdir(join(root, '.rev'))).toEqual(['v@2']);
    await a.writeOwnership('v', 2, held('c'));
    await (await import('node:fs/promises')).writeFile(join(root, '.rev', 'v@1'), ''); // a reader's repair raced a writer
    now += MAX_AGE + 1;
    expect((await index.lookup('v'))?.revision).toBe(3);
    expect(await readdir(join(root, '.rev'))).toEqual(['v@3']);
  });

  it('never answers "no such volume" from memory: an unknown name is left to a fresh read', async () => {
    await index.refresh();
    await a.create(spec('new'));
    expect(await index.lookup('new')).toBeUndefined(); // the manager then reads it afresh
    expect(index.cached('new')).toBeUndefined();
  });

  it('keeps a change made on this host over an older refresh still in flight', async () => {
    await a.create(spec('v'));
    await index.refresh();
    now += MAX_AGE + 1;
    const slowRead = b.read;
    let release!: () => void;
    const gate = new Promise<void>((r) => (release = r));
    await a.writeOwnership('v', 1, held('a'));
    b.read = async (name) => {
      const found = await slowRead(name);
      await gate;
      return found;
    };
    const refresh = index.refresh(); // reads revision 2, then waits
    await new Promise((r) => setTimeout(r, 20));
    await b.writeOwnership('v', 2, held('b')); // this host's own write, revision 3
    index.put(b, (await slowRead('v'))!);
    release();
    await refresh;
    expect(index.cached('v')?.record.ownership).toEqual(held('b'));
  });

  it('trusts a volume touched here again once a refresh finds its marker where the record is, and not before', async () => {
    await b.create(spec('v'));
    index.put(b, (await b.read('v'))!);
    await index.refresh();
    index.touch('v'); // an operation on this host ended without putting the record
    expect(await index.lookup('v')).toBeUndefined();
    now += MAX_AGE / 2; // still fresh: no refresh, still untrusted
    expect(await index.lookup('v')).toBeUndefined();
    reads = [];
    now += MAX_AGE / 2 + 1;
    expect((await index.lookup('v'))?.revision).toBe(1); // the refresh saw v@1, the revision held
    expect(reads).toEqual([]);

    // Touched again while a refresh is listing: that refresh cannot vouch for it.
    const changes = b.changes.bind(b);
    b.changes = async () => {
      const listing = await changes();
      index.touch('v');
      return listing;
    };
    now += MAX_AGE + 1;
    expect(await index.lookup('v')).toBeUndefined();
  });

  it('reports a volume whose metadata became unreadable with the error and its last record', async () => {
    await a.create(spec('v'));
    await index.refresh();
    await a.writeOwnership('v', 1, held('a'));
    await rm(join(root, 'v', 'meta.json'));
    await (await import('node:fs/promises')).mkdir(join(root, 'v', 'meta.json'));
    now += MAX_AGE + 1;
    const entry = await index.lookup('v');
    expect(entry?.error).toMatch(/cannot read the metadata of volume v/);
    expect(entry?.record.name).toBe('v');
  });

  it('lists a volume whose record it never could read, with the error, and its view says damaged', async () => {
    await a.create(spec('keep'));
    await a.create(spec('bad'));
    await writeFile(join(root, 'bad', 'meta.json'), '{"v":1,"rev');
    const entries = (await index.all()).entries;
    expect(entries.map((e) => e.record.name).sort()).toEqual(['bad', 'keep']);
    const bad = entries.find((e) => e.record.name === 'bad')!;
    expect(bad.error).toMatch(/^volume bad is damaged: .*meta\.json is not valid JSON/);
    const view = volumeView(b, bad.record, { hostId: 'b', local: undefined, mountpoint: '', leaseAge: () => ({}), unhealthy: bad.error });
    expect(view.status).toEqual({ backend: 'loop', attachment: 'detached', health: expect.stringMatching(/^damaged: .*meta\.json is not valid JSON .*; ballast changed nothing: /) });
    await a.writeOwnership('keep', 1, held('a')); // and the others still refresh
    now += MAX_AGE + 1;
    expect((await index.lookup('keep'))?.record.ownership).toEqual(held('a'));
  });
});
