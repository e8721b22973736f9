import { join } from 'node:path';
import { runScenario } from '../test/lab/vm-scenario.js';
import { requireVmLab } from '../test/lab/vm.js';
import { recordResults } from './lib/results.js';
import { median } from './lib/stats.js';
import { exitWith, intFromEnv, out } from './lib/bench-run.js';

// `npm run bench:luks`: in the VM lab (Debian's kernel under qemu, software emulation: no AES-NI,
// so the absolute figures are an emulated CPU's and LUKS costs more than on real hardware),
// sequential direct writes and reads through an encrypted ballast volume against a plain one, and
// the same on a dm-crypt mapping against a bare loop device, by hand. The ratios are the point.
const TITLE = 'ballast LUKS benchmark (VM lab, loop backend, encrypted=true against plain)';

async function main(): Promise<number> {
  requireVmLab();
  const rounds = intFromEnv('BENCH_ROUNDS', 3);
  const mb = intFromEnv('BENCH_WRITE_MB', 64); // four volumes' data sit in the VM's tmpfs (half its RAM)
  const lines: string[] = [];
  const say = (line = '') => {
    out(line);
    lines.push(line);
  };
  out(`${TITLE}, ${new Date().toISOString()}`);
  say(`${rounds} rounds of ${mb} MiB sequential direct IO (dd bs=1M), one VM, 1.5 GiB of RAM`);
  const { results, run } = await runScenario(join(process.cwd(), 'bench', 'vm', 'luks-bench.sh'), {
    name: 'bench',
    timeoutMs: (200 + rounds * 120) * 1000,
    memoryMb: 1536,
    env: { ROUNDS: String(rounds), MB: String(mb) },
  });
  const series = (prefix: string) =>
    Array.from({ length: rounds }, (_, i) => {
      const value = Number(results[`${prefix}_${i + 1}`]);
      // A dd that failed (in a $(...)) prints nothing: show why rather than a zero.
      if (!(value > 0)) throw new Error(`no figure for ${prefix}_${i + 1}; the VM said:\n${run.console.split('\n').filter((l) => /FAILED|dd:/.test(l)).join('\n')}`);
      return value;
    });
  say(`  (VM run ${(run.durationMs / 1000).toFixed(0)} s; cipher ${results.cipher})`);
  say(`  ${'figure (MB/s, median)'.padEnd(36)} ${'LUKS'.padStart(8)} ${'plain'.padStart(8)}  ratio`);
  const row = (what: string, luks: number[], plain: number[]) =>
    say(`  ${what.padEnd(36)} ${median(luks).toFixed(1).padStart(8)} ${median(plain).toFixed(1).padStart(8)}  ${(median(luks) / median(plain)).toFixed(2)}x   (${luks.join(', ')} | ${plain.join(', ')})`);
  row('ballast volume, write (O_DIRECT)', series('sec_write'), series('plain_write'));
  row('ballast volume, read (O_DIRECT)', series('sec_read'), series('plain_read'));
  row('by hand: dm-crypt vs loop, write', series('crypt_write'), series('raw_write'));
  row('by hand: dm-crypt vs loop, read', series('crypt_read'), series('raw_read'));
  say(`  left behind in the VM: ${results.left_maps} ballast mappings, ${results.left_loops} loop devices`);
  const clean = results.left_maps === '0' && results.left_loops === '0';
  if (clean) await recordResults(TITLE, lines);
  return clean ? 0 : 1;
}

exitWith(main);
