import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { PLUGIN } from '../../lab/docker-harness.js';
import { dockerSuite } from '../../lab/docker-suite.js';
import { IMAGE } from '../../lab/busybox-image.js';
import { requireRootAndTools } from '../../helpers/root.js';

// docker-compose (Debian's 1.29, v1) against the private dockerd: a `driver: ballast` volume with
// driver_opts, and a service with `volume_driver: ballast`. Every service uses network_mode
// none, so compose creates no network (and no bridge) at all.

requireRootAndTools('docker-compose');

const T = 180_000;

const suite = dockerSuite({ name: 'compose' }, T);
const it = suite.it;

const DRIVER_FILE = `version: "2.4"
services:
  writer:
    image: ${IMAGE}
    network_mode: none
    command: ["sh", "-c", "date >> /data/runs && echo from-compose > /data/f && cat /data/f"]
    volumes:
      - data:/data
volumes:
  data:
    driver: ${PLUGIN}
    driver_opts:
      size: 32M
      fstype: ext4
`;

// `volume_driver` only exists in the version 1 file format (no "version" key; compose 1.29's
// v2/v3 schemas refuse it), where named volumes are used as they are, without a project prefix.
const VOLUME_DRIVER_FILE = `app:
  image: ${IMAGE}
  net: none
  volume_driver: ${PLUGIN}
  command: ["sh", "-c", "echo anonymous > /data/f && echo named >> /named/f && cat /data/f /named/f"]
  volumes:
    - /data
    - ballastc2named:/named
`;

describe('docker-compose with ballast volumes', () => {
  it('a `driver: ballast` volume with driver_opts: created by up, its data kept between runs, removed by down -v', async () => {
    const file = join(suite.h.dir, 'compose-driver.yml');
    await writeFile(file, DRIVER_FILE);
    const project = 'ballastc1';
    const volume = `${project}_data`;

    const up = await suite.h.composeOk(project, file, ['up', '--exit-code-from', 'writer']);
    expect(up).toContain('from-compose');
    const v = await suite.h.inspectVolume(volume);
    expect(v).toMatchObject({ Driver: PLUGIN, Options: { size: '32M', fstype: 'ext4' } });
    expect(v.Labels).toMatchObject({ 'com.docker.compose.project': project, 'com.docker.compose.volume': 'data' });
    expect(v.Status).toMatchObject({ size: '32 MiB', fstype: 'ext4', attachment: 'detached' });
    await suite.h.expectCounts({ 'VolumeDriver.Create': 1, 'VolumeDriver.Mount': 1, 'VolumeDriver.Unmount': 1 }, volume);

    // A second up reuses the volume (same driver and options) and sees the first run's data.
    await suite.h.composeOk(project, file, ['up', '--exit-code-from', 'writer']);
    expect((await suite.h.run(['--rm', '-v', `${volume}:/data`, IMAGE, 'wc', '-l', '/data/runs'])).trim()).toMatch(/^2\b/);
    await suite.h.expectCounts({ 'VolumeDriver.Create': 1, 'VolumeDriver.Mount': 3, 'VolumeDriver.Unmount': 3 }, volume);
    expect(await suite.h.ok(['network', 'ls', '--format', '{{.Name}}'])).not.toContain(project);

    await suite.h.composeOk(project, file, ['down', '-v']);
    await suite.h.expectCounts({ 'VolumeDriver.Remove': 1 }, volume);
    expect(await suite.h.ok(['volume', 'ls', '-q'])).not.toContain(volume);
    expect(await suite.h.loopRootEntries()).not.toContain(volume);
    expect(suite.h.ballastLoops()).toEqual([]);
  });

  it('a service with `volume_driver: ballast` (v1 file): its anonymous and named volumes are ballast\'s; down -v removes the anonymous one', async () => {
    const file = join(suite.h.dir, 'compose-volume-driver.yml');
    await writeFile(file, VOLUME_DRIVER_FILE);
    const project = 'ballastc2';

    const up = await suite.h.composeOk(project, file, ['up', '--exit-code-from', 'app']);
    expect(up).toContain('anonymous');
    const containers = (await suite.h.ok(['ps', '-aq', '--filter', `label=com.docker.compose.project=${project}`])).split('\n').filter(Boolean);
    expect(containers).toHaveLength(1);
    const mounts = (await suite.h.inspectContainer(containers[0]!)).Mounts as Record<string, unknown>[];
    const anonymous = mounts.find((m) => m.Destination === '/data');
    const named = mounts.find((m) => m.Destination === '/named');
    expect(anonymous).toMatchObject({ Type: 'volume', Driver: PLUGIN });
    expect(named).toMatchObject({ Type: 'volume', Driver: PLUGIN, Name: 'ballastc2named' });
    const anon = String(anonymous!.Name);
    expect(anon).toMatch(/^[0-9a-f]{64}$/);
    expect((await suite.h.inspectVolume(anon)).Status).toMatchObject({ size: '64 MiB' }); // the configured default
    await suite.h.expectCounts({ 'VolumeDriver.Create': 1, 'VolumeDriver.Mount': 1, 'VolumeDriver.Unmount': 1 }, anon);
    await suite.h.expectCounts({ 'VolumeDriver.Create': 1, 'VolumeDriver.Mount': 1, 'VolumeDriver.Unmount': 1 }, 'ballastc2named');

    await suite.h.composeOk(project, file, ['down', '-v']);
    await suite.h.expectCounts({ 'VolumeDriver.Remove': 1 }, anon);
    expect(await suite.h.loopRootEntries()).not.toContain(anon);
    // A named volume of a v1 file is not the project's: it stays, with its data.
    expect((await suite.h.run(['--rm', '-v', 'ballastc2named:/named', IMAGE, 'cat', '/named/f'])).trim()).toBe('named');
    await suite.h.ok(['volume', 'rm', 'ballastc2named']);
  });

  it('a clone in driver_opts (from: VOLUME@SNAPSHOT): up creates it with the snapshot\'s data', async () => {
    await suite.h.ok(['volume', 'create', '-d', PLUGIN, '--opt', 'size=32M', 'ballastc3src']);
    await suite.h.run(['--rm', '-v', 'ballastc3src:/data', IMAGE, 'sh', '-c', 'echo seeded > /data/f']);
    expect((await suite.h.ballastCli(['snapshot', 'create', 'ballastc3src', 'seed'])).code).toBe(0);
    const file = join(suite.h.dir, 'compose-clone.yml');
    await writeFile(file, `version: "2.4"
services:
  reader:
    image: ${IMAGE}
    network_mode: none
    command: ["cat", "/data/f"]
    volumes:
      - data:/data
volumes:
  data:
    driver: ${PLUGIN}
    driver_opts:
      from: ballastc3src@seed
`);
    expect(await suite.h.composeOk('ballastc3', file, ['up', '--exit-code-from', 'reader'])).toContain('seeded');
    expect((await suite.h.inspectVolume('ballastc3_data')).Options).toEqual({ from: 'ballastc3src@seed' });
    await suite.h.composeOk('ballastc3', file, ['down', '-v']);
    expect((await suite.h.ballastCli(['snapshot', 'rm', 'ballastc3src', 'seed'])).code).toBe(0);
    await suite.h.ok(['volume', 'rm', 'ballastc3src']);
  });

  it('nothing left behind: no ballast mount, loop device, staging dir or recorded reference', async () => {
    await suite.h.assertNoLeftovers();
  });
});
