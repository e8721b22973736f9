import { LoopAttacher, parseLosetupJson } from '../../../src/attach/loop-attacher.js';
import { FakeExec } from '../../helpers/fake-exec.js';

const FILE = '/var/lib/ballast/loop/v/disk.img';
const listing = (rows: { name: string; 'back-file': string }[]) => JSON.stringify({ loopdevices: rows });

describe('parseLosetupJson', () => {
  it('reads devices and backing files, dropping the "(deleted)" marker', () => {
    expect(parseLosetupJson(listing([{ name: '/dev/loop3', 'back-file': `${FILE} (deleted)` }]))).toEqual([{ device: '/dev/loop3', file: FILE }]);
    expect(parseLosetupJson('')).toEqual([]);
  });
});

describe('LoopAttacher', () => {
  const query = `losetup --json --list --associated ${FILE} --output NAME,BACK-FILE`;

  const unclaimed = (...free: string[]) => async (device: string) => free.includes(device);

  it('attaches a file that has no device yet', async () => {
    const exec = new FakeExec().reply({ match: 'losetup --json', stdout: listing([]) }, { match: 'losetup --find', stdout: '/dev/loop7\n' });
    expect(await new LoopAttacher(exec, unclaimed()).attach({ transport: 'loop', file: FILE })).toBe('/dev/loop7');
    expect(exec.commands).toEqual([query, `losetup --find --show ${FILE}`]);
  });

  it('reuses an idle device already bound to the file', async () => {
    const exec = new FakeExec().reply({ match: 'losetup --json', stdout: listing([{ name: '/dev/loop2', 'back-file': FILE }]) });
    expect(await new LoopAttacher(exec, unclaimed('/dev/loop2')).attach({ transport: 'loop', file: FILE })).toBe('/dev/loop2');
    expect(exec.commands).toEqual([query]);
  });

  it('binds a new device rather than share one a (fenced) former holder still has mounted', async () => {
    const exec = new FakeExec().reply(
      { match: 'losetup --json', stdout: listing([{ name: '/dev/loop2', 'back-file': FILE }]) },
      { match: 'losetup --find', stdout: '/dev/loop3\n' },
    );
    expect(await new LoopAttacher(exec, unclaimed()).attach({ transport: 'loop', file: FILE })).toBe('/dev/loop3');
    expect(exec.commands).toEqual([query, `losetup --find --show ${FILE}`]);
  });

  it('refuses output that is not a loop device', async () => {
    const exec = new FakeExec().reply({ match: 'losetup --json', stdout: listing([]) }, { match: 'losetup --find', stdout: 'something else' });
    await expect(new LoopAttacher(exec).attach({ transport: 'loop', file: FILE })).rejects.toThrow(/printed no loop device/);
  });

  it('detaches only a device still bound to this volume file', async () => {
    const exec = new FakeExec().reply({ match: 'losetup --json', stdout: listing([{ name: '/dev/loop2', 'back-file': '/other/file' }]) });
    await new LoopAttacher(exec).detach({ transport: 'loop', file: FILE }, '/dev/loop2');
    expect(exec.commands).toEqual([query]);
    const exec2 = new FakeExec().reply({ match: 'losetup --json', stdout: listing([{ name: '/dev/loop2', 'back-file': FILE }]) });
    await new LoopAttacher(exec2).detach({ transport: 'loop', file: FILE }, '/dev/loop2');
    expect(exec2.commands).toEqual([query, 'losetup --detach /dev/loop2']);
  });

  it('fails with the command and its stderr when losetup fails', async () => {
    const exec = new FakeExec().reply({ match: 'losetup --json', stdout: listing([]) }, { match: 'losetup --find', exitCode: 1, stderr: 'losetup: cannot find an unused loop device' });
    await expect(new LoopAttacher(exec).attach({ transport: 'loop', file: FILE })).rejects.toThrow(
      /command 'losetup --find --show .*disk\.img' exited with code 1: losetup: cannot find an unused loop device/,
    );
  });

  it('reports a timed-out command as such', async () => {
    const exec = new FakeExec().reply({ match: 'losetup --json', timedOut: true });
    await expect(new LoopAttacher(exec).attach({ transport: 'loop', file: FILE })).rejects.toThrow(/timed out/);
  });
});
