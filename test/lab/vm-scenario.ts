import { execFileSync } from 'node:child_process';
import { existsSync, readdirSync, statSync } from 'node:fs';
import { readFile } from 'node:fs/promises';
import { basename, join } from 'node:path';
import { runInVm, type VmOptions, type VmRun } from './vm.js';

/** What a scenario printed as "RESULT key=value ..." lines, last value of a key wins. */
export type Results = Record<string, string>;

export function parseResults(console: string): Results {
  const results: Results = {};
  for (const line of console.split('\n')) {
    if (!line.startsWith('RESULT ')) continue;
    for (const pair of line.slice(7).trim().split(/\s+/)) {
      const eq = pair.indexOf('=');
      if (eq > 0) results[pair.slice(0, eq)] = pair.slice(eq + 1);
    }
  }
  return results;
}

/** A scenario script of the VM tests: test/integration/vm/scripts/<name>.sh. */
export const scenarioScript = (name: string) => join(process.cwd(), 'test', 'integration', 'vm', 'scripts', `${name}.sh`);

/** The CLI bundled into one file, run with V8's code cache of it (scripts/build-bundle.mjs): what the scenarios run as `ballast`. */
export const BALLAST_CLI = join(process.cwd(), 'dist-bundle', 'ballast.cjs');

/**
 * Builds the bundle unless it is newer than dist/ and node_modules. In a VM, `ballast serve`
 * started in 16-34 s from dist/ (~890 modules, each resolved and compiled on the emulated CPU)
 * and in 8-11 s from the bundle (iscsi-faults' ballast_start_s, 2026-12-05); with the code cache
 * in 3.3-3.8 s instead of 5-7.8 s from the bundle alone (a loop backend, the machine loaded, 2026-12-06).
 */
function ensureBundle(): void {
  const built = existsSync(BALLAST_CLI) ? statSync(BALLAST_CLI).mtimeMs : 0;
  const dist = join(process.cwd(), 'dist');
  const inputs = readdirSync(dist, { recursive: true }).map((f) => join(dist, String(f)));
  inputs.push(join(process.cwd(), 'node_modules', '.package-lock.json'));
  if (inputs.some((f) => statSync(f).mtimeMs > built)) {
    execFileSync(process.execPath, [join(process.cwd(), 'scripts', 'build-bundle.mjs')], { stdio: ['ignore', 'ignore', 'inherit'] });
  }
}

/**
 * Runs a bash script file in a VM, with this checkout's built ballast (seen over 9p at the
 * same path; BALLAST_CLI is the bundled CLI) and `env` exported. Fails with the console when
 * the script fails.
 */
export async function runScenario(
  script: string,
  options: Omit<VmOptions, 'script'> & { env?: Record<string, string> },
): Promise<{ run: VmRun; results: Results }> {
  const src = process.cwd();
  const scenario = basename(script, '.sh');
  await readFile(script); // a missing scenario fails here, not as an obscure exit code
  ensureBundle();
  const env = { BALLAST_SRC: src, BALLAST_CLI, BALLAST_RUN: '/tmp/ballast', ...options.env };
  const exports = Object.entries(env).map(([k, v]) => `export ${k}='${v.replace(/'/g, `'\\''`)}'`);
  const run = await runInVm({ ...options, script: `${exports.join('\n')}\n. ${script}\n` });
  if (run.exitCode !== 0) {
    throw new Error(`scenario ${scenario} failed (exit ${run.exitCode}, timed out: ${run.timedOut}, ${run.durationMs} ms); console:\n${run.console.slice(-12_000)}`);
  }
  return { run, results: parseResults(run.console) };
}

/**
 * Waits for a file the VMs write (in a share they mount); fails with the VMs' own failure (their
 * console) if they end first, and after timeoutMs.
 */
export async function waitForVmFile(path: string, timeoutMs: number, vms: Promise<unknown>): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  let ended = false;
  void vms.then(
    () => (ended = true),
    () => (ended = true),
  );
  while (!existsSync(path)) {
    if (ended) {
      await vms; // rethrows a VM's failure
      throw new Error(`the VMs ended before ${path} appeared`);
    }
    if (Date.now() > deadline) throw new Error(`${path} did not appear within ${timeoutMs / 1000} s`);
    await new Promise((r) => setTimeout(r, 200));
  }
}
