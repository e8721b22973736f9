import { existsSync } from 'node:fs';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { VsphereClient } from '../../../src/drivers/vsphere/client.js';
import { moref } from '../../../src/drivers/vsphere/soap.js';
import { VmDisks } from '../../../src/drivers/vsphere/vm-disks.js';
import { silentLogger } from '../../../src/log.js';
import { BallastProcess } from '../../lab/ballast.js';
import { callOk, callPlugin } from '../../helpers/plugin-client.js';
import { startVcsim, type Vcsim } from '../../lab/vcsim.js';

// A real `ballast serve` with the vmdk backend against vcsim, over the plugin protocol: the
// wiring from config to driver and attacher. vcsim attaches no real disk to this machine, so a
// Mount gets as far as the guest's wait for the disk and must then undo everything: the disk
// detached from the VM again and the lease free. (The guest side with a real kernel is the VM
// lab's vmdk-guest test.)

const T = 120_000;
let sim: Vcsim;
let daemon: BallastProcess;
let observer: VmDisks;

beforeAll(async () => {
  sim = await startVcsim({ vms: 2, datastores: 1 });
  const dir = await mkdtemp(join(tmpdir(), 'ballast-vmdk-'));
  const passwordFile = join(dir, 'vcenter.password');
  await writeFile(passwordFile, `${sim.password}\n`, { mode: 0o600 });
  daemon = await BallastProcess.create({
    dir,
    config: {
      host: { id: 'vm0-host' },
      backends: {
        loop: { root: join(dir, 'loop') },
        vmdk: { vcenter: { url: sim.url, user: sim.username, password_file: passwordFile, timeout_seconds: 10 }, datastore: sim.datastores[0]!.name, folder: 'ballast', vm_uuid: sim.vms[0]!.uuid },
      },
      profiles: { default: { backend: 'vmdk' } }, // only shared backends: scope global
    },
  });
  await daemon.start(60_000);
  const client = new VsphereClient({ url: sim.url, username: sim.username, password: sim.password, timeoutMs: 10_000 }, silentLogger());
  observer = new VmDisks(client, silentLogger());
}, T);

afterAll(async () => {
  await daemon?.stop();
  await sim?.stop();
  if (daemon) await rm(daemon.dir, { recursive: true, force: true });
});

const diskOnDatastore = (name: string) => join(sim.datastores[0]!.dir, 'ballast', name, 'disk.vmdk');

describe('ballast serve with the vmdk backend (vcsim)', () => {
  it('reports global scope; Create makes the disk on the datastore; Get and List show it', async () => {
    expect(await callOk(daemon.socket, 'VolumeDriver.Capabilities')).toEqual({ Capabilities: { Scope: 'global' } });
    await callOk(daemon.socket, 'VolumeDriver.Create', { Name: 'web-data', Opts: { size: '64M' } });
    expect(existsSync(diskOnDatastore('web-data'))).toBe(true);
    const got = await callOk(daemon.socket, 'VolumeDriver.Get', { Name: 'web-data' });
    expect(got.Volume).toMatchObject({ Name: 'web-data' });
    const list = await callOk(daemon.socket, 'VolumeDriver.List');
    expect((list.Volumes as Array<{ Name: string }>).map((v) => v.Name)).toContain('web-data');
  }, T);

  it('Mount without a guest disk: fails naming the disk and disk.EnableUUID, and undoes the attach and the lease', async () => {
    await callOk(daemon.socket, 'VolumeDriver.Create', { Name: 'no-guest', Opts: { size: '64M' } });
    const started = Date.now();
    const reply = await callPlugin(daemon.socket, 'VolumeDriver.Mount', { Name: 'no-guest', ID: 'c1' });
    expect(reply.body.Err).toMatch(/no-guest\/disk.vmdk/);
    expect(reply.body.Err).toMatch(/disk.EnableUUID/);
    expect(Date.now() - started).toBeLessThan(60_000);
    const file = `[${sim.datastores[0]!.name}] ballast/no-guest/disk.vmdk`;
    expect(await observer.find([moref('VirtualMachine', sim.vms[0]!.moid)], file)).toEqual([]);
    const status = await callOk(daemon.socket, 'VolumeDriver.Get', { Name: 'no-guest' });
    expect(JSON.stringify(status)).not.toMatch(/vm0-host/);
    // Removable: nothing holds it.
    await callOk(daemon.socket, 'VolumeDriver.Remove', { Name: 'no-guest' });
    expect(existsSync(diskOnDatastore('no-guest'))).toBe(false);
  }, T);

  it('bad input reaches no vCenter state: an unknown option and a size over the datastore\'s free space', async () => {
    const unknown = await callPlugin(daemon.socket, 'VolumeDriver.Create', { Name: 'bad-opt', Opts: { sise: '1G' } });
    expect(unknown.body.Err).toMatch(/unknown option "?sise"?/);
    const huge = await callPlugin(daemon.socket, 'VolumeDriver.Create', { Name: 'too-big', Opts: { size: '15T' } });
    expect(huge.body.Err).toMatch(/datastore \S+ has .* free; volume too-big needs 15 TiB/);
    expect(existsSync(join(sim.datastores[0]!.dir, 'ballast', 'bad-opt'))).toBe(false);
    expect(existsSync(join(sim.datastores[0]!.dir, 'ballast', 'too-big'))).toBe(false);
  }, T);
});
