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
