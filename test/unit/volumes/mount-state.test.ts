import { mkdtemp, readFile, readdir, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { addRef, markStale, MountStateStore, removeRef, totalRefs, type MountedVolume } from '../../../src/volumes/mount-state.js';

function volume(): MountedVolume {
  return { device: '/dev/loop0', mountpoint: '/m/v', export: { transport: 'loop', file: '/l/v/disk.img' }, refs: {}, staleIds: [], generation: 1 };
}

describe('mount references', () => {
  it('counts a second Mount with the same ID (docker cp) and needs two Unmounts', () => {
    const v = volume();
    addRef(v, 'c1');
    addRef(v, 'c1');
    expect(totalRefs(v)).toBe(2);
    expect(removeRef(v, 'c1')).toBe(true);
    expect(totalRefs(v)).toBe(1);
    expect(removeRef(v, 'c1')).toBe(true);
    expect(totalRefs(v)).toBe(0);
  });

  it('keeps distinct IDs apart', () => {
    const v = volume();
    addRef(v, 'c1');
    addRef(v, 'c2');
    removeRef(v, 'c2');
    expect(v.refs).toEqual({ c1: 1 });
  });

  it('refuses an Unmount of an ID that holds nothing, leaving the counts alone', () => {
    const v = volume();
    addRef(v, 'c1');
    expect(removeRef(v, 'other')).toBe(false);
    expect(v.refs).toEqual({ c1: 1 });
  });

  it('re-arms a stale ID to one reference instead of adding (dockerd restarted and mounts again)', () => {
    const v = volume();
    addRef(v, 'c1');
    addRef(v, 'c1');
    markStale(v);
    addRef(v, 'c1');
    expect(v.refs).toEqual({ c1: 1 });
    expect(v.staleIds).toEqual([]);
    addRef(v, 'c1'); // a docker cp after the restart counts again
    expect(v.refs).toEqual({ c1: 2 });
  });
});

describe('MountStateStore', () => {
  let dir: string;
  beforeEach(async () => (dir = await mkdtemp(join(tmpdir(), 'ballast-state-'))));
  afterEach(() => rm(dir, { recursive: true, force: true }));

  it('loads nothing when there is no file yet', async () => {
    expect((await new MountStateStore(join(dir, 'state')).load()).size).toBe(0);
  });

  it('round-trips what it saves and leaves no temp files', async () => {
    const store = new MountStateStore(join(dir, 'state'));
    const v = volume();
    addRef(v, 'c1');
    await store.save(new Map([['v', v]]));
    expect(await new MountStateStore(join(dir, 'state')).load()).toEqual(new Map([['v', v]]));
    expect(await readdir(join(dir, 'state'))).toEqual(['mounts.json']);
  });

  it('round-trips a volume of every transport, and an encrypted one with the device under its mapping', async () => {
    const store = new MountStateStore(join(dir, 'state'));
    const iscsi: MountedVolume = {
      ...volume(),
      device: '/dev/mapper/ballast-v',
      attached: '/dev/dm-3',
      export: { transport: 'iscsi', iqn: 'iqn.2026-12.test:v', portals: ['127.0.0.1:3260'], lun: 1, multipath: true, reservations: false },
    };
    const vmdk: MountedVolume = { ...volume(), export: { transport: 'vmdk', diskUuid: 'a'.repeat(32), file: '[ds] ballast/w/disk.vmdk' } };
    await store.save(new Map([['v', iscsi], ['w', vmdk]]));
    expect(await new MountStateStore(join(dir, 'state')).load()).toEqual(new Map([['v', iscsi], ['w', vmdk]]));
  });

  it('never lets an earlier save overwrite a later one', async () => {
    const store = new MountStateStore(join(dir, 'state'));
    const map = new Map<string, MountedVolume>();
    const saves: Promise<void>[] = [];
    for (let i = 0; i < 20; i += 1) {
      const v = volume();
      addRef(v, `id${i}`);
      map.set(`v${i}`, v);
      saves.push(store.save(map));
    }
    await Promise.all(saves);
    const saved = JSON.parse(await readFile(store.file, 'utf8')) as { volumes: object };
    expect(Object.keys(saved.volumes)).toHaveLength(20);
  });

  it('reads a file a power loss damaged before this boot as empty, and refuses one damaged since', async () => {
    const state = join(dir, 'state');
    await new MountStateStore(state).save(new Map([['v', volume()]]));
    const file = join(state, 'mounts.json');
    await writeFile(file, ''); // what a rename without fsync can leave after a power loss
    const bootedAfterTheWrite = new MountStateStore(state, async () => Date.now() + 60_000);
    expect((await bootedAfterTheWrite.load()).size).toBe(0);
    const bootedBefore = new MountStateStore(state, async () => Date.now() - 60_000);
    await expect(bootedBefore.load()).rejects.toThrow(/mounts\.json is damaged .* written since this host booted/);
    await writeFile(file, '{"v":1,"volumes":{"v":{"device":3}}}');
    await expect(bootedBefore.load()).rejects.toThrow(/damaged/);
  });

  it('reads this kernel\'s boot time from /proc/stat: a file written now is newer', async () => {
    const store = new MountStateStore(join(dir, 'state'));
    await store.save(new Map());
    await writeFile(store.file, 'garbage');
    await expect(store.load()).rejects.toThrow(/damaged/);
  });
});
