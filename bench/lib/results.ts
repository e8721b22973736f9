import { execFile } from 'node:child_process';
import { readFile, writeFile } from 'node:fs/promises';
import { cpus, release } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { REPO_ROOT } from '../../test/lab/ballast.js';

/**
 * bench/RESULTS.md: the latest figures of each benchmark, so a reader sees today's numbers
 * without running anything. One section per benchmark (its title), replaced by its next
 * successful run; the other sections stay.
 */
export const RESULTS_FILE = join(REPO_ROOT, 'bench/RESULTS.md');

const HEADER = '# Benchmark results\n\nWritten by the benchmarks themselves (`npm run bench`, `npm run bench:*`): each section is the\nlatest successful run of one benchmark, with the machine it ran on. Figures only, nothing asserted;\na ratio is ballast / baseline measured in the same run.\n';

async function dockerdVersion(): Promise<string> {
  try {
    const { stdout } = await promisify(execFile)('dockerd', ['--version'], { timeout: 5_000 });
    return stdout.trim().replace(/^Docker version /, '');
  } catch {
    return 'not installed';
  }
}

export async function machineLine(): Promise<string> {
  const cpu = cpus();
  return `${cpu.length} CPUs (${cpu[0]?.model.trim() ?? 'unknown'}), Linux ${release()}, node ${process.version}, dockerd ${await dockerdVersion()}`;
}

/** Puts `lines` (what the bench printed) under `## title` in bench/RESULTS.md. */
export async function recordResults(title: string, lines: readonly string[], file = RESULTS_FILE): Promise<void> {
  const existing = await readFile(file, 'utf8').catch(() => HEADER);
  const sections = existing.split(/^(?=## )/m);
  const head = sections[0]!.startsWith('## ') ? HEADER : sections[0]!;
  const others = sections.filter((s) => s.startsWith('## ') && !s.startsWith(`## ${title}\n`));
  const section = `## ${title}\n\n${new Date().toISOString().slice(0, 10)}; ${await machineLine()}\n\n\`\`\`\n${lines.join('\n').trimEnd()}\n\`\`\`\n\n`;
  const body = [...others, section].sort((a, b) => (a < b ? -1 : a > b ? 1 : 0));
  await writeFile(file, `${head.trimEnd()}\n\n${body.join('').trimEnd()}\n`);
}
