import { PLUGIN } from '../../lab/docker-harness.js';
import { dockerSuite } from '../../lab/docker-suite.js';
import { IMAGE } from '../../lab/busybox-image.js';
import { describeResult, sleep } from '../../lab/command.js';

// Plugin discovery and activation against a real dockerd that starts WITHOUT ballast:
// moby scenarios 7 (plugin up late), 15 (Capabilities once per dockerd, Scope) and
// 11 (a volume and its data survive a dockerd restart).

const T = 120_000;
const ACTIVATE = 'Plugin.Activate';
const CAPABILITIES = 'VolumeDriver.Capabilities';

const suite = dockerSuite({ name: 'activation', startBallast: false }, T);
const it = suite.it;

describe('activation and dockerd restarts', () => {
  it('7 ballast up 2 s late: a docker run issued before its socket exists succeeds once ballast listens', async () => {
    expect(suite.h.ballastRunning()).toBe(false);
    const run = suite.h.dockerBackground(
      ['run', '--rm', '--network', 'none', '--volume-driver', PLUGIN, '-v', 'late7:/data', IMAGE, 'sh', '-c', 'echo late > /data/f && cat /data/f'],
      { timeoutMs: 60_000 },
    );
    try {
      await sleep(2_000);
      expect(run.running()).toBe(true); // dockerd is still looking for the plugin
      await suite.h.startBallast();
      const result = await run.done;
      if (result.code !== 0) throw new Error(`docker run failed:\n${describeResult(result)}\n${await suite.h.diagnostics()}`);
      expect(result.stdout.trim()).toBe('late');
    } finally {
      run.kill();
    }
    await suite.h.expectCounts({ 'VolumeDriver.Create': 1, 'VolumeDriver.Mount': 1, 'VolumeDriver.Unmount': 1 }, 'late7');
    expect(suite.h.ballastMounts()).toEqual([]);
    expect(suite.h.ballastLoops()).toEqual([]);
  });

  it('15 one Activate and one Capabilities for the life of a dockerd; Scope "local"', async () => {
    await suite.h.ok(['volume', 'create', '-d', PLUGIN, '--opt', 'size=32M', 'caps15']);
    await suite.h.ok(['volume', 'ls']);
    await suite.h.ok(['volume', 'inspect', 'caps15']);
    await suite.h.run(['--rm', '-v', 'caps15:/data', IMAGE, 'true']);
    await suite.h.run(['--rm', '--volume-driver', PLUGIN, '-v', 'caps15b:/data', IMAGE, 'true']);
    await suite.h.ok(['volume', 'ls']);
    await suite.h.expectCounts({ [ACTIVATE]: 1, [CAPABILITIES]: 1 });
    expect(await suite.h.ok(['volume', 'inspect', '--format', '{{.Scope}}', 'caps15', 'caps15b'])).toBe('local\nlocal\n');
    await suite.h.ok(['volume', 'rm', 'caps15', 'caps15b']);
  });

  it('11 a volume and its data survive a dockerd restart; the new dockerd activates ballast once more', async () => {
    await suite.h.ok(['volume', 'create', '-d', PLUGIN, '--opt', 'size=32M', 'abc11']);
    await suite.h.run(['--rm', '-v', 'abc11:/data', IMAGE, 'sh', '-c', 'echo before-restart > /data/f']);

    await suite.h.restartDockerd();
    expect(await suite.h.ok(['volume', 'ls', '--format', '{{.Driver}} {{.Name}}'])).toContain(`${PLUGIN} abc11`);
    const out = await suite.h.run(['--name', 't11', '-v', 'abc11:/data', IMAGE, 'cat', '/data/f']);
    expect(out.trim()).toBe('before-restart');
    const mounts = (await suite.h.inspectContainer('t11')).Mounts as Record<string, unknown>[];
    expect(mounts).toHaveLength(1);
    expect(mounts[0]).toMatchObject({ Name: 'abc11', Driver: PLUGIN });
    await suite.h.ok(['rm', 't11']);
    await suite.h.expectCounts({ [ACTIVATE]: 2, [CAPABILITIES]: 2 });
    await suite.h.ok(['volume', 'rm', 'abc11']);
  });

  it('nothing left behind: no ballast mount, loop device, staging dir or recorded reference', async () => {
    await suite.h.assertNoLeftovers();
  });
});
