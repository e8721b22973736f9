import { execFileSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { existsSync, readdirSync, readFileSync } from 'node:fs';
import { mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { describeResult, runCommand, sleep, waitFor } from '../lab/command.js';
import { DockerHarness } from '../lab/docker-harness.js';
import { withDiagnostics } from '../lab/docker-suite.js';
import { IMAGE } from '../lab/busybox-image.js';
import { LocalRegistry } from '../lab/registry.js';
import { requireRootAndTools } from '../helpers/root.js';

// ballast as a managed Docker plugin, end to end and offline: scripts/build-plugin.sh makes the
// plugin directory (no image registry), a private dockerd creates, configures, enables, upgrades
// and breaks it; Debian's docker-registry on 127.0.0.1 carries it to a second private dockerd.
// Each dockerd runs in its own mount namespace with a tmpfs on /run/docker/plugins (the harness
// does this): managed plugin sockets land in /run/docker/plugins/<id>/ whatever --exec-root says.

const REPO = resolve(import.meta.dirname, '../..');
const T = 180_000;
const MiB = 1024 ** 2;
const run = randomBytes(2).toString('hex');
/** Volume names unique to this run: loop devices are found by them at cleanup. */
const vol = (name: string) => `mp${run}${name}`;

interface HostDirs {
  etc: string;
  loop: string;
  state: string;
}

let base = '';
let pluginDir = '';
let registry: LocalRegistry | undefined;
let a: DockerHarness | undefined;
let b: DockerHarness | undefined;
let ref1 = '';
let ref2 = '';
let aDirs: HostDirs;
let bDirs: HostDirs;
const timings: Record<string, number> = {};

const hA = () => {
  if (!a) throw new Error('dockerd A is not running');
  return a;
};

const it = (name: string, body: () => Promise<void>, timeout = T) => test(name, withDiagnostics(() => a, body), timeout);

async function timed<R>(what: string, fn: () => Promise<R>): Promise<R> {
  const start = Date.now();
  const result = await fn();
  timings[what] = Date.now() - start;
  return result;
}

async function hostDirs(name: string): Promise<HostDirs> {
  const dirs = { etc: join(base, name, 'etc'), loop: join(base, name, 'loop'), state: join(base, name, 'state') };
  for (const d of Object.values(dirs)) await mkdir(d, { recursive: true });
  return dirs;
}

/** The `docker plugin set`/`install` settings that point a plugin at one host's directories. */
function settings(h: DockerHarness, dirs: HostDirs, etc = dirs.etc): string[] {
  return [`config.source=${etc}`, `loop-root.source=${dirs.loop}`, `state.source=${dirs.state}`, `docker-socket.source=${h.dockerSocket}`];
}

async function pluginInspect(h: DockerHarness, name: string): Promise<Record<string, any>> {
  const [p] = JSON.parse(await h.ok(['plugin', 'inspect', name])) as Record<string, any>[];
  if (!p) throw new Error(`docker plugin inspect ${name} returned nothing`);
  return p;
}

/** dockerd's log lines that the plugin wrote (dockerd tags them plugin=<id>). */
function pluginLog(h: DockerHarness, id: string): string[] {
  return readFileSync(h.dockerdLog, 'utf8')
    .split('\n')
    .filter((l) => l.includes(`plugin=${id}`));
}

/** PID of the plugin's ballast process (found by the plugin id in its cgroup). */
function pluginPid(id: string): number {
  for (const entry of readdirSync('/proc')) {
    if (!/^\d+$/.test(entry)) continue;
    try {
      const cmdline = readFileSync(`/proc/${entry}/cmdline`, 'utf8');
      if (cmdline.includes('/opt/ballast/dist/cli/main.js\0serve') && readFileSync(`/proc/${entry}/cgroup`, 'utf8').includes(id)) return Number(entry);
    } catch {
      // gone
    }
  }
  throw new Error(`no ballast process of plugin ${id}`);
}

/** Writes in one container, reads back in a second. */
async function roundTrip(h: DockerHarness, volume: string, text: string): Promise<void> {
  await h.run(['--rm', '-v', `${volume}:/data`, IMAGE, 'sh', '-c', `echo ${text} > /data/msg; sync`]);
  expect((await h.run(['--rm', '-v', `${volume}:/data`, IMAGE, 'cat', '/data/msg'])).trim()).toBe(text);
}

/** Loop devices whose backing file is an image of this run's volumes (the plugin attaches them inside its own mounts). */
function ourLoops(): string[] {
  const out = execFileSync('losetup', ['--json', '--list', '--output', 'NAME,BACK-FILE'], { encoding: 'utf8' });
  if (!out.trim()) return [];
  const rows = (JSON.parse(out) as { loopdevices: { name: string; 'back-file': string | null }[] }).loopdevices;
  return rows.filter((r) => r['back-file']?.includes(`/mp${run}`)).map((r) => r.name);
}

async function removeEverything(h: DockerHarness | undefined): Promise<string[]> {
  if (!h?.dockerd || h.dockerd.exitCode !== null) return [];
  const errors: string[] = [];
  await h.removeAllContainers().catch((e: Error) => errors.push(e.message));
  const volumes = (await h.docker(['volume', 'ls', '-q'])).stdout.split('\n').filter(Boolean);
  for (const v of volumes) {
    const r = await h.docker(['volume', 'rm', '-f', v]);
    if (r.code !== 0) errors.push(`volume rm ${v}: ${r.stderr.trim()}`);
  }
  const plugins = (await h.docker(['plugin', 'ls', '-q', '--no-trunc'])).stdout.split('\n').filter(Boolean);
  for (const p of plugins) {
    const r = await h.docker(['plugin', 'rm', '-f', p]);
    if (r.code !== 0) errors.push(`plugin rm ${p}: ${r.stderr.trim()}`);
  }
  return errors;
}

beforeAll(async () => {
  requireRootAndTools('dockerd', 'docker', 'docker-registry', 'debootstrap', 'losetup', 'nsenter');
  base = await mkdtemp(join(tmpdir(), 'ballast-managed-'));
  pluginDir = join(base, 'plugin');
  const build = await timed('build plugin dir (script)', () =>
    runCommand([join(REPO, 'scripts/build-plugin.sh'), pluginDir], { timeoutMs: 900_000 }),
  );
  if (build.code !== 0) throw new Error(`scripts/build-plugin.sh failed:\n${describeResult(build)}`);
  timings['rootfs MB'] = Number(execFileSync('du', ['-sm', join(pluginDir, 'rootfs')], { encoding: 'utf8' }).split('\t')[0]);
  registry = await LocalRegistry.start(join(base, 'registry'));
  ref1 = `${registry.address}/ballast:1`;
  ref2 = `${registry.address}/ballast:2`;
  a = await DockerHarness.start({ name: 'managed-a', dir: join(base, 'dockerd-a'), startBallast: false });
  aDirs = await hostDirs('host-a');
}, 900_000);

afterAll(async () => {
  const problems: string[] = [];
  for (const h of [b, a]) problems.push(...(await removeEverything(h)));
  for (const h of [b, a]) {
    if (!h) continue;
    const report = await h.teardown();
    problems.push(...report.errors, ...report.hostMounts.map((m) => `host mount ${m}`), ...report.loops.map((l) => `loop ${l}`));
  }
  await registry?.stop();
  const loops = ourLoops();
  for (const device of loops) execFileSync('losetup', ['-d', device]);
  problems.push(...loops.map((l) => `loop device left attached: ${l}`));
  if (base && !process.env.BALLAST_TEST_KEEP) await rm(base, { recursive: true, force: true });
  process.stderr.write(`managed plugin timings (ms unless said): ${JSON.stringify(timings)}\n`);
  if (problems.length) throw new Error(`cleanup had to deal with:\n  ${problems.join('\n  ')}`);
}, T);

describe('ballast as a managed Docker plugin', () => {
  it('the plugin directory has the manifest, node, ballast and its production modules, and every bind target', async () => {
    const rootfs = join(pluginDir, 'rootfs');
    const manifest = JSON.parse(readFileSync(join(pluginDir, 'config.json'), 'utf8')) as Record<string, any>;
    expect(manifest.entrypoint).toEqual(['/usr/local/bin/node', '/opt/ballast/dist/cli/main.js', 'serve']);
    for (const path of ['usr/local/bin/node', 'opt/ballast/dist/cli/main.js', 'opt/ballast/node_modules/zod/package.json', 'sbin/losetup', 'sbin/mkfs.ext4', 'sbin/mkfs.xfs']) {
      expect(existsSync(join(rootfs, path))).toBe(true);
    }
    expect(existsSync(join(rootfs, 'opt/ballast/node_modules/jest'))).toBe(false); // no devDependencies
    expect(existsSync(join(rootfs, 'opt/ballast/node_modules/typescript'))).toBe(false);
    for (const m of manifest.mounts as { destination: string; options: string[] }[]) {
      if (m.options.includes('rbind')) expect(existsSync(join(rootfs, m.destination))).toBe(true);
    }
    expect(existsSync(join(rootfs, manifest.propagatedMount))).toBe(true);
    // Every bind a user may need to move is settable.
    const settable = (manifest.mounts as { name: string; settable?: string[] }[]).filter((m) => m.settable?.includes('source')).map((m) => m.name);
    expect(settable).toEqual(expect.arrayContaining(['config', 'loop-root', 'state', 'docker-socket']));
  });

  it('docker plugin create, set the sources and the log level, enable --timeout 120', async () => {
    const h = hA();
    await timed('plugin create', () => h.ok(['plugin', 'create', ref1, pluginDir], { timeoutMs: 300_000 }));
    await h.ok(['plugin', 'set', ref1, ...settings(h, aDirs), 'BALLAST_LOG_LEVEL=debug']);
    await timed('plugin enable', () => h.ok(['plugin', 'enable', '--timeout', '120', ref1], { timeoutMs: 150_000 }));
    const p = await pluginInspect(h, ref1);
    expect(p.Enabled).toBe(true);
    expect(p.Settings.Env).toContain('BALLAST_LOG_LEVEL=debug');
    // The socket is where dockerd looks for it: in this dockerd's namespace, under the plugin id.
    const sockets = await runCommand([...h.nsPrefix(), 'ls', `/run/docker/plugins/${p.Id}`], { timeoutMs: 10_000 });
    expect(sockets.stdout.split('\n')).toContain('ballast.sock');
  });

  it('a volume round trip: create with options, write in one container, read in a second; inspect shows Options and Status', async () => {
    const h = hA();
    const id = (await pluginInspect(h, ref1)).Id as string;
    await h.ok(['volume', 'create', '-d', ref1, '--opt', 'size=64M', '--opt', 'fstype=ext4', vol('a')]);
    await roundTrip(h, vol('a'), 'from-managed-plugin');
    const v = await h.inspectVolume(vol('a'));
    expect(v).toMatchObject({ Name: vol('a'), Driver: ref1, Options: { size: '64M', fstype: 'ext4' } });
    expect(v.Status).toMatchObject({ sizeBytes: 64 * MiB, fstype: 'ext4', backend: 'loop' });
    // The image lives in the loop-root source set on the host.
    expect(existsSync(join(aDirs.loop, vol('a')))).toBe(true);
    // BALLAST_LOG_LEVEL=debug reached ballast: its debug lines are in dockerd's log, tagged with the plugin.
    expect(pluginLog(h, id).some((l) => l.includes('\\"level\\":\\"debug\\"') || l.includes('"level":"debug"'))).toBe(true);
    // dockerd's API answers from inside the plugin through the docker-socket bind.
    const ping = await runCommand(
      ['nsenter', `--target=${pluginPid(id)}`, '--mount', '--', '/usr/local/bin/node', '-e',
        "require('http').get({socketPath:'/var/run/docker.sock',path:'/_ping'},r=>{let d='';r.on('data',c=>d+=c);r.on('end',()=>console.log(d))})"],
      { timeoutMs: 20_000 },
    );
    expect(ping.stdout.trim()).toBe('OK');
  });

  it('disable -f and enable while no volume is mounted: the volume and its data are still there', async () => {
    const h = hA();
    // Plain disable is refused while volumes of the plugin exist.
    expect(await h.fails(['plugin', 'disable', ref1])).toMatch(/in use/);
    await h.ok(['plugin', 'disable', '-f', ref1]);
    await h.ok(['plugin', 'enable', '--timeout', '120', ref1], { timeoutMs: 150_000 });
    expect((await h.run(['--rm', '-v', `${vol('a')}:/data`, IMAGE, 'cat', '/data/msg'])).trim()).toBe('from-managed-plugin');
  });

  it('a bind source missing on the host: enable fails at once naming the path, and the plugin stays disabled', async () => {
    const h = hA();
    await h.ok(['plugin', 'disable', '-f', ref1]);
    const missing = join(base, 'host-a', 'not-created');
    await h.ok(['plugin', 'set', ref1, `state.source=${missing}`]);
    const started = Date.now();
    const err = await h.fails(['plugin', 'enable', '--timeout', '60', ref1], { timeoutMs: 90_000 });
    expect(err).toContain(missing);
    expect(err).toMatch(/no such file or directory/i);
    expect(Date.now() - started).toBeLessThan(30_000);
    expect((await pluginInspect(h, ref1)).Enabled).toBe(false);
    await h.ok(['plugin', 'set', ref1, `state.source=${aDirs.state}`]);
    await h.ok(['plugin', 'enable', '--timeout', '120', ref1], { timeoutMs: 150_000 });
  });

  it('a config file with another loop root, through docker plugin set config.source: volume images appear there', async () => {
    const h = hA();
    await h.ok(['volume', 'rm', vol('a')]);
    const etc2 = join(base, 'host-a', 'etc2');
    await mkdir(etc2, { recursive: true });
    await writeFile(join(etc2, 'config.yml'), 'backends:\n  loop: {root: /var/lib/ballast/loop/alt}\ndefaults: {size: 32M}\n');
    // No volume left: a plain disable is accepted now.
    await h.ok(['plugin', 'disable', ref1]);
    await h.ok(['plugin', 'set', ref1, `config.source=${etc2}`]);
    await h.ok(['plugin', 'enable', '--timeout', '120', ref1], { timeoutMs: 150_000 });
    await h.ok(['volume', 'create', '-d', ref1, vol('b')]);
    expect(existsSync(join(aDirs.loop, 'alt', vol('b')))).toBe(true);
    expect(existsSync(join(aDirs.loop, vol('b')))).toBe(false);
    expect((await h.inspectVolume(vol('b'))).Status).toMatchObject({ sizeBytes: 32 * MiB }); // defaults.size of that file
    await roundTrip(h, vol('b'), 'before-upgrade');
  });

  it('an invalid config file: enable fails, the config error is in the plugin log, and it does not restart in a loop', async () => {
    const h = hA();
    const id = (await pluginInspect(h, ref1)).Id as string;
    const bad = join(base, 'host-a', 'etc-bad');
    await mkdir(bad, { recursive: true });
    await writeFile(join(bad, 'config.yml'), 'defaults: {fstype: btrfs}\n');
    await h.ok(['plugin', 'disable', '-f', ref1]);
    await h.ok(['plugin', 'set', ref1, `config.source=${bad}`]);
    const err = await h.fails(['plugin', 'enable', '--timeout', '60', ref1], { timeoutMs: 120_000 });
    const errorLines = () => pluginLog(h, id).filter((l) => l.includes('defaults.fstype'));
    expect(errorLines().length + (err.includes('defaults.fstype') ? 1 : 0)).toBeGreaterThan(0);
    expect(errorLines().join('\n') + err).toContain('/etc/ballast/config.yml: defaults.fstype');
    expect((await pluginInspect(h, ref1)).Enabled).toBe(false);
    const after = errorLines().length;
    await sleep(5_000);
    expect(errorLines().length).toBe(after); // no restarts once enable gave up
    await h.ok(['plugin', 'set', ref1, `config.source=${join(base, 'host-a', 'etc2')}`]);
  });

  it('push a second tag, docker plugin upgrade to it: the new rootfs runs and the data survives', async () => {
    const h = hA();
    const id = (await pluginInspect(h, ref1)).Id as string;
    await writeFile(join(pluginDir, 'rootfs', 'opt', 'ballast', 'build-tag'), '2\n');
    await timed('plugin create (second tag)', () => h.ok(['plugin', 'create', ref2, pluginDir], { timeoutMs: 300_000 }));
    await timed('plugin push', () => h.ok(['plugin', 'push', ref2], { timeoutMs: 300_000 }));
    expect(await registry!.tags('ballast')).toContain('2');
    await h.ok(['plugin', 'rm', ref2]);
    await timed('plugin upgrade', () => h.ok(['plugin', 'upgrade', '--grant-all-permissions', '--skip-remote-check', ref1, ref2], { timeoutMs: 300_000 }));
    // Upgrade keeps the id; the sources are set again before enabling.
    const p = await pluginInspect(h, ref1);
    expect(p.Id).toBe(id);
    expect(p.PluginReference).toBe(ref2);
    await h.ok(['plugin', 'set', ref1, ...settings(h, aDirs, join(base, 'host-a', 'etc2'))]);
    await h.ok(['plugin', 'enable', '--timeout', '120', ref1], { timeoutMs: 150_000 });
    const tag = await runCommand(['nsenter', `--target=${pluginPid(id)}`, '--mount', '--', 'cat', '/opt/ballast/build-tag'], { timeoutMs: 10_000 });
    expect(tag.stdout.trim()).toBe('2');
    expect((await h.run(['--rm', '-v', `${vol('b')}:/data`, IMAGE, 'cat', '/data/msg'])).trim()).toBe('before-upgrade');
  });

  it('install from the registry on a second dockerd with --alias and settings, then a volume round trip there', async () => {
    b = await DockerHarness.start({ name: 'managed-b', dir: join(base, 'dockerd-b'), startBallast: false });
    bDirs = await hostDirs('host-b');
    await timed('plugin install from registry', () =>
      b!.ok(['plugin', 'install', '--grant-all-permissions', '--alias', 'ballast', ref2, ...settings(b!, bDirs)], { timeoutMs: 300_000 }),
    );
    const p = await pluginInspect(b, 'ballast');
    expect(p.Enabled).toBe(true);
    expect(p.PluginReference).toBe(ref2);
    await b.ok(['volume', 'create', '-d', 'ballast', '--opt', 'size=32M', vol('c')]);
    await roundTrip(b, vol('c'), 'installed-from-registry');
    expect((await b.inspectVolume(vol('c'))).Driver).toBe('ballast:latest');
    expect(existsSync(join(bDirs.loop, vol('c')))).toBe(true);
  });

  it('docker plugin rm -f on both engines leaves no plugin and no loop device of this run', async () => {
    for (const h of [b, a]) {
      if (!h) continue;
      await h.removeAllContainers();
      for (const v of (await h.docker(['volume', 'ls', '-q'])).stdout.split('\n').filter(Boolean)) await h.ok(['volume', 'rm', v]);
      for (const name of (await h.ok(['plugin', 'ls', '--format', '{{.Name}}'])).split('\n').filter(Boolean)) await h.ok(['plugin', 'rm', '-f', name]);
      expect((await h.ok(['plugin', 'ls', '-q'])).trim()).toBe('');
    }
    await waitFor(() => ourLoops().length === 0, 'the loop devices of this run to be detached', 10_000, 200);
  });
});
