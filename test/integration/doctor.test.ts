import { execFile, execFileSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { mkdir, mkdtemp, readdir, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { BALLAST_BIN } from '../lab/ballast.js';
import { cleanUpUnder, mountsUnder } from '../helpers/cleanup.js';
import { requireRootAndTools } from '../helpers/root.js';

// The built CLI (`npm run build` first) against this real host: real /dev, /sys, /proc, PATH,
// real file writes. Needs root (tmpfs mount, unshare); fails, never skips, without it.
requireRootAndTools('unshare', 'mount', 'umount', 'losetup', 'blkid', 'fsck', 'mkfs.ext4', 'mkfs.xfs', 'iscsiadm', 'iscsid');

interface Run {
  code: number;
  lines: string[];
}

function doctor(configFile: string, options: { prefix?: string[]; env?: NodeJS.ProcessEnv } = {}): Promise<Run> {
  const argv = [...(options.prefix ?? []), process.execPath, BALLAST_BIN, '--config', configFile, 'doctor'];
  return new Promise((resolve, reject) => {
    execFile(argv[0]!, argv.slice(1), { env: options.env ?? process.env, timeout: 20_000, encoding: 'utf8' }, (err, stdout, stderr) => {
      const code = err ? (typeof err.code === 'number' ? err.code : -1) : 0;
      if (code !== 0 && code !== 1) return reject(new Error(`doctor exited ${String(err?.code)} (${err?.signal ?? ''}): ${stderr}${stdout}`));
      resolve({ code, lines: stdout.trim().split('\n') });
    });
  });
}

const problemsOf = (run: Run) => run.lines.filter((l) => l.startsWith('problem: '));

describe('ballast doctor on this host', () => {
  let dir: string;
  // Nothing answers here: dockerd is "not running" whatever else runs on the machine.
  const docker = () => ({ socket: join(dir, 'no-dockerd.sock') });
  // A name in dockerd's plugin directory that nothing serves: discoverable, never created.
  const socket = `/run/docker/plugins/ballast-doctor-test-${process.pid}.sock`;
  const base = () => ({ socket, state_dir: join(dir, 'state'), mount_root: join(dir, 'mounts'), docker: docker() });
  const configFile = async (name: string, config: object) => {
    const file = join(dir, `${name}.json`); // YAML is a superset of JSON
    await writeFile(file, JSON.stringify(config));
    return file;
  };

  beforeAll(async () => {
    if (!existsSync(BALLAST_BIN)) throw new Error(`${BALLAST_BIN} is missing: run 'npm run build' first`);
    dir = await mkdtemp(join(tmpdir(), 'ballast-doctor-'));
  });

  afterAll(async () => {
    const left = cleanUpUnder(dir);
    await rm(dir, { recursive: true, force: true });
    expect(left.loops).toEqual([]);
  });

  it('passes a loop-only configuration on temp dirs: exit 0, no problem line, nothing left in them', async () => {
    await mkdir(join(dir, 'state'));
    const started = Date.now();
    const run = await doctor(await configFile('loop', { ...base(), backends: { loop: { root: join(dir, 'loop') } } }));
    expect(problemsOf(run)).toEqual([]);
    expect(run.code).toBe(0);
    expect(run.lines).toContain('ok: kernel: /dev/loop-control is present');
    expect(run.lines).toContain(`ok: dirs: ${join(dir, 'state')} is writable`);
    expect(run.lines).toContain(`info: docker: dockerd is not running (nothing answers on ${docker().socket}, the setting docker.socket): not checked whether it sees the plugin; start dockerd before using volumes`);
    expect(run.lines.at(-1)).toBe('no problems found');
    expect(await readdir(join(dir, 'state'))).toEqual([]); // the write probe removed its file
    expect(Date.now() - started).toBeLessThan(10_000);
  });

  it('fails an iscsi profile where iscsid does not run, naming iscsid and how to start it', async () => {
    const file = await configFile('iscsi', {
      ...base(),
      backends: { iscsi: { portals: ['127.0.0.1:3260'], array: { ssh: { host: '127.0.0.1', private_key_file: '/nonexistent/key' } } } },
      profiles: { default: { backend: 'loop' }, gold: { backend: 'iscsi' } },
    });
    // Other tests start private iscsid's on this machine. In a new PID namespace with its own
    // /proc, doctor sees no process but its own; in a new network namespace, /proc/net/unix shows
    // no iscsid control socket (@ISCSIADM_ABSTRACT_NAMESPACE) either. So iscsid is not running,
    // whatever else runs here, and nothing outside is touched.
    const run = await doctor(file, { prefix: ['unshare', '--pid', '--net', '--fork', '--mount-proc'] });
    expect(run.code).toBe(1);
    expect(problemsOf(run)).toContainEqual('problem: daemons: iscsid is not running (needed for iSCSI logins): start it: systemctl enable --now iscsid (without systemd: run `iscsid`)');
    expect(run.lines.at(-1)).toMatch(/^\d+ problems? found$/);
  });

  it('finds no clock skew on a shared loop root on a tmpfs, and leaves it empty', async () => {
    const root = join(dir, 'shared');
    await mkdir(root);
    execFileSync('mount', ['-t', 'tmpfs', '-o', 'size=4m', 'ballast-doctor', root]);
    try {
      const run = await doctor(await configFile('shared', { ...base(), backends: { loop: { root, shared: true } } }));
      expect(problemsOf(run)).toEqual([]);
      expect(run.code).toBe(0);
      expect(run.lines).toContainEqual(expect.stringMatching(new RegExp(`^ok: clock: shared root ${root} \\(backends.loop.root\\): file times agree with this host's clock \\(skew 0.0 s\\)$`)));
      expect(run.lines).toContainEqual(expect.stringMatching(new RegExp(`^info: mounts: fence on ${root}: shutdown: .* on tmpfs`)));
      expect(await readdir(root)).toEqual([]);
    } finally {
      execFileSync('umount', [root]);
    }
    expect(mountsUnder(dir)).toEqual([]);
  });

  it('names each missing tool and its Debian package when PATH lacks them', async () => {
    const file = await configFile('tools', {
      ...base(),
      backends: {
        iscsi: { portals: ['127.0.0.1:3260'], array: { ssh: { host: '127.0.0.1', private_key_file: '/nonexistent/key' } } },
        powerflex: { url: 'https://127.0.0.1', user: 'u', password_file: '/nonexistent/p', protection_domain: 'pd', storage_pool: 'sp', metadata_root: join(dir, 'pf') },
      },
      profiles: { default: { backend: 'loop' }, gold: { backend: 'iscsi' }, pf: { backend: 'powerflex' } },
    });
    const emptyBin = join(dir, 'empty-bin');
    await mkdir(emptyBin, { recursive: true });
    const run = await doctor(file, { env: { ...process.env, PATH: emptyBin } });
    expect(run.code).toBe(1);
    const missing = problemsOf(run).filter((l) => l.startsWith('problem: tools: '));
    for (const [tool, pkg] of [['iscsiadm', 'open-iscsi'], ['multipathd', 'multipath-tools'], ['nvme', 'nvme-cli'], ['sg_persist', 'sg3-utils'], ['mkfs.xfs', 'xfsprogs'], ['mkfs.ext4', 'e2fsprogs'], ['losetup', 'mount']]) {
      expect(missing).toContainEqual(expect.stringMatching(new RegExp(`^problem: tools: ${tool!.replace('.', '\\.')} is not on PATH \\(needed for [^)]*\\): install it: apt-get install -y ${pkg}$`)));
    }
  });
});
