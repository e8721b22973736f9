import { readdirSync } from 'node:fs';
import { readFile, rm } from 'node:fs/promises';
import { join } from 'node:path';
import type { VolumeRecord } from '../../../src/drivers/types.js';
import { DatastoreFiles } from '../../../src/drivers/vsphere/datastore-files.js';
import { CLAIM_HOLD_LIMIT_MS, CLAIM_STALE_MS, READ_FRESH_MS, VmdkRecords } from '../../../src/drivers/vsphere/vmdk-records.js';
import { StaleRevision } from '../../../src/errors.js';
import { silentLogger } from '../../../src/log.js';
import { startVcsim, type Vcsim } from '../../lab/vcsim.js';
import { connect, newFolder, volume, vmdkHost } from '../../helpers/vmdk-vcsim.js';

// The revision claims the vmdk record's compare-and-swap is made of: one winner, a dead claimer
// skipped, a slow one not committing. (Round trips per operation: vmdk-round-trips.test.ts.)

const T = 60_000;

let sim: Vcsim;

const host = (index: number, folder: string) => vmdkHost(sim, index, folder);

beforeAll(async () => {
  sim = await startVcsim({ vms: 2, datastores: 1 });
}, T);

afterAll(async () => {
  await sim?.stop();
});

describe('revision claims: the vmdk record\'s compare-and-swap', () => {
  class Clock {
    now = 1_000_000;
    read = () => this.now;
  }

  async function records(folder: string, clock?: Clock) {
    const vsphere = connect(sim);
    const datastore = sim.datastores[0]!.name;
    const files = new DatastoreFiles(vsphere.client, datastore, () => vsphere.inventory.datastore(datastore), join(folder, '.tmp'));
    return new VmdkRecords(files, folder, silentLogger(), clock?.read);
  }

  async function newVolume(name: string) {
    const folder = newFolder();
    const driver = host(0, folder).driver;
    await driver.create(volume(name));
    return folder;
  }

  /** The directory the volume's claims of revisions 0-63 are in, on vcsim's disk. */
  async function bucket(folder: string, name: string): Promise<string> {
    const { createHash } = await import('node:crypto');
    const record = JSON.parse(await readFile(join(sim.datastores[0]!.dir, folder, name, 'meta.json'), 'utf8')) as { volume: { createdAt: string } };
    return join(sim.datastores[0]!.dir, folder, name, `.claims-${createHash('sha1').update(record.volume.createdAt).digest('hex').slice(0, 8)}-0`);
  }

  const take = (host: string) => (c: { volume: VolumeRecord }) => ({
    volume: { ...c.volume, ownership: { state: 'held' as const, holder: { hostId: host, bootId: 'b', hostname: host, hostGeneration: 0 }, generation: c.volume.ownership.generation + 1, updatedAt: 'now' } },
    notes: {},
  });

  it('8 writers from 8 sessions swap from the same revision at once: exactly one wins, the others get StaleRevision', async () => {
    const folder = await newVolume('contended');
    const writers = await Promise.all(Array.from({ length: 8 }, () => records(folder)));
    const results = await Promise.allSettled(writers.map((w, i) => w.swap('contended', 1, take(`w${i}`))));
    const won = results.filter((r) => r.status === 'fulfilled');
    expect(won).toHaveLength(1);
    expect(results.filter((r) => r.status === 'rejected').map((r) => (r as PromiseRejectedResult).reason)).toEqual(Array(7).fill(expect.any(StaleRevision)));
    const now = await writers[0]!.read('contended');
    expect(now?.revision).toBe(2);
    expect(now?.volume.ownership).toMatchObject({ state: 'held', holder: { hostId: (won[0] as PromiseFulfilledResult<{ volume: { ownership: { holder: { hostId: string } } } }>).value.volume.ownership.holder.hostId } });
  }, T);

  it('a writer that claimed and died: others wait, then skip its revision once they saw it unused for 30 s', async () => {
    const folder = await newVolume('orphaned');
    // The dead writer's claim of revision 2, made by hand as it would have.
    const { mkdir } = await import('node:fs/promises');
    await mkdir(join(await bucket(folder, 'orphaned'), '2'));
    const clock = new Clock();
    const w = await records(folder, clock);
    await expect(w.swap('orphaned', 1, take('late'))).rejects.toThrow(/stayed claimed but unwritten/);
    clock.now += CLAIM_STALE_MS + 1;
    const written = await w.swap('orphaned', 1, take('late'));
    expect(written.revision).toBe(3);
    expect((await w.read('orphaned'))?.volume.ownership).toMatchObject({ state: 'held', holder: { hostId: 'late' } });
    expect(readdirSync(await bucket(folder, 'orphaned')).sort()).toEqual(['2', '3']);
  }, 3 * T);

  it('a writer whose read is older than 10 s reads again before claiming; one that held its claim past 15 s does not commit and gives it back', async () => {
    const folder = await newVolume('slow');
    const clock = new Clock();
    const w = await records(folder, clock);
    const other = await records(folder);
    await w.read('slow');
    await other.swap('slow', 1, take('other'));
    clock.now += READ_FRESH_MS + 1;
    // Its kept record says revision 1; it reads again, sees 2, and does not claim 2.
    await expect(w.swap('slow', 1, take('w'))).rejects.toThrow(StaleRevision);
    expect(readdirSync(await bucket(folder, 'slow'))).toEqual(['2']);

    // Held too long: the change function runs after the claim; the clock jumps past the limit there.
    const r = await w.read('slow');
    await expect(
      w.swap('slow', r!.revision, (c) => {
        clock.now += CLAIM_HOLD_LIMIT_MS + 1;
        return take('w')(c);
      }),
    ).rejects.toThrow(/held too long/);
    expect((await other.read('slow'))?.revision).toBe(2);
    expect(readdirSync(await bucket(folder, 'slow'))).toEqual(['2']);
  }, T);

  it('a destroy claims the next revision: an acquire racing it cannot write the record of a volume going away', async () => {
    const folder = newFolder();
    const a = host(0, folder);
    await a.keeper.register();
    await a.driver.create(volume('going'));
    const w = await records(folder);
    const base = await w.read('going');
    const claimed = await w.claimNext('going', base!);
    // While claimed (the destroy withdrawing), a writer from revision 1 loses.
    const b = await records(folder);
    await expect(b.swap('going', 1, take('b'))).rejects.toThrow(StaleRevision);
    await w.unclaim(base!.volume, claimed);
    await a.driver.destroy('going');
    await expect(a.lease.acquire('going')).rejects.toThrow(/does not exist/);
    await rm(join(sim.datastores[0]!.dir, folder), { recursive: true, force: true });
  }, 2 * T);
});
