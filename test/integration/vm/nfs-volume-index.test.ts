import { mkdir, mkdtemp, readdir, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Ganesha, requireGanesha } from '../../lab/ganesha.js';
import { requireVmLab } from '../../lab/vm.js';
import { runScenario, scenarioScript, type Results } from '../../lab/vm-scenario.js';

// The volume index (src/volumes/volume-index.ts) of volume-index.test.ts, on a real NFS loop root:
// two VMs are two hosts with two kernels, each running ballast serve on one export of a private
// nfs-ganesha (NFSv4.2, hard, lookupcache=positive; the config of nfs-takeover's scripts). Host A
// changes volumes; host B answers Get and List from its index, which learns of A's changes only
// through its NFS client's readdirs of the root and of the change markers (ROOT/.rev), so this
// proves those readdirs are fresh enough. One run of both VMs (scripts/nfs-index-vm{1,2}.sh),
// coordinated through signal files in a shared directory. Needs root, the VM lab and nfs-ganesha.

const RENEW_EVERY_MS = 1_000; // lease.renew_every in the scenarios
/**
 * renew_every, plus a margin for B's polling round: the daemon answers in ms, but a curl in a TCG
 * VM costs 0.3 s and, with the other VM busy, up to 3 s (seen). What this bounds away is NFS
 * directory caching (acdirmin/acdirmax: 30-60 s on a default mount) and an index that misses a
 * marker (never).
 */
const BOUND_MS = RENEW_EVERY_MS + 3_000;

interface GetReply {
  Err?: string;
  Volume?: { Name: string; Status?: { size?: string; lease?: { state?: string; holder?: string } } };
}

describe('two hosts (two VMs) on one NFS loop root: the volume index sees the other host\'s changes', () => {
  let a: Results = {};
  let b: Results = {};
  const out: Record<string, string> = {};
  const reply = (key: string) => JSON.parse(out[key] ?? '{}') as GetReply;
  const names = (key: string) => ((JSON.parse(out[key] ?? '{}') as { Volumes?: Array<{ Name: string }> }).Volumes ?? []).map((v) => v.Name).sort();
  const delay = (change: string) => Number(b[`${change}_ms`] ?? NaN); // "never" is NaN too

  beforeAll(async () => {
    requireVmLab();
    requireGanesha();
    const ganesha = await Ganesha.start();
    const share = await mkdtemp(join(tmpdir(), 'ballast-nfs-index-share-'));
    let vm1Pid: number | undefined;
    let vm2Pid: number | undefined;
    try {
      await mkdir(join(share, 'out'));
      const env = { SHARE: share, NFS_PORT: String(ganesha.port) };
      const common = { shareDir: share, network: true, memoryMb: 1024, timeoutMs: 400_000, env };
      const [r1, r2] = await Promise.all([
        runScenario(scenarioScript('nfs-index-vm1'), { ...common, name: 'vm1', onStart: (pid) => (vm1Pid = pid) }).finally(() => (vm1Pid = undefined)),
        runScenario(scenarioScript('nfs-index-vm2'), { ...common, name: 'vm2', onStart: (pid) => (vm2Pid = pid) }).finally(() => (vm2Pid = undefined)),
      ]);
      a = r1.results;
      b = r2.results;
      for (const f of await readdir(join(share, 'out'))) out[f] = (await readFile(join(share, 'out', f), 'utf8')).trim();
      console.log(
        [
          `NFS volume index (renew_every ${RENEW_EVERY_MS} ms, bound ${BOUND_MS} ms): host B's answers showed host A's change after (ms from A's signal)`,
          `  a Get of a name B never saw (c2, just created): answered in ${b.fresh_get_ms} ms`,
          ...['created', 'grown', 'taken', 'released', 'removed'].map((c) => `  ${c.padEnd(8)} ${b[`${c}_ms`]}${b[`${c}_round_ms`] ? ` (the polling round that showed it took ${b[`${c}_round_ms`]} ms)` : ''}`),
        ].join('\n'),
      );
    } finally {
      // On failure a VM may still run: stop both (qemu's own PIDs; harmless if gone).
      for (const pid of [vm1Pid, vm2Pid]) if (pid) try { process.kill(pid, 'SIGKILL'); } catch { /* exited */ }
      await ganesha.stop();
      await rm(share, { recursive: true, force: true });
    }
  }, 480_000);

  it('before the changes, B\'s index holds A\'s volumes as created', () => {
    expect(names('b-before-list')).toEqual(['g', 'm', 'r']);
    expect(reply('b-before-get-g').Volume?.Status?.size).toBe('16 MiB');
    expect(reply('b-before-get-m').Volume?.Status?.lease?.state).toBe('free');
    expect(reply('b-before-get-r').Volume?.Name).toBe('r');
  });

  it('a Get of a name B never saw finds a volume A just created, at once', () => {
    expect(reply('b-fresh-get-c2')).toMatchObject({ Err: '', Volume: { Name: 'c2', Status: { size: '16 MiB' } } });
  });

  it('List shows volumes A created within the bound', () => {
    expect(names('b-created-list')).toEqual(['c1', 'c2', 'g', 'm', 'r']);
    expect(delay('created')).toBeLessThanOrEqual(BOUND_MS);
  });

  it('Get shows a volume A grew within the bound', () => {
    expect(reply('b-grown-get-g').Volume?.Status?.size).toBe('48 MiB');
    expect(delay('grown')).toBeLessThanOrEqual(BOUND_MS);
  });

  it('Get names A as the holder once A mounted the volume, and the lease free once it unmounted, each within the bound', () => {
    expect(reply('b-taken-get-m').Volume?.Status?.lease).toMatchObject({ state: 'held', holder: expect.stringMatching(/^host vm1 \(/) });
    expect(delay('taken')).toBeLessThanOrEqual(BOUND_MS);
    expect(reply('b-released-get-m').Volume?.Status?.lease?.state).toBe('free');
    expect(delay('released')).toBeLessThanOrEqual(BOUND_MS);
    expect([a.a_loops_end, a.a_mounts_end]).toEqual(['0', '0']); // A's Unmount left nothing attached
  });

  it('Get and List show a volume A removed as gone within the bound', () => {
    expect(reply('b-removed-get-r').Err).toMatch(/does not exist/);
    expect(names('b-removed-list')).toEqual(['c1', 'c2', 'g', 'm']);
    expect(delay('removed')).toBeLessThanOrEqual(BOUND_MS);
  });
});
