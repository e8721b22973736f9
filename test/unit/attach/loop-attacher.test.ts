import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { LoopAttacher, LoopSysfs } from '../../../src/attach/loop-attacher.js';
import { FakeExec } from '../../helpers/fake-exec.js';

// The attach command sequences, with loop bindings read from a sysfs fixture as the kernel
// shows them (their real counterparts: test/integration/loop-backend.test.ts, locked-loop.test.ts
// on the host, and the NFS takeover test in the VM lab).

const FILE = '/mnt/nfs/loop/v/disk.img';
let root: string;

/** Binds loopN to `file` in the fixture, as /sys/block/loopN/loop/backing_file shows it. */
function bind(n: number, file: string): void {
  mkdirSync(join(root, 'sys', 'block', `loop${n}`, 'loop'), { recursive: true });
  writeFileSync(join(root, 'sys', 'block', `loop${n}`, 'loop', 'backing_file'), `${file}\n`);
}

beforeEach(() => {
  root = mkdtempSync(join(tmpdir(), 'ballast-loop-sysfs-'));
  mkdirSync(join(root, 'sys', 'block', 'loop0'), { recursive: true }); // unbound: no loop/backing_file
  mkdirSync(join(root, 'sys', 'block', 'sda'), { recursive: true });
});
afterEach(() => rmSync(root, { recursive: true, force: true }));

describe('LoopSysfs', () => {
  it('lists the loop devices bound to exactly this file, in device order, and reads one binding', async () => {
    bind(11, FILE);
    bind(2, FILE);
    bind(3, `${FILE}.other`);
    bind(4, `${FILE} (deleted)`);
    const sysfs = new LoopSysfs(root);
    expect(await sysfs.devicesFor(FILE)).toEqual(['/dev/loop2', '/dev/loop4', '/dev/loop11']);
    expect(await sysfs.backingFile('/dev/loop3')).toBe(`${FILE}.other`);
    expect(await sysfs.backingFile('/dev/loop0')).toBeUndefined();
    expect(await sysfs.backingFile('/dev/sda')).toBeUndefined();
  });

  it('skips a device detached while it is read (ENODEV), and still fails on any other read error', async () => {
    bind(2, FILE);
    bind(5, FILE);
    bind(7, FILE);
    const failing = (code: string) => async (path: string) => {
      if (path.includes('/loop5/')) throw Object.assign(new Error(`${code}: read`), { code });
      const { readFile } = await import('node:fs/promises');
      return readFile(path, 'utf8');
    };
    expect(await new LoopSysfs(root, failing('ENODEV')).devicesFor(FILE)).toEqual(['/dev/loop2', '/dev/loop7']);
    await expect(new LoopSysfs(root, failing('EACCES')).devicesFor(FILE)).rejects.toThrow(/EACCES/);
  });
});

