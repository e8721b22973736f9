import { createHash } from 'node:crypto';
import { existsSync } from 'node:fs';
import { readdir, readFile, stat } from 'node:fs/promises';
import { connect } from 'node:net';
import { join } from 'node:path';
import fc from 'fast-check';
import { BallastProcess } from '../lab/ballast.js';
import { cleanUpUnder, loopDevicesUnder, mountsUnder } from '../helpers/cleanup.js';
import { callOk } from '../helpers/plugin-client.js';
import { requireRootAndTools } from '../helpers/root.js';

// Property-based fuzzing of Docker's volume plugin protocol over the real Unix socket of a real
// `ballast serve` on the loop backend (real losetup, mkfs and mount). Bodies are random: valid
// and invalid JSON, invalid UTF-8, wrong field types, unknown fields, unicode and control
// characters in names, non-string Opts values, bodies over the 1 MiB limit; paths are every
// protocol method plus unknown ones. Checked:
//   - every request gets an HTTP reply whose body is a JSON object: a non-empty Err, or the
//     method's result with an empty (or no) Err; an error status always carries an Err;
//   - no call hangs (each is bounded) and the daemon stays alive, answering Plugin.Activate;
//   - a refused call (and any Get, List, Path or Capabilities) changes nothing on disk: the loop
//     root and state dir (file names, sizes, and the content of every small file such as
//     meta.json and mounts.json), the mounts and the loop devices are the same after as before;
//   - after a concurrent mix of Create/Mount/Unmount/Remove/Get/List/Path/Capabilities on a few
//     names, what the daemon lists is what is on disk, the mounts it reports are real mounts
//     (and the only ones), and after unmounting everything nothing stays mounted or attached.
// The seed is fixed so CI is repeatable and printed in the test names; a failure names it with
// fast-check's counterexample. Reproduce (or explore) with BALLAST_FUZZ_SEED=<seed>, and scale
// with BALLAST_FUZZ_RUNS=<single-request cases> (the concurrent mixes are a fifteenth of that; the defaults take ~20-45 s on 2 cores).
requireRootAndTools('losetup', 'blkid', 'mkfs.ext4', 'fsck', 'mount', 'umount');

const SEED = Number(process.env.BALLAST_FUZZ_SEED ?? 20261205);
const RUNS = Number(process.env.BALLAST_FUZZ_RUNS ?? 400);
const MIX_RUNS = Math.max(1, Math.round(RUNS / 15));
const CALL_TIMEOUT_MS = 30_000;

const VOLUME_METHODS = ['Create', 'Remove', 'Mount', 'Unmount', 'Path', 'Get', 'List', 'Capabilities'].map((m) => `VolumeDriver.${m}`);
const PROTOCOL_METHODS = ['Plugin.Activate', ...VOLUME_METHODS];
/** Results by method: what a successful reply must carry. */
const RESULT_KEYS: Record<string, string> = {
  'Plugin.Activate': 'Implements',
  'VolumeDriver.Mount': 'Mountpoint',
  'VolumeDriver.Path': 'Mountpoint',
  'VolumeDriver.Get': 'Volume',
  'VolumeDriver.List': 'Volumes',
  'VolumeDriver.Capabilities': 'Capabilities',
};
const KEEP = 'fz-keep'; // exists through the single-request fuzz, so calls on it can succeed or be refused for state

interface RawReply {
  status: number;
  text: string;
}

/**
 * One HTTP/1.1 request written by hand on a fresh connection, the reply read to the end (the
 * daemon closes every connection after its reply). Not node:http's client: when the daemon
 * answers an oversized body early and closes, that client fails with EPIPE and drops the reply,
 * which the daemon did send. A bodyless request has no Content-Length, as curl sends it.
 * Rejects when no complete reply comes within CALL_TIMEOUT_MS.
 */
