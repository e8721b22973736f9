import { execFile } from 'node:child_process';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { runScenario } from '../test/lab/vm-scenario.js';
import { requireVmLab } from '../test/lab/vm.js';
import { median } from './lib/stats.js';
import { exitWith, intFromEnv, out } from './lib/bench-run.js';

// In the VM lab (Debian's kernel under qemu, software emulation), one VM that is both the array
// (the PowerFlex simulator with nvmet behind it, two portals) and the host: ballast's attach and
// detach (lease, map, nvme connect over both portals, the namespace found by its NGUID) and
// sequential direct writes to the namespace, against the same namespace connected by hand with
// nvme connect in the same run. Absolute figures are those of an emulated CPU; the ratios are
// the point.

async function main(): Promise<number> {
  requireVmLab();
  const rounds = intFromEnv('BENCH_ROUNDS', 3);
  const writeMb = intFromEnv('BENCH_WRITE_MB', 96);
  await promisify(execFile)(join(process.cwd(), 'node_modules/.bin/tsc'), ['-p', join(process.cwd(), 'tsconfig.sim.json')]);
  out(`ballast NVMe/TCP benchmark (VM lab, powerflex behind its simulator and nvmet), ${new Date().toISOString()}: ${rounds} rounds, ${writeMb} MiB sequential direct writes`);
  const { results, run } = await runScenario(join(process.cwd(), 'bench', 'vm', 'nvme-bench.sh'), {
    name: 'bench',
    timeoutMs: (150 + rounds * 90) * 1000,
    memoryMb: 1536,
    env: { BENCH_ROUNDS: String(rounds), BENCH_WRITE_MB: String(writeMb) },
  });
  const series = (prefix: string, suffix = '') => Array.from({ length: rounds }, (_, i) => Number(results[`${prefix}${i + 1}${suffix}`]));
  const rows: [string, number[], number[], string][] = [
    ['attach (ms)', series('attach_', '_ms'), series('byhand_attach_', '_ms'), 'ms'],
    ['detach (ms)', series('detach_', '_ms'), series('byhand_detach_', '_ms'), 'ms'],
    ['sequential write (MB/s)', series('ballast_write_mbps_'), series('byhand_write_mbps_'), 'MB/s'],
  ];
  out(`  (VM run ${(run.durationMs / 1000).toFixed(0)} s)`);
  out(`  ${'figure'.padEnd(26)} ${'ballast'.padStart(9)} ${'by hand'.padStart(9)}  ratio`);
  for (const [what, ballast, hand] of rows) out(`  ${what.padEnd(26)} ${median(ballast).toFixed(1).padStart(9)} ${median(hand).toFixed(1).padStart(9)}  ${(median(ballast) / median(hand)).toFixed(2)}x   (${ballast.join(', ')} | ${hand.join(', ')})`);
  out(`  left behind in the VM: ${results.left_controllers} NVMe controllers`);
  return results.left_controllers === '0' ? 0 : 1;
}

exitWith(main);
