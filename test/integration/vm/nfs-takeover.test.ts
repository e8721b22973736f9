import { spawnSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { createReadStream, existsSync, readFileSync, statSync } from 'node:fs';
import { mkdir, mkdtemp, readdir, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Ganesha, requireGanesha } from '../../lab/ganesha.js';
import { requireVmLab } from '../../lab/vm.js';
import { runScenario, scenarioScript, waitForVmFile, type Results } from '../../lab/vm-scenario.js';

// Two VMs are two hosts with two kernels; the shared loop root is a directory on a private
// nfs-ganesha on this host (NFSv4.2, hard, lookupcache=positive; the VMs reach it as 10.0.2.2).
// The fence under test is the NFS server's: each holder attaches its image from a file that holds
// an exclusive lock (an NFSv4 lock), which the server takes away from a host it stopped hearing
// from, refusing what that host had queued. See /work/shared/research/nfs-lab.md.
//
// One run of both VMs (scripts/nfs-takeover-vm{1,2}.sh), driven from here through signal files in
// a shared directory: A) host 1's daemon is killed (-9, volume k9), its kernel and network up;
// B) host 1 is cut off from the NFS server while writing to v. (A daemon stopped with SIGSTOP on
// NFS is among nfs-random-faults' steps.)
// Needs root, the VM lab, nfs-ganesha (+ -vfs) and nfs-common.

const LEASE_SECONDS = 12; // lease.seconds in the scenarios (fence_after 6, renew_every 1)
const FENCE_AFTER_SECONDS = 6;
const MOUNT_WAIT_PART_A = 20; // host 2's lease.mount_wait in part A
const GANESHA_LEASE_SECONDS = 15;

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

function sha256(path: string): Promise<string> {
  return new Promise((resolve, reject) => {
    const hash = createHash('sha256');
    createReadStream(path).on('data', (d) => hash.update(d)).on('end', () => resolve(hash.digest('hex'))).on('error', reject);
  });
}

/** The 4 KiB blocks in which two images differ (a diagnostic: ext4's superblock is block 0). */
function changedBlocks(a: Buffer, b: Buffer): number[] {
  const changed: number[] = [];
  for (let off = 0; off < Math.max(a.length, b.length); off += 4096) {
    if (Buffer.compare(a.subarray(off, off + 4096), b.subarray(off, off + 4096)) !== 0) changed.push(off / 4096);
  }
  return changed;
}

/**
 * The locks held on a file of this host's filesystem, as /proc/locks shows them: ganesha's FSAL
 * VFS takes its clients' NFSv4 locks as OFD locks on the exported file (if it does not, this
 * stays at 0 and only the console says so). A diagnostic: OFD locks name no owner.
 */
function locksOn(path: string): number {
  if (!existsSync(path)) return 0;
  const st = statSync(path);
  const major = (st.dev >> 8) & 0xfff;
  const minor = (st.dev & 0xff) | ((st.dev >> 12) & 0xfff00);
  const id = `${major.toString(16).padStart(2, '0')}:${minor.toString(16).padStart(2, '0')}:${st.ino} `;
  return readFileSync('/proc/locks', 'utf8').split('\n').filter((l) => l.includes(` ${id}`)).length;
}

describe('two hosts (two VMs) on one NFS loop root: the NFSv4 image lock fences a former holder', () => {
  let vm1: Results = {};
  let vm2: Results = {};
  const out: Record<string, string> = {};
  const sha: Record<string, string> = {};
  const at: Record<string, number> = {}; // host wall-clock ms when a signal file appeared
  const lockTimeline: Record<string, Array<{ t: number; n: number }>> = {};
  let acked: Record<string, number> = {};
  const refusedBeforeSha: Record<string, boolean> = {};
  const blocksChangedDuringRefusal: Record<string, number[]> = {};
  let fsck = { rc: -1, output: '' };
  let finalLog = '';
  let finalMarkerSha = '';

  beforeAll(async () => {
    requireVmLab();
    requireGanesha();
    const ganesha = await Ganesha.start({ leaseSeconds: GANESHA_LEASE_SECONDS });
    const share = await mkdtemp(join(tmpdir(), 'ballast-nfs-takeover-share-'));
    const scratch = await mkdtemp(join(tmpdir(), 'ballast-nfs-takeover-check-'));
    const image = (v: string) => join(ganesha.exportDir, 'loop', v, 'disk.img');
    let vm1Pid: number | undefined;
    let vm2Pid: number | undefined;
    let watching = true;
    let watcher: Promise<void> | undefined;
    try {
      await mkdir(join(share, 'out'));
      const env = { SHARE: share, NFS_PORT: String(ganesha.port) };
      const common = { shareDir: share, network: true, memoryMb: 1024, timeoutMs: 900_000, env };
      const runs = Promise.all([
        runScenario(scenarioScript('nfs-takeover-vm1'), { ...common, name: 'vm1', onStart: (pid) => (vm1Pid = pid) }).finally(() => (vm1Pid = undefined)),
        runScenario(scenarioScript('nfs-takeover-vm2'), { ...common, name: 'vm2', onStart: (pid) => (vm2Pid = pid) }).finally(() => (vm2Pid = undefined)),
      ]);
      runs.catch(() => undefined);

      // Locks on the images as the server's filesystem sees them, every 100 ms.
      watcher = (async () => {
        while (watching) {
          for (const v of ['k9', 'v']) {
            let n = 0;
            try {
              n = locksOn(image(v));
            } catch {
              // replaced or removed meanwhile
            }
            const line = (lockTimeline[v] ??= []);
            if (line.length === 0 || line[line.length - 1]!.n !== n) line.push({ t: Date.now(), n });
          }
          await sleep(100);
        }
      })();

      /** Waits for a signal file (failing with the VMs' own failure if they end first); notes when it came. */
      const waitFor = async (name: string, timeoutMs: number): Promise<number> => {
        await waitForVmFile(join(share, name), timeoutMs, runs);
        return (at[name] = Date.now());
      };
      const tell = (name: string) => writeFile(join(share, name), '');

      // Part A: host 1's daemon dies while it holds k9.
      // Host 2's Mount starts at once; it may not touch the image before the lease (12 s) ran out.
      for (const v of ['k9']) {
        await waitFor(`${v}-daemon-down`, 420_000);
        await waitFor(`${v}-fenced`, 60_000);
        await sleep(1_000); // the journal abort's last write, if any
        refusedBeforeSha[v] = existsSync(join(share, `${v}-refused`)); // must still be waiting
        const before = await readFile(image(v));
        sha[`${v}-before`] = createHash('sha256').update(before).digest('hex');
        await waitFor(`${v}-refused`, 150_000);
        const afterRefusal = await readFile(image(v));
        sha[`${v}-after-refusal`] = createHash('sha256').update(afterRefusal).digest('hex');
        blocksChangedDuringRefusal[v] = changedBlocks(before, afterRefusal);
        await tell(`${v}-restart`);
        await waitFor(`${v}-done`, 240_000);
      }

      // Part B: host 1 cut off from the NFS server.
      await waitFor('p-cut', 300_000);
      await waitFor('p-mounted', 200_000);
      await waitFor('p-vm2-done', 120_000);
      sha['p-takeover-end'] = await sha256(image('v'));
      await tell('p-heal');
      at['p-heal'] = Date.now();
      await waitFor('p-observed', 240_000);
      sha['p-after-heal'] = await sha256(image('v'));
      await tell('p-unmount');
      const [r1, r2] = await runs;
      vm1 = r1.results;
      vm2 = r2.results;
      sha['p-final'] = await sha256(image('v'));

      for (const f of await readdir(join(share, 'out'))) {
        out[f] = (await readFile(join(share, 'out', f), 'utf8')).trim();
      }
      acked = Object.fromEntries(
        ['k9.acked', 'p.acked-at-cut', 'p.acked-final']
          .filter((f) => existsSync(join(share, f)))
          .map((f) => [f, Number(readFileSync(join(share, f), 'utf8').trim())]),
      );

      // The final image, checked on a copy here: clean, with host 2's line and marker.
      const copy = join(scratch, 'v.img');
      spawnSync('cp', ['--sparse=always', image('v'), copy]);
      const e2fsck = spawnSync('e2fsck', ['-fn', copy], { encoding: 'utf8' });
      fsck = { rc: e2fsck.status ?? -1, output: `${e2fsck.stdout}${e2fsck.stderr}` };
      finalLog = spawnSync('debugfs', ['-R', 'cat /log', copy], { encoding: 'utf8' }).stdout ?? '';
      spawnSync('debugfs', ['-R', `dump /marker ${join(scratch, 'marker')}`, copy]);
      if (existsSync(join(scratch, 'marker'))) finalMarkerSha = await sha256(join(scratch, 'marker'));

      const rel = (t: number | undefined, from: number | undefined) => (t !== undefined && from !== undefined ? `${((t - from) / 1000).toFixed(1)} s` : '?');
      const timeline = (v: string, from: number | undefined) =>
        (lockTimeline[v] ?? []).map((e) => `${rel(e.t, from)}:${e.n}`).join(' ');
      const serverLog = await ganesha.log();
      console.log(
        [
          'NFS takeover (two VMs, one ganesha):',
          `  lease.seconds ${LEASE_SECONDS}, fence_after ${FENCE_AFTER_SECONDS}, ganesha lease ${GANESHA_LEASE_SECONDS} s; host 1 recover_lost_locks=${vm1.vm1_recover_lost_locks}`,
          ...(['k9'] as const).map((v) =>
            `  ${v}: fence watchdog up ${vm1[`${v}_vm1_watchdog_start_s`]} s after the Mount; daemon ${v === 'k9' ? 'killed' : 'stopped'}; writer fenced after ${vm1[`${v}_vm1_fenced_after_s`]} s (acked ${acked[`${v}.acked`]}); ` +
            `host 2 Mount ${vm2[`${v}_vm2_first_mount`]} after ${vm2[`${v}_vm2_first_mount_s`]} s; sha before/after ${sha[`${v}-before`]?.slice(0, 12)}/${sha[`${v}-after-refusal`]?.slice(0, 12)} (4 KiB blocks changed: ${JSON.stringify(blocksChangedDuringRefusal[v]?.slice(0, 10))}); ` +
            `after host 1's Unmount: mounted ${vm2[`${v}_vm2_mounted`]} in ${vm2[`${v}_vm2_mount_s`]} s, lines ok ${vm2[`${v}_vm2_lines_ok`]} (${vm2[`${v}_vm2_lines`]}), generation ${vm1[`${v}_vm1_generation`]} -> ${vm2[`${v}_vm2_generation`]}; ` +
            `image locks on the server (s after the ${v === 'k9' ? 'kill' : 'stop'}:count) ${timeline(v, at[`${v}-daemon-down`])}`),
          `  partition: host 2's Mount returned ${rel(at['p-mounted'], at['p-cut'])} after the cut (its call took ${vm2.p_vm2_mount_s} s); ` +
            `acked at the cut ${acked['p.acked-at-cut']}, at the end ${acked['p.acked-final']}; lines ok on host 2 ${vm2.p_vm2_lines_ok} (${vm2.p_vm2_lines})`,
          `  partition: image locks on the server (s after the cut:count) ${timeline('v', at['p-cut'])}`,
          `  partition: sha256 takeover end ${sha['p-takeover-end']}`,
          `             after the heal   ${sha['p-after-heal']}`,
          `             final            ${sha['p-final']}`,
          `  partition: host 1 cut for ${vm1.p_vm1_cut_s} s; its write errors after the heal: ${vm1.p_vm1_write_errors} (EIO ${vm1.p_vm1_eio}, EROFS ${vm1.p_vm1_erofs}); ` +
            `first error ${vm1.p_vm1_first_error_after_cut_s} s after the cut (${vm1.p_vm1_first_error_after_heal_s} s after the heal); still blocked: ${vm1.p_vm1_writers_still_blocked || 'none'}`,
          `  partition: host 1's daemon while cut off: Get rc ${vm1.p_vm1_get_during_cut_rc} in ${vm1.p_vm1_get_during_cut_s} s, volume ls rc ${vm1.p_vm1_ls_during_cut_rc} in ${vm1.p_vm1_ls_during_cut_s} s; FENCING lines logged ${vm1.p_vm1_fencing_logged_during_cut}; watchdog: ${out['p-vm1-watchdog-during-cut']}`,
          `  partition: host 1 after the heal: fenced ${vm1.p_vm1_fenced} (${out['p-vm1-fenced']}); Unmount ok ${vm1.p_vm1_unmount_ok} in ${vm1.p_vm1_unmount_ms} ms; loops ${vm1.p_vm1_loops_end}, mounts ${vm1.p_vm1_mounts_end}`,
          `  final image: e2fsck -fn rc ${fsck.rc}; log ends ${JSON.stringify(finalLog.trim().split('\n').slice(-2))}; marker ${finalMarkerSha === out['p-marker-sha'] ? 'intact' : `differs (${finalMarkerSha || 'absent'})`}`,
          `  host 1's write errors: ${JSON.stringify(out['p-vm1-write-errors']?.split('\n').slice(0, 6))}`,
          `  host 1's kernel: ${JSON.stringify(out['p-vm1-dmesg']?.split('\n').slice(-12))}`,
          `  ganesha log: ${serverLog.split('\n').filter((l) => /expir|BADSESSION|STALE_CLIENTID|revok/i.test(l)).slice(-8).join(' | ') || '(nothing about expiry at its default log level)'}`,
        ].join('\n'),
      );
    } finally {
      watching = false;
      await watcher;
      // On failure a VM may still run: stop both (qemu's own PIDs; harmless if gone).
      for (const pid of [vm1Pid, vm2Pid]) if (pid) try { process.kill(pid, 'SIGKILL'); } catch { /* exited */ }
      await ganesha.stop();
      await rm(share, { recursive: true, force: true });
      await rm(scratch, { recursive: true, force: true });
    }
  }, 960_000);

  describe.each([
    { v: 'k9', what: 'killed (kill -9)', how: 'kill' },
  ])('host 1\'s daemon $what while it holds volume $v', ({ v, what, how }) => {
    it(`its watchdog fences the filesystem (EIO) within fence_after, before host 2 could take over (daemon ${what})`, () => {
      expect(vm1[`${v}_vm1_flocks_mounted`]).toBe('1'); // attached holding the image lock (nfs-lock fence)
      expect(Number(vm1[`${v}_vm1_fenced_after_s`])).toBeLessThan(LEASE_SECONDS);
      expect(out[`${v}-vm1-writer-error`]).toMatch(/Input\/output error/);
      expect(acked[`${v}.acked`]).toBeGreaterThan(0);
    });

    it('host 2 does not take it while host 1\'s kernel holds the image lock: Mount fails after mount_wait naming the lock, image unchanged', () => {
      expect(vm2[`${v}_vm2_first_mount`]).toBe('failed');
      expect(out[`${v}-vm2-first-mount`]).toMatch(/locked by another NFS client/);
      expect(Number(vm2[`${v}_vm2_first_mount_s`])).toBeGreaterThanOrEqual(MOUNT_WAIT_PART_A);
      expect(refusedBeforeSha[v]).toBe(false);
      expect(sha[`${v}-after-refusal`]).toBe(sha[`${v}-before`]);
      expect([vm2[`${v}_vm2_loops_after_refusal`], vm2[`${v}_vm2_mounts_after_refusal`]]).toEqual(['0', '0']);
      expect(JSON.parse(out[`${v}-vm2-get-after-refusal`] ?? '{}')).toMatchObject({ Volume: { Status: { lease: { state: 'free' } } } });
    });

    it(`once host 1's daemon is back (${how === 'kill' ? 'restarted' : 'SIGCONT'}) and unmounted it, host 2 mounts it with every acknowledged line and a higher generation`, () => {
      expect(vm1[`${v}_vm1_unmount_ok`]).toBe('yes');
      expect([vm1[`${v}_vm1_loops_after_unmount`], vm1[`${v}_vm1_mounts_after_unmount`], vm1[`${v}_vm1_flocks_after_unmount`]]).toEqual(['0', '0', '0']);
      expect(vm2[`${v}_vm2_mounted`]).toBe('yes');
      expect(vm2[`${v}_vm2_lines_ok`]).toBe('yes');
      expect(Number(vm2[`${v}_vm2_generation`])).toBeGreaterThan(Number(vm1[`${v}_vm1_generation`]));
      expect(vm2[`${v}_vm2_unmount_ok`]).toBe('yes');
      expect([vm2[`${v}_vm2_loops_end`], vm2[`${v}_vm2_mounts_end`]]).toEqual(['0', '0']);
    });
  });

  describe('host 1 cut off from the NFS server while writing (partition), then healed', () => {
    it('host 2 takes over only after the lease, and not before the server could drop host 1\'s lock (its own lease)', () => {
      expect(vm1.v_vm1_flocks_mounted).toBe('1'); // host 1 attached holding the image lock
      expect(vm2.p_vm2_mounted).toBe('yes');
      const tookMs = at['p-mounted']! - at['p-cut']!;
      expect(tookMs).toBeGreaterThanOrEqual(LEASE_SECONDS * 1000);
      expect(tookMs).toBeGreaterThanOrEqual(GANESHA_LEASE_SECONDS * 1000);
    });

    it('every line host 1 acknowledged before the cut is on the volume host 2 mounted', () => {
      expect(acked['p.acked-at-cut']).toBeGreaterThan(0);
      expect(vm2.p_vm2_lines_ok).toBe('yes');
    });

    it('nothing host 1 had queued reaches the image after the heal: its sha256 stays the one host 2 left', () => {
      expect(sha['p-takeover-end']).toBeDefined();
      expect(sha['p-after-heal']).toBe(sha['p-takeover-end']);
      expect(sha['p-final']).toBe(sha['p-takeover-end']);
    });

    it('the image is clean, and host 2\'s line and marker are intact', () => {
      expect(fsck.rc).toBe(0);
      expect(finalLog.trim().split('\n').pop()).toBe('VM2 TOOK OVER');
      expect(finalMarkerSha).toBe(out['p-marker-sha']);
    });

    it('host 1 was never told a write was durable that is not on the image (no acknowledgement after the cut)', () => {
      const lines = finalLog.split('\n').filter((l) => l.startsWith('vm1 line '));
      const n = acked['p.acked-final']!;
      expect(lines.slice(0, n)).toEqual(Array.from({ length: n }, (_, i) => `vm1 line ${i + 1}`));
    });

    it('host 1 reports v fenced, and its Unmount leaves nothing attached', () => {
      expect(vm1.p_vm1_fenced).toBe('yes');
      expect(vm1.p_vm1_unmount_ok).toBe('yes');
      expect([vm1.p_vm1_loops_end, vm1.p_vm1_mounts_end, vm1.p_vm1_flocks_end]).toEqual(['0', '0', '0']);
    });
  });
});
