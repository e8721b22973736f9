import { spawnSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { createServer, request as httpRequest, type IncomingHttpHeaders, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { join, relative } from 'node:path';
import { CinderClient } from '../../src/drivers/cinder/client.js';
import { errorMessage } from '../../src/errors.js';
import { createLogger } from '../../src/log.js';
import { BALLAST_BIN, BallastProcess } from '../lab/ballast.js';
import { call, daemons, killDaemons, makeWork, Outputs, outputs, serve, tag, walk, work } from '../helpers/secrets-lab.js';
import { requireTgtTools, Tgtd } from '../lab/tgtd.js';
import { startVcsim, type Vcsim } from '../lab/vcsim.js';
import { DellScSim } from '../simulators/dellsc.js';
import { PowerFlexSim } from '../simulators/powerflex.js';
import { ScbeSim } from '../simulators/scbe.js';

// Secrets stay inside the daemon: real `ballast serve` processes at log level debug, every
// secret a marker string, driven through successes and the failures most likely to leak
// (refused password, array down, 5xx, hang, a server that echoes the request back, bad LUKS
// key files), against tgtd with CHAP, vcsim and the array simulators on loopback. Then every
// log line, stdout, stderr, reply and `ballast volume inspect`/`ls` output is searched for each
// marker in its plain, base64, Basic-header, URL-encoded and hex forms. Cinder's client runs
// against a loopback Keystone/Cinder edge here (the lab Cinder takes minutes to start).
// That no name or option reaches a shell is in secrets-shell.test.ts.

const T = 300_000;
// '+', '/' and '=' make the URL-encoded form differ from the plain one.
const SECRET = {
  chap: `ChapMark${tag}x9`,
  chapWrong: `ChapWrong${tag}x9`,
  dellsc: `Dsc+Mark/${tag}=`,
  dellscWrong: `Dsc+Wrong/${tag}=`,
  scbe: `Ibm+Mark/${tag}=`,
  scbeWrong: `Ibm+Wrong/${tag}=`,
  powerflex: `Pfx+Mark/${tag}=`,
  powerflexWrong: `Pfx+Wrong/${tag}=`,
  vcenterWrong: `Vc+Wrong/${tag}=`,
  luks: `LuksMark${tag}`.padEnd(48, 'k'),
  luksLoose: `LuksLoose${tag}`.padEnd(48, 'k'),
  luksShort: `LkShort${tag}`,
  cinder: `Cdr+Mark/${tag}=`,
  cinderWrong: `Cdr+Wrong/${tag}=`,
};
const USER = { dellsc: 'Admin', scbe: 'ballast', powerflex: 'admin', chap: 'ballast-chap' };

/** The forms a secret could leak in: as is, base64 (alone and as a Basic header), URL-encoded, hex, JSON-escaped. */
function formsOf(secret: string, user?: string): string[] {
  const forms = [secret, Buffer.from(secret).toString('base64').replace(/=+$/, ''), encodeURIComponent(secret), Buffer.from(secret).toString('hex'), JSON.stringify(secret).slice(1, -1)];
  if (user) forms.push(Buffer.from(`${user}:${secret}`).toString('base64').replace(/=+$/, ''));
  return [...new Set(forms)];
}

function hits(outputs: Outputs, secrets: Record<string, string>): string[] {
  const found: string[] = [];
  for (const [name, secret] of Object.entries(secrets)) {
    const user = Object.entries(USER).find(([key]) => name.startsWith(key))?.[1];
    for (const form of formsOf(secret, user)) {
      for (const { source, text } of outputs.texts) if (text.includes(form)) found.push(`${name} as ${JSON.stringify(form)} in ${source}: ${text.slice(0, 300)}`);
    }
  }
  return found;
}

let tgtd: Tgtd;
let vcsim: Vcsim;
let dellsc: DellScSim;
let scbe: ScbeSim;
let powerflex: PowerFlexSim;
let simsUp = false;
let echo: { server: Server; url: string };

/**
 * The worst a broken array can do: answer 500 with the request's headers and body in its error.
 * /sdk is passed on to vcsim, except the Login, answered with a SOAP fault quoting the request.
 */
async function startEcho(): Promise<{ server: Server; url: string }> {
  const server = createServer(async (req, res) => {
    let body = '';
    for await (const chunk of req) body += chunk;
    if (req.url?.startsWith('/sdk') && !body.includes('<Login')) return void proxy(req.method!, req.url, req.headers, body, res);
    const said = JSON.stringify({ url: req.url, headers: req.headers, body });
    if (req.url?.startsWith('/sdk')) {
      const text = said.replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;');
      const fault = `<?xml version="1.0" encoding="UTF-8"?><soapenv:Envelope xmlns:soapenv="http://schemas.xmlsoap.org/soap/envelope/"><soapenv:Body><soapenv:Fault><faultcode>ServerFaultCode</faultcode><faultstring>${text}</faultstring></soapenv:Fault></soapenv:Body></soapenv:Envelope>`;
      return void res.writeHead(500, { 'content-type': 'text/xml' }).end(fault);
    }
    res.writeHead(500, { 'content-type': 'application/json' }).end(JSON.stringify({ message: said, detail: said, errorCode: 1, error: { message: said } }));
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  return { server, url: `http://127.0.0.1:${(server.address() as AddressInfo).port}` };
}

function proxy(method: string, path: string, headers: IncomingHttpHeaders, body: string, res: ServerResponse): void {
  const target = new URL(vcsim.url);
  const forward = httpRequest({ host: target.hostname, port: target.port, method, path, headers: { ...headers, host: target.host } }, (answer) => {
    res.writeHead(answer.statusCode ?? 502, answer.headers);
    answer.pipe(res);
  });
  forward.on('error', () => res.writeHead(502).end());
  forward.end(body);
}

async function secretFile(name: string, text: string, mode = 0o600): Promise<string> {
  const path = join(work, name);
  await writeFile(path, text, { mode });
  return path;
}

interface Secrets {
  dellsc: string;
  scbe: string;
  powerflex: string;
  vcenter: string;
  chap: string;
}

type Backend = 'iscsi' | 'vmdk' | 'dellsc' | 'scbe' | 'powerflex';
const PROFILE_OF: Record<Backend, string> = { iscsi: 'chap', vmdk: 'vc', dellsc: 'sc', scbe: 'ibm', powerflex: 'pf' };

/** The config of each backend whose secret is tested, its password file written; `url` replaces the array's or vCenter's. */
async function backendConfig(backend: Backend, name: string, secrets: Secrets, url?: string): Promise<Record<string, unknown>> {
  const meta = join(work, `meta-${name}`);
  switch (backend) {
    case 'iscsi':
      return { portals: [tgtd.portal], target_prefix: `iqn.2026-12.dev.ballast.secrets${tag}`, array: { tgt_control_port: tgtd.controlPort }, pool: join(work, `pool-${name}`), multipath: false, reservations: false, chap: { username: USER.chap, password: secrets.chap } };
    case 'vmdk':
      return { vcenter: { url: url ?? vcsim.url, user: vcsim.username, password_file: await secretFile(`${name}-vc`, `${secrets.vcenter}\n`), timeout_seconds: 3 }, datastore: vcsim.datastores[0]!.name, vm_uuid: vcsim.vms[0]!.uuid };
    case 'dellsc':
      return { url: url ?? dellsc.url, user: USER.dellsc, password_file: await secretFile(`${name}-sc`, `${secrets.dellsc}\n`), ssn: 64702, metadata_root: meta, multipath: false, reservations: false, timeout_seconds: 3 };
    case 'scbe':
      return { url: url ?? scbe.url, user: USER.scbe, password_file: await secretFile(`${name}-ibm`, `${secrets.scbe}\n`), service: 'gold', host_name: 'docker1', iscsi: { target: 'iqn.1986-03.com.ibm:2145.sim', portals: [tgtd.portal] }, metadata_root: meta, multipath: false, reservations: false, timeout_seconds: 3 };
    case 'powerflex':
      return { url: url ?? powerflex.url, user: USER.powerflex, password_file: await secretFile(`${name}-pf`, `${secrets.powerflex}\n`), protection_domain: 'pd1', storage_pool: 'pool1', metadata_root: meta, timeout_seconds: 3 };
  }
}

/** A daemon with `backends` (one profile each) and the loop profiles of the LUKS keys; started, or refusing to start. */
async function daemonFor(name: string, backends: Backend[], secrets: Secrets, url?: (b: Backend) => string | undefined): Promise<{ daemon: BallastProcess; started: boolean; stderr: () => string }> {
  const config = {
    host: { id: `secrets-${name}` },
    backends: { loop: { root: join(work, `loop-${name}`) }, ...Object.fromEntries(await Promise.all(backends.map(async (b) => [b, await backendConfig(b, name, secrets, url?.(b))]))) },
    profiles: {
      default: { backend: 'loop' },
      ...Object.fromEntries(backends.map((b) => [PROFILE_OF[b], { backend: b }])),
      sealed: { backend: 'loop', key_file: await secretFile(`${name}-luks.key`, SECRET.luks) },
      loose: { backend: 'loop', key_file: await secretFile(`${name}-loose.key`, SECRET.luksLoose, 0o644) },
      short: { backend: 'loop', key_file: await secretFile(`${name}-short.key`, SECRET.luksShort) },
    },
    timeouts: { command_seconds: 20, filesystem_seconds: 60, volume_lock_seconds: 60 },
  };
  const daemon = await BallastProcess.create({ dir: await mkdtemp(join(work, `${name}-`)), config });
  const started = await serve(daemon, name);
  const entry = daemons[daemons.length - 1]!;
  return { daemon, started, stderr: () => entry.stderr };
}

/** `ballast volume inspect NAME` and `ballast volume ls`, their output kept for the search. */
function cli(daemon: BallastProcess, ...args: string[]): number {
  const run = spawnSync(process.execPath, [BALLAST_BIN, '--config', daemon.configPath, ...args], { encoding: 'utf8', timeout: 60_000 });
  outputs.add(`cli ${args.join(' ')} stdout`, run.stdout);
  outputs.add(`cli ${args.join(' ')} stderr`, run.stderr);
  return run.status ?? -1;
}

/** Create, Get, List, Path, Mount and Unmount (as far as this host lets them go), inspect and ls; returns each Err. */
async function roundTrip(daemon: BallastProcess, name: string, opts: Record<string, string>, mount = true): Promise<Record<string, string | undefined>> {
  const errs: Record<string, string | undefined> = {};
  errs.create = (await call(daemon, 'VolumeDriver.Create', { Name: name, Opts: opts })).Err;
  errs.get = (await call(daemon, 'VolumeDriver.Get', { Name: name })).Err;
  await call(daemon, 'VolumeDriver.List', {});
  await call(daemon, 'VolumeDriver.Path', { Name: name });
  if (mount) errs.mount = (await call(daemon, 'VolumeDriver.Mount', { Name: name, ID: `c-${name}` })).Err;
  if (mount && !errs.mount) errs.unmount = (await call(daemon, 'VolumeDriver.Unmount', { Name: name, ID: `c-${name}` })).Err;
  cli(daemon, 'volume', 'inspect', name);
  cli(daemon, 'volume', 'ls');
  return errs;
}

/** Creates a volume on a daemon that started, or returns what the one that refused to start said. */
async function createOrRefusal(d: Awaited<ReturnType<typeof daemonFor>>, name: string, profile: string): Promise<string | undefined> {
  if (!d.started) return d.stderr();
  return (await call(d.daemon, 'VolumeDriver.Create', { Name: name, Opts: { size: '64M', profile } })).Err;
}

async function collectFiles(): Promise<void> {
  for (const { daemon, name, closed } of daemons) {
    await daemon.stop();
    await daemon.stopWatchdog();
    await closed;
    const entry = daemons.find((d) => d.daemon === daemon)!;
    outputs.add(`${name} stdout`, entry.stdout);
    outputs.add(`${name} stderr`, entry.stderr);
    const log = await readFile(daemon.logPath, 'utf8').catch(() => '');
    log.split('\n').filter(Boolean).forEach((line, i) => outputs.add(`log ${name}:${i + 1}`, line));
    // Not an output, but nothing ballast keeps on disk should hold a secret either.
    for (const file of walk(daemon.stateDir)) outputs.add(`state ${relative(work, file)}`, readFileSync(file, 'latin1'));
  }
  for (const file of walk(work).filter((f) => f.includes('/meta-'))) outputs.add(`record ${relative(work, file)}`, readFileSync(file, 'latin1'));
}

async function simsUpAgain(): Promise<void> {
  if (!simsUp) await Promise.all([dellsc.start(), scbe.start(), powerflex.start()]);
  simsUp = true;
  if (!tgtd.running) tgtd = await Tgtd.start();
}

beforeAll(async () => {
  requireTgtTools();
  await makeWork();
  [tgtd, vcsim] = await Promise.all([Tgtd.start(), startVcsim({ vms: 1, datastores: 1 })]);
  dellsc = new DellScSim({ username: USER.dellsc, password: SECRET.dellsc, ssn: 64702, apiVersion: '4.0', capacityGiB: 20 });
  scbe = new ScbeSim({ username: USER.scbe, password: SECRET.scbe, hosts: { docker1: 'iqn.2026-12.dev.ballast:docker1' } });
  powerflex = new PowerFlexSim({ apiVersion: 4, username: USER.powerflex, password: SECRET.powerflex, sdtIps: ['127.0.0.1'] });
  await simsUpAgain();
  echo = await startEcho();
}, T);

afterAll(async () => {
  await killDaemons();
  echo?.server.closeAllConnections();
  echo?.server.close();
  if (simsUp) await Promise.all([dellsc?.stop(), scbe?.stop(), powerflex?.stop()]);
  await vcsim?.stop();
  await tgtd?.stop();
  // The failed iSCSI attaches must have removed their node records (they hold the CHAP secret).
  const leftover = walk('/etc/iscsi/nodes').filter((f) => f.includes(`secrets${tag}`));
  for (const file of leftover) await rm(file, { force: true });
  if (work) await rm(work, { recursive: true, force: true });
  expect(leftover).toEqual([]);
}, T);

const RIGHT: Secrets = { dellsc: SECRET.dellsc, scbe: SECRET.scbe, powerflex: SECRET.powerflex, vcenter: '', chap: SECRET.chap };
const WRONG: Secrets = { dellsc: SECRET.dellscWrong, scbe: SECRET.scbeWrong, powerflex: SECRET.powerflexWrong, vcenter: SECRET.vcenterWrong, chap: SECRET.chapWrong };
const BACKENDS: Backend[] = ['iscsi', 'vmdk', 'dellsc', 'scbe', 'powerflex'];
const ARRAYS = ['sc', 'ibm', 'pf'];

describe('secrets never appear in logs, errors, replies or inspect', () => {
  it(
    'with the right secrets: every backend through Create, Get, List, Mount, a re-login, 503, a hang and the array down',
    async () => {
      const { daemon, started, stderr } = await daemonFor('right', BACKENDS, { ...RIGHT, vcenter: vcsim.password });
      expect({ started, stderr: stderr() }).toEqual({ started: true, stderr: '' });
      for (const profile of ['default', ...BACKENDS.map((b) => PROFILE_OF[b])]) {
        // vmdk: no Mount, it only waits 30 s for a disk vcsim cannot attach here (and sends no password).
        const errs = await roundTrip(daemon, `ok-${profile}`, { size: '64M', profile }, profile !== 'vc');
        expect({ profile, create: errs.create }).toEqual({ profile, create: undefined });
      }
      // Sessions that expired: each client logs in again, the password sent once more.
      dellsc.expireSessions();
      scbe.expireTokens();
      powerflex.expireSessions();
      for (const profile of ARRAYS) expect((await call(daemon, 'VolumeDriver.Create', { Name: `again-${profile}`, Opts: { size: '64M', profile } })).Err).toBeUndefined();
      for (const [fault, said] of [['unavailable', /503|unavailable/i], ['hang', /within 3 s/]] as const) {
        for (const sim of [dellsc, scbe, powerflex]) sim.fault = fault;
        for (const profile of ARRAYS) expect((await call(daemon, 'VolumeDriver.Create', { Name: `${fault}-${profile}`, Opts: { size: '64M', profile } })).Err).toMatch(said);
        for (const sim of [dellsc, scbe, powerflex]) sim.fault = 'none';
      }
      // LUKS: the key is read and handed to cryptsetup on stdin (this kernel has no dm-crypt, so
      // the Mount fails after luksFormat), and key files ballast refuses are named, not shown.
      await roundTrip(daemon, 'sealed', { size: '64M', profile: 'sealed', encrypted: 'true' });
      expect((await call(daemon, 'VolumeDriver.Create', { Name: 'loose', Opts: { size: '64M', profile: 'loose', encrypted: 'true' } })).Err).toMatch(/readable by others/);
      expect((await call(daemon, 'VolumeDriver.Create', { Name: 'short', Opts: { size: '64M', profile: 'short', encrypted: 'true' } })).Err).toMatch(/holds \d+ bytes/);
      for (const profile of ['default', ...BACKENDS.map((b) => PROFILE_OF[b])]) await call(daemon, 'VolumeDriver.Remove', { Name: `ok-${profile}` });
      // Every array down: connection refused (and tgtadm failing on a dead tgtd).
      simsUp = false;
      await Promise.all([dellsc.stop(), scbe.stop(), powerflex.stop()]);
      for (const profile of ARRAYS) expect((await call(daemon, 'VolumeDriver.Create', { Name: `down-${profile}`, Opts: { size: '64M', profile } })).Err).toMatch(/unreachable|ECONNREFUSED/);
      await tgtd.stop();
      expect((await call(daemon, 'VolumeDriver.Create', { Name: 'down-chap', Opts: { size: '64M', profile: 'chap' } })).Err).toBeDefined();
    },
    T,
  );

  it(
    'with wrong passwords: each array and vCenter refuses (at start or on Create) and names the setting to check; a CHAP secret the target does not hold',
    async () => {
      await simsUpAgain();
      for (const backend of ['dellsc', 'scbe', 'powerflex', 'vmdk'] as const) {
        const d = await daemonFor(`wrong-${backend}`, [backend], WRONG);
        expect(await createOrRefusal(d, `wrong-${backend}`, PROFILE_OF[backend])).toMatch(/refused|password/);
      }
      // The target's account holds the right secret; this host logs in with another.
      await tgtd.tgtadm(['--lld', 'iscsi', '--mode', 'account', '--op', 'new', '--user', USER.chap, '--password', SECRET.chap]);
      const d = await daemonFor('wrong-chap', ['iscsi'], WRONG);
      expect(d.started).toBe(true);
      expect((await roundTrip(d.daemon, 'wrong-chap', { size: '64M', profile: 'chap' })).mount).toBeDefined();
    },
    T,
  );

  it(
    'with an array and a vCenter that answer the login with a 500 quoting the request, credentials included',
    async () => {
      for (const backend of ['dellsc', 'scbe', 'powerflex', 'vmdk'] as const) {
        const d = await daemonFor(`echo-${backend}`, [backend], { ...RIGHT, vcenter: vcsim.password }, (b) => (b === 'vmdk' ? `${echo.url}/sdk` : echo.url));
        expect(await createOrRefusal(d, `echo-${backend}`, PROFILE_OF[backend])).toMatch(/500|ServerFault/);
      }
    },
    T,
  );

  it(
    "Cinder's client: refused, echoed, hung and unreachable Keystone and Cinder calls",
    async () => {
      const logFile = join(work, 'cinder.log');
      const log = createLogger('debug', logFile);
      let mode: 'keystone-401' | 'echo' | 'hang' | 'cinder-echo' = 'keystone-401';
      const edge = createServer(async (req, res) => {
        let body = '';
        for await (const chunk of req) body += chunk;
        const said = JSON.stringify({ headers: req.headers, body });
        if (mode === 'hang') return;
        if (req.url === '/identity/v3/auth/tokens' && mode === 'cinder-echo') {
          res.writeHead(201, { 'x-subject-token': 'tok-1', 'content-type': 'application/json' });
          return res.end(JSON.stringify({ token: { expires_at: new Date(Date.now() + 3_600_000).toISOString(), project: { id: 'f00d' } } }));
        }
        if (mode === 'keystone-401') return res.writeHead(401).end(JSON.stringify({ error: { message: said } }));
        res.writeHead(500, { 'content-type': 'application/json' }).end(JSON.stringify({ error: { message: said }, badRequest: { message: said }, message: said }));
      });
      await new Promise<void>((resolve) => edge.listen(0, '127.0.0.1', resolve));
      const origin = `http://127.0.0.1:${(edge.address() as AddressInfo).port}`;
      const client = (password: string, at = origin) =>
        new CinderClient({ url: `${at}/volume/v3`, auth: { kind: 'password', authUrl: `${at}/identity/v3`, username: 'ballast', password, userDomain: 'Default', project: 'docker', projectDomain: 'Default' }, timeoutMs: 1_000 }, log);
      const errs: string[] = [];
      const attempt = async (c: CinderClient) => errs.push(await c.call('GET', '/volumes/detail', 'list volumes').then(() => 'no error', errorMessage));
      try {
        await attempt(client(SECRET.cinderWrong));
        mode = 'echo';
        await attempt(client(SECRET.cinder));
        mode = 'cinder-echo';
        await attempt(client(SECRET.cinder));
        mode = 'hang';
        await attempt(client(SECRET.cinder));
        edge.closeAllConnections();
        await new Promise((resolve) => edge.close(resolve));
        await attempt(client(SECRET.cinder));
      } finally {
        edge.closeAllConnections();
        edge.close();
      }
      await new Promise((resolve) => log.on('finish', resolve).end());
      expect(errs).toEqual([expect.stringMatching(/refused user ballast/), expect.stringMatching(/HTTP 500/), expect.stringMatching(/HTTP 500/), expect.stringMatching(/within 1 s|timeout of 1000ms/), expect.stringMatching(/unreachable/)]);
      errs.forEach((err, i) => outputs.add(`cinder error ${i + 1}`, err));
      (await readFile(logFile, 'utf8')).split('\n').filter(Boolean).forEach((line, i) => outputs.add(`cinder.log:${i + 1}`, line));
    },
    T,
  );

  it('finds no secret in any output: every log line, stdout, stderr, reply, Err and inspect', async () => {
    await collectFiles();
    // The search sees what it must: debug lines of commands, and replies of every kind.
    expect(outputs.texts.some((t) => /"argv":\["tgtadm"/.test(t.text))).toBe(true);
    expect(outputs.texts.some((t) => /"argv":\["iscsiadm"/.test(t.text))).toBe(true);
    expect(outputs.texts.some((t) => /"argv":\["cryptsetup","luksFormat"/.test(t.text))).toBe(true);
    const counts = { logLines: outputs.sources('log ') + outputs.sources('cinder.log'), replies: outputs.sources('reply '), cli: outputs.sources('cli '), streams: outputs.texts.filter((t) => / std(out|err)$/.test(t.source) && !t.source.startsWith('cli')).length, stored: outputs.sources('state ') + outputs.sources('record '), errors: outputs.sources('cinder error') };
    process.stdout.write(`secrets: ${Object.keys(SECRET).length + 1} markers x ${outputs.texts.length} texts ${JSON.stringify(counts)}\n`);
    expect(hits(outputs, { ...SECRET, vcenter: vcsim.password })).toEqual([]);
  });

  it('would notice a leak: a marker in any form in one log line', () => {
    const line = outputs.texts.find((t) => t.source.startsWith('log right:'))!.text;
    for (const form of formsOf(SECRET.dellsc, USER.dellsc)) {
      const leaky = new Outputs();
      leaky.add('planted', line.replace(/}$/, `,"oops":${JSON.stringify(form)}}`));
      expect(hits(leaky, SECRET).length).toBeGreaterThan(0);
    }
  });
});
