import { DellScArray } from '../../../src/drivers/dellsc/array.js';
import { DellScRefusal, type DellScClient } from '../../../src/drivers/dellsc/client.js';
import { DellScSnapshots, type ScVolumes } from '../../../src/drivers/dellsc/dellsc-snapshots.js';
import type { NewVolume, VolumeRecord } from '../../../src/drivers/types.js';
import { BackendUnavailable, SnapshotExists } from '../../../src/errors.js';
import { silentLogger } from '../../../src/log.js';

// The branches the simulator does not show on demand (test/integration/dellsc-snapshots.test.ts
// runs the rest against it): a temporary replay Storage Center will not expire, a clone whose
// record fails after its view was made, two hosts taking one snapshot name at once, and a view
// that can neither grow nor be deleted. The client is scripted per call.

type Answer = (method: string, path: string, body: unknown) => unknown;

class ScriptedClient {
  readonly seen: string[] = [];
  constructor(private readonly answer: Answer) {}
  async call(method: string, path: string, _what: string, body?: unknown) {
    this.seen.push(`${method} ${path}${body === undefined ? '' : ` ${JSON.stringify(body)}`}`);
    const reply = this.answer(method, path, body);
    if (reply instanceof Error) throw reply;
    return reply;
  }
}

const record = { name: 'db', fstype: 'ext4', sizeBytes: 2 ** 30 } as VolumeRecord;
const clone: NewVolume = { name: 'copy', profile: 'default', sizeBytes: 2 ** 30, fstype: 'ext4', mkfsOpts: [], mountOpts: [], readonly: false };
const replay = (id: string, description: string) => ({ instanceId: id, description, size: `${2 ** 30} Bytes`, markedForExpiration: false });

function snapshotsWith(answer: Answer, createFrom: ScVolumes['createFrom'] = async (v, origin) => {
  await origin();
  return { ...record, name: v.name };
}) {
  const client = new ScriptedClient((method, path, body) => {
    if (path === 'StorageCenter/ScVolumeFolder/GetList') return [{ instanceId: '64702.1' }];
    return answer(method, path, body);
  });
  const volumes: ScVolumes = {
    read: async (name) => (name === 'db' ? { value: record, revision: 1 } : undefined),
    list: async () => [record],
    refOf: async () => ({ instanceId: '64702.5', deviceId: 'wwn' }),
    createFrom,
  };
  const array = new DellScArray(client as unknown as DellScClient, 64702, 'ballast');
  return { client, snapshots: new DellScSnapshots(array, volumes, (n) => `ballast-${n}`, silentLogger()) };
}

describe('DellScSnapshots', () => {
  describe('createFrom the live volume', () => {
    it('returns the clone when Storage Center will not expire the temporary replay (it expires by itself)', async () => {
      const { client, snapshots } = snapshotsWith((method, path) => {
        if (path.endsWith('/CreateReplay')) return replay('64702.9', 'ballast clone copy of db');
        if (path.endsWith('/CreateView')) return { instanceId: '64702.10', deviceId: 'w2' };
        if (path.endsWith('/Expire')) return new DellScRefusal(400, 'expire', 'replay is busy');
        throw new Error(`unexpected ${method} ${path}`);
      });
      await expect(snapshots.createFrom(clone, { volume: 'db' })).resolves.toMatchObject({ name: 'copy', method: 'array' });
      expect(client.seen).toEqual([
        'POST StorageCenter/ScVolume/64702.5/CreateReplay {"description":"ballast clone copy of db","expireTime":60}',
        'POST StorageCenter/ScVolumeFolder/GetList {"filter":{"filterType":"AND","filters":[{"attributeName":"ScSerialNumber","attributeValue":64702,"filterType":"Equals"},{"attributeName":"Name","attributeValue":"ballast","filterType":"Equals"}]}}',
        'POST StorageCenter/ScReplay/64702.9/CreateView {"Name":"ballast-copy","Notes":"ballast volume copy","VolumeFolder":"64702.1"}',
        'POST StorageCenter/ScReplay/64702.9/Expire {}',
      ]);
    });

    it('expires the temporary replay when the clone fails after its view was made', async () => {
      const { client, snapshots } = snapshotsWith(
        (_m, path) => (path.endsWith('/CreateReplay') ? replay('64702.9', 'x') : path.endsWith('/CreateView') ? { instanceId: '64702.10' } : {}),
        async (_v, origin) => {
          await origin();
          throw new BackendUnavailable('cannot write the record');
        },
      );
      await expect(snapshots.createFrom(clone, { volume: 'db' })).rejects.toThrow('cannot write the record');
      expect(client.seen.at(-1)).toBe('POST StorageCenter/ScReplay/64702.9/Expire {}');
    });
  });

  describe('createSnapshot', () => {
    it('expires its own replay when another host took the same name first', async () => {
      let lists = 0;
      const { client, snapshots } = snapshotsWith((_m, path) => {
        if (path.endsWith('/ReplayList')) return (lists += 1) === 1 ? [] : [replay('64702.7', 'ballast snapshot s1'), replay('64702.8', 'ballast snapshot s1')];
        if (path.endsWith('/CreateReplay')) return replay('64702.8', 'ballast snapshot s1');
        return {};
      });
      await expect(snapshots.createSnapshot(record, 's1')).rejects.toBeInstanceOf(SnapshotExists);
      expect(client.seen.at(-1)).toBe('POST StorageCenter/ScReplay/64702.8/Expire {}');
    });
  });

  describe('createFrom a snapshot', () => {
    it('deletes the view when it cannot grow, and names it when it cannot be deleted either', async () => {
      const answer = (deleteAnswer: unknown) => (method: string, path: string) => {
        if (path.endsWith('/ReplayList')) return [replay('64702.7', 'ballast snapshot s1')];
        if (path.endsWith('/CreateView')) return { instanceId: '64702.10' };
        if (path.endsWith('/ExpandToSize')) return new DellScRefusal(400, 'grow', 'Not enough free space');
        if (method === 'DELETE') return deleteAnswer;
        throw new Error(`unexpected ${method} ${path}`);
      };
      const big = { ...clone, sizeBytes: 4 * 2 ** 30 };
      const deleted = snapshotsWith(answer({}));
      await expect(deleted.snapshots.createFrom(big, { volume: 'db', snapshot: 's1' })).rejects.toThrow(/Not enough free space/);
      expect(deleted.client.seen.at(-1)).toBe('DELETE StorageCenter/ScVolume/64702.10');
      const stuck = snapshotsWith(answer(new BackendUnavailable('HTTP 503')));
      await expect(stuck.snapshots.createFrom(big, { volume: 'db', snapshot: 's1' })).rejects.toThrow(/could not delete view volume ballast-copy \(HTTP 503\): delete Storage Center volume 64702.10 by hand/);
    });
  });
});
