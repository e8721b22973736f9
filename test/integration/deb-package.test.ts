import { existsSync, mkdtempSync, readFileSync, readlinkSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { Chroot } from '../lab/chroot.js';
import { REPO_ROOT } from '../lab/ballast.js';
import { describeResult, GiveUp, runCommand, stopChild, waitFor, type Background } from '../lab/command.js';
import { callOk } from '../helpers/plugin-client.js';
import { requireRootAndTools } from '../helpers/root.js';

// scripts/build-deb.sh for real: the .deb it builds is installed with dpkg -i, offline, in a
// clean Debian bookworm root (debootstrap minbase), run there, then removed and purged.
requireRootAndTools('dpkg-deb', 'dpkg-shlibdeps', 'debootstrap', 'systemd-analyze', 'chroot', 'npm', 'losetup');

// The package's Depends (util-linux, mount, e2fsprogs) and Recommends (xfsprogs), so dpkg -i
// needs no network; systemd so that the unit's targets exist and postinst's enable is real.
const ROOTFS_PACKAGES = 'util-linux,mount,e2fsprogs,xfsprogs,systemd';
const VERSION = (JSON.parse(readFileSync(join(REPO_ROOT, 'package.json'), 'utf8')) as { version: string }).version;
const DEB_NAME = `ballast_${VERSION.replace(/-/g, '~')}_amd64.deb`;

/** Turns the example's "#key: value" lines (a setting at its default) into settings; prose stays. */
const uncomment = (yaml: string) => yaml.replace(/^#((?: {2})*[a-z_]+:)/gm, '$1');

/** The unit's directives as [key, value] pairs, sections ignored. */
function directives(unit: string): [string, string][] {
  return unit
    .split('\n')
    .filter((line) => /^[A-Za-z]+=/.test(line))
    .map((line) => [line.slice(0, line.indexOf('=')), line.slice(line.indexOf('=') + 1)]);
}

describe('the Debian package', () => {
  let outDir: string;
  let deb: string;
  let chroot: Chroot | undefined;
  let buildMs = 0;
  const inRoot = (path: string) => chroot!.path(path);

  beforeAll(async () => {
    outDir = mkdtempSync('/var/tmp/ballast-deb-out-');
    // Building (CPU) and unpacking the root (disk) overlap; whichever fails, the other is kept for afterAll.
    const [built, root] = await Promise.allSettled([
      runCommand(['bash', join(REPO_ROOT, 'scripts/build-deb.sh'), outDir], { timeoutMs: 600_000 }),
      Chroot.create(ROOTFS_PACKAGES),
    ]);
    if (root.status === 'fulfilled') chroot = root.value;
    if (built.status === 'rejected') throw built.reason;
    if (root.status === 'rejected') throw root.reason;
    if (built.value.code !== 0) throw new Error(`build-deb.sh failed\n${describeResult(built.value)}`);
    buildMs = built.value.ms;
    deb = built.value.stdout.trim().split('\n').pop()!;
  }, 900_000);

  afterAll(() => {
    try {
      chroot?.remove();
    } finally {
      rmSync(outDir, { recursive: true, force: true });
    }
  });

  it('builds ballast_<version>_amd64.deb: its files, a conffile, Depends on what the loop backend runs', async () => {
    expect(deb).toBe(join(outDir, DEB_NAME));
    const field = async (name: string) => (await runCommand(['dpkg-deb', '-f', deb, name])).stdout.trim();
    expect(await field('Package')).toBe('ballast');
    expect(await field('Version')).toBe(VERSION.replace(/-/g, '~'));
    expect(await field('Architecture')).toBe('amd64');
    const depends = (await field('Depends')).split(/,\s*/).map((d) => d.split(' ')[0]);
    expect(depends).toEqual(expect.arrayContaining(['libc6', 'libstdc++6', 'libgcc-s1', 'util-linux', 'mount', 'e2fsprogs']));
    expect(depends).not.toContain('nodejs'); // node ships inside: Debian 12's nodejs is 18
    expect(await field('Recommends')).toBe('xfsprogs');
    expect(await field('Suggests')).toBe('open-iscsi, multipath-tools, sg3-utils, nvme-cli');
    expect((await runCommand(['dpkg-deb', '-I', deb, 'conffiles'])).stdout.trim()).toBe('/etc/ballast/config.yml');

    const listing = (await runCommand(['dpkg-deb', '-c', deb])).stdout.trim().split('\n');
    const paths = listing.map((line) => line.split(/\s+/).slice(5).join(' ').replace(/^\./, '').split(' -> ')[0] ?? '');
    expect(paths).toEqual(
      expect.arrayContaining([
        '/usr/bin/ballast',
        '/usr/lib/ballast/bin/node',
        '/usr/lib/ballast/package.json',
        '/usr/lib/ballast/dist/cli/main.js',
        '/usr/lib/ballast/node_modules/zod/package.json',
        '/usr/lib/ballast/node_modules/ssh2/package.json',
        '/etc/ballast/config.yml',
        '/lib/systemd/system/ballast.service',
      ]),
    );
    // Production modules only (no devDependency that nothing else needs), no source maps; all owned by root.
    expect(paths.filter((p) => /\/node_modules\/(typescript|jest|ts-jest|supertest|fast-check)\//.test(p))).toEqual([]);
    expect(paths.filter((p) => p.startsWith('/usr/lib/ballast/dist/') && p.endsWith('.map'))).toEqual([]);
    expect(listing.filter((line) => line.split(/\s+/)[1] !== 'root/root')).toEqual([]);
    const size = (await runCommand(['stat', '-c', '%s', deb])).stdout.trim();
    process.stderr.write(`deb-package: ${DEB_NAME} ${(Number(size) / 1e6).toFixed(1)} MB, built in ${buildMs} ms\n`);
  });

  it('installs offline with dpkg -i in a clean bookworm root, enabled for the next boot, nothing started', async () => {
    expect(existsSync(inRoot('usr/bin/node'))).toBe(false); // the root has no node of its own
    writeFileSync(inRoot(`tmp/${DEB_NAME}`), readFileSync(deb));
    const started = Date.now();
    const installed = await chroot!.ok(['dpkg', '-i', `/tmp/${DEB_NAME}`], 120_000);
    process.stderr.write(`deb-package: dpkg -i in ${Date.now() - started} ms\n`);
    expect(installed.stdout).toMatch(/Setting up ballast/);
    expect((await chroot!.ok(['dpkg-query', '-W', '-f', '${Status}', 'ballast'])).stdout).toBe('install ok installed');
    // deb-systemd-helper enabled it without a running systemd; postinst started nothing.
    expect(readlinkSync(inRoot('etc/systemd/system/multi-user.target.wants/ballast.service'))).toBe('/lib/systemd/system/ballast.service');
    expect(existsSync(inRoot('run/docker/plugins/ballast.sock'))).toBe(false);
    expect(existsSync(inRoot('var/lib/ballast'))).toBe(false);

    const listed = (await chroot!.ok(['dpkg', '-L', 'ballast'])).stdout.split('\n');
    expect(listed).toEqual(expect.arrayContaining(['/usr/bin/ballast', '/lib/systemd/system/ballast.service', '/etc/ballast/config.yml']));
  });

  it('runs on the node it ships: ballast --help prints the usage and exits 0', async () => {
    const help = await chroot!.run(['ballast', '--help']);
    expect(help.code).toBe(0);
    expect(help.stdout).toMatch(/^usage: ballast \[--config FILE\] COMMAND/);
    expect(help.stdout).toContain('config check');
    const node = await chroot!.ok(['/usr/lib/ballast/bin/node', '-p', 'process.versions.node']);
    expect(Number(node.stdout.split('.')[0])).toBeGreaterThanOrEqual(20);
  });

  it('ballast config check reads /etc/ballast/config.yml: the loop default, and every commented setting is its default', async () => {
    const check = async (...args: string[]) => JSON.parse((await chroot!.ok(['ballast', ...args, 'config', 'check'])).stdout) as Record<string, any>;
    writeFileSync(inRoot('tmp/empty.yml'), '{}\n');
    const embedded = await check('--config', '/tmp/empty.yml');
    const example = await check();
    expect(example).toEqual(embedded);
    expect(example.profiles).toEqual({ default: { backend: 'loop' } });
    expect(example.backends.loop.root).toBe('/var/lib/ballast/loop');

    // The same file with its "#key: value" lines made real: the strict loader accepts every
    // key, and the values shown are the defaults.
    const text = readFileSync(inRoot('etc/ballast/config.yml'), 'utf8');
    const full = uncomment(text);
    expect(full.split('\n').filter((line, i) => line !== text.split('\n')[i]).length).toBeGreaterThanOrEqual(20);
    writeFileSync(inRoot('tmp/uncommented.yml'), full);
    expect(await check('--config', '/tmp/uncommented.yml')).toEqual(embedded);

    // A local change to the conffile is what `ballast` (no --config) reads; dpkg -r keeps it below.
    writeFileSync(inRoot('etc/ballast/config.yml'), `${text}log: {level: debug}\n`);
    expect((await check()).log).toEqual({ level: 'debug' });
  });

  it('the installed daemon serves: a real loop volume is created, mounted and removed inside the root', async () => {
    writeFileSync(
      inRoot('tmp/serve.yml'),
      'socket: /tmp/t/ballast.sock\nstate_dir: /tmp/t/state\nmount_root: /tmp/t/mounts\nbackends: {loop: {root: /tmp/t/loop}}\nprofiles: {default: {backend: loop}}\n',
    );
    let daemon: Background | undefined;
    try {
      daemon = chroot!.start(['ballast', '--config', '/tmp/serve.yml', 'serve']);
      const socket = inRoot('tmp/t/ballast.sock');
      const running = daemon;
      await waitFor(async () => {
        if (!running.running()) throw new GiveUp(describeResult(await running.done));
        return existsSync(socket);
      }, 'the packaged daemon to listen', 30_000);
      expect(await callOk(socket, 'Plugin.Activate')).toEqual({ Implements: ['VolumeDriver'] });
      await callOk(socket, 'VolumeDriver.Create', { Name: 'pkg', Opts: { size: '64M' } });
      const mountpoint = (await callOk(socket, 'VolumeDriver.Mount', { Name: 'pkg', ID: 'c1' })).Mountpoint!;
      expect(mountpoint).toBe('/tmp/t/mounts/pkg');
      writeFileSync(inRoot('tmp/t/mounts/pkg/hello'), 'from the packaged daemon');
      expect((await chroot!.ok(['findmnt', '-n', '-o', 'FSTYPE', mountpoint])).stdout.trim()).toBe('ext4');
      await callOk(socket, 'VolumeDriver.Unmount', { Name: 'pkg', ID: 'c1' });
      await callOk(socket, 'VolumeDriver.Remove', { Name: 'pkg' });
      expect(existsSync(inRoot('tmp/t/mounts/pkg/hello'))).toBe(false);
    } finally {
      await stopChild(daemon?.child, 'SIGTERM', 10_000);
    }
    expect((await daemon!.done).code).toBe(0); // SIGTERM: drained and exited cleanly
  });

  it('the unit passes systemd-analyze verify in the root where it is installed; broken copies fail it', async () => {
    const verify = (unit: string) => runCommand(['systemd-analyze', 'verify', `--root=${chroot!.dir}`, unit], { timeoutMs: 60_000 });
    const good = await verify('ballast.service');
    // verify exits 0 on parse warnings (unknown keys, bad values): those must not appear either.
    expect({ code: good.code, stderr: good.stderr.trim() }).toEqual({ code: 0, stderr: '' });

    const unit = readFileSync(inRoot('lib/systemd/system/ballast.service'), 'utf8');
    const broken = inRoot('etc/systemd/system/ballast-broken.service');
    const breakages: [string, (u: string) => string, RegExp][] = [
      ['a missing ExecStart binary', (u) => u.replace('ExecStart=/usr/bin/ballast ', 'ExecStart=/usr/bin/ballast-missing '), /not executable/],
      ['a misspelt section', (u) => u.replace('[Service]', '[Servic]'), /Unknown section 'Servic'/],
      ['a misspelt key', (u) => u.replace('KillMode=process', 'KilMode=process'), /Unknown key 'KilMode'/],
    ];
    try {
      for (const [what, breakIt, message] of breakages) {
        expect(breakIt(unit)).not.toBe(unit);
        writeFileSync(broken, breakIt(unit));
        const result = await verify('ballast-broken.service');
        expect({ what, failed: result.code !== 0 || result.stderr.trim() !== '', stderr: result.stderr }).toEqual({ what, failed: true, stderr: expect.stringMatching(message) });
      }
    } finally {
      rmSync(broken, { force: true });
    }
  });

  it('the unit: ballast serve before dockerd, only the daemon signalled, nothing unmounted, no mount namespace', () => {
    const unit = directives(readFileSync(inRoot('lib/systemd/system/ballast.service'), 'utf8'));
    const get = (key: string) => unit.filter(([k]) => k === key).map(([, v]) => v);
    expect(get('ExecStart')).toEqual(['/usr/bin/ballast serve']);
    expect(get('KillMode')).toEqual(['process']); // the fence-watchdog child outlives stop and restart
    expect(get('Restart')).toEqual(['on-failure']);
    expect(get('Environment')).toEqual(['UV_THREADPOOL_SIZE=16']);
    expect(get('Before')).toEqual(['docker.service']);
    expect(get('After')).toEqual(['network-online.target local-fs.target']);
    expect(get('Wants')).toEqual(['network-online.target']);
    expect(get('WantedBy')).toEqual(['multi-user.target']);
    const forbidden = ['ExecStop', 'ExecStopPost', 'PrivateTmp', 'PrivateDevices', 'PrivateMounts', 'ProtectSystem', 'ProtectHome', 'MountFlags', 'ReadOnlyPaths', 'ReadWritePaths', 'InaccessiblePaths', 'TemporaryFileSystem', 'RootDirectory'];
    expect(unit.filter(([k]) => forbidden.includes(k))).toEqual([]);
  });

  it('dpkg -r removes the files but keeps the changed conffile; dpkg -P removes it and the unit state', async () => {
    await chroot!.ok(['dpkg', '-r', 'ballast']);
    for (const gone of ['usr/bin/ballast', 'usr/lib/ballast', 'lib/systemd/system/ballast.service']) expect(existsSync(inRoot(gone))).toBe(false);
    expect(readFileSync(inRoot('etc/ballast/config.yml'), 'utf8')).toMatch(/log: \{level: debug\}\n$/);
    expect((await chroot!.ok(['dpkg-query', '-W', '-f', '${Status}', 'ballast'])).stdout).toBe('deinstall ok config-files');

    await chroot!.ok(['dpkg', '-P', 'ballast']);
    expect(existsSync(inRoot('etc/ballast'))).toBe(false);
    const unitState = await chroot!.ok(['find', '/etc/systemd', '-name', 'ballast*']);
    expect(unitState.stdout.trim()).toBe('');
    expect((await chroot!.run(['dpkg-query', '-W', 'ballast'])).code).not.toBe(0);
  });
});
