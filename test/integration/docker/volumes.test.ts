import { createHash, randomBytes } from 'node:crypto';
import { existsSync } from 'node:fs';
import { readdir, writeFile } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import { PLUGIN } from '../../lab/docker-harness.js';
import { dockerSuite, loopScript } from '../../lab/docker-suite.js';
import { IMAGE } from '../../lab/busybox-image.js';
import { describeResult, waitFor } from '../../lab/command.js';

// Everyday use through the docker CLI: options, the three ways of naming a driver, data handed
// from container to container, a checksum across unmount and remount, and bad input.

const T = 120_000;
const MiB = 1024 ** 2;

const suite = dockerSuite({ name: 'volumes' }, T);
const it = suite.it;

/** Size of the filesystem mounted at /data, as a container sees it. */
async function filesystemBytes(volumeArgs: string[]): Promise<number> {
  const out = await suite.h.run(['--rm', ...volumeArgs, IMAGE, 'stat', '-f', '-c', '%b %S', '/data']);
  const [blocks, size] = out.trim().split(/\s+/).map(Number);
  return blocks! * size!;
}

describe('ballast volumes through the docker CLI', () => {
  it('volume create --opt size=64M --opt profile=default: inspect shows the options and the size, and the filesystem has it', async () => {
    await suite.h.ok(['volume', 'create', '-d', PLUGIN, '--opt', 'size=64M', '--opt', 'profile=default', 'opts1']);
    const v = await suite.h.inspectVolume('opts1');
    expect(v).toMatchObject({ Name: 'opts1', Driver: PLUGIN, Scope: 'local', Options: { size: '64M', profile: 'default' } });
    expect(v.Status).toMatchObject({ size: '64 MiB', sizeBytes: 64 * MiB, profile: 'default', fstype: 'ext4', backend: 'loop' });
    const bytes = await filesystemBytes(['-v', 'opts1:/data']);
    expect(bytes).toBeGreaterThan(50 * MiB);
    expect(bytes).toBeLessThanOrEqual(64 * MiB);
    await suite.h.ok(['volume', 'rm', 'opts1']);
  });

  it('run --volume-driver ballast -v NAME:/data creates the volume with the defaults; later containers see the data', async () => {
    await suite.h.run(['--rm', '--volume-driver', PLUGIN, '-v', 'auto1:/data', IMAGE, 'sh', '-c', 'echo one > /data/msg']);
    const v = await suite.h.inspectVolume('auto1');
    expect(v.Driver).toBe(PLUGIN);
    expect(v.Options ?? {}).toEqual({}); // -v cannot pass options
    expect(v.Status).toMatchObject({ size: '64 MiB', fstype: 'ext4' }); // the configured defaults
    // No --volume-driver now: dockerd knows the volume is ballast's.
    await suite.h.run(['--rm', '-v', 'auto1:/data', IMAGE, 'sh', '-c', 'echo two >> /data/msg']);
    expect((await suite.h.run(['--rm', '-v', 'auto1:/data', IMAGE, 'cat', '/data/msg'])).trim().split('\n')).toEqual(['one', 'two']);
    await suite.h.expectCounts({ 'VolumeDriver.Create': 1, 'VolumeDriver.Mount': 3, 'VolumeDriver.Unmount': 3 }, 'auto1');
    await suite.h.ok(['volume', 'rm', 'auto1']);
  });

  it('--mount type=volume,volume-driver=ballast,volume-opt=size=32M creates the volume with that size', async () => {
    const mount = 'type=volume,source=mnt1,target=/data,volume-driver=ballast,volume-opt=size=32M';
    await suite.h.run(['--rm', '--mount', mount, IMAGE, 'sh', '-c', 'echo via-mount > /data/f']);
    const v = await suite.h.inspectVolume('mnt1');
    expect(v).toMatchObject({ Driver: PLUGIN, Options: { size: '32M' } });
    expect(v.Status).toMatchObject({ size: '32 MiB', sizeBytes: 32 * MiB });
    const bytes = await filesystemBytes(['--mount', 'type=volume,source=mnt1,target=/data']);
    expect(bytes).toBeGreaterThan(24 * MiB);
    expect(bytes).toBeLessThanOrEqual(32 * MiB);
    // A read-only mount of the same volume reads it and cannot write.
    const ro = await suite.h.docker(['run', '--rm', '--network', 'none', '--mount', 'type=volume,source=mnt1,target=/data,readonly', IMAGE, 'sh', '-c', 'cat /data/f; echo x > /data/g']);
    expect(ro.stdout.trim()).toBe('via-mount');
    expect(ro.code).not.toBe(0);
    expect(ro.stderr).toMatch(/read-only/i);
    await suite.h.ok(['volume', 'rm', 'mnt1']);
  });

  it('10 MB of random data keeps its sha256 across unmount, detach and a remount in a new container', async () => {
    await suite.h.ok(['volume', 'create', '-d', PLUGIN, '--opt', 'size=64M', 'blob1']);
    const payload = randomBytes(10 * MiB);
    const expected = createHash('sha256').update(payload).digest('hex');
    const file = join(suite.h.dir, 'blob1.bin');
    await writeFile(file, payload);

    await suite.h.run(['--rm', '-i', '-v', 'blob1:/data', IMAGE, 'sh', '-c', 'cat > /data/blob && sync'], { input: { file } });
    // Really gone from the kernel in between: no mount, no loop device.
    expect(suite.h.ballastMounts('blob1')).toEqual([]);
    expect(suite.h.ballastLoops('blob1')).toEqual([]);
    expect((await suite.h.inspectVolume('blob1')).Status).toMatchObject({ attachment: 'detached', lease: { state: 'free' } });

    const out = await suite.h.run(['--rm', '-v', 'blob1:/data:ro', IMAGE, 'sh', '-c', 'sha256sum /data/blob; wc -c < /data/blob']);
    const [sumLine, size] = out.trim().split('\n');
    expect(sumLine!.split(/\s+/)[0]).toBe(expected);
    expect(Number(size)).toBe(10 * MiB);
    await suite.h.expectCounts({ 'VolumeDriver.Mount': 2, 'VolumeDriver.Unmount': 2 }, 'blob1');
    await suite.h.ok(['volume', 'rm', 'blob1']);
  });

  it('two containers started at once on one volume share one mount; it goes when the last one stops', async () => {
    await suite.h.ok(['volume', 'create', '-d', PLUGIN, '--opt', 'size=32M', 'shared1']);
    const started = await Promise.all(
      ['shared1a', 'shared1b'].map((name) =>
        suite.h.docker(['run', '-d', '--network', 'none', '--stop-timeout', '5', '--name', name, '-v', 'shared1:/data', IMAGE, 'sh', '-c', loopScript(`echo ${name} >> /data/log`, 0.2)]),
      ),
    );
    for (const r of started) if (r.code !== 0) throw new Error(`docker run failed:\n${describeResult(r)}`);
    expect(suite.h.ballastMounts('shared1')).toHaveLength(1);
    expect(suite.h.ballastLoops('shared1')).toHaveLength(1);
    expect((await suite.h.inspectVolume('shared1')).Status?.attachment).toMatchObject({ mounts: 2 });
    await waitFor(
      async () => {
        const log = await suite.h.ok(['exec', 'shared1a', 'cat', '/data/log']);
        return log.includes('shared1a') && log.includes('shared1b');
      },
      'both containers to write to the one volume',
      20_000,
    );

    await suite.h.ok(['stop', 'shared1a']);
    expect(suite.h.ballastMounts('shared1')).toHaveLength(1);
    expect((await suite.h.inspectVolume('shared1')).Status?.attachment).toMatchObject({ mounts: 1 });
    const n = Number((await suite.h.ok(['exec', 'shared1b', 'sh', '-c', 'wc -l < /data/log'])).trim());
    await waitFor(async () => Number((await suite.h.ok(['exec', 'shared1b', 'sh', '-c', 'wc -l < /data/log'])).trim()) > n + 2, 'the other container to keep writing', 20_000);

    await suite.h.ok(['stop', 'shared1b']);
    expect(suite.h.ballastMounts('shared1')).toEqual([]);
    expect(suite.h.ballastLoops('shared1')).toEqual([]);
    await suite.h.expectCounts({ 'VolumeDriver.Mount': 2, 'VolumeDriver.Unmount': 2 }, 'shared1');
    await suite.h.ok(['rm', 'shared1a', 'shared1b']);
    await suite.h.ok(['volume', 'rm', 'shared1']);
  });

  it('volume options readonly=true and mountopts=noatime,nodev reach the mount', async () => {
    await suite.h.ok(['volume', 'create', '-d', PLUGIN, '--opt', 'size=32M', '--opt', 'readonly=true', 'ro1']);
    const ro = await suite.h.docker(['run', '--rm', '--network', 'none', '-v', 'ro1:/data', IMAGE, 'sh', '-c', 'grep " /data " /proc/mounts; touch /data/x']);
    expect(ro.stdout).toMatch(/ \/data ext4 ro[, ]/);
    expect(ro.code).not.toBe(0);
    expect(ro.stderr).toMatch(/read-only file system/i);
    expect((await suite.h.inspectVolume('ro1')).Status).toMatchObject({ readonly: true });

    await suite.h.ok(['volume', 'create', '-d', PLUGIN, '--opt', 'size=32M', '--opt', 'mountopts=noatime,nodev', 'mo1']);
    const line = await suite.h.run(['--rm', '-v', 'mo1:/data', IMAGE, 'grep', ' /data ', '/proc/mounts']);
    expect(line).toMatch(/ \/data ext4 rw,nodev,noatime/);
    expect((await suite.h.inspectVolume('mo1')).Status).toMatchObject({ mountopts: 'noatime,nodev' });
    await suite.h.ok(['volume', 'rm', 'ro1', 'mo1']);
  });

  it('a new volume is empty to a container, as a local volume is (no lost+found)', async () => {
    await suite.h.ok(['volume', 'create', '-d', PLUGIN, '--opt', 'size=32M', 'empty1']);
    try {
      expect(await suite.h.run(['--rm', '-v', 'empty1:/data', IMAGE, 'ls', '-A', '/data'])).toBe('');
    } finally {
      await suite.h.docker(['volume', 'rm', 'empty1']);
    }
  });

  it('first use on an image path with content copies that content into the new volume, as with a local volume', async () => {
    const expected = 'busybox:local for ballast tests';
    // The reference: dockerd copies image content into a new, empty local volume.
    expect((await suite.h.run(['--rm', '-v', 'copyup-local:/etc', IMAGE, 'cat', '/etc/image-release'])).trim()).toBe(expected);
    await suite.h.ok(['volume', 'rm', 'copyup-local']);

    await suite.h.ok(['volume', 'create', '-d', PLUGIN, '--opt', 'size=32M', 'copyup1']);
    try {
      const first = await suite.h.docker(['run', '--rm', '--network', 'none', '-v', 'copyup1:/etc', IMAGE, 'cat', '/etc/image-release']);
      // dockerd did its part: a Mount/Unmount pair to copy at create time, then the container's own Mount.
      await suite.h.expectCounts({ 'VolumeDriver.Mount': 2, 'VolumeDriver.Unmount': 2 }, 'copyup1');
      const listing = await suite.h.run(['--rm', '-v', 'copyup1:/data', IMAGE, 'ls', '-A', '/data']);
      if (first.code !== 0 || first.stdout.trim() !== expected) {
        throw new Error(
          `the image's /etc was not copied into the new ballast volume (dockerd copies only into an empty volume);\n` +
            `the volume holds: ${JSON.stringify(listing.trim().split('\n'))}\n${describeResult(first)}`,
        );
      }
    } finally {
      await suite.h.docker(['volume', 'rm', 'copyup1']);
    }
  });

  it('volume create of an existing name with other options: dockerd sees it exists and never sends Create (the volume keeps its size)', async () => {
    await suite.h.ok(['volume', 'create', '-d', PLUGIN, '--opt', 'size=32M', 'again1']);
    expect((await suite.h.ok(['volume', 'create', '-d', PLUGIN, '--opt', 'size=128M', 'again1'])).trim()).toBe('again1');
    await suite.h.expectCounts({ 'VolumeDriver.Create': 1 }, 'again1');
    const v = await suite.h.inspectVolume('again1');
    expect(v.Options).toEqual({ size: '32M' });
    expect(v.Status).toMatchObject({ size: '32 MiB' });
    await suite.h.ok(['volume', 'rm', 'again1']);
  });

  it('bad input reaches the docker CLI as a clear error, and nothing is created on disk', async () => {
    const loopBefore = await suite.h.loopRootEntries();
    const mountsBefore = await readdir(suite.h.ballast.mountRoot);
    const cases: [string[], RegExp][] = [
      [['--opt', 'bogus=1', 'bad1'], /unknown option "bogus": valid options are size, fstype, profile/],
      [['--opt', 'size=lots', 'bad2'], /option size=lots: expected a number of bytes/],
      [['--opt', 'size=1M', 'bad3'], /must be at least 16 MiB/],
      [['--opt', 'fstype=btrfs', 'bad4'], /option fstype=btrfs: expected one of ext4, xfs/],
      [['--opt', 'profile=gold', 'bad5'], /option profile=gold: no such profile; configured profiles: default/],
      [['a/../b'], /invalid volume name "a\/\.\.\/b"/],
      [['../escape'], /invalid volume name/],
      [['.hidden'], /invalid volume name "\.hidden"/],
    ];
    for (const [args, message] of cases) {
      const stderr = await suite.h.fails(['volume', 'create', '-d', PLUGIN, ...args]);
      if (!message.test(stderr)) throw new Error(`docker volume create ${args.join(' ')}: stderr ${JSON.stringify(stderr)} does not match ${message}`);
    }
    // Options passed through --mount are checked the same way.
    const mountErr = await suite.h.fails([
      'run', '--rm', '--network', 'none', '--mount', 'type=volume,source=bad6,target=/data,volume-driver=ballast,volume-opt=bogus=1', IMAGE, 'true',
    ]);
    expect(mountErr).toMatch(/unknown option "bogus"/);

    expect(await suite.h.loopRootEntries()).toEqual(loopBefore);
    expect(await readdir(suite.h.ballast.mountRoot)).toEqual(mountsBefore);
    expect(existsSync(join(suite.h.ballast.loopRoot, 'b'))).toBe(false);
    expect(existsSync(join(dirname(suite.h.ballast.loopRoot), 'escape'))).toBe(false);
    const names = (await suite.h.ok(['volume', 'ls', '-q'])).split('\n');
    for (const name of ['bad1', 'bad2', 'bad3', 'bad4', 'bad5', 'bad6', 'a/../b', '../escape', '.hidden']) expect(names).not.toContain(name);
    await suite.h.removeAllContainers();
  });

  it('snapshots and clones: --opt from=VOL@SNAP holds the snapshot\'s data; a volume a running container writes is snapshotted frozen and cloned live', async () => {
    const cli = async (...args: string[]) => {
      const result = await suite.h.ballastCli(args);
      if (result.code !== 0) throw new Error(`ballast ${args.join(' ')} failed:\n${describeResult(result)}`);
      return result.stdout;
    };
    await suite.h.ok(['volume', 'create', '-d', PLUGIN, '--opt', 'size=32M', 'snapsrc']);
    await suite.h.run(['--rm', '-v', 'snapsrc:/data', IMAGE, 'sh', '-c', 'echo one > /data/f']);
    expect(await cli('snapshot', 'create', 'snapsrc', 's1')).toMatch(/^snapsrc@s1: 32 MiB ext4, made by/);
    await suite.h.run(['--rm', '-v', 'snapsrc:/data', IMAGE, 'sh', '-c', 'echo two > /data/f']);
    await suite.h.ok(['volume', 'create', '-d', PLUGIN, '--opt', 'from=snapsrc@s1', 'clone1']);
    expect(await suite.h.run(['--rm', '-v', 'clone1:/data', IMAGE, 'cat', '/data/f'])).toBe('one\n');
    expect((await suite.h.inspectVolume('clone1')).Status).toMatchObject({ size: '32 MiB', fstype: 'ext4' });

    // A container keeps writing; the snapshot freezes it for the copy, and it goes on after.
    await suite.h.ok(['run', '-d', '--name', 'snapwriter', '--network', 'none', '-v', 'snapsrc:/data', IMAGE, 'sh', '-c', 'while true; do date >> /data/log; sleep 0.05; done']);
    await waitFor(async () => (await suite.h.lineCount('snapwriter', '/data/log')) > 5, 'the writer to start', 20_000);
    await cli('snapshot', 'create', 'snapsrc', 's2');
    await suite.h.ok(['volume', 'create', '-d', PLUGIN, '--opt', 'from=snapsrc', 'clone2']);
    const before = await suite.h.lineCount('snapwriter', '/data/log');
    await suite.h.waitForMoreLines('snapwriter', '/data/log', before, 'the writer to go on after the freeze');
    await suite.h.ok(['rm', '-f', 'snapwriter']);
    expect(Number((await suite.h.run(['--rm', '-v', 'clone2:/data', IMAGE, 'wc', '-l', '/data/log'])).trim().split(/\s/)[0])).toBeGreaterThan(5);

    expect(await suite.h.fails(['volume', 'rm', 'snapsrc'])).toMatch(/volume snapsrc has 2 snapshot\(s\) \(s1, s2\)/);
    expect(await suite.h.fails(['volume', 'create', '-d', PLUGIN, '--opt', 'from=snapsrc@nope', 'clone3'])).toMatch(/volume snapsrc has no snapshot nope/);
    expect((await suite.h.ok(['volume', 'ls', '-q'])).split('\n')).not.toContain('clone3');
    await cli('snapshot', 'rm', 'snapsrc', 's1');
    await cli('snapshot', 'rm', 'snapsrc', 's2');
    await suite.h.ok(['volume', 'rm', 'snapsrc', 'clone1', 'clone2']);
    expect(await suite.h.loopRootEntries()).not.toContain('snapsrc');
  });

  it('options inline in the name (run --volume-driver ballast -v size=48M,name=inl1:/data) create inl1 on first use and use it afterwards', async () => {
    const spec = 'size=48M,fstype=ext4,name=inl1';
    await suite.h.run(['--rm', '--volume-driver', PLUGIN, '-v', `${spec}:/data`, IMAGE, 'sh', '-c', 'echo kept > /data/f']);
    expect(await suite.h.run(['--rm', '--volume-driver', PLUGIN, '-v', `${spec}:/data`, IMAGE, 'cat', '/data/f'])).toBe('kept\n');
    expect(await filesystemBytes(['--volume-driver', PLUGIN, '-v', `${spec}:/data`])).toBeLessThan(48 * MiB);
    expect(await suite.h.run(['--rm', '-v', 'inl1:/data', IMAGE, 'cat', '/data/f'])).toBe('kept\n'); // the same volume by its name
    expect((await suite.h.inspectVolume('inl1')).Status).toMatchObject({ size: '48 MiB', fstype: 'ext4' });
    await suite.h.expectCounts({ 'VolumeDriver.Create': 1 }, spec); // request lines name the volume as dockerd gave it
    expect(await suite.h.fails(['run', '--rm', '--network', 'none', '--volume-driver', PLUGIN, '-v', 'size=64M,name=inl1:/data', IMAGE, 'true'])).toMatch(
      /volume inl1 already exists with different options: size is 48 MiB, asked 64 MiB/,
    );
    expect(await suite.h.fails(['run', '--rm', '--network', 'none', '--volume-driver', PLUGIN, '-v', 'size=64M:/data', IMAGE, 'true'])).toMatch(/name=NAME is missing/);
    expect(await suite.h.fails(['run', '--rm', '--network', 'none', '--volume-driver', PLUGIN, '-v', 'colour=blue,name=inl2:/data', IMAGE, 'true'])).toMatch(/unknown option "colour"/);
    expect(await suite.h.loopRootEntries()).not.toContain('inl2');
    await suite.h.removeAllContainers();
    for (const name of (await suite.h.ok(['volume', 'ls', '-q'])).split('\n').filter((n) => n.includes('name=inl1'))) await suite.h.ok(['volume', 'rm', name]);
  });

  it('io limits: write_bps=2M caps a container\'s direct writes to the volume within 20 %; a volume without limits is not capped', async () => {
    await suite.h.ok(['volume', 'create', '-d', PLUGIN, '--opt', 'size=64M', '--opt', 'write_bps=2M', '--opt', 'read_iops=200', 'capped']);
    await suite.h.ok(['volume', 'create', '-d', PLUGIN, '--opt', 'size=64M', 'uncapped']);
    expect((await suite.h.inspectVolume('capped')).Status).toMatchObject({ ioLimits: 'read_iops=200,write_bps=2 MiB', ioLimitsBy: expect.stringMatching(/cgroup/) });
    // 12 MiB written with O_DIRECT, timed inside the container (/proc/uptime: 10 ms steps) after a
    // pause that lets ballast see the container start.
    const mibPerSecond = async (volume: string) => {
      const script = 'sleep 2; a=$(cut -d" " -f1 /proc/uptime); dd if=/dev/zero of=/data/f bs=1M count=12 oflag=direct 2>/dev/null; b=$(cut -d" " -f1 /proc/uptime); echo $a $b';
      const [a, b] = (await suite.h.run(['--rm', '-v', `${volume}:/data`, IMAGE, 'sh', '-c', script])).trim().split(' ').map(Number);
      return 12 / (b! - a!);
    };
    const capped = await mibPerSecond('capped');
    expect(capped).toBeGreaterThan(2 * 0.8);
    expect(capped).toBeLessThan(2 * 1.2);
    expect(await mibPerSecond('uncapped')).toBeGreaterThan(2 * 3);
    const applied = (await suite.h.logs()).filter((l) => l.message === 'io limits applied');
    // One container, on the capped volume only (a start seen both in the catch-up list and as an event is applied twice, harmlessly).
    expect(applied.length).toBeGreaterThan(0);
    for (const line of applied) expect(line).toMatchObject({ volume: 'capped', limits: 'read_iops=200,write_bps=2 MiB' });
    expect(new Set(applied.map((l) => l.container)).size).toBe(1);
    expect(await suite.h.fails(['volume', 'create', '-d', PLUGIN, '--opt', 'write_bps=lots', 'badlimit'])).toMatch(/option write_bps=lots: expected bytes per second/);
    expect(await suite.h.fails(['volume', 'create', '-d', PLUGIN, '--opt', 'read_iops=1.5', 'badlimit'])).toMatch(/option read_iops=1.5: expected a whole number/);
    await suite.h.ok(['volume', 'rm', 'capped', 'uncapped']);
  });

  it('nothing left behind: no ballast mount, loop device, staging dir or recorded reference', async () => {
    await suite.h.assertNoLeftovers();
  });
});
