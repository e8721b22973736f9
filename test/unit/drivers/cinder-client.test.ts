import { createServer, type IncomingMessage, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { CinderClient, CinderRefusal } from '../../../src/drivers/cinder/client.js';
import { BackendUnavailable } from '../../../src/errors.js';
import { silentLogger } from '../../../src/log.js';

// Keystone v3 password login against a loopback HTTP edge that answers as Keystone and Cinder
// do (no Keystone runs in the lab; the Cinder side of the client runs against a real Cinder in
// test/integration/cinder.test.ts): one login for many calls, one login again on a 401, and
// the password only in Keystone's request body.

const PASSWORD = 's3cret-pa55';

interface Edge {
  server: Server;
  origin: string;
  logins: number;
  seen: { method: string; url: string; token: string | undefined; version: string | undefined; body: string }[];
  /** Tokens Cinder accepts; a login adds one. */
  valid: Set<string>;
}

async function startEdge(): Promise<Edge> {
  const edge: Edge = { server: createServer(), origin: '', logins: 0, seen: [], valid: new Set() };
  edge.server.on('request', async (req: IncomingMessage, res) => {
    let body = '';
    for await (const chunk of req) body += chunk;
    const token = req.headers['x-auth-token'] as string | undefined;
    edge.seen.push({ method: req.method!, url: req.url!, token, version: req.headers['openstack-api-version'] as string | undefined, body });
    if (req.url === '/identity/v3/auth/tokens') {
      const auth = JSON.parse(body).auth;
      if (auth.identity.password.user.password !== PASSWORD) return res.writeHead(401).end(JSON.stringify({ error: { message: 'The request you have made requires authentication.', code: 401 } }));
      edge.logins += 1;
      const issued = `tok-${edge.logins}`;
      edge.valid.add(issued);
      res.writeHead(201, { 'x-subject-token': issued, 'content-type': 'application/json' });
      return res.end(JSON.stringify({ token: { expires_at: new Date(Date.now() + 3_600_000).toISOString(), project: { id: 'f00d', name: auth.scope.project.name } } }));
    }
    if (!token || !edge.valid.has(token)) return res.writeHead(401).end(JSON.stringify({ error: { message: 'unauthorized' } }));
    if (req.url?.startsWith('/volume/v3/f00d/volumes/missing')) return res.writeHead(404).end(JSON.stringify({ itemNotFound: { message: 'Volume missing could not be found.', code: 404 } }));
    // A broken server that quotes the request, its token included.
    if (req.url?.startsWith('/volume/v3/f00d/volumes/echo')) return res.writeHead(req.url.endsWith('400') ? 400 : 500).end(JSON.stringify({ error: { message: `bad request with X-Auth-Token ${token}` } }));
    res.writeHead(200, { 'content-type': 'application/json' }).end(JSON.stringify({ volumes: [] }));
  });
  await new Promise<void>((resolve) => edge.server.listen(0, '127.0.0.1', resolve));
  edge.origin = `http://127.0.0.1:${(edge.server.address() as AddressInfo).port}`;
  return edge;
}

let edge: Edge;
beforeEach(async () => {
  edge = await startEdge();
});
afterEach(() => {
  edge.server.close();
});

const client = (password = PASSWORD) =>
  new CinderClient(
    { url: `${edge.origin}/volume/v3`, auth: { kind: 'password', authUrl: `${edge.origin}/identity/v3`, username: 'ballast', password, userDomain: 'Default', project: 'docker', projectDomain: 'Default' }, timeoutMs: 5_000 },
    silentLogger(),
  );

describe('CinderClient with Keystone', () => {
  it('logs in once, then calls under the project id Keystone returned with the token and microversion', async () => {
    const c = client();
    await c.call('GET', '/volumes/detail', 'list volumes');
    await c.call('GET', '/volumes/detail', 'list volumes');
    expect(edge.logins).toBe(1);
    const calls = edge.seen.filter((s) => s.url.startsWith('/volume/'));
    expect(calls.map((s) => [s.url, s.token, s.version])).toEqual([
      ['/volume/v3/f00d/volumes/detail', 'tok-1', 'volume 3.44'],
      ['/volume/v3/f00d/volumes/detail', 'tok-1', 'volume 3.44'],
    ]);
    expect(c.calls.get('GET /volumes/detail')).toBe(2);
  });

  it('logs in again once when Cinder answers 401 (token revoked), and goes on', async () => {
    const c = client();
    await c.call('GET', '/volumes/detail', 'list volumes');
    edge.valid.clear();
    await c.call('GET', '/volumes/detail', 'list volumes');
    expect(edge.logins).toBe(2);
  });

  it('a 4xx from Cinder is a CinderRefusal carrying its message', async () => {
    const err = await client().call('GET', '/volumes/missing', 'read volume missing').catch((e: unknown) => e);
    expect(err).toBeInstanceOf(CinderRefusal);
    expect((err as CinderRefusal).status).toBe(404);
    expect((err as Error).message).toBe('Cinder refused to read volume missing (HTTP 404): Volume missing could not be found.');
  });

  it.each(['500', '400'])('an error quoting the request (HTTP %s) shows the token masked', async (status) => {
    const err = await client().call('GET', `/volumes/echo${status}`, 'read volume echo').catch((e: unknown) => e);
    expect((err as Error).message).toMatch(new RegExp(`\\(HTTP ${status}\\): bad request with X-Auth-Token \\*\\*\\*$`));
    expect((err as Error).message).not.toContain('tok-1');
  });

  it('wrong credentials: names user, domain and project and what to check, never the password', async () => {
    const err = await client('wrong-password').call('GET', '/volumes/detail', 'list volumes').catch((e: unknown) => e);
    expect(err).toBeInstanceOf(BackendUnavailable);
    expect((err as Error).message).toBe(`Keystone at ${edge.origin}/identity/v3 refused user ballast (domain Default) for project docker: check backends.cinder.auth and its password_file`);
    expect((err as Error).message).not.toContain('wrong-password');
    // The password went only in the body of the login request.
    for (const s of edge.seen) expect(s.url + (s.token ?? '')).not.toContain(PASSWORD);
  });

  it('Keystone unreachable: BackendUnavailable naming auth_url', async () => {
    edge.server.close();
    await expect(client().call('GET', '/volumes/detail', 'list volumes')).rejects.toThrow(`Keystone at ${edge.origin}/identity/v3 is unreachable`);
  });
});
