import { createHash, X509Certificate } from 'node:crypto';
import { VsphereClient, type VsphereClientOptions } from '../../../src/drivers/vsphere/client.js';
import { explainFault } from '../../../src/drivers/vsphere/faults.js';
import { moref, VsphereFault } from '../../../src/drivers/vsphere/soap.js';
import { BackendUnavailable } from '../../../src/errors.js';
import { silentLogger } from '../../../src/log.js';
import { startVcsim, type Vcsim } from '../../lab/vcsim.js';

// The vSphere API client against vcsim: sessions, tasks, faults and certificate checks.

const T = 60_000;
let sim: Vcsim;

function client(overrides: Partial<VsphereClientOptions> = {}, on = sim): VsphereClient {
  return new VsphereClient({ url: on.url, username: on.username, password: on.password, timeoutMs: 10_000, ...overrides }, silentLogger());
}

async function faultOf(promise: Promise<unknown>): Promise<VsphereFault> {
  try {
    await promise;
  } catch (err) {
    if (err instanceof VsphereFault) return err;
    throw err;
  }
  throw new Error('expected a vSphere fault');
}

beforeAll(async () => {
  sim = await startVcsim({ vms: 2, datastores: 1 });
}, T);
afterAll(() => sim?.stop());

describe('vSphere client: sessions', () => {
  it('logs in on first use and reuses the session: one Login for many calls, concurrent ones included', async () => {
    const c = client();
    const sc = await c.serviceContent();
    expect(sc.fullName).toMatch(/vCenter/);
    await Promise.all(Array.from({ length: 8 }, () => c.propertiesOf(sc.rootFolder, ['name'])));
    await c.propertiesOf(sc.rootFolder, ['childEntity']);
    expect(c.calls.get('Login')).toBe(1);
    await c.logout();
  });

  it('logs in again when vCenter dropped the session, and the call succeeds', async () => {
    const expiring = await startVcsim({ vms: 1, datastores: 1, idleTimeoutSeconds: 1 });
    try {
      const c = client({}, expiring);
      const { rootFolder } = await c.serviceContent();
      expect((await c.propertiesOf(rootFolder, ['name'])).name).toBeDefined();
      await new Promise((r) => setTimeout(r, 3_000)); // idle past vcsim's session timeout
      expect((await c.propertiesOf(rootFolder, ['name'])).name).toBeDefined();
      expect(c.calls.get('Login')).toBe(2);
    } finally {
      await expiring.stop();
    }
  }, T);

  it('a session ended by logout is also replaced on the next call', async () => {
    const c = client();
    const { rootFolder, sessionManager } = await c.serviceContent();
    await c.propertiesOf(rootFolder, ['name']);
    // End the session behind the client's back (as an administrator terminating it would).
    await c.call('Logout', sessionManager);
    await c.propertiesOf(rootFolder, ['name']);
    expect(c.calls.get('Login')).toBe(2);
  });

  it('wrong password: BackendUnavailable naming the user and what to fix', async () => {
    const c = client({ password: 'not-it' });
    await expect(c.session()).rejects.toThrow(BackendUnavailable);
    await expect(c.session()).rejects.toThrow(`vCenter ${sim.url} refused the login of user ${sim.username}: wrong user name or password`);
  });
});

