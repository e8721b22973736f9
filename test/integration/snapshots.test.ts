import { execFile, execFileSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { readdir, readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { BALLAST_BIN, type BallastProcess } from '../lab/ballast.js';
import { SharedRootHosts } from '../lab/shared-root.js';
import { callOk, callPlugin } from '../helpers/plugin-client.js';
import { requireRootAndTools } from '../helpers/root.js';

// Snapshots and clones on the loop backend, for real: a daemon on a temp root, real images,
// loop devices, ext4 and fsfreeze; the CLI as an operator runs it.
requireRootAndTools('losetup', 'mkfs.ext4', 'mount', 'fsfreeze', 'xfs_io');

const LEASE = { seconds: 4, renew_every: 0.5, fence_after: 2.5, mount_wait: 2 };
const run = (...argv: string[]) => execFileSync(argv[0]!, argv.slice(1), { encoding: 'utf8', timeout: 30_000 });

describe('snapshots and clones (loop backend)', () => {
  const hosts = new SharedRootHosts('ballast-snap', LEASE);
  const host = (id: string, env: Record<string, string> = {}) => hosts.host(id, env);
  const cli = async (d: BallastProcess, ...args: string[]) => {
    try {
      const { stdout, stderr } = await promisify(execFile)(process.execPath, [BALLAST_BIN, '--config', d.configPath, ...args], { timeout: 60_000 });
      return { code: 0, stdout, stderr };
    } catch (err) {
      const e = err as { code?: number; stdout?: string; stderr?: string };
      return { code: e.code ?? -1, stdout: e.stdout ?? '', stderr: e.stderr ?? '' };
    }
  };
  const mount = async (d: BallastProcess, name: string, id = 'c1') => (await callOk(d.socket, 'VolumeDriver.Mount', { Name: name, ID: id })).Mountpoint!;
  const errOf = async (d: BallastProcess, method: string, body: object) => String((await callPlugin(d.socket, method, body)).body.Err ?? '');
  const names = async (d: BallastProcess) => ((await callOk(d.socket, 'VolumeDriver.List', {})).Volumes as { Name: string }[]).map((v) => v.Name).sort();
  const rootEntries = () => readdir(hosts.root);

  beforeEach(() => hosts.reset());
  afterEach(() => hosts.teardown());

  it('takes a snapshot of a mounted volume frozen, clones from it and from the live volume, and guards Remove', async () => {
    const a = await host('a');
    await callOk(a.socket, 'VolumeDriver.Create', { Name: 'v', Opts: { size: '64M' } });
    const mp = await mount(a, 'v');
    await writeFile(join(mp, 'before'), 'in the snapshot\n'); // not synced: the freeze flushes it

    const made = await cli(a, 'snapshot', 'create', 'v', 's1');
    expect(made).toMatchObject({ code: 0, stdout: expect.stringMatching(/^v@s1: 64 MiB ext4, made by (copy \(.+ written\)|reflink)/) });
    const thawed = (await a.logs()).filter((l) => l.message === 'filesystem thawed');
    expect(thawed).toEqual([expect.objectContaining({ volume: 'v', mountpoint: mp })]);
    await writeFile(join(mp, 'after'), 'not in the snapshot\n'); // writes go through again

    expect((await cli(a, 'snapshot', 'ls', 'v')).stdout).toMatch(/^v\s+s1\s+64 MiB\s+ext4\s+(copy|reflink)\s/m);
    await callOk(a.socket, 'VolumeDriver.Create', { Name: 'from-snap', Opts: { from: 'v@s1' } });
    await callOk(a.socket, 'VolumeDriver.Create', { Name: 'from-live', Opts: { from: 'v', size: '128M' } });
    const snapMp = await mount(a, 'from-snap');
    expect(await readFile(join(snapMp, 'before'), 'utf8')).toBe('in the snapshot\n');
    expect(existsSync(join(snapMp, 'after'))).toBe(false);
    const liveMp = await mount(a, 'from-live');
    expect(await readFile(join(liveMp, 'after'), 'utf8')).toBe('not in the snapshot\n');
    // Its own volume: a larger size grows at the first mount; writes stay its own.
    expect(Number(run('df', '--output=size', '-B1M', liveMp).split('\n')[1])).toBeGreaterThan(100);
    await writeFile(join(liveMp, 'clone-only'), 'x');
    expect(existsSync(join(mp, 'clone-only'))).toBe(false);

    for (const v of ['v', 'from-snap', 'from-live']) await callOk(a.socket, 'VolumeDriver.Unmount', { Name: v, ID: 'c1' });
    expect(await errOf(a, 'VolumeDriver.Remove', { Name: 'v' })).toMatch(/volume v has 1 snapshot\(s\) \(s1\): remove them first .*ballast volume rm --with-snapshots v/);
    expect(await names(a)).toContain('v');
    expect(await cli(a, 'snapshot', 'rm', 'v', 's1')).toMatchObject({ code: 0 });
    expect((await cli(a, 'snapshot', 'ls')).stdout.trim().split('\n')).toHaveLength(1); // the header
    await callOk(a.socket, 'VolumeDriver.Remove', { Name: 'v' });

    // --with-snapshots takes them along.
    expect(await cli(a, 'snapshot', 'create', 'from-live', 'keep')).toMatchObject({ code: 0 });
    expect((await cli(a, 'volume', 'rm', 'from-live')).stderr).toMatch(/has 1 snapshot\(s\) \(keep\)/);
    expect(await cli(a, 'volume', 'rm', '--with-snapshots', 'from-live')).toMatchObject({ code: 0 });
    expect(await names(a)).toEqual(['from-snap']);
  });

  it('snapshots a volume no host uses under its lease, and refuses one another host holds', async () => {
    const a = await host('a');
    const b = await host('b');
    await callOk(a.socket, 'VolumeDriver.Create', { Name: 'w', Opts: { size: '32M' } });
    await mount(a, 'w');
    await callOk(a.socket, 'VolumeDriver.Unmount', { Name: 'w', ID: 'c1' }); // has a filesystem; free again
    const inspect = async () => JSON.parse((await cli(b, 'volume', 'inspect', 'w')).stdout) as { status: { lease: { state: string; generation: number } } };
    const before = (await inspect()).status.lease;
    expect(await cli(b, 'snapshot', 'create', 'w', 'free')).toMatchObject({ code: 0 });
    const after = (await inspect()).status.lease;
    expect(after).toMatchObject({ state: 'free', generation: before.generation + 1 }); // taken for the copy, given back

    await mount(a, 'w');
    const refused = await cli(b, 'snapshot', 'create', 'w', 'held');
    expect(refused.code).toBe(1);
    expect(refused.stderr).toMatch(/volume w is in use on host a \(.*\): .*Take the snapshot or clone on that host/);
    expect(await errOf(b, 'VolumeDriver.Create', { Name: 'c', Opts: { from: 'w' } })).toMatch(/volume w is in use on host a/);
    expect(await names(b)).not.toContain('c');
    expect((await cli(b, 'snapshot', 'ls', 'w')).stdout).not.toMatch(/held/);
    await callOk(a.socket, 'VolumeDriver.Unmount', { Name: 'w', ID: 'c1' });
  });

  it('refuses bad input with a clear error and leaves nothing half-made', async () => {
    const a = await host('a');
    await callOk(a.socket, 'VolumeDriver.Create', { Name: 'v', Opts: { size: '32M' } });
    const cases: [Record<string, string>, RegExp][] = [
      [{ from: 'missing' }, /option from=missing: volume missing does not exist/],
      [{ from: 'v@nosnap' }, /volume v has no snapshot nosnap/],
      [{ from: 'v@../x' }, /option from=v@\.\.\/x: expected VOLUME or VOLUME@SNAPSHOT/],
      [{ from: 'a@b@c' }, /expected VOLUME or VOLUME@SNAPSHOT/],
      [{ from: 'v', fstype: 'xfs' }, /option fstype=xfs: a clone keeps its source's filesystem \(v is ext4\)/],
      [{ from: 'v', size: '16M' }, /a clone cannot be smaller than its source v \(32 MiB\)/],
      [{ from: 'v', mkfsopts: '-b 1024' }, /option mkfsopts: a clone of v is not formatted/],
    ];
    for (const [opts, message] of cases) expect(await errOf(a, 'VolumeDriver.Create', { Name: 'clone', Opts: opts })).toMatch(message);
    for (const name of ['../etc', 'a/b', '.hidden', '']) {
      expect((await cli(a, 'snapshot', 'create', 'v', name)).stderr).toMatch(/snapshot name .*: expected letters, digits|usage: ballast snapshot create/);
    }
    expect((await cli(a, 'snapshot', 'rm', 'v', 'nosnap')).stderr).toMatch(/volume v has no snapshot nosnap/);
    expect((await cli(a, 'snapshot', 'create', 'nosuch', 's')).stderr).toMatch(/volume nosuch does not exist/);
    expect(await names(a)).toEqual(['v']);
    expect((await rootEntries()).filter((e) => !['.hosts', '.rev'].includes(e))).toEqual(['v']);
    expect(await readdir(join(hosts.root, 'v'))).not.toContain('snapshots');
  });

  it('thaws at the next start a filesystem left frozen by a daemon that died mid-snapshot', async () => {
    const a = await host('a', { BALLAST_FAILPOINT_CRASH_AFTER: 'freeze' });
    await callOk(a.socket, 'VolumeDriver.Create', { Name: 'v', Opts: { size: '32M' } });
    const mp = await mount(a, 'v');
    expect((await cli(a, 'snapshot', 'create', 'v', 's')).code).toBe(1); // the daemon died with v frozen
    // A write to a frozen filesystem waits (uninterruptibly) until it is thawed.
    let written = false;
    const write = promisify(execFile)('sh', ['-c', `echo x > ${join(mp, 'while-frozen')}`], { timeout: 60_000 }).then(() => (written = true));
    await new Promise((r) => setTimeout(r, 1_000));
    expect(written).toBe(false);
    await a.stopWatchdog();
    await a.start();
    await write;
    expect((await a.logs()).some((l) => l.message === 'thawed a filesystem left frozen by a snapshot the daemon did not finish')).toBe(true);
    expect(await readFile(join(mp, 'while-frozen'), 'utf8')).toBe('x\n');
    expect(await readdir(join(a.stateDir, 'frozen'))).toEqual([]);
    expect((await readdir(join(hosts.root, 'v', 'snapshots')).catch(() => [])).filter((e) => !e.startsWith('.'))).toEqual([]);
    await callOk(a.socket, 'VolumeDriver.Unmount', { Name: 'v', ID: 'c1' });
  });
});