function send(socketPath: string, path: string, body: string | Uint8Array, httpMethod = 'POST', contentType?: string): Promise<RawReply> {
  const payload = Buffer.from(body);
  const head = [
    `${httpMethod} ${path} HTTP/1.1`,
    'Host: plugin',
    'Accept: application/vnd.docker.plugins.v1.2+json',
    ...(payload.length ? [`Content-Length: ${payload.length}`] : []),
    ...(contentType !== undefined ? [`Content-Type: ${contentType}`] : []),
  ];
  return new Promise((resolve, reject) => {
    const socket = connect(socketPath);
    const chunks: Buffer[] = [];
    const timer = setTimeout(() => socket.destroy(new Error(`${httpMethod} ${path}: no reply within ${CALL_TIMEOUT_MS} ms`)), CALL_TIMEOUT_MS);
    socket.on('data', (chunk: Buffer) => chunks.push(chunk));
    socket.on('error', (err: NodeJS.ErrnoException) => {
      // EPIPE: the daemon stopped reading our body; its reply may still be there to read.
      if (err.code !== 'EPIPE') {
        clearTimeout(timer);
        reject(err);
      }
    });
    socket.on('close', () => {
      clearTimeout(timer);
      const raw = Buffer.concat(chunks);
      const split = raw.indexOf('\r\n\r\n');
      const status = Number(/^HTTP\/1\.1 (\d{3}) /.exec(raw.toString('latin1'))?.[1]);
      if (split < 0 || !status) return reject(new Error(`${httpMethod} ${path}: no HTTP reply: ${JSON.stringify(raw.toString('utf8').slice(0, 300))}`));
      const length = /\r\ncontent-length: *(\d+)/i.exec(raw.subarray(0, split).toString('latin1'))?.[1];
      const text = raw.subarray(split + 4);
      if (length !== undefined && Number(length) !== text.length) return reject(new Error(`${httpMethod} ${path}: reply cut short: ${text.length} of ${length} bytes`));
      resolve({ status, text: text.toString('utf8') });
    });
    // No half-close after the body (dockerd never does): the daemon then closes without a reply.
    socket.write(Buffer.concat([Buffer.from(`${head.join('\r\n')}\r\n\r\n`), payload]));
  });
}

/** The reply as a JSON object, after checking it is one with an Err or the method's result. */
function checkReply(method: string, reply: RawReply): { Err?: string } & Record<string, unknown> {
  let body: unknown;
  try {
    body = JSON.parse(reply.text);
  } catch {
    throw new Error(`${method}: HTTP ${reply.status} with a body that is not JSON: ${reply.text.slice(0, 300)}`);
  }
  if (!body || typeof body !== 'object' || Array.isArray(body)) throw new Error(`${method}: reply is not a JSON object: ${reply.text.slice(0, 300)}`);
  const b = body as { Err?: unknown } & Record<string, unknown>;
  if (b.Err !== undefined && typeof b.Err !== 'string') throw new Error(`${method}: Err is not a string: ${reply.text.slice(0, 300)}`);
  const refused = typeof b.Err === 'string' && b.Err !== '';
  if (reply.status !== 200 && !refused) throw new Error(`${method}: HTTP ${reply.status} without an Err: ${reply.text.slice(0, 300)}`);
  if (!refused) {
    if (!PROTOCOL_METHODS.includes(method)) throw new Error(`${method} is no protocol method, yet it got no Err: ${reply.text.slice(0, 300)}`);
    const key = RESULT_KEYS[method];
    if (key === undefined ? !('Err' in b) : !(key in b)) throw new Error(`${method}: a success without ${key ?? 'Err'}: ${reply.text.slice(0, 300)}`);
  }
  return b as { Err?: string } & Record<string, unknown>;
}

const escape = (text: string) => text.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');

/**
 * The Err a Create must get when its Name is a string but its Opts is something Docker could
 * never send (no object, or a value that is no string); undefined for any other body.
 */
