import { mkdir, mkdtemp, readdir, rm, symlink, writeFile, chmod } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { HostProbe } from '../../../../src/cli/doctor/probe.js';
import { CommandFailed } from '../../../../src/errors.js';
import { CommandRunner, type Exec } from '../../../../src/exec.js';
import { silentLogger } from '../../../../src/log.js';

// The real probe against a temp tree standing in for /proc, /sys, /lib/modules and PATH.
describe('HostProbe', () => {
  let root: string;
  const probe = (exec: Exec = new CommandRunner(silentLogger())) => new HostProbe({ exec, path: `/nonexistent:${join(root, 'bin')}`, kernelRelease: '6.1.0-test', root });
  const put = async (path: string, text: string) => {
    await mkdir(join(root, path, '..'), { recursive: true });
    await writeFile(join(root, path), text);
  };

  beforeEach(async () => {
    root = await mkdtemp(join(tmpdir(), 'ballast-probe-'));
  });
  afterEach(() => rm(root, { recursive: true, force: true }));

  it('tells loaded, built-in, available, absent and unknown modules apart', async () => {
    await put('sys/module/iscsi_tcp/initstate', 'live\n');
    await mkdir(join(root, 'sys/module/loop'), { recursive: true }); // built in, with parameters
    expect(await probe().moduleState('nvme_tcp')).toBe('unknown'); // no /lib/modules/6.1.0-test yet
    await put('lib/modules/6.1.0-test/modules.builtin', 'kernel/drivers/md/dm-multipath.ko\n');
    await put('lib/modules/6.1.0-test/modules.dep', 'kernel/drivers/nvme/host/nvme-tcp.ko.xz: kernel/drivers/nvme/host/nvme-fabrics.ko.xz\n');
    const p = probe();
    expect(await Promise.all(['iscsi_tcp', 'loop', 'dm_multipath', 'nvme-tcp', 'scsi_debug'].map((m) => p.moduleState(m)))).toEqual(['loaded', 'builtin', 'builtin', 'available', 'absent']);
  });

  it('finds a live process by comm or exe, not a zombie', async () => {
    await put('proc/100/comm', 'iscsid\n');
    await put('proc/100/stat', '100 (iscsid) S 1 100 100 0');
    await put('proc/200/comm', 'renamed\n');
    await put('proc/200/stat', '200 (renamed) S 1 200 200 0');
    await symlink('/usr/sbin/multipathd', join(root, 'proc/200/exe'));
    await put('proc/300/comm', 'tgtd\n');
    await put('proc/300/stat', '300 (tgtd) Z 1 300 300 0');
    const p = probe();
    expect(await p.processRunning('iscsid')).toBe(true);
    expect(await p.processRunning('multipathd')).toBe(true);
    expect(await p.processRunning('tgtd')).toBe(false);
    expect(await p.processRunning('dockerd')).toBe(false);
  });

  it('sees a listening abstract socket in /proc/net/unix', async () => {
    await put('proc/net/unix', [
      'Num       RefCount Protocol Flags    Type St Inode Path',
      '0000000000000000: 00000002 00000000 00010000 0001 01 25164 @ISCSIADM_ABSTRACT_NAMESPACE',
      '0000000000000000: 00000002 00000000 00000000 0001 03 25165 @/org/kernel/linux/storage/multipathd',
    ].join('\n'));
    expect(await probe().abstractSocketListening('ISCSIADM_ABSTRACT_NAMESPACE')).toBe(true);
    expect(await probe().abstractSocketListening('/org/kernel/linux/storage/multipathd')).toBe(false); // connected, not listening
  });

  it('finds executables on PATH only', async () => {
    await put('bin/iscsiadm', '#!/bin/sh\n');
    await chmod(join(root, 'bin/iscsiadm'), 0o755);
    await put('bin/notes', 'not executable\n');
    expect(await probe().which('iscsiadm')).toBe(join(root, 'bin/iscsiadm'));
    expect(await probe().which('notes')).toBeUndefined();
    expect(await probe().which('nvme')).toBeUndefined();
  });

  it('writes, stats and removes a file in a child process', async () => {
    const dir = join(root, 'shared');
    await mkdir(dir);
    const result = await probe().writeTest(dir, 10_000);
    expect(result).toEqual({ outcome: 'written', before: expect.any(Number), after: expect.any(Number), mtimeMs: expect.any(Number) });
    if (result.outcome !== 'written') throw new Error('unreachable');
    expect(Math.abs(result.mtimeMs - result.before)).toBeLessThan(2_000);
    expect(await readdir(dir)).toEqual([]);
    expect(await probe().writeTest(join(dir, 'a/b'), 10_000)).toEqual({ outcome: 'missing', ancestor: dir, ancestorWritable: true });
  });

  it('reports a write the runner timed out as a timeout', async () => {
    const hung: Exec = { run: async (argv) => Promise.reject(new CommandFailed(argv, undefined, '', true)) };
    expect(await probe(hung).writeTest('/srv/nfs', 100)).toEqual({ outcome: 'timeout' });
  });
});
