import { existsSync } from 'node:fs';
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

/**
 * Runs a bash script file in a VM, with this checkout's built ballast (seen over 9p at the
 * same path) and `env` exported. Fails with the console when the script fails.
 */
export async function runScenario(
  script: string,
  options: Omit<VmOptions, 'script'> & { env?: Record<string, string> },
): Promise<{ run: VmRun; results: Results }> {
  const src = process.cwd();
  const scenario = basename(script, '.sh');
  await readFile(script); // a missing scenario fails here, not as an obscure exit code
  const env = { BALLAST_SRC: src, BALLAST_RUN: '/tmp/ballast', ...options.env };
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