function optsRefusal(body: string | Uint8Array): RegExp | undefined {
  let sent: unknown;
  try {
    sent = JSON.parse(typeof body === 'string' ? body : Buffer.from(body).toString('utf8'));
  } catch {
    return undefined;
  }
  if (!sent || typeof sent !== 'object' || typeof (sent as { Name?: unknown }).Name !== 'string') return undefined;
  const opts = (sent as { Opts?: unknown }).Opts;
  if (opts === null || opts === undefined) return undefined;
  if (typeof opts !== 'object' || Array.isArray(opts)) return /^VolumeDriver\.Create: Opts: /;
  const key = Object.keys(opts).find((k) => typeof (opts as Record<string, unknown>)[k] !== 'string');
  if (key === undefined) return undefined;
  return new RegExp(`^VolumeDriver\\.Create: Opts\\.${escape(key)}: Docker sends option values as strings; got `);
}

/** Everything a call could change on disk: files under the roots (small ones by content), mounts and loop devices. */
async function snapshot(daemon: BallastProcess): Promise<Record<string, string>> {
  const files: Record<string, string> = {};
  async function walk(dir: string): Promise<void> {
    let entries;
    try {
      entries = await readdir(dir, { withFileTypes: true });
    } catch {
      return;
    }
    for (const e of entries) {
      const path = join(dir, e.name);
      if (e.isDirectory()) {
        files[`${path}/`] = 'dir';
        await walk(path);
        continue;
      }
      const { size } = await stat(path);
      // Images are 1 GiB sparse files: their size says enough; sidecars are read whole.
      files[path] = size > 1 << 20 ? `size ${size}` : createHash('sha256').update(await readFile(path)).digest('hex');
    }
  }
  await walk(daemon.loopRoot);
  await walk(daemon.stateDir);
  files['(mounts)'] = mountsUnder(daemon.dir).sort().join('\n');
  files['(loop devices)'] = loopDevicesUnder(daemon.dir).sort().join('\n');
  return files;
}

// ---- arbitraries ----
const nastyChar = fc.constantFrom('\u0000', '\n', '\r', '\t', '\u001b', '\u007f', '\u00a0', '\u200b', '\u202e', '\ufeff', 'é', '😀', '/', '\\', '.', ' ', '"', '%', '$', '`', '*');
const nameArb = fc.oneof(
  fc.constantFrom(KEEP, 'fz-new', 'fz-Ünï', '', '.', '..', '../../etc', 'a/b', '-rf', 'x'.repeat(255), 'y'.repeat(256), 'fz-keep\u0000'),
  fc.string({ maxLength: 20 }),
  fc.string({ unit: 'binary', maxLength: 20 }), // any code point, lone surrogates too
  fc.string({ unit: nastyChar, minLength: 1, maxLength: 12 }),
  fc.tuple(fc.constantFrom('fz-', ''), fc.string({ unit: fc.oneof(nastyChar, fc.constantFrom('a', 'b', '-', '_')), maxLength: 8 })).map(([p, s]) => p + s),
  fc.integer({ min: 1000, max: 100_000 }).map((n) => 'n'.repeat(n)),
);
const idArb = fc.oneof(fc.constantFrom('', 'c1', 'c2'), fc.string({ maxLength: 70 }), fc.string({ unit: nastyChar, maxLength: 6 }));
const optionKey = fc.oneof(
  fc.constantFrom('size', 'fstype', 'readonly', 'mountopts', 'mkfsopts', 'encrypted', 'profile', 'bogus', 'SIZE', ''),
  fc.string({ maxLength: 10 }),
);
const optionString = fc.oneof(
  fc.constantFrom('16M', '32M', '64M', '1G', '1P', '16E', '99999999999999999999T', '-1', '0', '1e3', '0x10', 'NaN', '', ' 32M'),
  fc.constantFrom('ext4', 'xfs', 'btrfs', 'true', 'false', 'yes', '-O no_such_feature', 'noexec,nosuid', 'ro;reboot', '$(id)'),
  fc.string({ maxLength: 12 }),
  fc.string({ unit: nastyChar, maxLength: 6 }),
);
const optsArb = fc.oneof(
  fc.constant(null),
  fc.dictionary(optionKey, optionString, { maxKeys: 3 }),
  fc.dictionary(optionKey, fc.oneof(optionString, fc.jsonValue({ maxDepth: 2 })), { maxKeys: 3 }), // non-string values
  fc.jsonValue({ maxDepth: 2 }),
);
const unknownFields = fc.dictionary(fc.string({ maxLength: 8 }).filter((k) => !['Name', 'ID', 'Opts'].includes(k)), fc.jsonValue({ maxDepth: 2 }), { maxKeys: 3 });
const structured = fc
  .tuple(
    fc.record(
      { Name: fc.oneof({ weight: 5, arbitrary: nameArb }, { weight: 1, arbitrary: fc.jsonValue({ maxDepth: 2 }) }), ID: fc.oneof(idArb, fc.jsonValue({ maxDepth: 1 })), Opts: optsArb },
      { requiredKeys: [] },
    ),
    unknownFields,
  )
  .map(([known, extra]) => JSON.stringify({ ...extra, ...known }));
