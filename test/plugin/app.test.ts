import request from 'supertest';
import { readdir } from 'node:fs/promises';
import { join } from 'node:path';
import type { RequestListener } from 'node:http';
import { createApp } from '../../src/plugin/app.js';
import { silentLogger } from '../../src/log.js';
import { managerFixture, type ManagerFixture } from '../helpers/manager-fixture.js';

// dockerd sends every call as POST without a Content-Type; supertest's .send(string) would
// add one, so bodies go through this helper, which sets none.
function post(app: RequestListener, method: string, body?: string) {
  const req = request(app).post(`/${method}`).set('Accept', 'application/vnd.docker.plugins.v1.2+json');
  return body === undefined ? req : req.set('Content-Type', '').send(body);
}

describe('the volume plugin protocol over HTTP', () => {
  let f: ManagerFixture;
  let app: RequestListener;
  beforeEach(async () => {
    f = await managerFixture();
    app = createApp(f.manager, silentLogger());
  });
  afterEach(() => f.cleanup());

  it('answers Plugin.Activate with an empty body', async () => {
    const res = await post(app, 'Plugin.Activate');
    expect(res.status).toBe(200);
    expect(res.body).toEqual({ Implements: ['VolumeDriver'] });
  });

  it('answers Capabilities with the scope, with an empty or {} body', async () => {
    expect((await post(app, 'VolumeDriver.Capabilities')).body).toEqual({ Capabilities: { Scope: 'local' } });
    expect((await post(app, 'VolumeDriver.Capabilities', '{}')).body).toEqual({ Capabilities: { Scope: 'local' } });
  });

  it('serves a full volume lifecycle with Docker field names', async () => {
    expect((await post(app, 'VolumeDriver.Create', '{"Name":"v","Opts":{"size":"32M"}}')).body).toEqual({ Err: '' });
    const mount = await post(app, 'VolumeDriver.Mount', '{"Name":"v","ID":"abc"}');
    expect(mount.body).toEqual({ Mountpoint: join(f.dir, 'mounts', 'v'), Err: '' });
    expect((await post(app, 'VolumeDriver.Path', '{"Name":"v"}')).body).toEqual({ Mountpoint: join(f.dir, 'mounts', 'v'), Err: '' });
    const get = await post(app, 'VolumeDriver.Get', '{"Name":"v"}');
    expect(get.body.Err).toBe('');
    expect(get.body.Volume).toMatchObject({ Name: 'v', Mountpoint: join(f.dir, 'mounts', 'v'), Status: { size: '32 MiB', backend: 'loop' } });
    expect(new Date(get.body.Volume.CreatedAt).toISOString()).toBe(get.body.Volume.CreatedAt); // RFC 3339
    expect((await post(app, 'VolumeDriver.List', '{}')).body).toEqual({ Volumes: [{ Name: 'v', Mountpoint: join(f.dir, 'mounts', 'v') }], Err: '' });
    expect((await post(app, 'VolumeDriver.Unmount', '{"Name":"v","ID":"abc"}')).body).toEqual({ Err: '' });
    expect((await post(app, 'VolumeDriver.Path', '{"Name":"v"}')).body).toEqual({ Mountpoint: '', Err: '' });
    expect((await post(app, 'VolumeDriver.Remove', '{"Name":"v"}')).body).toEqual({ Err: '' });
  });

  it('accepts Opts null (auto-create from docker run)', async () => {
    expect((await post(app, 'VolumeDriver.Create', '{"Name":"auto","Opts":null}')).body).toEqual({ Err: '' });
    expect((await post(app, 'VolumeDriver.Get', '{"Name":"auto"}')).body.Volume.Status.size).toBe('1 GiB');
  });

  it('also accepts a JSON Content-Type', async () => {
    const res = await request(app).post('/VolumeDriver.Create').set('Content-Type', 'application/json').send({ Name: 'j' });
    expect(res.body).toEqual({ Err: '' });
  });

  describe('bad input gets a clear Err and changes nothing on disk', () => {
    it.each([
      ['VolumeDriver.Create', '{bad json', 400, /the request body is not valid JSON/],
      ['VolumeDriver.Create', '', 400, /VolumeDriver\.Create: Name: Name is required/],
      ['VolumeDriver.Create', '{"Opts":{}}', 400, /Name is required/],
      ['VolumeDriver.Create', '{"Name":""}', 200, /invalid volume name ""/],
      ['VolumeDriver.Create', '{"Name":"../../etc"}', 200, /invalid volume name "..\/..\/etc"/],
      ['VolumeDriver.Create', '{"Name":"a/b"}', 200, /invalid volume name/],
      ['VolumeDriver.Create', '{"Name":"a\\u0000b"}', 200, /invalid volume name/],
      ['VolumeDriver.Create', '{"Name":".."}', 200, /invalid volume name/],
      ['VolumeDriver.Create', '{"Name":"v","Opts":{"bogus":"1"}}', 200, /unknown option "bogus": valid options are size, fstype/],
      ['VolumeDriver.Create', '{"Name":"v","Opts":{"size":"lots"}}', 200, /option size=lots: expected a number of bytes/],
      ['VolumeDriver.Create', '{"Name":"v","Opts":{"size":"1k"}}', 200, /must be at least 16 MiB/],
      ['VolumeDriver.Create', '{"Name":42}', 400, /Name/],
      // Docker sends option values only as strings: anything else is refused, naming the key, not coerced.
      ['VolumeDriver.Create', '{"Name":"v","Opts":{"size":67108864}}', 400, /^VolumeDriver\.Create: Opts\.size: Docker sends option values as strings; got a number$/],
      ['VolumeDriver.Create', '{"Name":"v","Opts":{"fstype":"xfs","readonly":true}}', 400, /Opts\.readonly: Docker sends option values as strings; got a boolean$/],
      ['VolumeDriver.Create', '{"Name":"v","Opts":{"size":null}}', 400, /Opts\.size: Docker sends option values as strings; got null$/],
      ['VolumeDriver.Create', '{"Name":"v","Opts":{"mountopts":["ro"]}}', 400, /Opts\.mountopts: Docker sends option values as strings; got an array$/],
      ['VolumeDriver.Create', '{"Name":"v","Opts":{"size":{"GiB":1}}}', 400, /Opts\.size: Docker sends option values as strings; got an object$/],
      ['VolumeDriver.Create', '[1,2]', 400, /expected object/],
      ['VolumeDriver.Mount', '{"Name":"ghost","ID":"x"}', 200, /mount ghost: volume ghost does not exist/],
      ['VolumeDriver.Get', '{"Name":"ghost"}', 200, /volume ghost does not exist/],
      ['VolumeDriver.Path', '{"Name":"ghost"}', 200, /volume ghost does not exist/],
      ['VolumeDriver.Get', '{"Name":""}', 200, /invalid volume name/],
    ])('%s %s -> %d %s', async (method, body, status, message) => {
      const res = await post(app, method, body);
      expect(res.status).toBe(status);
      expect(Object.keys(res.body)).toContain('Err');
      expect(res.body.Err).toMatch(message);
      await expect(readdir(join(f.dir, 'loop'))).rejects.toThrow(/ENOENT/);
    });

    it('answers an Unmount of an unknown ID without error, and a Remove of a mounted volume with one', async () => {
      await post(app, 'VolumeDriver.Create', '{"Name":"v"}');
      await post(app, 'VolumeDriver.Mount', '{"Name":"v","ID":"a"}');
      expect((await post(app, 'VolumeDriver.Unmount', '{"Name":"v","ID":"nobody"}')).body).toEqual({ Err: '' });
      expect((await post(app, 'VolumeDriver.Remove', '{"Name":"v"}')).body.Err).toMatch(/volume v is mounted on this host/);
      expect(await readdir(join(f.dir, 'loop'))).toEqual(['.rev', 'v']);
      expect(f.host.mountPoints).toHaveLength(1);
    });

    it('answers an unknown method with 404 and an Err', async () => {
      const res = await post(app, 'VolumeDriver.Snapshot', '{}');
      expect(res.status).toBe(404);
      expect(res.body.Err).toMatch(/does not implement POST \/VolumeDriver\.Snapshot/);
    });
  });
});
