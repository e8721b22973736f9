import { open, rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { PLUGIN } from '../../lab/docker-harness.js';
import { dockerSuite, loopScript } from '../../lab/docker-suite.js';
import { IMAGE } from '../../lab/busybox-image.js';
import { describeResult, sleep, waitFor } from '../../lab/command.js';

/** The default lease.renew_every (2 s) and a margin: how long ballast takes to see a volume deleted by hand. */
const OUT_OF_BAND_MS = 2_500;

// moby's integration-cli/docker_cli_external_volume_driver_test.go, scenarios 1-18, re-expressed
// with the docker CLI against a real dockerd 20.10, a real `ballast serve` and real loop devices.
// Call counts come from ballast's own request log (BallastProcess.requestCount).

const T = 120_000;
const CREATE = 'VolumeDriver.Create';
const REMOVE = 'VolumeDriver.Remove';
const MOUNT = 'VolumeDriver.Mount';
const UNMOUNT = 'VolumeDriver.Unmount';
const GET = 'VolumeDriver.Get';
const LIST = 'VolumeDriver.List';
const PATH = 'VolumeDriver.Path';
const HEX64 = /^[0-9a-f]{64}$/;

const suite = dockerSuite({ name: 'moby' }, T);
const it = suite.it;

/** The volume names of the Create requests ballast served after `baseline`. */
async function createdSince(baseline: Record<string, number>): Promise<string[]> {
  return (await suite.h.requests(CREATE)).slice(baseline[CREATE] ?? 0).map((l) => String(l.volume));
}

describe('moby external volume driver scenarios, through the docker CLI', () => {
  it('1 create option conflict: a name another driver holds is refused with "must be unique", both ways', async () => {
    await suite.h.ok(['volume', 'create', 'conflict1']); // the local driver
    const before = await suite.h.baseline('conflict1');
    const err = await suite.h.fails(['volume', 'create', '-d', PLUGIN, 'conflict1']);
    expect(err).toMatch(/must be unique/);
    await suite.h.expectCounts({ [CREATE]: 0 }, 'conflict1', before);
    expect(await suite.h.loopRootEntries()).not.toContain('conflict1');
    expect((await suite.h.inspectVolume('conflict1')).Driver).toBe('local');
    await suite.h.ok(['volume', 'rm', 'conflict1']);

    await suite.h.ok(['volume', 'create', '-d', PLUGIN, 'conflict1b']);
    expect(await suite.h.fails(['volume', 'create', '--driver', 'local', 'conflict1b'])).toMatch(/must be unique/);
    expect((await suite.h.inspectVolume('conflict1b')).Driver).toBe(PLUGIN);
    await suite.h.ok(['volume', 'rm', 'conflict1b']);
    await suite.h.expectCounts({ [CREATE]: 1, [REMOVE]: 1 }, 'conflict1b');
  });

  it('2 named volume: create, mount, unmount and remove are each sent exactly once', async () => {
    const v = 'named2';
    await suite.h.ok(['volume', 'create', '-d', PLUGIN, v]);
    await suite.h.expectCounts({ [CREATE]: 1, [MOUNT]: 0 }, v);
    const out = await suite.h.run(['--rm', '-v', `${v}:/data`, IMAGE, 'sh', '-c', 'echo hello > /data/f && cat /data/f']);
    expect(out.trim()).toBe('hello');
    await suite.h.expectCounts({ [CREATE]: 1, [MOUNT]: 1, [UNMOUNT]: 1, [REMOVE]: 0 }, v);
    await suite.h.ok(['volume', 'rm', v]);
    await suite.h.expectCounts({ [CREATE]: 1, [MOUNT]: 1, [UNMOUNT]: 1, [REMOVE]: 1 }, v);
    expect(await suite.h.loopRootEntries()).not.toContain(v);
  });

  it('3 unnamed volume with --volume-driver and --rm: created under a 64-hex name and removed', async () => {
    const before = await suite.h.baseline();
    const out = await suite.h.run(['--rm', '-v', '/data', '--volume-driver', PLUGIN, IMAGE, 'sh', '-c', 'echo anon > /data/f && cat /data/f']);
    expect(out.trim()).toBe('anon');
    const created = await createdSince(before);
    expect(created).toHaveLength(1);
    const name = created[0]!;
    expect(name).toMatch(HEX64);
    await suite.h.expectCounts({ [CREATE]: 1, [MOUNT]: 1, [UNMOUNT]: 1, [REMOVE]: 1 }, name);
    expect(await suite.h.loopRootEntries()).not.toContain(name);
    expect(await suite.h.ok(['volume', 'ls', '-q'])).not.toContain(name);
  });

  it('4 --volumes-from: two mounts with distinct IDs, two unmounts, one remove', async () => {
    await suite.h.run(['-d', '--name', 'vf4', '-v', '/data', '--volume-driver', PLUGIN, IMAGE, 'sh', '-c', loopScript('true', 1)]);
    const name = String((await suite.h.inspectContainer('vf4')).Mounts[0].Name);
    expect(name).toMatch(HEX64);
    await suite.h.ok(['exec', 'vf4', 'sh', '-c', 'echo shared > /data/f']);
    const out = await suite.h.run(['--rm', '--volumes-from', 'vf4', IMAGE, 'cat', '/data/f']);
    expect(out.trim()).toBe('shared');
    await suite.h.ok(['rm', '-fv', 'vf4']);
    await suite.h.expectCounts({ [CREATE]: 1, [MOUNT]: 2, [UNMOUNT]: 2, [REMOVE]: 1 }, name);
    const ids = (await suite.h.requests(MOUNT, name)).map((l) => String(l.mountId));
    expect(new Set(ids).size).toBe(2);
    expect(suite.h.ballastLoops(name)).toEqual([]);
  });

  it('5 rm -fv of a running container: unmount, then remove of its anonymous volume', async () => {
    await suite.h.run(['-d', '--name', 'del5', '-v', '/data', '--volume-driver', PLUGIN, IMAGE, 'sleep', '600']);
    const name = String((await suite.h.inspectContainer('del5')).Mounts[0].Name);
    await suite.h.expectCounts({ [MOUNT]: 1, [UNMOUNT]: 0 }, name);
    expect(suite.h.ballastMounts(name)).toHaveLength(1);
    await suite.h.ok(['rm', '-fv', 'del5']);
    await suite.h.expectCounts({ [CREATE]: 1, [MOUNT]: 1, [UNMOUNT]: 1, [REMOVE]: 1 }, name);
    expect(suite.h.ballastMounts(name)).toEqual([]);
    expect(await suite.h.loopRootEntries()).not.toContain(name);
  });

  it('8 container inspect shows the volume mount with Name and Driver ballast', async () => {
    await suite.h.run(['-d', '--name', 'bind8', '-v', 'ext8:/data', '--volume-driver', PLUGIN, IMAGE, 'sh', '-c', loopScript('true', 1)]);
    const mounts = (await suite.h.inspectContainer('bind8')).Mounts as Record<string, unknown>[];
    expect(mounts).toHaveLength(1);
    // moby asserts Name and Driver. (Source is what Path said when the container was created:
    // empty, since ballast reports a mountpoint only while a volume is mounted.)
    expect(mounts[0]).toMatchObject({ Type: 'volume', Name: 'ext8', Driver: PLUGIN, Destination: '/data', RW: true });
    expect(suite.h.ballastMounts('ext8')).toEqual([join(suite.h.ballast.mountRoot, 'ext8')]);
    await suite.h.ok(['rm', '-f', 'bind8']);
    await suite.h.ok(['volume', 'rm', 'ext8']);
  });

  it('9 one List per `docker volume ls`, which shows ballast volumes', async () => {
    await suite.h.ok(['volume', 'create', '-d', PLUGIN, 'list9']);
    const before = await suite.h.baseline();
    const out = await suite.h.ok(['volume', 'ls', '--format', '{{.Driver}} {{.Name}}']);
    expect(out.split('\n')).toContain(`${PLUGIN} list9`);
    await suite.h.expectCounts({ [LIST]: 1 }, undefined, before);
    await suite.h.ok(['volume', 'ls']);
    await suite.h.expectCounts({ [LIST]: 2 }, undefined, before);
    await suite.h.ok(['volume', 'rm', 'list9']);
  });

  it('10 Get: an unknown volume is "No such volume"; Status passes through to docker volume inspect', async () => {
    expect(await suite.h.fails(['volume', 'inspect', 'nosuch10'])).toMatch(/no such volume/i);
    await waitFor(async () => (await suite.h.count(GET, 'nosuch10')) >= 1, 'dockerd to probe ballast for nosuch10', 3_000);

    await suite.h.ok(['volume', 'create', '-d', PLUGIN, '--opt', 'size=32M', 'status10']);
    const idle = await suite.h.inspectVolume('status10');
    expect(idle).toMatchObject({ Name: 'status10', Driver: PLUGIN, Scope: 'local', Options: { size: '32M' }, Mountpoint: '' });
    expect(idle.Status).toMatchObject({
      size: '32 MiB',
      sizeBytes: 32 * 1024 ** 2,
      fstype: 'ext4',
      profile: 'default',
      backend: 'loop',
      readonly: false,
      attachment: 'detached',
      lease: { state: 'free' },
      health: 'ok',
    });

    await suite.h.run(['-d', '--name', 'status10c', '-v', 'status10:/data', IMAGE, 'sh', '-c', loopScript('true', 1)]);
    const busy = await suite.h.inspectVolume('status10');
    const mountpoint = join(suite.h.ballast.mountRoot, 'status10');
    expect(busy.Mountpoint).toBe(mountpoint);
    expect(busy.Status?.attachment).toMatchObject({ mountpoint, mounts: 1 });
    expect(String(busy.Status?.attachment.device)).toMatch(/^\/dev\/loop\d+$/);
    expect(suite.h.ballastLoops('status10')).toEqual([busy.Status?.attachment.device]);
    expect(busy.Status?.lease).toMatchObject({ state: 'held' });
    expect(String(busy.Status?.lease.holder)).toMatch(/^host \S+ \(.+\)$/);

    await suite.h.ok(['rm', '-f', 'status10c']);
    const after = await suite.h.inspectVolume('status10');
    expect(after.Status).toMatchObject({ attachment: 'detached', lease: { state: 'free' } });
    expect(after.Mountpoint).toBe('');
    await suite.h.ok(['volume', 'rm', 'status10']);
  });

  it('12 Get of a volume removed out of band answers "no such volume" cleanly (ballast keeps serving)', async () => {
    await suite.h.ok(['volume', 'create', '-d', PLUGIN, 'oob12']);
    await rm(join(suite.h.ballast.loopRoot, 'oob12'), { recursive: true });
    await sleep(OUT_OF_BAND_MS); // Get answers from ballast's index: a delete behind its back shows within renew_every
    expect(await suite.h.fails(['volume', 'inspect', 'oob12'])).toMatch(/no such volume/i);
    const last = (await suite.h.requests(GET, 'oob12')).at(-1)!;
    expect(last.err).toBe('volume oob12 does not exist');
    expect(last.level).toBe('debug'); // routine, not an error
    expect(await suite.h.ok(['volume', 'ls', '-q'])).not.toMatch(/^oob12$/m);
    expect(suite.h.ballastRunning()).toBe(true);
    await suite.h.ok(['volume', 'ls']); // still answers
  });

  it('13 no Path calls on volume create and volume ls', async () => {
    const before = await suite.h.baseline();
    await suite.h.ok(['volume', 'create', '-d', PLUGIN, 'path13']);
    await suite.h.ok(['volume', 'ls']);
    await suite.h.ok(['volume', 'inspect', 'path13']);
    await suite.h.expectCounts({ [PATH]: 0, [CREATE]: 1, [LIST]: 1 }, undefined, before);
    await suite.h.ok(['volume', 'rm', 'path13']);
  });

  it('14 the Mount ID is non-empty (64 hex) and Unmount carries the same ID', async () => {
    await suite.h.run(['--rm', '--volume-driver', PLUGIN, '-v', 'mountid14:/data', IMAGE, 'true']);
    const mounts = await suite.h.requests(MOUNT, 'mountid14');
    const unmounts = await suite.h.requests(UNMOUNT, 'mountid14');
    expect(mounts).toHaveLength(1);
    expect(unmounts).toHaveLength(1);
    expect(String(mounts[0]!.mountId)).toMatch(HEX64);
    expect(unmounts[0]!.mountId).toBe(mounts[0]!.mountId);
    await suite.h.ok(['volume', 'rm', 'mountid14']);
  });

  it('16 out-of-band delete: the name can be created again with new options, then by another driver', async () => {
    await suite.h.ok(['volume', 'create', '-d', PLUGIN, '--opt', 'size=32M', 'oob16']);
    await rm(join(suite.h.ballast.loopRoot, 'oob16'), { recursive: true });
    await sleep(OUT_OF_BAND_MS); // ballast's Get sees a volume deleted by hand within renew_every

    await suite.h.ok(['volume', 'create', '-d', PLUGIN, '--opt', 'size=64M', '--opt', 'fstype=ext4', 'oob16']);
    const again = await suite.h.inspectVolume('oob16');
    expect(again).toMatchObject({ Driver: PLUGIN, Options: { size: '64M', fstype: 'ext4' } });
    expect(again.Status).toMatchObject({ size: '64 MiB', fstype: 'ext4' });
    expect((await suite.h.run(['--rm', '-v', 'oob16:/data', IMAGE, 'sh', '-c', 'echo ok > /data/f && cat /data/f'])).trim()).toBe('ok');

    await rm(join(suite.h.ballast.loopRoot, 'oob16'), { recursive: true });
    await sleep(OUT_OF_BAND_MS); // dockerd asks ballast's Get whether the name is still taken
    await suite.h.ok(['volume', 'create', '--driver', 'local', 'oob16']);
    const local = await suite.h.inspectVolume('oob16');
    expect(local.Driver).toBe('local');
    expect(local.Options ?? {}).toEqual({});
    await suite.h.ok(['volume', 'rm', 'oob16']);
  });

  it('17 a failed Mount is never followed by Unmount, and ballast leaves no device, mount or lease behind', async () => {
    const v = 'mountfail17';
    await suite.h.ok(['volume', 'create', '-d', PLUGIN, '--opt', 'fstype=ext4', '--opt', 'size=32M', v]);
    // Put a DOS partition table on the blank image: ballast must refuse to format over it.
    const image = await open(join(suite.h.ballast.loopRoot, v, 'disk.img'), 'r+');
    try {
      const mbr = Buffer.alloc(1024 * 1024);
      mbr.writeUInt8(0x83, 446 + 4); // partition 1: Linux
      mbr.writeUInt32LE(2048, 446 + 8); // first LBA
      mbr.writeUInt32LE(32 * 2048 - 2048, 446 + 12); // sectors
      mbr.writeUInt16LE(0xaa55, 510);
      await image.write(mbr, 0, mbr.length, 0);
      await image.sync();
    } finally {
      await image.close();
    }

    const err = await suite.h.fails(['run', '--rm', '--network', 'none', '--name', 'mf17a', '-v', `${v}:/data`, IMAGE, 'true']);
    expect(err).toMatch(/partition table/);
    expect(err).toMatch(/will not format over it/);
    await suite.h.expectCounts({ [MOUNT]: 1, [UNMOUNT]: 0 }, v);
    const err2 = await suite.h.fails(['run', '--rm', '--network', 'none', '--name', 'mf17b', '-w', '/data', '-v', `${v}:/data`, IMAGE, 'true']);
    expect(err2).toMatch(/partition table/);
    await suite.h.expectCounts({ [MOUNT]: 2, [UNMOUNT]: 0 }, v);

    expect(suite.h.ballastLoops(v)).toEqual([]);
    expect(suite.h.ballastMounts(v)).toEqual([]);
    expect((await suite.h.inspectVolume(v)).Status).toMatchObject({ attachment: 'detached', lease: { state: 'free' } });
    await suite.h.docker(['rm', '-f', 'mf17a', 'mf17b']);
    await suite.h.ok(['volume', 'rm', v]);
  });

  it('18 docker cp on a running container (Mount twice, Unmount once, same ID) does not unmount under it', async () => {
    const v = 'cp18';
    await suite.h.ok(['volume', 'create', '-d', PLUGIN, '--opt', 'size=32M', v]);
    await suite.h.run(['-d', '--name', 'cp18c', '-v', `${v}:/data`, IMAGE, 'sh', '-c', loopScript('date >> /data/log', 0.2)]);
    await waitFor(async () => (await suite.h.docker(['exec', 'cp18c', 'test', '-s', '/data/log'])).code === 0, 'the container to write', 20_000);

    const hostCopy = join(suite.h.dir, 'cp18-out');
    await suite.h.ok(['cp', 'cp18c:/data/log', hostCopy]);
    await suite.h.expectCounts({ [MOUNT]: 2, [UNMOUNT]: 1 }, v);
    const mounts = await suite.h.requests(MOUNT, v);
    const unmounts = await suite.h.requests(UNMOUNT, v);
    expect(mounts[1]!.mountId).toBe(mounts[0]!.mountId);
    expect(unmounts[0]!.mountId).toBe(mounts[0]!.mountId);

    // Still mounted for the running container, and still its volume.
    expect(suite.h.ballastMounts(v)).toEqual([join(suite.h.ballast.mountRoot, v)]);
    expect(suite.h.ballastLoops(v)).toHaveLength(1);
    expect((await suite.h.inspectVolume(v)).Status?.attachment).toMatchObject({ mounts: 1 });

    // And the container keeps writing to it.
    const lines = async () => Number((await suite.h.ok(['exec', 'cp18c', 'wc', '-l', '/data/log'])).trim().split(/\s+/)[0]);
    const n = await lines();
    await waitFor(async () => (await lines()) > n + 2, 'the container to keep writing after docker cp', 20_000);
    await suite.h.ok(['exec', 'cp18c', 'sh', '-c', 'echo after-cp > /data/after']);

    // docker cp into the running container: the CLI stats, then extracts; each is a
    // Mount/Unmount pair with the container's own ID. Same rule: the container keeps its volume.
    await writeFile(join(suite.h.dir, 'cp18-in'), 'from-host\n');
    await suite.h.ok(['cp', join(suite.h.dir, 'cp18-in'), 'cp18c:/data/from-host']);
    const mountsIn = await suite.h.count(MOUNT, v);
    expect(mountsIn).toBeGreaterThanOrEqual(3);
    await suite.h.expectCounts({ [MOUNT]: mountsIn, [UNMOUNT]: mountsIn - 1 }, v);
    const ids = new Set([...(await suite.h.requests(MOUNT, v)), ...(await suite.h.requests(UNMOUNT, v))].map((l) => l.mountId));
    expect([...ids]).toEqual([mounts[0]!.mountId]);
    expect(suite.h.ballastMounts(v)).toHaveLength(1);
    expect((await suite.h.inspectVolume(v)).Status?.attachment).toMatchObject({ mounts: 1 });
    expect((await suite.h.ok(['exec', 'cp18c', 'cat', '/data/from-host'])).trim()).toBe('from-host');

    await suite.h.ok(['rm', '-f', 'cp18c']);
    await suite.h.expectCounts({ [MOUNT]: mountsIn, [UNMOUNT]: mountsIn }, v);
    expect(suite.h.ballastMounts(v)).toEqual([]);
    expect(suite.h.ballastLoops(v)).toEqual([]);
    // What the container wrote after the copies is on the volume.
    const out = await suite.h.run(['--rm', '-v', `${v}:/data`, IMAGE, 'sh', '-c', 'cat /data/after /data/from-host; wc -l < /data/log']);
    const [after, fromHost, count] = out.trim().split('\n');
    expect(after).toBe('after-cp');
    expect(fromHost).toBe('from-host');
    expect(Number(count)).toBeGreaterThan(n + 2);
    await suite.h.ok(['volume', 'rm', v]);
  });

  it('6 lookup is not blocked by a dead plugin: a create with ballast finishes while one with the dead driver retries', async () => {
    const spec = join(suite.h.pluginSpecDir, 'dead.spec');
    await writeFile(spec, 'tcp://127.0.0.1:1\n');
    const blocked = suite.h.dockerBackground(['volume', 'create', '-d', 'dead', 'dead6'], { timeoutMs: 60_000 });
    try {
      await sleep(300); // the dead driver's lookup is under way
      const started = Date.now();
      const result = await suite.h.docker(['volume', 'create', '-d', PLUGIN, 'lookup6'], { timeoutMs: 20_000 });
      const elapsed = Date.now() - started;
      if (result.code !== 0) throw new Error(`create with ballast failed:\n${describeResult(result)}\n${await suite.h.diagnostics()}`);
      expect(elapsed).toBeLessThan(5_000);
      expect(blocked.running()).toBe(true); // still retrying the dead plugin: it did not just fail fast
    } finally {
      blocked.kill();
      await blocked.done;
      await rm(spec, { force: true });
    }
    expect((await suite.h.inspectVolume('lookup6')).Driver).toBe(PLUGIN);
    await suite.h.ok(['volume', 'rm', 'lookup6']);
  });

  it('15 Capabilities once per dockerd (and Activate once); Scope "local" in volume inspect and ls', async () => {
    await suite.h.ok(['volume', 'create', '-d', PLUGIN, 'scope15']);
    expect(await suite.h.ok(['volume', 'inspect', '--format', '{{.Scope}}', 'scope15'])).toBe('local\n');
    expect(await suite.h.ok(['volume', 'ls', '--filter', 'name=scope15', '--format', '{{.Scope}}'])).toBe('local\n');
    await suite.h.expectCounts({ 'Plugin.Activate': 1, 'VolumeDriver.Capabilities': 1 });
    await suite.h.ok(['volume', 'rm', 'scope15']);
  });

  it('nothing left behind: no ballast mount, loop device, staging dir or recorded reference', async () => {
    await suite.h.assertNoLeftovers();
  });
});