describe('LoopAttacher', () => {
  it('reuses an unclaimed device bound to the file without any command, and skips a claimed one', async () => {
    bind(1, FILE);
    bind(5, FILE);
    const exec = new FakeExec();
    const attacher = new LoopAttacher(exec, new LoopSysfs(root), async (device) => device === '/dev/loop5');
    expect(await attacher.attach({ transport: 'loop', file: FILE })).toBe('/dev/loop5');
    expect(exec.commands).toEqual([]);
  });

  it('without the lock, attaches with losetup when no device is bound', async () => {
    const exec = new FakeExec().reply({ match: 'losetup --find', stdout: '/dev/loop1\n' });
    expect(await new LoopAttacher(exec, new LoopSysfs(root)).attach({ transport: 'loop', file: FILE })).toBe('/dev/loop1');
    expect(exec.commands).toEqual([`losetup --find --show ${FILE}`]);
  });

  it('detaches only a device still bound to the volume file', async () => {
    bind(3, `${FILE}.other`);
    bind(4, FILE);
    const exec = new FakeExec();
    const attacher = new LoopAttacher(exec, new LoopSysfs(root), undefined, async () => undefined); // the fixture keeps loop4 bound
    await attacher.detach({ transport: 'loop', file: FILE }, '/dev/loop3');
    await attacher.detach({ transport: 'loop', file: FILE }, '/dev/loop0');
    expect(exec.commands).toEqual([]);
    await attacher.detach({ transport: 'loop', file: FILE }, '/dev/loop4');
    expect(exec.commands).toEqual(['losetup --detach /dev/loop4']);
  });

  it('after losetup --detach, waits (bounded) until the kernel has released a device still held open', async () => {
    bind(4, FILE);
    const naps: number[] = [];
    const exec = new FakeExec();
    // The binding goes at the third poll, as when udev closes the device a moment later.
    const sleep = async (ms: number) => {
      naps.push(ms);
      if (naps.length === 3) rmSync(join(root, 'sys', 'block', 'loop4', 'loop'), { recursive: true });
    };
    await new LoopAttacher(exec, new LoopSysfs(root), undefined, sleep).detach({ transport: 'loop', file: FILE }, '/dev/loop4');
    expect(naps).toEqual([100, 100, 100]);
    // One that never goes: the detach still returns, after 50 polls.
    bind(5, FILE);
    naps.length = 0;
    await new LoopAttacher(exec, new LoopSysfs(root), undefined, async (ms) => void naps.push(ms)).detach({ transport: 'loop', file: FILE }, '/dev/loop5');
    expect(naps).toHaveLength(50);
  });
});

describe('LoopAttacher with the image lock (nfs-lock)', () => {
  it('detaches an idle device left bound to the image, then attaches holding the lock', async () => {
    bind(4, FILE);
    const exec = new FakeExec().reply({ match: 'perl -e', stdout: '/dev/loop7\n' });
    const attacher = new LoopAttacher(exec, new LoopSysfs(root), async () => true);
    expect(await attacher.attach({ transport: 'loop', file: FILE, lock: { waitSeconds: 5 } })).toBe('/dev/loop7');
    expect(exec.calls.map((argv) => (argv[0] === 'perl' ? `perl ${argv.at(-1)}` : argv.join(' ')))).toEqual(['losetup --detach /dev/loop4', `perl ${FILE}`]);
  });

  it('polls while another host holds the lock, and attaches once it is free', async () => {
    const exec = new FakeExec().reply(
      { match: 'perl -e', exitCode: 75, once: true },
      { match: 'perl -e', exitCode: 75, once: true },
      { match: 'perl -e', stdout: '/dev/loop2\n' },
    );
    const slept: number[] = [];
    const attacher = new LoopAttacher(exec, new LoopSysfs(root), async () => true, async (ms) => void slept.push(ms));
    expect(await attacher.attach({ transport: 'loop', file: FILE, lock: { waitSeconds: 30 } })).toBe('/dev/loop2');
    expect(slept).toEqual([1000, 1000]);
  });

  it('gives up after the wait, saying who holds the image and when it can move', async () => {
    const exec = new FakeExec().reply({ match: 'perl -e', exitCode: 75 });
    const attacher = new LoopAttacher(exec, new LoopSysfs(root), async () => true, async () => new Promise((r) => setTimeout(r, 5)));
    await expect(attacher.attach({ transport: 'loop', file: FILE, lock: { waitSeconds: 0.05 } })).rejects.toThrow(
      /the image .*disk\.img is locked by another NFS client: the host that had the volume still has it attached \(waited 0\.05 s\)/,
    );
  });

  it('reports a failed locked attach by its own message, not the script', async () => {
    const exec = new FakeExec().reply({ match: 'perl -e', exitCode: 2, stderr: `open ${FILE}: Stale file handle\n` });
    await expect(new LoopAttacher(exec, new LoopSysfs(root)).attach({ transport: 'loop', file: FILE, lock: { waitSeconds: 1 } })).rejects.toThrow(
      new RegExp(`^cannot attach ${FILE} holding its lock: open ${FILE}: Stale file handle$`),
    );
  });
});
