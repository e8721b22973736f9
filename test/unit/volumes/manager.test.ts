import { mkdir, readdir, rename, rm, writeFile } from 'node:fs/promises';
import { setTimeout as sleep } from 'node:timers/promises';
import { join } from 'node:path';
import { LoopDriver } from '../../../src/drivers/loop-driver.js';
import { silentLogger } from '../../../src/log.js';
import { OwnershipLease } from '../../../src/ownership/lease.js';
import { HOST_A } from '../../helpers/manager-fixture.js';
import { f, freshManagerEachTest, loopRoot, ownership, refixture } from '../../helpers/manager-suite.js';

// VolumeManager's Create, Remove, Get and List, and what survives a daemon restart. Mount and
// Unmount, with their rollback, are in manager-mount.test.ts.

describe('VolumeManager (real loop driver on a temp dir, FakeHost for commands)', () => {
  freshManagerEachTest();

  describe('create and remove', () => {
    it('creates one volume when many Creates of one name race, all succeeding', async () => {
      const results = await Promise.allSettled(Array.from({ length: 10 }, () => f.manager.create('v', { size: '32M' })));
      expect(results.every((r) => r.status === 'fulfilled')).toBe(true);
      expect(await readdir(loopRoot())).toEqual(['.rev', 'v']);
      expect(await readdir(join(loopRoot(), '.rev'))).toEqual(['v@1']);
    });

    it('succeeds for an existing volume with the same or no options, and names differing options', async () => {
      await f.manager.create('v', { size: '32M', fstype: 'ext4' });
      await f.manager.create('v', { size: '32M' });
      await f.manager.create('v', null);
      await expect(f.manager.create('v', { size: '64M', mountopts: 'noatime' })).rejects.toThrow(
        'create v: volume v already exists with different options: size is 32 MiB, asked 64 MiB; mountopts is (none), asked noatime',
      );
    });

    it('refuses hostile names and bad options before touching disk', async () => {
      for (const name of ['../etc', 'a/b', '', '.x']) await expect(f.manager.create(name, {})).rejects.toThrow(/invalid volume name/);
      await expect(f.manager.create('v', { size: '1K' })).rejects.toThrow(/at least 16 MiB/);
      await expect(f.manager.create('v', { colour: 'red' })).rejects.toThrow(/unknown option "colour"/);
      await expect(readdir(loopRoot())).rejects.toThrow(/ENOENT/);
    });

    it('refuses Remove while mounted here, and removes once unmounted', async () => {
      await f.manager.create('v', {});
      await f.manager.mount('v', 'a');
      await expect(f.manager.remove('v')).rejects.toThrow('remove v: volume v is mounted on this host by 1 container mount(s); stop them first');
      await f.manager.unmount('v', 'a');
      await f.manager.remove('v');
      expect(await readdir(loopRoot())).toEqual(['.rev']);
      expect(await readdir(join(loopRoot(), '.rev'))).toEqual([]);
      await f.manager.remove('v'); // removing what is gone succeeds
    });

    it('refuses Remove while another host holds the lease', async () => {
      await f.manager.create('v', {});
      await new OwnershipLease(new LoopDriver({ root: loopRoot(), shared: true }, silentLogger()), { hostId: 'node-b', bootId: 'x', hostname: 'b' }, silentLogger()).acquire('v');
      await expect(f.manager.remove('v')).rejects.toThrow(/volume v is in use on host node-b/);
      expect(await readdir(loopRoot())).toEqual(['.rev', 'v']);
    });
  });

  describe('Get and List', () => {
    it('reports size, fstype, profile, backend, attachment and lease in Status', async () => {
      await f.manager.create('v', { size: '32M' });
      await f.manager.mount('v', 'a');
      const view = await f.manager.get('v');
      expect(view.createdAt).toMatch(/^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$/);
      expect(view.status).toMatchObject({
        size: '32 MiB', fstype: 'ext4', profile: 'default', backend: 'loop', health: 'ok',
        attachment: { host: 'node-a', device: '/dev/loop0', mounts: 1 },
        lease: { state: 'held', holder: 'host node-a (a)', generation: 1 },
      });
      expect((await f.manager.list()).map((v) => v.name)).toEqual(['v']);
    });

    it('reuses the List reply while nothing changed, but builds the operator listing afresh', async () => {
      await f.manager.create('v', {});
      const first = await f.manager.list();
      expect(await f.manager.list()).toBe(first); // the same views: dockerd's List costs no rebuild
      const fresh = await f.manager.list(false);
      expect(fresh).not.toBe(first); // ballast volume ls: lease ages as of now
      expect(fresh).toEqual(first);
      await f.manager.mount('v', 'a');
      expect(await f.manager.list()).not.toBe(first); // a mount here changes the reply
    });

    it('still answers Get for a known volume while its backend is broken, marked unavailable', async () => {
      await refixture({ lease: { renew_every: 0.05 } });
      await f.manager.create('v', {});
      await f.manager.get('v');
      // Another host changed the volume (its marker moves) and left metadata this host cannot read.
      const [marker] = await readdir(join(loopRoot(), '.rev'));
      await rename(join(loopRoot(), '.rev', marker!), join(loopRoot(), '.rev', 'v@9'));
      await rm(join(loopRoot(), 'v', 'meta.json'));
      await mkdir(join(loopRoot(), 'v', 'meta.json')); // reading it now fails with EISDIR
      await sleep(100); // one renewal interval: the index has seen the marker move
      const view = await f.manager.get('v');
      expect(view.status.health).toMatch(/^unavailable: cannot read the metadata of volume v/);
      await expect(f.manager.get('never-seen')).rejects.toThrow(/does not exist/);
    });

    it('answers Get from memory, and sees a volume deleted out of band within one renewal interval', async () => {
      await refixture({ lease: { renew_every: 0.05 } });
      await f.manager.create('v', {});
      await f.manager.get('v'); // read afresh after the Create; from memory from now on
      await rm(join(loopRoot(), 'v'), { recursive: true });
      expect((await f.manager.get('v')).name).toBe('v'); // within the interval: the index still has it
      await sleep(100);
      await expect(f.manager.get('v')).rejects.toThrow('volume v does not exist');
      await f.manager.create('v', { size: '128M' }); // recreated with new options
      expect((await f.manager.get('v')).status.size).toBe('128 MiB');
    });
  });

  describe('restart and reconciliation', () => {
    it('keeps mounts and references across a daemon restart; the old ID unmounts later', async () => {
      await f.manager.create('v', {});
      await f.manager.mount('v', 'old');
      const manager = await f.restart();
      expect(f.host.mountPoints).toHaveLength(1);
      expect((await manager.get('v')).mountpoint).toBe(join(f.dir, 'mounts', 'v'));
      await manager.unmount('v', 'old');
      expect(f.host.mountPoints).toEqual([]);
      expect(await ownership('v')).toMatchObject({ state: 'free' });
    });

    it('drops references whose mount vanished (a reboot) and frees the lease', async () => {
      await f.manager.create('v', {});
      await f.manager.mount('v', 'old');
      f.host.reboot();
      const manager = await f.restart({ ...HOST_A, bootId: 'boot-a2' });
      expect(manager.mountedVolumes().size).toBe(0);
      expect(await ownership('v')).toMatchObject({ state: 'free' });
      await manager.mount('v', 'new'); // usable again
    });

    it('after an Activate (a new dockerd), a Mount with an old ID re-arms it instead of adding', async () => {
      await f.manager.create('v', {});
      await f.manager.mount('v', 'c1');
      await f.manager.mount('v', 'c1'); // a docker cp that never finished before the restart
      f.usage.answer = new Set(['v']);
      await f.manager.activate(); // dockerd came back
      await f.manager.mount('v', 'c1'); // restart policy: same persisted ID
      await f.manager.unmount('v', 'c1');
      expect(f.host.mountPoints).toEqual([]);
    });

    describe('after dockerd restarted', () => {
      const restartDockerd = () => f.manager.activate();

      it('tears down a volume whose container died with dockerd (no Unmount will ever come)', async () => {
        await f.manager.create('v', {});
        await f.manager.mount('v', 'dead-container');
        f.usage.answer = new Set(); // dockerd's API: no running container uses v
        await restartDockerd();
        await f.manager.staleIdPrune;
        expect(f.host.mountPoints).toEqual([]);
        expect(f.host.attachedDevices).toEqual([]);
        expect(await ownership('v')).toMatchObject({ state: 'free' });
      });

      it('keeps a volume that a running container (live-restore) still uses', async () => {
        await f.manager.create('v', {});
        await f.manager.mount('v', 'live');
        f.usage.answer = new Set(['v']);
        await restartDockerd();
        await f.manager.staleIdPrune;
        expect(f.host.mountPoints).toHaveLength(1);
        await f.manager.unmount('v', 'live'); // its Unmount arrives later
        expect(f.host.mountPoints).toEqual([]);
      });

      it('also after ballast and dockerd crashed together (a restarted ballast sees its first Activate)', async () => {
        await f.manager.create('v', {});
        await f.manager.mount('v', 'died');
        const manager = await f.restart(); // ballast restarted: references loaded from its state
        f.usage.answer = new Set();
        await manager.activate(); // the new dockerd's one Activate
        await manager.staleIdPrune;
        expect(f.host.mountPoints).toEqual([]);
        expect(await ownership('v')).toMatchObject({ state: 'free' });
      });

      it('keeps IDs re-armed by a Mount since the restart and drops only the dead ones', async () => {
        await f.manager.create('v', {});
        await f.manager.mount('v', 'restarted');
        await f.manager.mount('v', 'dead');
        f.usage.answer = new Set();
        f.usage.hold();
        await restartDockerd();
        await f.manager.mount('v', 'restarted'); // restart policy: same persisted ID
        f.usage.release();
        await f.manager.staleIdPrune;
        expect(f.manager.mountedVolumes().get('v')?.refs).toEqual({ restarted: 1 });
        expect(f.host.mountPoints).toHaveLength(1);
      });

      it('changes nothing when dockerd\'s API never answers', async () => {
        await f.manager.create('v', {});
        await f.manager.mount('v', 'c');
        f.usage.answer = undefined;
        await restartDockerd();
        await f.manager.staleIdPrune;
        expect(f.usage.calls).toBeGreaterThan(1);
        expect(f.manager.mountedVolumes().get('v')?.refs).toEqual({ c: 1 });
        expect(f.host.mountPoints).toHaveLength(1);
      });
    });

    it('releases a lease this host holds for a volume it has not mounted (crash between acquire and mount)', async () => {
      await f.manager.create('v', {});
      await new OwnershipLease(new LoopDriver({ root: loopRoot(), shared: false }, silentLogger()), HOST_A, silentLogger()).acquire('v');
      await f.restart();
      expect(await ownership('v')).toMatchObject({ state: 'free' });
    });

    it('refuses to start on a damaged state file rather than forget mounts', async () => {
      await mkdir(join(f.dir, 'state'), { recursive: true });
      await writeFile(join(f.dir, 'state', 'mounts.json'), '{"v":2}');
      await expect(f.restart()).rejects.toThrow();
    });
  });
});
