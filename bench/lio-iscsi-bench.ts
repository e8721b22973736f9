import { execFileSync } from 'node:child_process';
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { runScenario } from '../test/lab/vm-scenario.js';
import { requireVmLab } from '../test/lab/vm.js';
import { exitWith, intFromEnv, out } from './lib/bench-run.js';
import { commandsPerCall, loadAverages as load } from './lib/daemon-log.js';
import { median } from './lib/stats.js';

// In the VM lab (one VM under qemu TCG that is both the array and the host): ballast's iSCSI
// path on LIO (backends.lio, transport iscsi, the kernel's target) beside its tgt path
// (backends.iscsi, tgtd), one daemon, both arrays local, two portals each, rounds interleaved.
// Attach + mount and detach times and sequential direct throughput, with the ratio LIO / tgt.
// Absolute figures are those of an emulated CPU; the ratios are the point.

/**
 * lio-iscsi-bench.sh's timed calls ("tgt_new", "lio_existing", ...): new volumes tgtn1, lion1, ...;
 * tgtb0 / liob0 mounted as "y" are the existing ones. Both arrays are local here, so tgtadm and
 * LIO's configfs scripts count with iscsiadm, multipath and the rest.
 */
function figure(request: Record<string, unknown>): string | undefined {
  const m = /^(tgt|lio)(n\d+|b0)$/.exec(String(request.volume ?? ''));
  if (!m) return undefined;
  const fresh = m[2] !== 'b0';
  if (!fresh && request.mountId !== 'y') return undefined;
  const what = request.request === 'VolumeDriver.Mount' ? (fresh ? 'new' : 'existing') : request.request === 'VolumeDriver.Unmount' ? (fresh ? 'detach' : 'detach_existing') : undefined;
  return what && `${m[1]}_${what}`;
}

async function main(): Promise<number> {
  requireVmLab();
  const rounds = intFromEnv('BENCH_ROUNDS', 3);
  const writeMb = intFromEnv('BENCH_WRITE_MB', 64);
  out(`ballast LIO iSCSI vs tgt iSCSI benchmark (one VM, local arrays, two portals each), ${new Date().toISOString()}`);
  out(`  ${rounds} rounds (order alternating), ${writeMb} MiB sequential direct writes and reads (dd bs=1M oflag=direct conv=fsync / iflag=direct), 256 MiB ext4 volumes`);
  out(`  load average at start: ${load()} (${execFileSync('nproc').toString().trim()} cores; other VM tests may share them)`);
  const qemu: number[] = [];
  const stop = (signal: string) => {
    process.stderr.write(`\nbench: ${signal}: stopping the VM (qemu PID ${qemu.join(', ') || 'none yet'})\n`);
    for (const pid of qemu) {
      try {
        process.kill(pid, 'SIGKILL');
      } catch {
        // already gone
      }
    }
    setTimeout(() => process.exit(130), 10_000).unref();
  };
  process.once('SIGINT', () => stop('SIGINT'));
  process.once('SIGTERM', () => stop('SIGTERM'));
  // The share: the daemon's log comes back through it.
  const share = await mkdtemp(join(tmpdir(), 'ballast-lio-iscsi-bench-'));
  let r: Record<string, string>;
  let durationMs: number;
  let log: string;
  try {
    const { results, run } = await runScenario(join(process.cwd(), 'bench', 'vm', 'lio-iscsi-bench.sh'), {
      name: 'bench',
      // Generous: one round has taken 6 minutes on a loaded 2-core machine.
      timeoutMs: intFromEnv('BENCH_VM_TIMEOUT_SECONDS', 600 + rounds * 600) * 1000,
      memoryMb: 1536,
      shareDir: share,
      env: { BENCH_ROUNDS: String(rounds), BENCH_WRITE_MB: String(writeMb), BENCH_SHARE: share },
      onStart: (pid) => qemu.push(pid),
    });
    r = results;
    durationMs = run.durationMs;
    log = await readFile(join(share, 'ballast.log'), 'utf8').catch(() => '');
  } finally {
    await rm(share, { recursive: true, force: true });
  }
  const series = (kind: string, name: string, suffix = '') => Array.from({ length: rounds }, (_, i) => Number(r[`${kind}_${name}_${i + 1}${suffix}`]));
  out(`  ballast started in the VM in ${Number(r.ballast_start_s).toFixed(1)} s; VM ran ${(durationMs / 1000).toFixed(0)} s`);
  out(`  devices: tgt ${r.tgt_device_1} (${series('tgt', 'paths').join('/')} paths), LIO ${r.lio_device_1} (${series('lio', 'paths').join('/')} paths)`);
  out('');
  out(`  ${''.padEnd(44)} ${'tgt (median)'.padStart(14)} ${'LIO (median)'.padStart(14)}   LIO / tgt   (tgt runs | LIO runs)`);
  const row = (what: string, name: string, suffix: string, unit: string) => {
    const t = series('tgt', name, suffix);
    const l = series('lio', name, suffix);
    const f = (x: number) => x.toFixed(unit === 'MB/s' ? 1 : 0);
    out(`  ${what.padEnd(44)} ${`${f(median(t))} ${unit}`.padStart(14)} ${`${f(median(l))} ${unit}`.padStart(14)}   ${`${(median(l) / median(t)).toFixed(2)}x`.padStart(9)}   (${t.map(f).join(', ')} | ${l.map(f).join(', ')})`);
  };
  row('attach + mount, new volume (mkfs)', 'new_attach_mount', '_ms', 'ms');
  row('attach + mount, existing volume', 'existing_attach_mount', '_ms', 'ms');
  row('unmount + detach (new volume)', 'detach', '_ms', 'ms');
  row('unmount + detach (existing volume, after I/O)', 'detach_existing', '_ms', 'ms');
  row(`sequential direct write, ${writeMb} MiB`, 'write_mbps', '', 'MB/s');
  row(`sequential direct read, ${writeMb} MiB`, 'read_mbps', '', 'MB/s');
  const calls = commandsPerCall(log, figure);
  if (calls.size) {
    out('');
    out("  Commands per call, from the daemon's debug log (count and summed time, medians; array and host are one VM here):");
    out(`  ${''.padEnd(44)} ${'tgt'.padStart(14)} ${'LIO'.padStart(14)}`);
    for (const [key, what] of [['new', 'attach + mount, new volume'], ['existing', 'attach + mount, existing volume'], ['detach', 'unmount + detach, new volume'], ['detach_existing', 'unmount + detach, existing volume']] as const) {
      const cell = (kind: string) => {
        const xs = calls.get(`${kind}_${key}`) ?? [];
        return xs.length ? `${median(xs.map((x) => x.ssh + x.local))} (${(median(xs.map((x) => x.sshMs + x.localMs)) / 1000).toFixed(1)} s)` : '-';
      };
      out(`  ${what.padEnd(44)} ${cell('tgt').padStart(14)} ${cell('lio').padStart(14)}`);
    }
  }
  out('');
  out(`  left behind in the VM: ${r.left_sessions} sessions, ${r.left_disks} SCSI disks, ${r.left_maps} dm maps; LIO ${r.left_lio_targets} targets, ${r.left_lio_objects} storage objects; tgt ${r.left_tgt_targets} targets`);
  out(`  load average at end: ${load()}`);
  const left = [r.left_sessions, r.left_disks, r.left_maps, r.left_lio_targets, r.left_lio_objects, r.left_tgt_targets];
  return left.every((n) => n === '0') ? 0 : 1;
}

exitWith(main);