describe('vSphere client: tasks and faults', () => {
  it('waits for a task and returns its result', async () => {
    const c = client();
    const { fileManager } = await c.serviceContent();
    const dc = moref('Datacenter', (await firstDatacenter(c)).value);
    const ds = sim.datastores[0]!.name;
    await c.call('MakeDirectory', fileManager, { name: `[${ds}] client-test`, datacenter: dc, createParentDirectories: true });
    const result = await c.runTask('MoveDatastoreFile_Task', fileManager, { sourceName: `[${ds}] client-test`, sourceDatacenter: dc, destinationName: `[${ds}] client-test-2`, destinationDatacenter: dc, force: false }, 'move');
    expect(result).toBeUndefined();
    const deleted = await c.runTask('DeleteDatastoreFile_Task', fileManager, { name: `[${ds}] client-test-2`, datacenter: dc }, 'delete');
    expect(deleted).toBeUndefined();
  });

  it('a failed task throws its fault: file not found, explained with the file', async () => {
    const c = client();
    const { fileManager } = await c.serviceContent();
    const dc = await firstDatacenter(c);
    const fault = await faultOf(c.runTask('DeleteDatastoreFile_Task', fileManager, { name: `[${sim.datastores[0]!.name}] nothing-here`, datacenter: dc }, 'delete'));
    expect(fault.faultType).toBe('FileNotFound');
    expect(explainFault(fault)).toMatch(/^file .*nothing-here does not exist on the datastore$/);
  });

  it('invalid state: powering on a running VM', async () => {
    const c = client();
    const vm = moref('VirtualMachine', sim.vms[0]!.moid);
    const fault = await faultOf(c.runTask('PowerOnVM_Task', vm, {}, 'power on'));
    expect(fault.faultType).toBe('InvalidPowerState');
    expect(explainFault(fault)).toMatch(/in a state that does not allow this now \(InvalidPowerState/);
  });

  it('no permission: the privilege and the object are named', async () => {
    const c = client();
    const vm = sim.vms[1]!;
    await sim.deny(vm.moid, 'VirtualMachine.Config.AddExistingDisk');
    try {
      const fault = await faultOf(c.runTask('ReconfigVM_Task', moref('VirtualMachine', vm.moid), { spec: {} }, 'reconfigure'));
      expect(fault.faultType).toBe('NoPermission');
      expect(explainFault(fault)).toBe(`the vCenter user lacks privilege VirtualMachine.Config.AddExistingDisk on ${vm.moid}; grant it in vCenter (Administration > Access Control)`);
      expect(c.calls.get('Login')).toBe(1); // NoPermission is not mistaken for an expired session
    } finally {
      await sim.allow(vm.moid);
    }
  });

  it('a method vCenter is slow to answer: the call gives up at the client\'s bound, naming the method', async () => {
    const slow = await startVcsim({ vms: 1, datastores: 1, methodDelayMs: { ReconfigVM_Task: 8_000 } });
    try {
      const c = client({ timeoutMs: 1_500 }, slow);
      await c.session();
      const started = Date.now();
      await expect(c.call('ReconfigVM_Task', moref('VirtualMachine', slow.vms[0]!.moid), { spec: {} })).rejects.toThrow(`vCenter ${slow.url} did not answer ReconfigVM_Task within 1.5 s`);
      expect(Date.now() - started).toBeLessThan(3_000);
    } finally {
      await slow.stop();
    }
  }, T);

  it('a call on an object that does not exist', async () => {
    const c = client();
    const fault = await faultOf(c.propertiesOf(moref('VirtualMachine', 'vm-nope'), ['name']));
    expect(fault.faultType).toBe('ManagedObjectNotFound');
    expect(explainFault(fault)).toBe('vm-nope does not exist (any more) in vCenter');
  });
});

describe('vSphere client: certificates', () => {
  let secure: Vcsim;
  beforeAll(async () => {
    secure = await startVcsim({ vms: 1, datastores: 1, tls: true });
  }, T);
  afterAll(() => secure?.stop());

  const fingerprint = (algorithm: 'sha1' | 'sha256') => createHash(algorithm).update(new X509Certificate(secure.certPem!).raw).digest('hex');

  it('verifies by default: a self-signed vCenter is refused with what to configure', async () => {
    await expect(client({}, secure).session()).rejects.toThrow(/presented a certificate this host does not trust .*set backends.vmdk.vcenter.ca_file .* or thumbprint/);
  });

  it('trusts it with its certificate as the CA file', async () => {
    const c = client({ caPem: secure.certPem! }, secure);
    await c.session();
    expect(c.calls.get('Login')).toBe(1);
  });

  it('trusts exactly the pinned SHA-256 or SHA-1 thumbprint, colons or not', async () => {
    const sha256 = fingerprint('sha256').match(/../g)!.join(':').toUpperCase();
    await client({ thumbprint: sha256 }, secure).session();
    await client({ thumbprint: fingerprint('sha1') }, secure).session();
  });

  it('refuses another thumbprint before sending the password', async () => {
    const wrong = 'ab'.repeat(32);
    const c = client({ thumbprint: wrong }, secure);
    await expect(c.session()).rejects.toThrow(/not the configured thumbprint; refusing to send credentials/);
    expect(c.calls.get('Login')).toBeUndefined();
  });
});

async function firstDatacenter(c: VsphereClient) {
  const { Inventory } = await import('../../../src/drivers/vsphere/inventory.js');
  return (await new Inventory(c).datacenter()).ref;
}
