import { existsSync } from 'node:fs';
import { mkdir, mkdtemp, readdir, readFile, rm, stat, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { RemoteFileStore } from '../../src/drivers/array-host/exec-file-store.js';
import { LocalFileStore, type FileStore } from '../../src/drivers/file-store.js';
import { LoopDriver } from '../../src/drivers/loop-driver.js';
import { VolumeAlreadyExists, type NewVolume } from '../../src/drivers/types.js';
import { StaleRevision, VolumeInUse } from '../../src/errors.js';
import { silentLogger } from '../../src/log.js';
import { scratch, ssh, useSshd } from '../helpers/array-host-sshd.js';

// The array host's files reached over SSH, against a private sshd on 127.0.0.1: RemoteFileStore
// held to exactly the behaviour of LocalFileStore, and the loop driver's metadata (create, CAS,
// destroy) kept through SSH. SshExec itself is in array-host-ssh.test.ts.
// Needs root and openssh-server; fails (never skips) without them.
useSshd();

const spec = (name: string, sizeBytes = 64 * 1024 ** 2): NewVolume => ({
  name, profile: 'default', sizeBytes, fstype: 'ext4', mkfsOpts: [], mountOpts: [], readonly: false,
});

describe('the array host over SSH', () => {
  // The same checks on both implementations: the remote one must behave like the local one.
  describe.each([
    ['LocalFileStore', () => new LocalFileStore() as FileStore],
    ['RemoteFileStore', () => new RemoteFileStore(ssh) as FileStore],
  ])('%s', (_name, makeStore) => {
    let files: FileStore;
    let dir: string;
    beforeEach(async () => {
      files = makeStore();
      dir = await mkdtemp(join(scratch, 'store-'));
    });
    afterEach(() => rm(dir, { recursive: true, force: true }));

    it('reads a missing file (or one under a missing dir or a file) as undefined', async () => {
      await writeFile(join(dir, 'plain'), 'x');
      expect(await files.readFile(join(dir, 'missing'))).toBeUndefined();
      expect(await files.readFile(join(dir, 'nodir', 'missing'))).toBeUndefined();
      expect(await files.readFile(join(dir, 'plain', 'below'))).toBeUndefined();
      await expect(files.readFile(dir)).rejects.toMatchObject({ code: 'EISDIR' });
    });

    it('writeNew creates once: EEXIST the second time, ENOENT in a missing directory', async () => {
      const path = join(dir, 'meta.lock');
      const text = `{"pid": 1, "quote": "it's $HOME; \`x\`"}\nünï\n`;
      await files.writeNew(path, text);
      expect(await files.readFile(path)).toBe(text);
      expect(await readFile(path, 'utf8')).toBe(text);
      await expect(files.writeNew(path, 'other')).rejects.toMatchObject({ code: 'EEXIST' });
      expect(await readFile(path, 'utf8')).toBe(text);
      await expect(files.writeNew(join(dir, 'missing', 'f'), 'x')).rejects.toMatchObject({ code: 'ENOENT' });
      await files.writeNew(join(dir, 'empty'), '');
      expect(await files.readFile(join(dir, 'empty'))).toBe('');
    });

    it('lets exactly one of 20 concurrent writeNew calls on one path win', async () => {
      const path = join(dir, 'guard');
      const results = await Promise.allSettled(Array.from({ length: 20 }, (_, i) => files.writeNew(path, `writer ${i}`)));
      const winners = results.flatMap((r, i) => (r.status === 'fulfilled' ? [i] : []));
      expect(winners).toHaveLength(1);
      for (const r of results) if (r.status === 'rejected') expect(r.reason).toMatchObject({ code: 'EEXIST' });
      expect(await readFile(path, 'utf8')).toBe(`writer ${winners[0]}`);
    });

    it('writeAtomic creates and replaces, leaving no temp file', async () => {
      const path = join(dir, 'meta.json');
      await files.writeAtomic(path, 'one\n');
      expect(await readFile(path, 'utf8')).toBe('one\n');
      await files.writeAtomic(path, 'two\n');
      expect(await files.readFile(path)).toBe('two\n');
      expect(await readdir(dir)).toEqual(['meta.json']);
      await expect(files.writeAtomic(join(dir, 'missing', 'f'), 'x')).rejects.toMatchObject({ code: 'ENOENT' });
      expect(await readdir(dir)).toEqual(['meta.json']);
    });

    it('createSparse makes a sparse file of the size, private, and EEXIST on repeat', async () => {
      const path = join(dir, 'disk.img');
      await files.createSparse(path, 10 * 1024 ** 2);
      const st = await stat(path);
      expect(st.size).toBe(10 * 1024 ** 2);
      expect(st.blocks * 512).toBeLessThan(1024 * 1024);
      expect(st.mode & 0o777).toBe(0o600);
      expect(await files.stat(path)).toMatchObject({ size: 10 * 1024 ** 2 });
      await expect(files.createSparse(path, 1024)).rejects.toMatchObject({ code: 'EEXIST' });
      expect((await stat(path)).size).toBe(10 * 1024 ** 2);
    });

    it('rename onto a non-empty directory fails (ENOTEMPTY or EEXIST) and leaves both intact', async () => {
      const [staging, final] = [join(dir, '.creating-v'), join(dir, 'v')];
      await mkdir(staging);
      await writeFile(join(staging, 'meta.json'), 'new');
      await mkdir(final);
      await writeFile(join(final, 'meta.json'), 'old');
      const err = await files.rename(staging, final).catch((e: unknown) => e);
      expect(['ENOTEMPTY', 'EEXIST']).toContain((err as NodeJS.ErrnoException).code);
      expect(await readFile(join(staging, 'meta.json'), 'utf8')).toBe('new');
      expect(await readFile(join(final, 'meta.json'), 'utf8')).toBe('old');
      expect((await readdir(final)).sort()).toEqual(['meta.json']); // not moved into it
    });

    it('rename onto a missing name (or an empty directory) moves the directory; a missing source is ENOENT', async () => {
      const staging = join(dir, '.creating-v');
      await mkdir(staging);
      await writeFile(join(staging, 'meta.json'), 'new');
      await files.rename(staging, join(dir, 'v'));
      expect(await readdir(dir)).toEqual(['v']);
      expect(await readFile(join(dir, 'v', 'meta.json'), 'utf8')).toBe('new');
      await mkdir(join(dir, 'empty'));
      await files.rename(join(dir, 'v'), join(dir, 'empty'));
      expect(await readdir(join(dir, 'empty'))).toEqual(['meta.json']);
      await expect(files.rename(join(dir, 'gone'), join(dir, 'x'))).rejects.toMatchObject({ code: 'ENOENT' });
      // Across directories (same file system) it is still a rename.
      await mkdir(join(dir, 'sub'));
      await files.rename(join(dir, 'empty'), join(dir, 'sub', 'moved'));
      expect(await readdir(join(dir, 'sub', 'moved'))).toEqual(['meta.json']);
    });

    it('readdir and stat: undefined when missing, entries and size otherwise', async () => {
      expect(await files.readdir(join(dir, 'missing'))).toBeUndefined();
      expect(await files.stat(join(dir, 'missing'))).toBeUndefined();
      expect(await files.readdir(dir)).toEqual([]);
      await writeFile(join(dir, 'a.json'), '12345');
      await writeFile(join(dir, '.hidden'), '');
      await mkdir(join(dir, 'with space'));
      expect(await files.readdir(join(dir, 'a.json'))).toBeUndefined(); // a file is not a directory
      expect((await files.readdir(dir))?.sort()).toEqual(['.hidden', 'a.json', 'with space']);
      const st = await files.stat(join(dir, 'a.json'));
      expect(st?.size).toBe(5);
      expect(Math.abs(st!.mtimeMs - (await stat(join(dir, 'a.json'))).mtimeMs)).toBeLessThan(1);
    });

    it('unlink: ENOENT when missing; truncate: grows, ENOENT when missing; removeTree: quiet when missing', async () => {
      await expect(files.unlink(join(dir, 'missing'))).rejects.toMatchObject({ code: 'ENOENT' });
      await writeFile(join(dir, 'f'), 'x');
      await files.unlink(join(dir, 'f'));
      expect(existsSync(join(dir, 'f'))).toBe(false);
      await writeFile(join(dir, 'img'), '');
      await files.truncate(join(dir, 'img'), 4096);
      expect((await stat(join(dir, 'img'))).size).toBe(4096);
      await expect(files.truncate(join(dir, 'missing'), 10)).rejects.toMatchObject({ code: 'ENOENT' });
      expect(existsSync(join(dir, 'missing'))).toBe(false);
      await mkdir(join(dir, 't', 'u'), { recursive: true });
      await writeFile(join(dir, 't', 'u', 'f'), 'x');
      await files.removeTree(join(dir, 't'));
      await files.removeTree(join(dir, 't'));
      expect(await readdir(dir)).toEqual(['img']);
    });

    it('mkdir, ensureWritableDir and fsyncDir', async () => {
      await files.mkdir(join(dir, 'a', 'b'));
      await files.mkdir(join(dir, 'a', 'b'));
      expect((await stat(join(dir, 'a', 'b'))).mode & 0o777).toBe(0o700);
      await files.ensureWritableDir(join(dir, 'root', 'pool'));
      expect((await stat(join(dir, 'root', 'pool'))).isDirectory()).toBe(true);
      await files.fsyncDir(join(dir, 'a'));
      await expect(files.fsyncDir(join(dir, 'missing'))).rejects.toMatchObject({ code: 'ENOENT' });
      await writeFile(join(dir, 'file'), '');
      await expect(files.mkdir(join(dir, 'file'))).rejects.toMatchObject({ code: 'EEXIST' });
      await expect(files.ensureWritableDir(join(dir, 'file', 'below'))).rejects.toMatchObject({ code: 'ENOTDIR' });
    });
  });

  describe('LoopDriver with its root on the array host', () => {
    let root: string;
    let driver: LoopDriver;
    const held = (hostId: string) => ({
      state: 'held' as const,
      holder: { hostId, bootId: 'boot', hostname: hostId, hostGeneration: 0 },
      generation: 1,
      updatedAt: new Date().toISOString(),
    });
    const onDisk = async (name: string) => JSON.parse(await readFile(join(root, name, 'meta.json'), 'utf8')) as { revision: number; volume: { ownership: unknown } };

    beforeAll(async () => {
      root = join(scratch, 'pool');
      driver = new LoopDriver({ root, shared: true, files: new RemoteFileStore(ssh) }, silentLogger());
    });

    it('creates, reads, lists, compares-and-swaps and destroys through SSH, as the disk shows', async () => {
      await driver.checkHealth();
      const record = await driver.create(spec('v1'));
      const image = await stat(join(root, 'v1', 'disk.img'));
      expect(image.size).toBe(64 * 1024 ** 2);
      expect(image.blocks * 512).toBeLessThan(1024 * 1024);
      expect(await onDisk('v1')).toEqual({ v: 1, revision: 1, volume: record });
      expect(await driver.read('v1')).toEqual({ value: record, revision: 1 });
      expect(await driver.list()).toEqual([record]);
      await expect(driver.create(spec('v1'))).rejects.toBeInstanceOf(VolumeAlreadyExists);

      // Ten writers, one revision: exactly one wins, the rest lose with StaleRevision.
      const results = await Promise.allSettled(Array.from({ length: 10 }, (_, i) => driver.writeOwnership('v1', 1, held(`host${i}`))));
      const winners = results.flatMap((r, i) => (r.status === 'fulfilled' ? [i] : []));
      expect(winners).toHaveLength(1);
      expect(results[winners[0]!]).toEqual({ status: 'fulfilled', value: 2 });
      for (const r of results) if (r.status === 'rejected') expect(r.reason).toBeInstanceOf(StaleRevision);
      const after = await onDisk('v1');
      expect(after.revision).toBe(2);
      expect(await driver.readOwnership('v1')).toEqual({ value: after.volume.ownership, revision: 2 });
      expect((after.volume.ownership as { holder: { hostId: string } }).holder.hostId).toBe(`host${winners[0]}`);
      expect((await readdir(join(root, 'v1'))).sort()).toEqual(['disk.img', 'meta.json']); // no guard, no temp file left

      await expect(driver.destroy('v1')).rejects.toBeInstanceOf(VolumeInUse);
      expect(await driver.writeOwnership('v1', 2, { state: 'free', generation: 1, updatedAt: new Date().toISOString() })).toBe(3);
      await driver.destroy('v1');
      expect(await readdir(root)).toEqual([]);
      expect(await driver.read('v1')).toBeUndefined();
      expect(await driver.list()).toEqual([]);
    });

    it('creates a name exactly once when creators race through SSH', async () => {
      const results = await Promise.allSettled(Array.from({ length: 6 }, () => driver.create(spec('race'))));
      expect(results.filter((r) => r.status === 'fulfilled')).toHaveLength(1);
      for (const r of results) if (r.status === 'rejected') expect(r.reason).toBeInstanceOf(VolumeAlreadyExists);
      expect(await readdir(root)).toEqual(['race']); // no staging directory left
      await driver.destroy('race');
    });
  });
});
