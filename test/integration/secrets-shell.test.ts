import { spawnSync } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join, relative } from 'node:path';
import { shellQuote } from '../../src/drivers/array-host/ssh-exec.js';
import { BallastProcess, REPO_ROOT } from '../lab/ballast.js';
import { call, killDaemons, makeWork, serve, tag, walk, work } from '../helpers/secrets-lab.js';

// No code path hands a name or option to a shell: ballast's sources run commands only through
// src/exec.ts, an SSH command line quotes every word, and a real `ballast serve` refuses hostile
// names and options over the socket with a clear Err while running nothing. Secrets in logs,
// errors, replies and inspect are in secrets-logs.test.ts.

const T = 300_000;
const SHELL_MARKER = join(tmpdir(), `ballast-shell-${tag}`);

beforeAll(makeWork);

afterAll(async () => {
  await killDaemons();
  if (work) await rm(work, { recursive: true, force: true });
  await rm(SHELL_MARKER, { force: true });
}, T);

describe('names and options never reach a shell', () => {
  const sources = (dir: string): string[] => walk(dir).filter((f) => f.endsWith('.ts'));
  const SRC = join(REPO_ROOT, 'src');

  it('runs commands only through src/exec.ts, never with shell: true, exec() or a shell given data', () => {
    const spawners = sources(SRC).filter((f) => /from 'node:child_process'|from 'child_process'|require\('child_process'\)/.test(readFileSync(f, 'utf8')));
    // The watchdog spawns `node ballast fence-watchdog` with an argv of its own.
    expect(spawners.map((f) => relative(SRC, f)).sort()).toEqual(['cli/watchdog.ts', 'exec.ts']);
    const offending: string[] = [];
    for (const file of sources(SRC)) {
      const text = readFileSync(file, 'utf8');
      const where = relative(SRC, file);
      if (/from 'execa'|\bshell\s*:\s*true/.test(text)) offending.push(`${where}: execa or shell: true`);
      if (/import\s*\{[^}]*\b(exec|execSync)\b[^}]*\}\s*from\s*'(node:)?child_process'|child_process\.exec\b/.test(text)) offending.push(`${where}: exec() from child_process`);
      if (/['"]bash['"]\s*,\s*['"]-c['"]|\bbash -c\b|\bsh -c\b/.test(text)) offending.push(`${where}: bash -c / sh -c in a string`);
      // Fixed scripts that take their data as positional parameters ("$1"), never spliced in.
      if (/['"]sh['"]\s*,\s*['"]-c['"]/.test(text) && !['drivers/lio/configfs.ts', 'drivers/array-host/exec-file-store.ts'].includes(where)) offending.push(`${where}: sh -c`);
    }
    expect(offending).toEqual([]);
  });

  it("quotes every word of an SSH command line so the array host's shell runs it as data", () => {
    for (const word of [`$(touch ${SHELL_MARKER})`, `\`touch ${SHELL_MARKER}\``, `a; touch ${SHELL_MARKER}`, `a\ntouch ${SHELL_MARKER}`, `it's "quoted" \\ $HOME`]) {
      const run = spawnSync('sh', ['-c', `printf %s ${shellQuote(word)}`], { encoding: 'utf8' });
      expect(run.stdout).toBe(word);
    }
    expect(existsSync(SHELL_MARKER)).toBe(false);
  });

  it(
    'refuses hostile names and options over the socket with a clear Err, and runs nothing',
    async () => {
      const d = await BallastProcess.create({ dir: await mkdtemp(join(work, 'hostile-')) });
      expect(await serve(d, 'hostile')).toBe(true);
      const payloads = [`$(touch ${SHELL_MARKER})`, `\`touch ${SHELL_MARKER}\``, `x; touch ${SHELL_MARKER}`, `x\ntouch ${SHELL_MARKER}`, `x && touch ${SHELL_MARKER} #`];
      for (const payload of payloads) {
        for (const method of ['VolumeDriver.Create', 'VolumeDriver.Mount', 'VolumeDriver.Remove', 'VolumeDriver.Path']) {
          expect((await call(d, method, { Name: payload, ID: 'c1' })).Err).toMatch(/invalid volume name|does not exist/);
        }
        for (const option of ['size', 'fstype', 'profile', 'mkfsopts', 'mountopts', 'from', 'read_iops', 'read_bps', 'encrypted', 'readonly']) {
          const err = (await call(d, 'VolumeDriver.Create', { Name: 'hostile', Opts: { [option]: payload } })).Err;
          expect({ option, err }).toEqual({ option, err: expect.stringContaining(option) });
        }
      }
      // A volume made with harmless options mounts, and the hostile ones changed nothing.
      expect((await call(d, 'VolumeDriver.Create', { Name: 'hostile', Opts: { size: '32M', mountopts: 'noatime', mkfsopts: '-m 0' } })).Err).toBeUndefined();
      expect((await call(d, 'VolumeDriver.Mount', { Name: 'hostile', ID: 'c1' })).Err).toBeUndefined();
      expect((await call(d, 'VolumeDriver.Unmount', { Name: 'hostile', ID: 'c1' })).Err).toBeUndefined();
      expect((await call(d, 'VolumeDriver.Remove', { Name: 'hostile' })).Err).toBeUndefined();
      expect(existsSync(SHELL_MARKER)).toBe(false);
    },
    T,
  );
});
