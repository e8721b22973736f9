import { existsSync } from 'node:fs';
import { mkdir, mkdtemp, readdir, readFile, rm, stat, writeFile } from 'node:fs/promises';
import { createServer, type Server } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Writable } from 'node:stream';
import winston from 'winston';
import { RemoteFileStore } from '../../src/drivers/array-host/exec-file-store.js';
import { SshExec, type SshSettings } from '../../src/drivers/array-host/ssh-exec.js';
import { LocalFileStore, type FileStore } from '../../src/drivers/file-store.js';
import { LoopDriver } from '../../src/drivers/loop-driver.js';
import { VolumeAlreadyExists, type NewVolume } from '../../src/drivers/types.js';
import { BackendUnavailable, CommandFailed, StaleRevision, VolumeInUse } from '../../src/errors.js';
import { silentLogger } from '../../src/log.js';
import { PrivateSshd, processAlive, requireSshd } from '../lab/sshd.js';
import { freeTcpPort } from '../lab/net.js';

// The array host reached over SSH, against a private sshd on 127.0.0.1: SshExec's quoting,
// exit codes, timeouts and reconnects; RemoteFileStore held to exactly the behaviour of
// LocalFileStore; and the loop driver's metadata (create, CAS, destroy) kept through SSH.
// Needs root and openssh-server; fails (never skips) without them.
requireSshd();

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

async function waitUntil(check: () => boolean, ms: number): Promise<boolean> {
  const deadline = Date.now() + ms;
  while (!check()) {
    if (Date.now() > deadline) return false;
    await sleep(20);
  }
  return true;
}

/** A logger that keeps every entry, to check what reaches the log. */
function capturingLogger(): { log: winston.Logger; entries: Record<string, unknown>[] } {
  const entries: Record<string, unknown>[] = [];
  const stream = new Writable({
    write(chunk: Buffer, _encoding, done) {
      entries.push(JSON.parse(chunk.toString()) as Record<string, unknown>);
      done();
    },
  });
  return { log: winston.createLogger({ level: 'debug', format: winston.format.json(), transports: [new winston.transports.Stream({ stream })] }), entries };
}

const spec = (name: string, sizeBytes = 64 * 1024 ** 2): NewVolume => ({
  name, profile: 'default', sizeBytes, fstype: 'ext4', mkfsOpts: [], mountOpts: [], readonly: false,
});

