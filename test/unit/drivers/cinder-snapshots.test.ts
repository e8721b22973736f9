import type { CinderBackendConfig } from '../../../src/config/schema.js';
import { CinderRefusal, type CinderClient } from '../../../src/drivers/cinder/client.js';
import { CinderSnapshots, type CinderVolumes } from '../../../src/drivers/cinder/cinder-snapshots.js';
import type { VolumeRecord } from '../../../src/drivers/types.js';
import { BackendUnavailable, VolumeInUse } from '../../../src/errors.js';
import { silentLogger } from '../../../src/log.js';

// The branches a real Cinder does not show on demand (test/integration/cinder-snapshots.test.ts
// runs the rest against one): which volume states are forced or refused, and a failed snapshot
// that Cinder will not delete while it is still creating. The client is scripted per call.

type Reply = unknown | CinderRefusal;

class ScriptedClient {
  readonly seen: string[] = [];
  constructor(private readonly answer: (method: string, path: string, body: unknown) => Reply) {}
  async call(method: string, path: string, what: string, body?: unknown) {
    this.seen.push(`${method} ${path.replace(/\?.*$/, '')}${body === undefined ? '' : ` ${JSON.stringify(body)}`}`);
    const reply = this.answer(method, path, body);
    if (reply instanceof CinderRefusal) throw reply;
    return { status: 200, data: reply, headers: {} };
  }
}

const backend: CinderBackendConfig = { url: 'http://cinder/v3', auth: { type: 'noauth', project_id: 'p' }, multipath: false, reservations: true, timeout_seconds: 0.3 };
const record = { name: 'db', fstype: 'ext4' } as VolumeRecord;
const held = { 'ballast.owner': 'held 3 2026-12-05T12:00:00Z', 'ballast.holder': 'h1 b1 1', 'ballast.attachment': 'att-1' };
const free = { 'ballast.owner': 'free 3 2026-12-05T12:00:00Z', 'ballast.holder': '', 'ballast.attachment': '' };

function snapshotsWith(status: string, metadata: Record<string, string>, answer: (method: string, path: string, body: unknown) => Reply) {
  const client = new ScriptedClient(answer);
  const volumes: CinderVolumes = {
    volumeOf: async () => ({ id: 'vol-1', status, metadata }),
    createRecorded: async () => {
      throw new Error('not in these tests');
    },
  };
  return { client, snapshots: new CinderSnapshots(client as unknown as CinderClient, backend, volumes, silentLogger()) };
}

const made = { id: 'snap-1', name: 'ballast-s1', status: 'available', size: 1, volume_id: 'vol-1', created_at: '2026-12-05T12:00:01', metadata: { 'ballast.volume': 'db', 'ballast.snapshot': 's1', 'ballast.fstype': 'ext4' } };

let listed: (typeof made)[] = [];
beforeEach(() => {
  listed = [];
});

/** Cinder's answers to a snapshot that goes well: none listed before, `made` after. */
function happy(method: string, path: string): Reply {
  if (method === 'GET' && path.startsWith('/snapshots/detail')) return { snapshots: path.includes('marker') ? [] : listed.splice(0) };
  if (method === 'POST' && path === '/snapshots') {
    listed.push(made);
    return { snapshot: { ...made, status: 'creating' } };
  }
  if (method === 'GET' && path === '/snapshots/snap-1') return { snapshot: made };
  return {};
}

describe('CinderSnapshots.createSnapshot', () => {
  it.each([
    ['available', free, false, []],
    ['in-use', held, true, []],
    // Cinder refuses to snapshot a reserved volume even when forced: the holder's reservation is completed first.
    ['reserved', held, true, ['POST /attachments/att-1/action {"os-complete":null}']],
  ] as const)('snapshots a volume that is %s (%#), forced or not as Cinder needs', async (status, metadata, force, before) => {
    const { client, snapshots } = snapshotsWith(status, metadata, happy);
    await expect(snapshots.createSnapshot(record, 's1')).resolves.toMatchObject({ volume: 'db', name: 's1', sizeBytes: 2 ** 30 });
    const post = client.seen.find((c) => c.startsWith('POST /snapshots'))!;
    expect(JSON.parse(post.slice('POST /snapshots '.length)).snapshot).toMatchObject({ volume_id: 'vol-1', force, name: 'ballast-s1', metadata: { 'ballast.snapshot': 's1' } });
    expect(client.seen.filter((c) => c.includes('/attachments/'))).toEqual(before);
  });

  it('refuses a volume reserved by a reservation no ballast host recorded, before asking for a snapshot', async () => {
    const { client, snapshots } = snapshotsWith('reserved', free, happy);
    await expect(snapshots.createSnapshot(record, 's1')).rejects.toBeInstanceOf(VolumeInUse);
    expect(client.seen.filter((c) => !c.startsWith('GET'))).toEqual([]);
  });

  it('refuses a volume in another state, naming it', async () => {
    const { client, snapshots } = snapshotsWith('extending', free, happy);
    await expect(snapshots.createSnapshot(record, 's1')).rejects.toThrow(/volume db is extending in Cinder/);
    expect(client.seen.filter((c) => !c.startsWith('GET'))).toEqual([]);
  });

  it('deletes a snapshot that stayed creating beyond the bound, once Cinder lets it, and says so', async () => {
    let reads = 0;
    let deleted = false;
    const { client, snapshots } = snapshotsWith('available', free, (method, path, body) => {
      if (method === 'GET' && path === '/snapshots/snap-1') {
        reads += 1;
        if (deleted) return new CinderRefusal(404, 'read', 'Snapshot snap-1 could not be found.');
        // Creating through the bound (0.3 s, so some five reads), then available.
        return { snapshot: { ...made, status: reads <= 5 ? 'creating' : 'available' } };
      }
      if (method === 'DELETE') {
        if (reads <= 5) return new CinderRefusal(400, 'delete', 'Invalid snapshot: Snapshot status must be available or error and must not be part of a group.');
        deleted = true;
        return {};
      }
      return happy(method, path);
    });
    const error = await snapshots.createSnapshot(record, 's1').catch((e: unknown) => e);
    expect(error).toBeInstanceOf(BackendUnavailable);
    expect(String(error)).toMatch(/snapshot s1 of volume db was not created within 0.3 s \(Cinder status creating\)/);
    expect(deleted).toBe(true);
    expect(client.seen.filter((c) => c.startsWith('DELETE'))).toEqual(['DELETE /snapshots/snap-1', 'DELETE /snapshots/snap-1']);
  });

  it('names the snapshot to delete by hand when Cinder never lets it go', async () => {
    const { snapshots } = snapshotsWith('available', free, (method, path) => {
      if (method === 'GET' && path === '/snapshots/snap-1') return { snapshot: { ...made, status: 'creating' } };
      if (method === 'DELETE') return new CinderRefusal(400, 'delete', 'Invalid snapshot: Snapshot status must be available or error.');
      return happy(method, path);
    });
    await expect(snapshots.createSnapshot(record, 's1')).rejects.toThrow(/not created within 0.3 s .*ballast could not delete it .*: delete Cinder snapshot snap-1 by hand/);
  });
});
