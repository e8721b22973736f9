import { existsSync } from 'node:fs';
import { Agent } from 'node:https';
import axios, { type AxiosResponse } from 'axios';
import { processAlive } from '../../lab/sshd.js';
import { startVcsim, type Vcsim } from '../../lab/vcsim.js';

// The vcsim harness itself (test/vcsim/main.go through test/lab/vcsim.ts), spoken to with
// raw SOAP over HTTP so that nothing of src/ is involved: it answers as a vCenter, accepts only
// its own credentials, answers NoPermission for changes to a denied object while reads go on,
// and stop() leaves no process and no datastore directory behind.

const T = 120_000; // the first start may build the binary (about 30 s with a cold Go cache)

const envelope = (body: string) =>
  '<?xml version="1.0" encoding="UTF-8"?>' +
  '<soapenv:Envelope xmlns:soapenv="http://schemas.xmlsoap.org/soap/envelope/" xmlns:xsd="http://www.w3.org/2001/XMLSchema" xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance">' +
  `<soapenv:Body>${body}</soapenv:Body></soapenv:Envelope>`;

/** One SOAP call; never throws for an HTTP status (faults come back as 500). */
async function soap(sim: Vcsim, body: string, cookie?: string): Promise<AxiosResponse<string>> {
  return axios.post<string>(sim.url, envelope(body), {
    headers: { 'Content-Type': 'text/xml; charset=utf-8', SOAPAction: 'urn:vim25/6.5', ...(cookie ? { Cookie: cookie } : {}) },
    responseType: 'text',
    validateStatus: () => true,
    timeout: 10_000,
    ...(sim.certPem ? { httpsAgent: new Agent({ ca: sim.certPem }) } : {}),
  });
}

const serviceContent = '<RetrieveServiceContent xmlns="urn:vim25"><_this type="ServiceInstance">ServiceInstance</_this></RetrieveServiceContent>';
const login = (user: string, password: string) =>
  `<Login xmlns="urn:vim25"><_this type="SessionManager">SessionManager</_this><userName>${user}</userName><password>${password}</password></Login>`;
const reconfigure = (vm: string) =>
  `<ReconfigVM_Task xmlns="urn:vim25"><_this type="VirtualMachine">${vm}</_this><spec><annotation>touched by the harness test</annotation></spec></ReconfigVM_Task>`;
const readName = (vm: string) =>
  '<RetrievePropertiesEx xmlns="urn:vim25"><_this type="PropertyCollector">propertyCollector</_this><specSet>' +
  `<propSet><type>VirtualMachine</type><pathSet>name</pathSet><pathSet>config.uuid</pathSet></propSet><objectSet><obj type="VirtualMachine">${vm}</obj></objectSet>` +
  '</specSet><options></options></RetrievePropertiesEx>';

/** Logs in with the harness's credentials; returns the session cookie ("vmware_soap_session=..."). */
async function session(sim: Vcsim): Promise<string> {
  const res = await soap(sim, login(sim.username, sim.password));
  expect(res.status).toBe(200);
  const cookie = (res.headers['set-cookie'] ?? []).find((c) => c.startsWith('vmware_soap_session='));
  expect(cookie).toBeDefined();
  return cookie!.split(';')[0]!;
}

async function checkHarness(sim: Vcsim): Promise<void> {
  // A vCenter (not an ESXi host) at the printed URL, with the printed inventory.
  const sc = await soap(sim, serviceContent);
  expect(sc.status).toBe(200);
  expect(sc.data).toMatch(/<fullName>VMware vCenter Server[^<]*<\/fullName>/);
  expect(sim.url).not.toMatch(/@/);
  expect(sim.datacenter).toBe('DC0');
  expect(sim.vms.map((v) => v.name)).toEqual(['DC0_H0_VM0', 'DC0_H0_VM1']);
  for (const vm of sim.vms) expect(vm.uuid).toMatch(/^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/);
  expect(sim.datastores.map((d) => d.name)).toEqual(['LocalDS_0', 'LocalDS_1']);
  for (const ds of sim.datastores) expect(existsSync(ds.dir)).toBe(true);

  // Only the harness's own credentials log in.
  const wrong = await soap(sim, login(sim.username, `${sim.password}x`));
  expect(wrong.status).toBe(500);
  expect(wrong.data).toMatch(/<faultcode>ServerFaultCode<\/faultcode>/);
  expect(wrong.data).toMatch(/xsi:type="InvalidLogin"/);
  expect((await soap(sim, login('root', sim.password))).data).toMatch(/xsi:type="InvalidLogin"/);
  const cookie = await session(sim);

  // deny: changes to that VM answer NoPermission (HTTP 500, a vSphere fault); reads still work,
  // and the other VM is untouched. allow: changes work again.
  const [denied, other] = sim.vms as [Vcsim['vms'][number], Vcsim['vms'][number]];
  await sim.deny(denied.moid, 'VirtualMachine.Config.AddNewDisk');
  const refused = await soap(sim, reconfigure(denied.moid), cookie);
  expect(refused.status).toBe(500);
  expect(refused.data).toContain('xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance"');
  expect(refused.data).toContain('<faultstring>Permission to perform this operation was denied.</faultstring>');
  expect(refused.data).toContain(
    `<NoPermissionFault xmlns="urn:vim25" xsi:type="NoPermission"><object type="VirtualMachine">${denied.moid}</object><privilegeId>VirtualMachine.Config.AddNewDisk</privilegeId></NoPermissionFault>`,
  );
  const read = await soap(sim, readName(denied.moid), cookie);
  expect(read.status).toBe(200);
  // vcsim (Go's encoding/xml) writes the type attribute as XMLSchema-instance:type, not xsi:type.
  expect(read.data).toContain(`<name>name</name><val`);
  expect(read.data).toContain(`>${denied.name}</val>`);
  expect(read.data).toContain(`>${denied.uuid}</val>`);
  const untouched = await soap(sim, reconfigure(other.moid), cookie);
  expect(untouched.status).toBe(200);
  expect(untouched.data).toMatch(/<returnval type="Task">task-\d+<\/returnval>/);
  await sim.allow(denied.moid);
  const allowed = await soap(sim, reconfigure(denied.moid), cookie);
  expect(allowed.status).toBe(200);
  expect(allowed.data).toMatch(/<returnval type="Task">task-\d+<\/returnval>/);

  // stop: the process is gone (by its PID), and so are the datastore directories.
  await sim.stop();
  expect(processAlive(sim.pid)).toBe(false);
  for (const ds of sim.datastores) expect(existsSync(ds.dir)).toBe(false);
  await sim.stop(); // a second stop is harmless
}

describe('vcsim harness', () => {
  let sim: Vcsim | undefined;
  afterEach(async () => {
    await sim?.stop();
    sim = undefined;
  });

  it(
    'plain HTTP: a vCenter with its inventory, own credentials, deny/allow, a clean stop',
    async () => {
      sim = await startVcsim();
      expect(sim.url).toMatch(/^http:\/\/127\.0\.0\.1:\d+\/sdk$/);
      expect(sim.certPem).toBeUndefined();
      await checkHarness(sim);
    },
    T,
  );

  it(
    'HTTPS: the same over TLS, trusted through the certificate it wrote out',
    async () => {
      sim = await startVcsim({ tls: true });
      expect(sim.url).toMatch(/^https:\/\/127\.0\.0\.1:\d+\/sdk$/);
      expect(sim.certPem).toMatch(/^-----BEGIN CERTIFICATE-----/);
      await checkHarness(sim);
    },
    T,
  );
});