describe('the array host over SSH', () => {
  let sshd: PrivateSshd;
  let ssh: SshExec;
  let scratch: string;
  const settings = (overrides: Partial<SshSettings> = {}): SshSettings => ({
    host: sshd.host,
    port: sshd.port,
    username: sshd.username,
    privateKeyPath: sshd.privateKeyPath,
    hostKeySha256: sshd.hostKeySha256,
    connectTimeoutMs: 3_000,
    ...overrides,
  });

  beforeAll(async () => {
    scratch = await mkdtemp(join(tmpdir(), 'ballast-ssh-'));
    sshd = await PrivateSshd.start();
    ssh = new SshExec(settings(), silentLogger(), 10_000);
  });

  afterAll(async () => {
    await ssh?.close();
    await sshd?.stop();
    await rm(scratch, { recursive: true, force: true });
  });

  describe('SshExec', () => {
    it('passes every argument verbatim: spaces, quotes, $, ;, globs, backslashes, newlines', async () => {
      const words = ["a b'c$d;e", '', "'", '"$(id)"', '`id`', '*', '\\n\\', 'two\nlines', '-n', 'ünïcödé', "''\\''"];
      for (const word of words) expect((await ssh.run(['printf', '%s', word])).stdout).toBe(word);
      expect((await ssh.run(['printf', '%s|', ...words])).stdout).toBe(words.map((w) => `${w}|`).join(''));
    });

    it('reports exit codes, accepts okExitCodes, and keeps stdout and stderr apart', async () => {
      const failed = await ssh.run(['sh', '-c', 'echo out; echo err >&2; exit 3']).catch((e: unknown) => e);
      expect(failed).toBeInstanceOf(CommandFailed);
      expect(failed).toMatchObject({ exitCode: 3, timedOut: false, stderr: 'err\n' });
      expect(await ssh.run(['sh', '-c', 'echo out; echo err >&2; exit 3'], { okExitCodes: [0, 3] })).toEqual({ stdout: 'out\n', stderr: 'err\n', exitCode: 3 });
      await expect(ssh.run(['no-such-command-here'])).rejects.toMatchObject({ exitCode: 127 });
      // Like stdin: 'ignore' locally: a command reading stdin sees EOF at once.
      expect((await ssh.run(['cat'])).stdout).toBe('');
    });

    it('writes input to stdin (runWithInput), large and small', async () => {
      const big = 'x'.repeat(300_000) + 'ünï\n';
      expect((await ssh.runWithInput(['cat'], big)).stdout).toBe(big);
      expect((await ssh.runWithInput(['wc', '-c'], 'abc')).stdout.trim()).toBe('3');
    });

    it('masks redacted strings in errors and logs', async () => {
      const { log, entries } = capturingLogger();
      const exec = new SshExec(settings(), log, 10_000);
      try {
        const err = await exec.run(['sh', '-c', 'echo "bad s3cret" >&2; exit 1', 's3cret'], { redact: ['s3cret'] }).catch((e: unknown) => e);
        expect(err).toBeInstanceOf(CommandFailed);
        expect(JSON.stringify(err)).not.toContain('s3cret');
        expect((err as Error).message).not.toContain('s3cret');
        expect((err as CommandFailed).stderr).toContain('bad ***');
        const logged = entries.filter((e) => e.message === 'command');
        expect(logged).toHaveLength(1);
        expect(JSON.stringify(logged)).not.toContain('s3cret');
        expect(logged[0]).toMatchObject({ level: 'warn', exitCode: 1, target: `root@127.0.0.1:${sshd.port}` });
        await exec.run(['true']);
        expect(entries.filter((e) => e.message === 'command')[1]).toMatchObject({ level: 'debug', argv: ['true'], exitCode: 0 });
      } finally {
        await exec.close();
      }
    });

    it('times out within the bound and leaves no remote process behind', async () => {
      const pidFile = join(scratch, 'sleeper.pids');
      const started = performance.now();
      // The shell and a background grandchild: both must go.
      const err = await ssh
        .run(['sh', '-c', 'echo $$ > "$1"; sleep 30 & echo $! >> "$1"; wait', 'sh', pidFile], { timeoutMs: 700 })
        .catch((e: unknown) => e);
      const elapsed = performance.now() - started;
      expect(err).toBeInstanceOf(CommandFailed);
      expect(err).toMatchObject({ timedOut: true });
      expect(elapsed).toBeGreaterThanOrEqual(650);
      expect(elapsed).toBeLessThan(1_500);
      const pids = (await readFile(pidFile, 'utf8')).trim().split('\n').map(Number);
      expect(pids).toHaveLength(2);
      // Gone well before the remote `timeout` backstop (1 s after ours) would have fired: the
      // signal sent over the channel reached the whole process group.
      expect(await waitUntil(() => !pids.some(processAlive), 700)).toBe(true);
      expect((await ssh.run(['echo', 'still usable'])).stdout).toBe('still usable\n');
    });

    it('kills a command that ignores SIGTERM with SIGKILL two seconds later, like CommandRunner', async () => {
      const pidFile = join(scratch, 'stubborn.pids');
      const started = performance.now();
      // An ignored signal stays ignored in children: neither the shell nor its sleep will stop on TERM.
      const err = await ssh
        .run(['sh', '-c', 'trap "" TERM; echo $$ > "$1"; sleep 30 & echo $! >> "$1"; wait', 'sh', pidFile], { timeoutMs: 300 })
        .catch((e: unknown) => e);
      const elapsed = performance.now() - started;
      expect(err).toMatchObject({ timedOut: true });
      expect(elapsed).toBeGreaterThanOrEqual(2_250);
      expect(elapsed).toBeLessThan(3_500);
      const pids = (await readFile(pidFile, 'utf8')).trim().split('\n').map(Number);
      expect(await waitUntil(() => !pids.some(processAlive), 700)).toBe(true);
    });

    it('runs more commands at once than sshd allows sessions (MaxSessions 10)', async () => {
      const results = await Promise.all(Array.from({ length: 30 }, (_, i) => ssh.run(['sh', '-c', 'sleep 0.05; echo $1', 'sh', String(i)])));
      expect(results.map((r) => r.stdout)).toEqual(Array.from({ length: 30 }, (_, i) => `${i}\n`));
    });

    it('reconnects after its connection is killed on the server side, and after sshd restarts', async () => {
      await ssh.run(['true']);
      expect(await sshd.dropConnections()).toBeGreaterThan(0);
      expect((await ssh.run(['echo', 'one'])).stdout).toBe('one\n');
      await sshd.restart(); // same port, same host key; the old connection goes with the old sshd
      expect((await ssh.run(['echo', 'two'])).stdout).toBe('two\n');
      await ssh.close();
      expect((await ssh.run(['echo', 'three'])).stdout).toBe('three\n');
    });

    it('reports a command cut off by a lost connection as failed, not as success', async () => {
      const pending = ssh.run(['sleep', '5']).catch((e: unknown) => e);
      await sleep(300);
      await sshd.dropConnections();
      const err = await pending;
      expect(err).toBeInstanceOf(CommandFailed);
      expect((err as CommandFailed).message).toMatch(/SSH connection closed/);
      expect((await ssh.run(['echo', 'back'])).stdout).toBe('back\n');
    });

    it('fails fast, naming user@host:port, when nothing listens', async () => {
      const port = await freeTcpPort();
      const exec = new SshExec(settings({ port, connectTimeoutMs: 2_000 }), silentLogger());
      const started = performance.now();
      const err = await exec.run(['true']).catch((e: unknown) => e);
      expect(performance.now() - started).toBeLessThan(2_000);
      expect(err).toBeInstanceOf(BackendUnavailable);
      expect((err as Error).message).toContain(`root@127.0.0.1:${port}`);
      expect((err as Error).message).toContain('ECONNREFUSED');
      await exec.close();
    });

    it('gives up after connectTimeoutMs on a server that accepts but never speaks SSH', async () => {
      const sockets: import('node:net').Socket[] = [];
      const silent: Server = createServer((s) => sockets.push(s));
      await new Promise<void>((resolve) => silent.listen(0, '127.0.0.1', resolve));
      const port = (silent.address() as { port: number }).port;
      const exec = new SshExec(settings({ port, connectTimeoutMs: 800 }), silentLogger());
      try {
        const started = performance.now();
        const err = await exec.run(['true']).catch((e: unknown) => e);
        const elapsed = performance.now() - started;
        expect(elapsed).toBeGreaterThanOrEqual(750);
        expect(elapsed).toBeLessThan(1_800);
        expect(err).toBeInstanceOf(BackendUnavailable);
        expect((err as Error).message).toContain(`root@127.0.0.1:${port}`);
      } finally {
        await exec.close();
        for (const s of sockets) s.destroy();
        await new Promise((resolve) => silent.close(resolve));
      }
    });

    it('refuses a server whose host key does not match the configured fingerprint', async () => {
      const wrong = `SHA256:${Buffer.alloc(32, 7).toString('base64').replace(/=+$/, '')}`;
      const exec = new SshExec(settings({ hostKeySha256: wrong }), silentLogger());
      const marker = join(scratch, 'should-not-exist');
      const err = await exec.run(['touch', marker]).catch((e: unknown) => e);
      expect(err).toBeInstanceOf(BackendUnavailable);
      expect((err as Error).message).toContain(`root@127.0.0.1:${sshd.port}`);
      expect((err as Error).message).toContain(`host key ${sshd.hostKeySha256} does not match`);
      expect(existsSync(marker)).toBe(false);
      await exec.close();
      // Without the prefix, OpenSSH's bare base64 form is accepted as well.
      const bare = new SshExec(settings({ hostKeySha256: sshd.hostKeySha256.slice('SHA256:'.length) }), silentLogger());
      expect((await bare.run(['echo', 'ok'])).stdout).toBe('ok\n');
      await bare.close();
    });
  });

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
