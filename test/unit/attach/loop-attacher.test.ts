import { LoopAttacher } from '../../../src/attach/loop-attacher.js';
import { FakeExec } from '../../helpers/fake-exec.js';

// The locked attach's command sequence (its real counterpart: test/integration/locked-loop.test.ts
// on the host, and the NFS takeover test in the VM lab).

const FILE = '/mnt/nfs/loop/v/disk.img';
const listing = (devices: string[]) => JSON.stringify({ loopdevices: devices.map((name) => ({ name, 'back-file': FILE })) });

describe('LoopAttacher with the image lock (nfs-lock)', () => {
  it('detaches an idle device left bound to the image, then attaches holding the lock', async () => {
    const exec = new FakeExec().reply({ match: 'losetup --json', stdout: listing(['/dev/loop4']) }, { match: 'perl -e', stdout: '/dev/loop7\n' });
    const attacher = new LoopAttacher(exec, async () => true);
    expect(await attacher.attach({ transport: 'loop', file: FILE, lock: { waitSeconds: 5 } })).toBe('/dev/loop7');
    expect(exec.calls.map((argv) => (argv[0] === 'perl' ? `perl ${argv.at(-1)}` : argv.join(' ')))).toEqual([
      `losetup --json --list --associated ${FILE} --output NAME,BACK-FILE`,
      'losetup --detach /dev/loop4',
      `perl ${FILE}`,
    ]);
  });

  it('polls while another host holds the lock, and attaches once it is free', async () => {
    const exec = new FakeExec().reply(
      { match: 'losetup --json', stdout: '' },
      { match: 'perl -e', exitCode: 75, once: true },
      { match: 'perl -e', exitCode: 75, once: true },
      { match: 'perl -e', stdout: '/dev/loop2\n' },
    );
    const slept: number[] = [];
    const attacher = new LoopAttacher(exec, async () => true, async (ms) => void slept.push(ms));
    expect(await attacher.attach({ transport: 'loop', file: FILE, lock: { waitSeconds: 30 } })).toBe('/dev/loop2');
    expect(slept).toEqual([1000, 1000]);
  });

  it('gives up after the wait, saying who holds the image and when it can move', async () => {
    const exec = new FakeExec().reply({ match: 'losetup --json', stdout: '' }, { match: 'perl -e', exitCode: 75 });
    const attacher = new LoopAttacher(exec, async () => true, async () => new Promise((r) => setTimeout(r, 5)));
    await expect(attacher.attach({ transport: 'loop', file: FILE, lock: { waitSeconds: 0.05 } })).rejects.toThrow(
      /the image .*disk\.img is locked by another NFS client: the host that had the volume still has it attached \(waited 0\.05 s\)/,
    );
  });

  it('reports a failed locked attach by its own message, not the script', async () => {
    const exec = new FakeExec().reply({ match: 'losetup --json', stdout: '' }, { match: 'perl -e', exitCode: 2, stderr: `open ${FILE}: Stale file handle\n` });
    await expect(new LoopAttacher(exec).attach({ transport: 'loop', file: FILE, lock: { waitSeconds: 1 } })).rejects.toThrow(
      new RegExp(`^cannot attach ${FILE} holding its lock: open ${FILE}: Stale file handle$`),
    );
  });

  it('without the lock, attaches with losetup as before', async () => {
    const exec = new FakeExec().reply({ match: 'losetup --json', stdout: '' }, { match: 'losetup --find', stdout: '/dev/loop1\n' });
    expect(await new LoopAttacher(exec).attach({ transport: 'loop', file: FILE })).toBe('/dev/loop1');
    expect(exec.commands.some((c) => c.startsWith('perl'))).toBe(false);
  });
});
