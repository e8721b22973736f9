import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { DellScClient } from '../../../src/drivers/dellsc/client.js';
import { PowerFlexClient } from '../../../src/drivers/powerflex/client.js';
import { ScbeClient } from '../../../src/drivers/scbe/client.js';
import { VsphereClient } from '../../../src/drivers/vsphere/client.js';
import { errorMessage } from '../../../src/errors.js';
import { silentLogger } from '../../../src/log.js';

// Session tokens are secrets too: an array that quotes the request in its error (headers
// included) must not put the session cookie or token into ballast's error messages.

const TOKEN = { dellsc: 'dsc-session-marker', scbe: 'scbe-token-marker', pf3: 'pf3-token-marker', pf4: 'pf4-token-marker', vcenter: 'vc-session-marker' };
const soap = (body: string) => `<?xml version="1.0" encoding="UTF-8"?><soapenv:Envelope xmlns:soapenv="http://schemas.xmlsoap.org/soap/envelope/"><soapenv:Body>${body}</soapenv:Body></soapenv:Envelope>`;
const SERVICE_CONTENT = ['rootFolder:Folder', 'propertyCollector:PropertyCollector', 'sessionManager:SessionManager', 'searchIndex:SearchIndex', 'fileManager:FileManager', 'virtualDiskManager:VirtualDiskManager']
  .map((pair) => pair.split(':'))
  .map(([name, type]) => `<${name} type="${type}">${name}</${name}>`)
  .join('');

/** vCenter's /sdk: the service content, a Login that sets the session cookie, and a fault quoting the request for anything else. */
function vcenter(body: string, headers: object, reply: (status: number, xml: string, headers?: Record<string, string>) => void): void {
  if (body.includes('<RetrieveServiceContent')) return reply(200, soap(`<RetrieveServiceContentResponse xmlns="urn:vim25"><returnval>${SERVICE_CONTENT}<about><fullName>sim</fullName></about></returnval></RetrieveServiceContentResponse>`));
  if (body.includes('<Login')) return reply(200, soap('<LoginResponse xmlns="urn:vim25"><returnval><key>k</key></returnval></LoginResponse>'), { 'set-cookie': `vmware_soap_session="${TOKEN.vcenter}"; Path=/; HttpOnly` });
  const said = `you sent ${JSON.stringify(headers)}`.replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/"/g, '&quot;');
  reply(500, soap(`<soapenv:Fault><faultcode>ServerFaultCode</faultcode><faultstring>${said}</faultstring></soapenv:Fault>`));
}

let server: Server;
let url: string;

beforeAll(async () => {
  server = createServer(async (req, res) => {
    let body = '';
    for await (const chunk of req) body += chunk;
    if (req.url === '/sdk') return vcenter(body, req.headers, (status, xml, headers = {}) => res.writeHead(status, { 'content-type': 'text/xml', ...headers }).end(xml));
    const json = (status: number, body: unknown, headers: Record<string, string> = {}) => res.writeHead(status, { 'content-type': 'application/json', ...headers }).end(JSON.stringify(body));
    if (req.url === '/api/rest/ApiConnection/Login') return json(200, {}, { 'set-cookie': `JSESSIONID=${TOKEN.dellsc}; Path=/; HttpOnly` });
    if (req.url === '/api/v1/users/get-auth-token') return json(200, { token: TOKEN.scbe });
    if (req.url === '/api/login') return json(200, TOKEN.pf3);
    if (req.url === '/rest/auth/login') return json(200, { access_token: TOKEN.pf4 });
    const said = `you sent ${JSON.stringify(req.headers)}`;
    json(req.url?.includes('bad') ? 400 : 500, { message: said, error: { message: said } });
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  url = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
});
afterAll(() => new Promise((resolve) => server.close(resolve)));

const common = () => ({ url, username: 'admin', password: 'pw-marker-1234', timeoutMs: 5_000 });
const CALLS: [string, string, (path: string) => Promise<unknown>][] = [
  ['Dell SC', TOKEN.dellsc, (path) => new DellScClient({ ...common(), apiVersion: '4.0' }, silentLogger()).call('GET', `StorageCenter/${path}`, 'list volumes')],
  ['Spectrum Connect', TOKEN.scbe, (path) => new ScbeClient({ ...common(), group: 'g' }, silentLogger()).call('GET', `/${path}`, 'list volumes')],
  ['PowerFlex 3.x (Basic user:token)', TOKEN.pf3, (path) => new PowerFlexClient({ ...common(), apiVersion: 3 }, silentLogger()).call('GET', `/api/${path}`, 'list volumes')],
  ['PowerFlex 4.x (Bearer)', TOKEN.pf4, (path) => new PowerFlexClient({ ...common(), apiVersion: 4 }, silentLogger()).call('GET', `/api/${path}`, 'list volumes')],
  ['vCenter (a SOAP fault)', TOKEN.vcenter, () => new VsphereClient({ ...common(), url: `${url}/sdk` }, silentLogger()).call('CurrentTime', { type: 'ServiceInstance', value: 'ServiceInstance' })],
];

describe.each(CALLS)('%s: an error quoting the request', (_name, token, call) => {
  it.each(['volumes-5xx', 'volumes-bad'])('shows no session token (%s)', async (path) => {
    const message = await call(path).then(() => 'no error', errorMessage);
    expect(message).toMatch(/you sent .*\*\*\*/);
    for (const form of [token, Buffer.from(`admin:${token}`).toString('base64'), 'pw-marker-1234']) expect(message).not.toContain(form);
  });
});
