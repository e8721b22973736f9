import { execFile } from 'node:child_process';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { BALLAST_BIN } from '../lab/ballast.js';

// The built CLI (`npm run build` first): what scripts/start.sh asks before it installs a
// transport's tools, and what `config check` says it derived.

function ballast(...args: string[]): Promise<{ code: number; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    execFile(process.execPath, [BALLAST_BIN, ...args], { timeout: 20_000, encoding: 'utf8' }, (err, stdout, stderr) => {
      resolve({ code: err ? (typeof err.code === 'number' ? err.code : -1) : 0, stdout, stderr });
    });
  });
}

describe('ballast config', () => {
  let dir: string;
  const configFile = async (document: object) => {
    const file = join(dir, `config-${Math.random().toString(36).slice(2)}.json`); // YAML is a superset of JSON
    await writeFile(file, JSON.stringify(document));
    return file;
  };
  beforeAll(async () => {
    dir = await mkdtemp(join(tmpdir(), 'ballast-cli-config-'));
  });
  afterAll(async () => {
    await rm(dir, { recursive: true, force: true });
  });

  it('config packages: the runtime only for a loop configuration, the iSCSI tools once a profile needs them', async () => {
    const loop = await ballast('--config', await configFile({}), 'config', 'packages');
    expect(loop).toMatchObject({ code: 0, stderr: '' });
    expect(loop.stdout.trim().split('\n')).toEqual(['util-linux', 'mount', 'e2fsprogs', 'xfsprogs', 'cryptsetup-bin']);
    const iscsi = await configFile({
      backends: { iscsi: { portals: ['10.0.0.5:3260'], array: { ssh: { host: 'array1', private_key_file: '/k', host_key_sha256: `SHA256:${'A'.repeat(43)}` } } } },
      profiles: { default: { backend: 'loop' }, gold: { backend: 'iscsi' } },
    });
    const withIscsi = await ballast('--config', iscsi, 'config', 'packages');
    expect(withIscsi.stdout.trim().split('\n')).toEqual(['util-linux', 'mount', 'e2fsprogs', 'xfsprogs', 'cryptsetup-bin', 'open-iscsi', 'multipath-tools', 'sg3-utils']);
    const all = await ballast('--config', await configFile({}), 'config', 'packages', '--all');
    expect(all.stdout.trim().split('\n')).toEqual(expect.arrayContaining(['open-iscsi', 'multipath-tools', 'sg3-utils', 'nvme-cli']));
  });

  it('config check: lease.seconds alone is accepted and the derived timings are said', async () => {
    const result = await ballast('--config', await configFile({ lease: { seconds: 10 } }), 'config', 'check');
    expect(result.code).toBe(0);
    expect(JSON.parse(result.stdout).lease).toMatchObject({ seconds: 10, fence_after: 6, renew_every: 2 });
    expect(result.stderr).toMatch(/^ballast: derived lease\.fence_after = 6 .*\nballast: derived lease\.renew_every = 2 /);
  });

  it('config check: contradicting timings are refused with the rule and nothing derived hides it', async () => {
    const result = await ballast('--config', await configFile({ lease: { seconds: 10, fence_after: 12 } }), 'config', 'check');
    expect(result.code).toBe(1);
    expect(result.stderr).toMatch(/lease: expected renew_every \* 2 <= fence_after <= seconds - 1/);
  });
});
