import { cp, mkdtemp, readdir, rm } from 'node:fs/promises';
import { cpus, release, tmpdir } from 'node:os';
import { join } from 'node:path';
import { mountsUnder } from '../../test/helpers/cleanup.js';
import { CleanupStack, cleanUpUnder, cleanupProblems, loopDevicesUnder, runAllCleanups } from './cleanup.js';
import { RESULTS_FILE, recordResults } from './results.js';

/** Everything printed with out() in this run: what bench/RESULTS.md keeps. */
const printed: string[] = [];
export const out = (text = '') => {
  printed.push(text);
  process.stdout.write(`${text}\n`);
};
/** What out() printed so far: for a bench outside runBench() to record its figures. */
export const printedLines = (): readonly string[] => printed;
export const progress = (line: string) => process.stderr.write(`  .. ${line}\n`);

/** A positive integer setting from the environment (run sizes), or the default. */
export function intFromEnv(name: string, fallback: number): number {
  const raw = process.env[name];
  if (raw === undefined || raw === '') return fallback;
  const value = Number(raw);
  if (!Number.isInteger(value) || value < 1) throw new Error(`${name}=${raw}: expected a positive integer`);
  return value;
}

export interface BenchRun {
  /** Temp-dir prefix, e.g. "ballast-bench". */
  prefix: string;
  /** Header lines printed after the date/machine line. */
  title: string;
  intro: string[];
  deadlineSeconds: number;
  /** What the last line says when nothing was left behind. */
  cleanOk: string;
  body: (root: string) => Promise<void>;
}

/**
 * The frame every benchmark runs in: a work dir, cleanup on exit, Ctrl-C or a deadline, logs
 * kept on failure (or BENCH_KEEP_LOGS=1), and a final check that nothing stayed mounted or
 * attached. Resolves with the process exit code.
 */
export async function runBench(bench: BenchRun): Promise<number> {
  const wallStarted = performance.now();
  const root = await mkdtemp(join(tmpdir(), `${bench.prefix}-`));
  const global = new CleanupStack();
  let failed = false;
  global.push(`remove ${root}`, () => rm(root, { recursive: true, force: true }));
  global.push('keep the logs', async () => {
    if (!failed && process.env.BENCH_KEEP_LOGS !== '1') return;
    const kept = await mkdtemp(join(tmpdir(), `${bench.prefix}-logs-`));
    const logs = (await readdir(root, { recursive: true })).filter((f) => f.endsWith('.log'));
    for (const file of logs) await cp(join(root, file), join(kept, file.replaceAll('/', '_')));
    process.stderr.write(`bench: logs kept in ${kept}\n`);
  });
  global.push(`unmount and detach what is left under ${root}`, async () => {
    const left = await cleanUpUnder(root);
    if (left.mounts.length || left.loops.length) throw new Error(`had to clean up mounts [${left.mounts.join(', ')}] and loop devices [${left.loops.join(', ')}]`);
  });

  let stopping = false;
  const abort = async (why: string, code: number) => {
    if (stopping) return;
    stopping = true;
    failed = true;
    process.stderr.write(`\nbench: ${why}; cleaning up...\n`);
    await runAllCleanups();
    if (cleanupProblems.length) process.stderr.write(`cleanup problems:\n  ${cleanupProblems.join('\n  ')}\n`);
    process.exit(code);
  };
  // `on`, not `once`: a second signal (timeout(1) and npm forward theirs) must not kill the bench mid-cleanup.
  process.on('SIGINT', () => void abort('interrupted', 130));
  process.on('SIGTERM', () => void abort('terminated', 143));
  const watchdog = setTimeout(() => void abort(`still running after ${bench.deadlineSeconds} s`, 1), bench.deadlineSeconds * 1000);
  watchdog.unref();

  out(`${bench.title}, ${new Date().toISOString()}`);
  out(`node ${process.version}, Linux ${release()}, ${cpus().length} CPUs; work dir ${root}`);
  for (const line of bench.intro) out(line);
  out();

  try {
    await bench.body(root);
  } catch (err) {
    failed = true;
    out(`bench failed: ${err instanceof Error ? (err.stack ?? err.message) : String(err)}`);
  } finally {
    // Check before the last sweep, so leftovers are reported, not silently swept.
    await global.run();
    clearTimeout(watchdog);
  }
  const leftMounts = mountsUnder(root);
  const leftLoops = await loopDevicesUnder(root).catch(() => ['(losetup failed)']);
  if (cleanupProblems.length || leftMounts.length || leftLoops.length) {
    out('cleanup: PROBLEMS');
    for (const p of cleanupProblems) out(`  - ${p}`);
    if (leftMounts.length) out(`  - mounts still there: ${leftMounts.join(', ')}`);
    if (leftLoops.length) out(`  - loop devices still attached: ${leftLoops.join(', ')}`);
    failed = true;
  } else {
    out(`cleanup: ok (${bench.cleanOk})`);
  }
  out(`total wall time ${((performance.now() - wallStarted) / 1000).toFixed(1)} s`);
  if (!failed) {
    await recordResults(bench.title, printed.slice(2)); // after the title and machine lines
    process.stderr.write(`bench: figures recorded in ${RESULTS_FILE}\n`);
  }
  return failed ? 1 : 0;
}

/** Runs main() and turns its result, or an escaped error, into the exit code. */
export function exitWith(main: () => Promise<number>): void {
  main().then(
    (code) => {
      process.exitCode = code;
    },
    async (err: unknown) => {
      process.stderr.write(`bench: ${err instanceof Error ? err.message : String(err)}\n`);
      await runAllCleanups();
      process.exitCode = 1;
    },
  );
}