const bodyArb: fc.Arbitrary<string | Uint8Array> = fc.oneof(
  { weight: 8, arbitrary: structured },
  { weight: 1, arbitrary: fc.tuple(structured, fc.nat()).map(([text, cut]) => text.slice(0, cut % (text.length + 1))) }, // truncated JSON
  { weight: 1, arbitrary: fc.jsonValue().map((v) => JSON.stringify(v)) },
  { weight: 1, arbitrary: fc.string({ unit: 'binary', maxLength: 40 }) },
  { weight: 1, arbitrary: fc.uint8Array({ maxLength: 64 }) }, // invalid UTF-8 too
  { weight: 1, arbitrary: fc.constantFrom('', ' ', 'null', '{}', '[]', '"Name"', '{"Name":"fz-new"', '\u0000') },
  // Around the 1 MiB body limit: a valid Create padded with an unknown field.
  { weight: 1, arbitrary: fc.integer({ min: (1 << 20) - 4096, max: (1 << 20) + 4096 }).map((n) => `{"Name":"fz-new","pad":"${'p'.repeat(n)}"}`) },
);
const pathArb = fc.oneof(
  { weight: 10, arbitrary: fc.constantFrom(...PROTOCOL_METHODS) },
  { weight: 1, arbitrary: fc.constantFrom('VolumeDriver.Snapshot', 'VolumeDriver.create', 'Plugin.activate', 'VolumeDriver', '', 'VolumeDriver.Create/', 'VolumeDriver.Create?x=1') },
  { weight: 1, arbitrary: fc.string({ unit: fc.constantFrom(...'abcXYZ019._-~%'), maxLength: 30 }) },
);
const requestArb = fc.record({
  path: pathArb,
  body: bodyArb,
  httpMethod: fc.oneof({ weight: 12, arbitrary: fc.constant('POST') }, { weight: 1, arbitrary: fc.constantFrom('GET', 'PUT', 'DELETE') }),
  contentType: fc.oneof(
    { weight: 6, arbitrary: fc.constant(undefined) }, // dockerd sends none
    { weight: 1, arbitrary: fc.constantFrom('application/json', 'text/plain', 'text/plain; charset=bogus', 'application/x-www-form-urlencoded', 'multipart/form-data') },
  ),
});

const MIX_NAMES = ['fz-a', 'fz-b', 'fz-c'];
const MIX_IDS = ['c1', 'c2'];
const mixCall = fc.record({
  method: fc.constantFrom(...VOLUME_METHODS),
  name: fc.constantFrom(...MIX_NAMES),
  id: fc.constantFrom(...MIX_IDS),
  opts: fc.constantFrom(null, { size: '32M' }, { size: 1 as unknown as string }),
  delayMs: fc.integer({ min: 0, max: 40 }),
});

