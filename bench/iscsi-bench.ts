import { join } from 'node:path';
import { runScenario } from '../test/lab/vm-scenario.js';
import { requireVmLab } from '../test/lab/vm.js';
import { median } from './lib/stats.js';
import { exitWith, intFromEnv, out, printedLines } from './lib/bench-run.js';
import { recordResults } from './lib/results.js';

// In the VM lab (Debian's kernel under qemu, software emulation), one VM that is both the
// array (tgtd, two portals) and the host: ballast's attach + mount and detach times, and
// sequential write throughput through ballast's multipath device against the same LUN
// attached by hand in the same run. Absolute figures are those of an emulated CPU; the
// ratios are the point.


async function main(): Promise<number> {
  requireVmLab();
  const rounds = intFromEnv('BENCH_ROUNDS', 3);
  const writeMb = intFromEnv('BENCH_WRITE_MB', 96);
  out(`ballast iSCSI benchmark (VM lab), ${new Date().toISOString()}: ${rounds} rounds, ${writeMb} MiB sequential direct writes`);
  const { results, run } = await runScenario(join(process.cwd(), 'bench', 'vm', 'iscsi-bench.sh'), {
    name: 'bench',
    timeoutMs: (120 + rounds * 90) * 1000,
    memoryMb: 1536,
    env: { BENCH_ROUNDS: String(rounds), BENCH_WRITE_MB: String(writeMb) },
  });
  const series = (prefix: string, suffix = '') =>
    Array.from({ length: rounds }, (_, i) => Number(results[`${prefix}${i + 1}${suffix}`]));
  const newMount = series('new_attach_mount_', '_ms');
  const existingMount = series('existing_attach_mount_', '_ms');
  const detach = series('detach_', '_ms');
  const ballastMbps = series('ballast_write_mbps_');
  const handMbps = series('byhand_write_mbps_');
  const ballastRead = series('ballast_read_mbps_');
  const handRead = series('byhand_read_mbps_');
  const row = (what: string, xs: number[], unit: string) => out(`  ${what.padEnd(44)} median ${median(xs).toFixed(unit === 'MB/s' ? 1 : 0)} ${unit}  (${xs.join(', ')})`);
  out(`  (ballast started in the VM in ${results.ballast_start_s} s; VM run ${(run.durationMs / 1000).toFixed(0)} s)`);
  row('attach + mount, new volume (mkfs)', newMount, 'ms');
  row('attach + mount, existing volume', existingMount, 'ms');
  row('unmount + detach', detach, 'ms');
  row('sequential write, ballast multipath device', ballastMbps, 'MB/s');
  row('sequential write, same LUN attached by hand', handMbps, 'MB/s');
  out(`  write ratio ballast / by hand: ${(median(ballastMbps) / median(handMbps)).toFixed(2)}x`);
  row('sequential read, ballast multipath device', ballastRead, 'MB/s');
  row('sequential read, same LUN attached by hand', handRead, 'MB/s');
  out(`  read ratio ballast / by hand: ${(median(ballastRead) / median(handRead)).toFixed(2)}x`);
  const left = [results.left_sessions, results.left_disks, results.left_maps];
  out(`  left behind in the VM: ${results.left_sessions} sessions, ${results.left_disks} SCSI disks, ${results.left_maps} dm maps`);
  const clean = left.every((n) => n === '0');
  if (clean) await recordResults('ballast iSCSI benchmark (VM lab)', printedLines().slice(1));
  return clean ? 0 : 1;
}

exitWith(main);
