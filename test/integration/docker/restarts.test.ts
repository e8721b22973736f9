import { PLUGIN } from '../../lab/docker-harness.js';
import { dockerSuite, loopScript } from '../../lab/docker-suite.js';
import { IMAGE } from '../../lab/busybox-image.js';
import { describeResult, sleep, waitFor } from '../../lab/command.js';

// Restarts under running containers: dockerd restarting (a --restart always container comes
// back with its volume and data) and ballast restarting or crashing (running containers keep
// their mounts; a later stop unmounts cleanly through the new process).

const T = 150_000;
const MOUNT = 'VolumeDriver.Mount';
const UNMOUNT = 'VolumeDriver.Unmount';

const suite = dockerSuite({ name: 'restarts' }, T);
const it = suite.it;

describe('restarts with containers running', () => {
  it('dockerd restart: a --restart always container comes back with its ballast volume and its data', async () => {
    const v = 'always1';
    await suite.h.ok(['volume', 'create', '-d', PLUGIN, '--opt', 'size=32M', v]);
    await suite.h.run([
      '-d', '--name', 'always1c', '--restart', 'always', '--stop-timeout', '5', '-v', `${v}:/data`, IMAGE,
      'sh', '-c', `echo boot >> /data/boots; ${loopScript('date >> /data/ticks', 0.2)}`,
    ]);
    await suite.h.waitForMoreLines('always1c', '/data/ticks', 0, 'the container to write');
    const marker = (await suite.h.ok(['exec', 'always1c', 'sh', '-c', 'head -c 1000000 /dev/urandom > /data/marker && sync && sha256sum /data/marker'])).split(/\s+/)[0];
    const ticksBefore = await suite.h.lineCount('always1c', '/data/ticks');
    const before = await suite.h.baseline(v);

    await suite.h.restartDockerd();
    await waitFor(
      async () => (await suite.h.inspectContainer('always1c')).State.Running === true && (await suite.h.lineCount('always1c', '/data/boots')) === 2,
      'the --restart always container to come back',
      60_000,
      250,
      () => suite.h.diagnostics(),
    );
    // Stopped by the old dockerd (Unmount), started by the new one (Mount): one of each.
    await suite.h.expectCounts({ [MOUNT]: 1, [UNMOUNT]: 1 }, v, before);
    await suite.h.expectCounts({ 'Plugin.Activate': 2, 'VolumeDriver.Capabilities': 2 });
    expect((await suite.h.ok(['exec', 'always1c', 'sha256sum', '/data/marker'])).split(/\s+/)[0]).toBe(marker);
    const ticksAfter = await suite.h.waitForMoreLines('always1c', '/data/ticks', ticksBefore, 'the container to write after the restart');
    expect(ticksAfter).toBeGreaterThan(ticksBefore);
    expect(suite.h.ballastMounts(v)).toHaveLength(1);
    expect(suite.h.ballastLoops(v)).toHaveLength(1);
    expect((await suite.h.inspectVolume(v)).Status?.attachment).toMatchObject({ mounts: 1 });

    await suite.h.ok(['rm', '-f', 'always1c']);
    await suite.h.expectCounts({ [MOUNT]: 1, [UNMOUNT]: 2 }, v, before);
    expect(suite.h.ballastMounts(v)).toEqual([]);
    expect(suite.h.ballastLoops(v)).toEqual([]);
    await suite.h.ok(['volume', 'rm', v]);
  });

  for (const signal of ['SIGTERM', 'SIGKILL'] as const) {
    it(`ballast restart (${signal}) under a running container: the mount stays, writes go on, a later stop unmounts cleanly`, async () => {
      const v = `br-${signal.toLowerCase()}`;
      const c = `${v}-c`;
      await suite.h.run(['-d', '--name', c, '--stop-timeout', '5', '--volume-driver', PLUGIN, '-v', `${v}:/data`, IMAGE, 'sh', '-c', loopScript('date >> /data/ticks', 0.1)]);
      await suite.h.waitForMoreLines(c, '/data/ticks', 0, 'the container to write');
      const loops = suite.h.ballastLoops(v);
      expect(loops).toHaveLength(1);

      await suite.h.stopBallast(signal);
      expect(suite.h.ballastRunning()).toBe(false);
      // ballast never unmounts when it stops: the container's volume is still there.
      expect(suite.h.ballastMounts(v)).toHaveLength(1);
      expect(suite.h.ballastLoops(v)).toEqual(loops);
      const whileDown = await suite.h.waitForMoreLines(c, '/data/ticks', await suite.h.lineCount(c, '/data/ticks'), 'writes while ballast is down');

      await suite.h.startBallast();
      const status = (await suite.h.inspectVolume(v)).Status;
      expect(status?.attachment).toMatchObject({ device: loops[0], mounts: 1 });
      expect(status?.lease).toMatchObject({ state: 'held' });
      const afterRestart = await suite.h.waitForMoreLines(c, '/data/ticks', whileDown, 'writes after ballast came back');

      await suite.h.ok(['stop', c]);
      await suite.h.expectCounts({ [MOUNT]: 1, [UNMOUNT]: 1 }, v);
      expect(suite.h.ballastMounts(v)).toEqual([]);
      expect(suite.h.ballastLoops(v)).toEqual([]);
      expect((await suite.h.inspectVolume(v)).Status).toMatchObject({ attachment: 'detached', lease: { state: 'free' } });

      // Everything written before, during and after the restart is on the volume.
      const total = Number((await suite.h.run(['--rm', '-v', `${v}:/data`, IMAGE, 'sh', '-c', 'wc -l < /data/ticks'])).trim());
      expect(total).toBeGreaterThanOrEqual(afterRestart);
      await suite.h.ok(['rm', c]);
      await suite.h.ok(['volume', 'rm', v]);
    });
  }

  it('docker run and volume create issued while ballast is down wait for it and succeed once it is back', async () => {
    await suite.h.ok(['volume', 'create', '-d', PLUGIN, '--opt', 'size=32M', 'down1']);
    await suite.h.stopBallast();
    const run = suite.h.dockerBackground(['run', '--rm', '--network', 'none', '-v', 'down1:/data', IMAGE, 'sh', '-c', 'echo while-down > /data/f && cat /data/f'], { timeoutMs: 60_000 });
    const create = suite.h.dockerBackground(['volume', 'create', '-d', PLUGIN, '--opt', 'size=32M', 'down2'], { timeoutMs: 60_000 });
    try {
      await sleep(1_500);
      expect(run.running()).toBe(true);
      expect(create.running()).toBe(true);
      await suite.h.startBallast();
      const [ran, created] = await Promise.all([run.done, create.done]);
      if (ran.code !== 0 || created.code !== 0) throw new Error(`${describeResult(ran)}\n${describeResult(created)}`);
      expect(ran.stdout.trim()).toBe('while-down');
    } finally {
      run.kill();
      create.kill();
    }
    await suite.h.expectCounts({ [MOUNT]: 1, [UNMOUNT]: 1 }, 'down1');
    expect((await suite.h.inspectVolume('down2')).Status).toMatchObject({ size: '32 MiB' });
    expect(suite.h.ballastMounts()).toEqual([]);
    await suite.h.ok(['volume', 'rm', 'down1', 'down2']);
  });

  it('nothing left behind: no ballast mount, loop device, staging dir or recorded reference', async () => {
    await suite.h.assertNoLeftovers();
  });
});