/**
 * Runs a property with the fixed or given seed; a failure says how to reproduce it and shows the
 * first failing case as well as the shrunk one: once a case has killed the daemon, every case
 * fails alike and shrinking ends on an innocent one.
 */
async function check<T>(what: string, daemon: BallastProcess, arb: fc.Arbitrary<T>, numRuns: number, predicate: (value: T) => Promise<void>): Promise<void> {
  let first: string | undefined;
  const prop = fc.asyncProperty(arb, async (value) => {
    const child = daemon.child!;
    if (child.exitCode !== null || child.signalCode !== null) throw new Error(`the daemon is gone (exit code ${child.exitCode}, signal ${child.signalCode})`);
    try {
      await predicate(value);
    } catch (err) {
      first ??= fc.stringify(value).slice(0, 2000);
      throw err;
    }
  });
  try {
    await fc.assert(prop, { seed: SEED, numRuns });
  } catch (err) {
    // fast-check keeps the property's own error as the cause; jest would not print it.
    const cause = (err as Error).cause;
    const why = cause instanceof Error ? cause.message : String(cause ?? '');
    throw new Error(
      `${what} failed; reproduce with BALLAST_FUZZ_SEED=${SEED} BALLAST_FUZZ_RUNS=${RUNS}\n${(err as Error).message}\n${why}\nfirst failing case, before shrinking: ${first}`,
    );
  }
}

