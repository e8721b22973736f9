import { mkdir, mkdtemp, readdir, rm, stat, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { LocalFileStore } from '../../../src/drivers/file-store.js';
import { beaconName, beaconsByHost, BeaconWriter, KnownHostLeases, parseBeacon } from '../../../src/drivers/host-beacons.js';
import type { HostLease } from '../../../src/ownership/types.js';
import { countingFileStore as countingStore } from '../../helpers/counting-file-store.js';

const lease = (over: Partial<HostLease> = {}): HostLease => ({
  hostId: 'a',
  bootId: 'boot-1',
  hostname: 'a.example',
  generation: 1,
  renewSeq: 1,
  leaseSeconds: 20,
  renewEverySeconds: 2,
  renewedAtWall: '2026-12-05T00:00:00.000Z',
  ...over,
});

describe('beacon names', () => {
  it('carry the host id, generation and renewSeq; a dot in the host id is no ambiguity', () => {
    expect(beaconName('node-1.dc2', 3, 41)).toBe('.beacon.node-1.dc2.3.41');
    expect(parseBeacon('.beacon.node-1.dc2.3.41')).toEqual({ name: '.beacon.node-1.dc2.3.41', hostId: 'node-1.dc2', generation: 3, renewSeq: 41 });
    expect(parseBeacon(beaconName('x.1.2', 4, 5))).toMatchObject({ hostId: 'x.1.2', generation: 4, renewSeq: 5 });
  });

  it('are not host records, temp files of an atomic replace, or other names', () => {
    for (const entry of ['a.json', '.a.json.123.0badf00d.tmp', '.beacon.json.123.0badf00d.tmp', '.beacon.a.1', '.beacon..1.2', 'beacon.a.1.2']) {
      expect(parseBeacon(entry)).toBeUndefined();
    }
  });

  it('group by host, newest (generation, then renewSeq) first', () => {
    const byHost = beaconsByHost(['a.json', beaconName('a', 1, 9), beaconName('b', 1, 3), beaconName('a', 2, 1), beaconName('a', 1, 10)]);
    expect(byHost.get('a')!.map((b) => b.name)).toEqual([beaconName('a', 2, 1), beaconName('a', 1, 10), beaconName('a', 1, 9)]);
    expect(byHost.get('b')!.map((b) => b.renewSeq)).toEqual([3]);
  });
});

describe('BeaconWriter', () => {
  let dir: string;
  beforeEach(async () => {
    dir = join(await mkdtemp(join(tmpdir(), 'ballast-beacons-')), '.hosts');
    await mkdir(dir);
  });
  afterEach(async () => rm(join(dir, '..'), { recursive: true, force: true }));

  const inode = async (name: string) => (await stat(join(dir, name))).ino;

  it('creates the beacon once, then renames it at each renewal: one entry per host, the same file', async () => {
    const { files, calls, reset } = countingStore();
    const writer = new BeaconWriter(dir, files);
    await writer.advance('a', 1, 1);
    expect(await readdir(dir)).toEqual([beaconName('a', 1, 1)]);
    const ino = await inode(beaconName('a', 1, 1));
    reset();
    for (let seq = 2; seq <= 5; seq += 1) await writer.advance('a', 1, seq);
    expect(Object.fromEntries(calls)).toEqual({ rename: 4 }); // no listing, no create after the first
    expect(await readdir(dir)).toEqual([beaconName('a', 1, 5)]);
    expect(await inode(beaconName('a', 1, 5))).toBe(ino);
    await writer.advance('a', 2, 6); // a new generation is a rename too
    expect(await readdir(dir)).toEqual([beaconName('a', 2, 6)]);
  });

  it('writing the same renewSeq again (a renewal retried after its record failed) changes nothing', async () => {
    const { files, calls, reset } = countingStore();
    const writer = new BeaconWriter(dir, files);
    await writer.advance('a', 1, 7);
    reset();
    await writer.advance('a', 1, 7);
    expect(calls.size).toBe(0);
    expect(await readdir(dir)).toEqual([beaconName('a', 1, 7)]);
  });

  it('after a restart takes over the newest beacon the host left, removes older ones, and leaves other hosts alone', async () => {
    for (const name of [beaconName('a', 1, 5), beaconName('a', 1, 7), beaconName('b', 1, 3), 'a.json']) await writeFile(join(dir, name), '');
    const newest = await inode(beaconName('a', 1, 7));
    const writer = new BeaconWriter(dir, new LocalFileStore());
    await writer.advance('a', 1, 8);
    expect((await readdir(dir)).sort()).toEqual([beaconName('a', 1, 8), beaconName('b', 1, 3), 'a.json'].sort());
    expect(await inode(beaconName('a', 1, 8))).toBe(newest);
  });

  it('makes the beacon again when it was removed under it', async () => {
    const writer = new BeaconWriter(dir, new LocalFileStore());
    await writer.advance('a', 1, 1);
    await rm(join(dir, beaconName('a', 1, 1)));
    await writer.advance('a', 1, 2);
    expect(await readdir(dir)).toEqual([beaconName('a', 1, 2)]);
  });

  it('after a failed move lists the directory again instead of trusting its memory', async () => {
    const { files, calls, reset } = countingStore();
    const writer = new BeaconWriter(dir, files);
    await writer.advance('a', 1, 1);
    await rm(dir, { recursive: true }); // the move now fails (ENOENT, and the create too)
    await expect(writer.advance('a', 1, 2)).rejects.toThrow();
    await mkdir(dir);
    await writeFile(join(dir, beaconName('a', 1, 1)), '');
    reset();
    await writer.advance('a', 1, 3);
    expect(calls.get('readdir')).toBe(1);
    expect(await readdir(dir)).toEqual([beaconName('a', 1, 3)]);
  });
});

describe('KnownHostLeases', () => {
  const beacon = (generation: number, renewSeq: number) => parseBeacon(beaconName('a', generation, renewSeq))!;

  it('stands a beacon in for the record only for a host it has read, of the same generation, not behind', () => {
    const known = new KnownHostLeases();
    expect(known.fromBeacon('a', beacon(1, 5))).toBeUndefined(); // never read
    known.fromListing(lease({ renewSeq: 5 }), beacon(1, 5));
    expect(known.fromBeacon('a', beacon(1, 6))).toMatchObject({ bootId: 'boot-1', renewSeq: 6 });
    expect(known.fromBeacon('a', beacon(1, 6))).toMatchObject({ renewSeq: 6 });
    expect(known.fromBeacon('a', undefined)).toBeUndefined(); // no beacon: an older daemon
    expect(known.fromBeacon('a', beacon(2, 1))).toBeUndefined(); // new generation
    expect(known.fromBeacon('a', beacon(1, 4))).toBeUndefined(); // behind what was seen
    known.forget('a');
    expect(known.fromBeacon('a', beacon(1, 7))).toBeUndefined();
  });

  it('a beacon ahead of the record it was read with wins; a record read alone is never reported behind', () => {
    const known = new KnownHostLeases();
    expect(known.fromListing(lease({ renewSeq: 5 }), beacon(1, 6)).renewSeq).toBe(6);
    expect(known.fromListing(lease({ renewSeq: 5 }), beacon(2, 9)).renewSeq).toBe(5); // other generation: the record alone
    known.fromListing(lease({ renewSeq: 6 }), beacon(1, 6));
    expect(known.fromRead(lease({ renewSeq: 5 })).renewSeq).toBe(6);
    expect(known.fromRead(lease({ renewSeq: 8 })).renewSeq).toBe(8);
    expect(known.fromRead(lease({ renewSeq: 1, generation: 2, bootId: 'boot-2' }))).toMatchObject({ renewSeq: 1, generation: 2 });
  });
});
