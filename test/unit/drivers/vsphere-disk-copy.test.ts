import { createServer, type Server } from 'node:http';
import { VsphereClient } from '../../../src/drivers/vsphere/client.js';
import { moref } from '../../../src/drivers/vsphere/soap.js';
import { VirtualDisks } from '../../../src/drivers/vsphere/virtual-disks.js';
import { BackendUnavailable } from '../../../src/errors.js';
import { silentLogger } from '../../../src/log.js';

// What vcsim does not check about a disk copy: the order of its arguments (a real vCenter
// checks them against its schema; vcsim's decoder does not), the UUID a clone is given, and
// the copy's bound, which grows with the disk. A stub at the HTTP edge records the requests;
// the copy itself runs against vcsim in test/integration/vsphere/vmdk-snapshots.test.ts.

const envelope = (body: string) =>
  `<?xml version="1.0"?><soapenv:Envelope xmlns:soapenv="http://schemas.xmlsoap.org/soap/envelope/" xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance"><soapenv:Body>${body}</soapenv:Body></soapenv:Envelope>`;

const SERVICE_CONTENT = envelope(
  '<RetrieveServiceContentResponse xmlns="urn:vim25"><returnval><rootFolder type="Folder">group-d1</rootFolder><propertyCollector type="PropertyCollector">propertyCollector</propertyCollector>' +
    '<about><fullName>stub</fullName></about><sessionManager type="SessionManager">SessionManager</sessionManager><searchIndex type="SearchIndex">SearchIndex</searchIndex>' +
    '<fileManager type="FileManager">FileManager</fileManager><virtualDiskManager type="VirtualDiskManager">virtualDiskManager</virtualDiskManager></returnval></RetrieveServiceContentResponse>',
);
const LOGIN = envelope('<LoginResponse xmlns="urn:vim25"><returnval><key>s1</key></returnval></LoginResponse>');
const task = (method: string) => envelope(`<${method}Response xmlns="urn:vim25"><returnval type="Task">task-7</returnval></${method}Response>`);
const SET_UUID = envelope('<SetVirtualDiskUuidResponse xmlns="urn:vim25"></SetVirtualDiskUuidResponse>');
const taskState = (state: string) =>
  envelope(
    `<RetrievePropertiesExResponse xmlns="urn:vim25"><returnval><objects><obj type="Task">task-7</obj><propSet><name>info</name><val xsi:type="TaskInfo"><key>task-7</key><state>${state}</state></val></propSet></objects></returnval></RetrievePropertiesExResponse>`,
  );

const MiB = 1024 ** 2;
const datastore = { name: 'ds1', ref: moref('Datastore', 'datastore-1'), browser: moref('HostDatastoreBrowser', 'browser-1'), datacenter: { name: 'DC0', ref: moref('Datacenter', 'datacenter-2') } };

describe('copying a virtual disk', () => {
  let server: Server;
  let url: string;
  let requests: string[] = [];
  let state = 'success';

  beforeAll(async () => {
    server = createServer((req, res) => {
      let body = '';
      req.on('data', (c: Buffer) => (body += c.toString()));
      req.on('end', () => {
        requests.push(body);
        if (body.includes('<Login ')) res.setHeader('Set-Cookie', 'vmware_soap_session="s1"; Path=/');
        const method = /<soapenv:Body><(\w+) /.exec(body)?.[1];
        const replies: Record<string, string> = { RetrieveServiceContent: SERVICE_CONTENT, Login: LOGIN, SetVirtualDiskUuid: SET_UUID, RetrievePropertiesEx: taskState(state) };
        res.end(replies[method ?? ''] ?? task(method ?? ''));
      });
    });
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    url = `http://127.0.0.1:${(server.address() as { port: number }).port}/sdk`;
  });
  afterAll(() => new Promise((resolve) => server.close(resolve)));
  beforeEach(() => {
    requests = [];
    state = 'success';
  });

  const disks = (timeoutMs = 20_000) =>
    new VirtualDisks(new VsphereClient({ url, username: 'u', password: 'p', timeoutMs }, silentLogger()), 'ballast', 'ds1', async () => datastore, 'thin');
  const sent = (method: string) => requests.filter((r) => r.includes(`<${method} `));

  it('sends CopyVirtualDisk_Task with its arguments in schema order and no destSpec, into the directory given', async () => {
    await disks().copy({ file: '[ds1] ballast/v/disk.vmdk', capacityKb: 64 * 1024 }, 'ballast/v/snapshots/.creating-s1-ab');
    const [copy] = sent('CopyVirtualDisk_Task');
    expect(copy).toContain(
      '<_this type="VirtualDiskManager">virtualDiskManager</_this><sourceName>[ds1] ballast/v/disk.vmdk</sourceName><sourceDatacenter type="Datacenter">datacenter-2</sourceDatacenter>' +
        '<destName>[ds1] ballast/v/snapshots/.creating-s1-ab/disk.vmdk</destName><destDatacenter type="Datacenter">datacenter-2</destDatacenter><force>false</force>',
    );
    expect(copy).not.toContain('destSpec');
  });

  it('gives a clone a new UUID in vCenter\'s format, after the copy and before its directory is moved into place', async () => {
    const d = disks();
    await d.creatingCloneOf('c', { file: '[ds1] ballast/v/disk.vmdk', capacityKb: 1024 }, () => d.create('c', 'ballast/.creating-c-01', 64 * MiB));
    expect(requests.map((r) => /<soapenv:Body><(\w+) /.exec(r)?.[1]).filter((m) => m !== 'RetrievePropertiesEx')).toEqual(['RetrieveServiceContent', 'Login', 'CopyVirtualDisk_Task', 'SetVirtualDiskUuid']);
    const [set] = sent('SetVirtualDiskUuid');
    expect(set).toMatch(/<name>\[ds1\] ballast\/\.creating-c-01\/disk\.vmdk<\/name><datacenter type="Datacenter">datacenter-2<\/datacenter><uuid>60 00 c2 9[0-9a-f]( [0-9a-f]{2}){4}-[0-9a-f]{2}( [0-9a-f]{2}){7}<\/uuid>/);
    // Outside creatingCloneOf, create makes a new disk again.
    requests = [];
    await d.create('c', 'ballast/.creating-c-02', 64 * MiB);
    expect(sent('CopyVirtualDisk_Task')).toEqual([]);
    expect(requests.some((r) => r.includes('<CreateVirtualDisk_Task '))).toBe(true);
  });

  it('waits for a copy the client\'s bound plus 1 s per 20 MB of the disk, not just the client\'s bound', async () => {
    state = 'running';
    const started = Date.now();
    const copy = disks(300).copy({ file: '[ds1] ballast/v/disk.vmdk', capacityKb: 20_000_000 / 1024 }, 'ballast/v/snapshots/.creating-s1-ab');
    await expect(copy).rejects.toThrow(BackendUnavailable);
    await expect(copy).rejects.toThrow(/task task-7 \(copy \[ds1\] ballast\/v\/disk\.vmdk to .*\) was still running after 1\.3 s/);
    expect(Date.now() - started).toBeGreaterThanOrEqual(800);
  });
});
