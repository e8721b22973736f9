import { createServer, type Server } from 'node:http';
import { VsphereClient } from '../../../src/drivers/vsphere/client.js';
import { moref } from '../../../src/drivers/vsphere/soap.js';
import { BackendUnavailable } from '../../../src/errors.js';
import { silentLogger } from '../../../src/log.js';

// The bound on a task that never ends. vcsim runs every task to its end before answering, so
// this one path is checked against a stub at the HTTP edge that reports the task running
// forever; the rest of task waiting runs against vcsim (test/integration/vsphere/).

const envelope = (body: string) =>
  `<?xml version="1.0"?><soapenv:Envelope xmlns:soapenv="http://schemas.xmlsoap.org/soap/envelope/" xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance"><soapenv:Body>${body}</soapenv:Body></soapenv:Envelope>`;

const SERVICE_CONTENT = envelope(
  '<RetrieveServiceContentResponse xmlns="urn:vim25"><returnval><rootFolder type="Folder">group-d1</rootFolder><propertyCollector type="PropertyCollector">propertyCollector</propertyCollector>' +
    '<about><fullName>stub</fullName><apiVersion>6.5</apiVersion></about><sessionManager type="SessionManager">SessionManager</sessionManager><searchIndex type="SearchIndex">SearchIndex</searchIndex>' +
    '<fileManager type="FileManager">FileManager</fileManager><virtualDiskManager type="VirtualDiskManager">virtualDiskManager</virtualDiskManager></returnval></RetrieveServiceContentResponse>',
);
const LOGIN = envelope('<LoginResponse xmlns="urn:vim25"><returnval><key>s1</key></returnval></LoginResponse>');
const RUNNING = envelope(
  '<RetrievePropertiesExResponse xmlns="urn:vim25"><returnval><objects><obj type="Task">task-1</obj><propSet><name>info</name><val xsi:type="TaskInfo"><key>task-1</key><state>running</state><progress>10</progress></val></propSet></objects></returnval></RetrievePropertiesExResponse>',
);

describe('waiting for a vSphere task', () => {
  let server: Server;
  let url: string;
  let polls = 0;

  beforeAll(async () => {
    server = createServer((req, res) => {
      let body = '';
      req.on('data', (c: Buffer) => (body += c.toString()));
      req.on('end', () => {
        if (body.includes('<Login ')) res.setHeader('Set-Cookie', 'vmware_soap_session="s1"; Path=/');
        if (body.includes('<RetrievePropertiesEx ')) polls++;
        res.end(body.includes('<RetrieveServiceContent ') ? SERVICE_CONTENT : body.includes('<Login ') ? LOGIN : RUNNING);
      });
    });
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    url = `http://127.0.0.1:${(server.address() as { port: number }).port}/sdk`;
  });
  afterAll(() => new Promise((resolve) => server.close(resolve)));

  it('gives up at the bound on a task that stays running, saying where to look, after a few backed-off polls', async () => {
    const client = new VsphereClient({ url, username: 'u', password: 'p', timeoutMs: 800 }, silentLogger());
    const started = Date.now();
    const wait = client.waitForTask(moref('Task', 'task-1'), 'attach disk');
    await expect(wait).rejects.toThrow(BackendUnavailable);
    await expect(wait).rejects.toThrow(`vCenter task task-1 (attach disk) was still running after 0.8 s; check it in vCenter's task list`);
    const elapsed = Date.now() - started;
    expect(elapsed).toBeGreaterThanOrEqual(400);
    expect(elapsed).toBeLessThan(1_500);
    // 25, 50, 100, 200, 400 ms pauses: a handful of polls, not a busy loop.
    expect(polls).toBeGreaterThanOrEqual(3);
    expect(polls).toBeLessThanOrEqual(7);
  });
});
