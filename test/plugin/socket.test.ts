import { spawnSync } from 'node:child_process';
import { existsSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { silentLogger } from '../../src/log.js';
import { startPluginServer, type PluginServer } from '../../src/plugin/server.js';
import { managerFixture, type ManagerFixture } from '../helpers/manager-fixture.js';
import { callPlugin as call } from '../helpers/plugin-client.js';

describe('the plugin server on a real Unix socket', () => {
  let f: ManagerFixture;
  let server: PluginServer | undefined;
  let socket: string;
  beforeEach(async () => {
    f = await managerFixture();
    socket = join(f.dir, 'ballast.sock');
  });
  afterEach(async () => {
    await server?.close(100);
    server = undefined;
    await f.cleanup();
  });

  it('serves every endpoint and makes the socket mode 0660', async () => {
    server = await startPluginServer(f.manager, socket, silentLogger());
    expect(statSync(socket).mode & 0o777).toBe(0o660);
    expect((await call(socket, 'Plugin.Activate')).body).toEqual({ Implements: ['VolumeDriver'] });
    expect((await call(socket, 'VolumeDriver.Create', '{"Name":"s","Opts":null}')).body).toEqual({ Err: '' });
    expect((await call(socket, 'VolumeDriver.Mount', '{"Name":"s","ID":"1"}')).body).toMatchObject({ Err: '', Mountpoint: join(f.dir, 'mounts', 's') });
    expect((await call(socket, 'VolumeDriver.Get', '{"Name":"s"}')).body).toMatchObject({ Err: '', Volume: { Name: 's' } });
    expect((await call(socket, 'VolumeDriver.List', '{}')).body).toMatchObject({ Err: '', Volumes: [{ Name: 's' }] });
    expect((await call(socket, 'VolumeDriver.Path', '{"Name":"s"}')).body).toMatchObject({ Err: '' });
    expect((await call(socket, 'VolumeDriver.Unmount', '{"Name":"s","ID":"1"}')).body).toEqual({ Err: '' });
    expect((await call(socket, 'VolumeDriver.Remove', '{"Name":"s"}')).body).toEqual({ Err: '' });
    expect((await call(socket, 'VolumeDriver.Capabilities', '{}')).body).toEqual({ Capabilities: { Scope: 'local' } });
    expect((await call(socket, 'VolumeDriver.Create', '{')).status).toBe(400);
  });

  it('removes a stale socket left by a dead instance', async () => {
    // A process that listens and is killed: its socket file stays, nobody answers.
    const script = `require('net').createServer().listen(${JSON.stringify(socket)}, () => process.kill(process.pid, 'SIGKILL'))`;
    spawnSync(process.execPath, ['-e', script], { timeout: 10_000 });
    expect(existsSync(socket)).toBe(true);
    server = await startPluginServer(f.manager, socket, silentLogger());
    expect((await call(socket, 'Plugin.Activate')).body).toEqual({ Implements: ['VolumeDriver'] });
  });

  it('refuses to start while another instance serves the socket, and leaves it working', async () => {
    server = await startPluginServer(f.manager, socket, silentLogger());
    await expect(startPluginServer(f.manager, socket, silentLogger())).rejects.toThrow(/another ballast is already serving .*ballast\.sock/);
    expect((await call(socket, 'Plugin.Activate')).status).toBe(200);
  });

  it('finishes an in-flight request on close, then stops answering', async () => {
    server = await startPluginServer(f.manager, socket, silentLogger());
    await call(socket, 'VolumeDriver.Create', '{"Name":"g"}');
    const arrived = new Promise((r) => server!.server.once('request', r));
    const inflight = call(socket, 'VolumeDriver.Mount', '{"Name":"g","ID":"x"}');
    await arrived;
    const closing = server.close(5_000);
    expect((await inflight).body).toMatchObject({ Err: '' });
    await closing;
    server = undefined;
    await expect(call(socket, 'Plugin.Activate')).rejects.toThrow();
    expect(f.host.mountPoints).toHaveLength(1); // closing never unmounts
  });
});

describe('a Mount whose caller gave up', () => {
  it('is rolled back, since dockerd never sends Unmount for a Mount it timed out', async () => {
    const f = await managerFixture();
    const socket = join(f.dir, 'ballast.sock');
    const server = await startPluginServer(f.manager, socket, silentLogger());
    try {
      await call(socket, 'VolumeDriver.Create', '{"Name":"slow"}');
      // Make the mount slow, then hang up while it runs, as dockerd does at its timeout.
      const run = f.host.run.bind(f.host);
      f.host.run = async (argv, options) => {
        if (argv[0] === 'mount') await new Promise((r) => setTimeout(r, 300));
        return run(argv, options);
      };
      await expect(call(socket, 'VolumeDriver.Mount', '{"Name":"slow","ID":"t"}', 100)).rejects.toThrow(/no reply within 100 ms/);
      for (let i = 0; i < 100 && (f.host.mountPoints.length || f.host.attachedDevices.length || f.manager.mountedVolumes().size); i += 1) {
        await new Promise((r) => setTimeout(r, 20));
      }
      expect(f.host.mountPoints).toEqual([]);
      expect(f.host.attachedDevices).toEqual([]);
      expect(f.manager.mountedVolumes().size).toBe(0);
    } finally {
      await server.close(100);
      await f.cleanup();
    }
  });
});
