import { PLUGIN } from '../../lab/docker-harness.js';
import { dockerSuite, loopScript } from '../../lab/docker-suite.js';
import { IMAGE } from '../../lab/busybox-image.js';
import { waitFor } from '../../lab/command.js';

// dockerd crashes (SIGKILL: no shutdown, so no Unmount for the running containers' mount IDs).
// The new dockerd kills what the old one ran (no live-restore), sends no Unmount for those IDs
// (docker/for-linux#404), and Mounts again, with the persisted ID, the containers it restarts.

const T = 150_000;
const MOUNT = 'VolumeDriver.Mount';

const suite = dockerSuite({ name: 'crash' }, T);
const it = suite.it;

describe('dockerd crashes under running containers', () => {
  it('dockerd crash (SIGKILL) under a --restart always container: it comes back holding one mount reference; rm unmounts cleanly', async () => {
    const v = 'crash1';
    await suite.h.run([
      '-d', '--name', 'crash1c', '--restart', 'always', '--stop-timeout', '5', '--volume-driver', PLUGIN, '-v', `${v}:/data`, IMAGE,
      'sh', '-c', `echo boot >> /data/boots; ${loopScript('date >> /data/ticks', 0.2)}`,
    ]);
    await suite.h.waitForMoreLines('crash1c', '/data/ticks', 0, 'the container to write');
    const oldId = (await suite.h.requests(MOUNT, v)).at(-1)!.mountId;
    const before = await suite.h.baseline(v);

    await suite.h.killDockerd();
    await suite.h.startDockerd();
    await waitFor(
      async () => (await suite.h.inspectContainer('crash1c')).State.Running === true && (await suite.h.lineCount('crash1c', '/data/boots')) === 2,
      'the --restart always container to come back after a dockerd crash',
      60_000,
      250,
      () => suite.h.diagnostics(),
    );
    // The new dockerd mounts again with the ID it persisted; ballast must not count it twice.
    const mountsSince = (await suite.h.requests(MOUNT, v)).slice(before[MOUNT] ?? 0);
    expect(mountsSince.length).toBeGreaterThanOrEqual(1);
    expect(mountsSince.map((l) => l.mountId)).toContain(oldId);
    expect((await suite.h.inspectVolume(v)).Status?.attachment).toMatchObject({ mounts: 1 });
    expect(suite.h.ballastMounts(v)).toHaveLength(1);
    expect(suite.h.ballastLoops(v)).toHaveLength(1);
    await suite.h.waitForMoreLines('crash1c', '/data/ticks', await suite.h.lineCount('crash1c', '/data/ticks'), 'writes after the crash');

    await suite.h.ok(['rm', '-f', 'crash1c']);
    await waitFor(() => suite.h.ballastMounts(v).length === 0, `ballast to unmount ${v} once its only container is gone`, 10_000, 100, () => suite.h.diagnostics());
    expect(suite.h.ballastLoops(v)).toEqual([]);
    expect(Number((await suite.h.run(['--rm', '-v', `${v}:/data`, IMAGE, 'sh', '-c', 'wc -l < /data/boots'])).trim())).toBe(2);
    await suite.h.ok(['volume', 'rm', v]);
  });

  it('dockerd crash under a container WITHOUT a restart policy: once that container is gone, its volume is released (not mounted and leased forever)', async () => {
    const v = 'crash2';
    await suite.h.run(['-d', '--name', 'crash2c', '--stop-timeout', '5', '--volume-driver', PLUGIN, '-v', `${v}:/data`, IMAGE, 'sh', '-c', loopScript('date >> /data/ticks', 0.2)]);
    await suite.h.waitForMoreLines('crash2c', '/data/ticks', 0, 'the container to write');

    await suite.h.killDockerd();
    await suite.h.startDockerd();
    // The new dockerd stops the container (no live-restore) and does not restart it.
    await waitFor(async () => (await suite.h.inspectContainer('crash2c')).State.Running === false, 'the old container to be stopped', 30_000, 250);
    await suite.h.ok(['rm', 'crash2c']);

    // The data is intact and the volume still usable...
    const ticks = Number((await suite.h.run(['--rm', '-v', `${v}:/data`, IMAGE, 'sh', '-c', 'wc -l < /data/ticks'])).trim());
    expect(ticks).toBeGreaterThan(0);
    // ...and with no container left, nothing may keep it: not mounted, not attached, lease free, removable.
    let lastRm = '';
    await waitFor(
      async () => {
        const r = await suite.h.docker(['volume', 'rm', v]);
        lastRm = r.stderr.trim();
        return r.code === 0;
      },
      `docker volume rm ${v} to succeed once no container uses it`,
      30_000,
      1_000,
      async () => `last docker volume rm error: ${lastRm}\nballast status: ${JSON.stringify((await suite.h.inspectVolume(v).catch(() => undefined))?.Status)}\n${await suite.h.diagnostics()}`,
    );
    expect(suite.h.ballastMounts(v)).toEqual([]);
    expect(suite.h.ballastLoops(v)).toEqual([]);
  });

  it('nothing left behind: no ballast mount, loop device, staging dir or recorded reference', async () => {
    await suite.h.assertNoLeftovers();
  });
});
