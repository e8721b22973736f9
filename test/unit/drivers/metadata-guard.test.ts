import { spawnSync } from 'node:child_process';
import { readFileSync, readlinkSync } from 'node:fs';
import { mkdtemp, readFile, rm, utimes, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Writable } from 'node:stream';
import winston from 'winston';
import { StaleRevision } from '../../../src/errors.js';
import { LocalFileStore } from '../../../src/drivers/file-store.js';
import { GUARD_HOLD_LIMIT_MS, GUARD_STALE_MS, MetadataGuard } from '../../../src/drivers/metadata-guard.js';
import { createLogger, silentLogger } from '../../../src/log.js';

// The guard's staleness is judged on this host's clock (injected here) from the guard's content,
// never from its mtime: on NFS an exclusively created file shows other hosts mtime 1970.

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

describe('MetadataGuard', () => {
  let dir: string;
  let path: string;
  let now: number;
  let guard: MetadataGuard;
  const clock = () => now;

  beforeEach(async () => {
    dir = await mkdtemp(join(tmpdir(), 'ballast-guard-'));
    path = join(dir, 'meta.lock');
    now = 1_000_000;
    guard = new MetadataGuard(new LocalFileStore(), silentLogger(), clock);
  });
  afterEach(() => rm(dir, { recursive: true, force: true }));

  it('breaks a guard this host saw unchanged for GUARD_STALE_MS, even one with a fresh mtime', async () => {
    await writeFile(path, 'dead writer');
    const lines: string[] = [];
    const log = createLogger('warn');
    const stream = new Writable({ write: (chunk: Buffer, _enc, done) => void (lines.push(chunk.toString()), done()) });
    log.clear().add(new winston.transports.Stream({ stream }));
    let reads = 0;
    const files = new (class extends LocalFileStore {
      override async readFile(p: string) {
        const text = await super.readFile(p);
        reads += 1; // counted once read: the guard records its sighting right after
        return text;
      }
    })();
    guard = new MetadataGuard(files, log, clock);
    const held = guard.hold(path, 'v', async () => readFile(path, 'utf8'));
    while (reads === 0) await sleep(5); // the first sighting is made at `now`
    now += GUARD_STALE_MS + 1;
    const content = await held;
    expect(content).toMatch(/"token":"[0-9a-f]{16}"/); // our own guard replaced the dead one
    expect(lines.join('')).toMatch(/breaking a stale metadata guard/);
    await expect(readFile(path)).rejects.toMatchObject({ code: 'ENOENT' }); // released
  });

  it('never breaks a guard for its mtime: one dated 1970 (an NFS create verifier) waits like any live guard', async () => {
    await writeFile(path, 'live writer');
    await utimes(path, new Date(0), new Date(191_000));
    const held = guard.hold(path, 'v', async () => 'ran');
    await sleep(50); // (whether or not it looked yet: 6 s is far short of GUARD_STALE_MS)
    now += 6_000; // past the 5 s wait
    await expect(held).rejects.toThrow(StaleRevision);
    expect(await readFile(path, 'utf8')).toBe('live writer');
  });

  it("names the writer of a guard that outlasts the wait, the guard file and when it will be broken", async () => {
    await writeFile(path, JSON.stringify({ host: 'node-x', boot: 'other', pidns: 'pid:[1]', pid: 4242, token: 'ab' }));
    let held = guard.hold(path, 'v', async () => 'ran');
    await sleep(50);
    now += 6_000;
    await expect(held).rejects.toThrow(`the metadata of volume v stayed locked for 5 s by host node-x (pid 4242) (guard file ${path}); `);
    held = guard.hold(path, 'v', async () => 'ran');
    await sleep(50);
    now += 6_000; // first seen 12 s ago
    await expect(held).rejects.toThrow(/retry in 18 s, or delete the guard file now if no ballast on that host is running$/);
  });

  it('never breaks a guard whose content keeps changing (successive live writers), however long this host waits', async () => {
    await writeFile(path, 'writer 0');
    const held = guard.hold(path, 'v', async () => 'ran');
    const outcome = held.then(() => 'held', (err: Error) => err);
    for (let i = 1; i <= 8; i += 1) {
      await sleep(40);
      await writeFile(path, `writer ${i}`);
      now += 10_000;
    }
    expect(await outcome).toBeInstanceOf(StaleRevision); // 80 s passed, never 30 s with one content
    expect(await readFile(path, 'utf8')).toBe('writer 8');
  });

  it('a holder past the hold limit does not commit', async () => {
    const held = guard.hold(path, 'v', async (g) => {
      g.assertFresh();
      now += GUARD_HOLD_LIMIT_MS + 1;
      g.assertFresh();
    });
    await expect(held).rejects.toThrow(/was held 15 s; not committing/);
  });

  it('after a hold longer than GUARD_STALE_MS, leaves a guard that is no longer its own', async () => {
    await guard.hold(path, 'v', async () => {
      now += GUARD_STALE_MS + 1;
      await writeFile(path, 'the next holder'); // another host broke ours and took the guard
    });
    expect(await readFile(path, 'utf8')).toBe('the next holder');
  });

  it('breaks at once a guard whose writer was a process of this kernel that is gone (a daemon killed mid-write)', async () => {
    const child = spawnSync('true');
    const dead = child.pid!;
    const boot = readFileSync('/proc/sys/kernel/random/boot_id', 'utf8').trim();
    const pidns = readlinkSync('/proc/self/ns/pid');
    await writeFile(path, JSON.stringify({ host: 'h', boot, pidns, pid: dead, token: '00' }));
    expect(await guard.hold(path, 'v', async () => 'taken')).toBe('taken'); // the clock never moved
    // The same dead PID written by another kernel (another boot) or PID namespace proves nothing.
    for (const other of [{ boot: 'another-boot', pidns }, { boot, pidns: 'pid:[1]' }]) {
      await writeFile(path, JSON.stringify({ host: 'h', ...other, pid: dead, token: '01' }));
      const held = guard.hold(path, 'v', async () => 'taken');
      await sleep(30);
      now += 6_000;
      await expect(held).rejects.toThrow(StaleRevision);
      await rm(path);
    }
  });

  it('a missing volume directory is VolumeNotFound', async () => {
    await expect(guard.hold(join(dir, 'gone', 'meta.lock'), 'gone', async () => 'x')).rejects.toThrow(/gone/);
  });
});