describe(`protocol fuzz over the real socket: ${RUNS} requests, ${MIX_RUNS} concurrent mixes (seed ${SEED})`, () => {
  let daemon: BallastProcess;
  const counts = { requests: 0, refused: 0, mixes: 0, mixCalls: 0, mixAccepted: {} as Record<string, number> };

  const alive = async () => {
    expect(daemon.child?.exitCode).toBeNull();
    expect(daemon.child?.signalCode).toBeNull();
    checkReply('Plugin.Activate', await send(daemon.socket, '/Plugin.Activate', ''));
  };

  beforeAll(async () => {
    daemon = await BallastProcess.create();
    await daemon.start();
  });

  afterAll(async () => {
    process.stdout.write(
      `protocol fuzz (seed ${SEED}): fuzz cases run ${counts.requests + counts.mixes}: ${counts.requests} single requests (${counts.refused} refused), ` +
        `${counts.mixes} concurrent mixes of ${counts.mixCalls} calls (accepted: ${JSON.stringify(counts.mixAccepted).replace(/VolumeDriver\./g, '')})\n`,
    );
    if (!daemon) return;
    await daemon.stop();
    const left = cleanUpUnder(daemon.dir);
    await daemon.removeDir();
    expect(left).toEqual({ mounts: [], loops: [] });
  });

  it('answers every random request with JSON, and a refused one changes nothing on disk', async () => {
    await callOk(daemon.socket, 'VolumeDriver.Create', { Name: KEEP, Opts: { size: '32M' } });
    await check('single-request fuzz', daemon, requestArb, RUNS, async ({ path, body, httpMethod, contentType }) => {
      counts.requests += 1;
      const method = path.replace(/^\/?/, '');
      const before = await snapshot(daemon);
      const reply = checkReply(method, await send(daemon.socket, `/${method}`, body, httpMethod, contentType));
      const refused = !!reply.Err;
      const mustRefuse = method === 'VolumeDriver.Create' && httpMethod === 'POST' ? optsRefusal(body) : undefined;
      if (mustRefuse) expect(reply.Err).toMatch(mustRefuse);
      if (refused || ['VolumeDriver.Get', 'VolumeDriver.List', 'VolumeDriver.Path', 'VolumeDriver.Capabilities'].includes(method)) {
        counts.refused += refused ? 1 : 0;
        expect(await snapshot(daemon)).toEqual(before);
        return;
      }
      if (!['VolumeDriver.Create', 'VolumeDriver.Mount', 'VolumeDriver.Remove'].includes(method)) return;
      // Accepted: undo it, so every case starts from the same disk (KEEP, unmounted).
      const sent = JSON.parse(typeof body === 'string' ? body : Buffer.from(body).toString('utf8')) as { Name: string; ID?: string };
      if (method === 'VolumeDriver.Create' && sent.Name !== KEEP) await callOk(daemon.socket, 'VolumeDriver.Remove', { Name: sent.Name });
      if (method === 'VolumeDriver.Mount') await callOk(daemon.socket, 'VolumeDriver.Unmount', { Name: sent.Name, ID: sent.ID ?? '' });
      if (method === 'VolumeDriver.Remove' && sent.Name === KEEP) await callOk(daemon.socket, 'VolumeDriver.Create', { Name: KEEP, Opts: { size: '32M' } });
      expect(mountsUnder(daemon.dir)).toEqual([]);
    });
    await alive();
    await callOk(daemon.socket, 'VolumeDriver.Remove', { Name: KEEP });
  });

  it('keeps its state and the disk in agreement under concurrent mixes of calls on a few names', async () => {
    const onDisk = async () => (existsSync(daemon.loopRoot) ? await readdir(daemon.loopRoot) : []).filter((n) => n !== '.rev').sort();
    const mix = fc.record({
      existing: fc.subarray(MIX_NAMES), // created before the mix, so its calls find volumes
      mounted: fc.subarray(MIX_NAMES), // of those, mounted (ID c1) before the mix
      calls: fc.array(mixCall, { minLength: 4, maxLength: 14 }),
    });
    await check('concurrent mix', daemon, mix, MIX_RUNS, async ({ existing, mounted, calls }) => {
      counts.mixes += 1;
      counts.mixCalls += calls.length;
      for (const name of existing) await callOk(daemon.socket, 'VolumeDriver.Create', { Name: name, Opts: { size: '32M' } });
      for (const name of mounted.filter((n) => existing.includes(n))) await callOk(daemon.socket, 'VolumeDriver.Mount', { Name: name, ID: 'c1' });
      await Promise.all(
        calls.map(async ({ method, name, id, opts, delayMs }) => {
          await new Promise((r) => setTimeout(r, delayMs));
          const body = method === 'VolumeDriver.Create' ? { Name: name, Opts: opts } : { Name: name, ID: id };
          const reply = checkReply(method, await send(daemon.socket, `/${method}`, JSON.stringify(body)));
          if (!reply.Err) counts.mixAccepted[method] = (counts.mixAccepted[method] ?? 0) + 1;
        }),
      );
      const listed = ((await callOk(daemon.socket, 'VolumeDriver.List', {})).Volumes as { Name: string }[]).map((v) => v.Name).sort();
      expect(listed).toEqual(await onDisk());
      const reported: string[] = [];
      for (const name of listed) {
        const mp = (await callOk(daemon.socket, 'VolumeDriver.Path', { Name: name })).Mountpoint!;
        if (mp) reported.push(mp);
      }
      expect(mountsUnder(daemon.dir).sort()).toEqual(reported.sort());
      // Unmount everything: a container ID mounted twice (docker cp) needs two Unmounts.
      for (let round = 0; round <= calls.length && mountsUnder(daemon.dir).length; round += 1) {
        for (const name of listed) for (const id of MIX_IDS) await callOk(daemon.socket, 'VolumeDriver.Unmount', { Name: name, ID: id });
      }
      expect(mountsUnder(daemon.dir)).toEqual([]);
      expect(loopDevicesUnder(daemon.dir)).toEqual([]);
      for (const name of listed) expect((await callOk(daemon.socket, 'VolumeDriver.Path', { Name: name })).Mountpoint).toBe('');
      for (const name of listed) await callOk(daemon.socket, 'VolumeDriver.Remove', { Name: name });
      expect(await onDisk()).toEqual([]);
      if (existsSync(join(daemon.loopRoot, '.rev'))) expect(await readdir(join(daemon.loopRoot, '.rev'))).toEqual([]);
    });
    await alive();
  });
});
