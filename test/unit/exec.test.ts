import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { CommandFailed } from '../../src/errors.js';
import { CommandRunner } from '../../src/exec.js';
import { silentLogger } from '../../src/log.js';

// Real processes (sh, sleep): the edge CommandRunner stands for.
describe('CommandRunner', () => {
  let dir: string;
  const leftover: number[] = [];
  beforeEach(async () => {
    dir = await mkdtemp(join(tmpdir(), 'ballast-exec-'));
  });
  afterEach(async () => {
    for (const pid of leftover.splice(0)) {
      try {
        process.kill(pid, 'SIGKILL');
      } catch {
        // gone already
      }
    }
    await rm(dir, { recursive: true, force: true });
  });

  it('returns what the command printed', async () => {
    const result = await new CommandRunner(silentLogger()).run(['sh', '-c', 'echo out; echo err >&2']);
    expect(result).toEqual({ stdout: 'out', stderr: 'err', exitCode: 0 });
  });

  it('kills a command that passes its timeout and says so', async () => {
    const started = Date.now();
    const err = await new CommandRunner(silentLogger()).run(['sleep', '30'], { timeoutMs: 300 }).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(CommandFailed);
    expect((err as CommandFailed).timedOut).toBe(true);
    expect(Date.now() - started).toBeLessThan(2_000);
  });

  it('stops waiting for a command that cannot be waited for (a process it started holds its output), within the bound', async () => {
    // sh starts a background sleep that inherits stdout and stderr, then becomes a sleep itself: the
    // timeout kills the foreground one, and the background one keeps the pipes open.
    const pidFile = join(dir, 'background.pid');
    const started = Date.now();
    const err = await new CommandRunner(silentLogger())
      .run(['sh', '-c', `sleep 60 & echo $! > ${pidFile}; exec sleep 60`], { timeoutMs: 300 })
      .catch((e: unknown) => e);
    leftover.push(Number(await readFile(pidFile, 'utf8')));
    expect(Date.now() - started).toBeLessThan(300 + 2_000 + 3_000 + 1_000);
    expect(err).toBeInstanceOf(CommandFailed);
    expect((err as CommandFailed).timedOut).toBe(true);
    expect((err as Error).message).toMatch(/timed out: still running \d+ ms after it started, though it was killed at 300 ms: it is stuck in the kernel .* or a process it started holds its output/);
  }, 15_000);

  it('feeds input on stdin and keeps it out of argv; a secret is masked in the error', async () => {
    const runner = new CommandRunner(silentLogger());
    expect(await runner.run(['sh', '-c', 'read line; echo "got $line"'], { input: 'hello\n' })).toEqual({ stdout: 'got hello', stderr: '', exitCode: 0 });
    const err = await runner.run(['sh', '-c', 'read s; echo "bad secret $s" >&2; exit 3'], { input: 'hunter2\n', redact: ['hunter2'] }).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(CommandFailed);
    expect((err as CommandFailed).exitCode).toBe(3);
    expect((err as Error).message).toContain('bad secret ***');
    expect((err as Error).message).not.toContain('hunter2');
  });

  it('accepts the exit codes it is told are fine and refuses the others', async () => {
    const runner = new CommandRunner(silentLogger());
    expect((await runner.run(['sh', '-c', 'exit 2'], { okExitCodes: [0, 2] })).exitCode).toBe(2);
    const err = await runner.run(['sh', '-c', 'exit 2']).catch((e: unknown) => e);
    expect((err as CommandFailed).exitCode).toBe(2);
    expect((err as Error).message).toBe("command 'sh -c exit 2' exited with code 2");
  });

  it('says so when the command does not exist', async () => {
    const err = await new CommandRunner(silentLogger()).run(['ballast-no-such-command', 'x']).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(CommandFailed);
    expect((err as CommandFailed).exitCode).toBeUndefined();
    expect((err as Error).message).toMatch(/ballast-no-such-command x.*ENOENT/);
  });

  it('keeps output whole but the one final newline, and runs with LC_ALL=C', async () => {
    const result = await new CommandRunner(silentLogger()).run(['sh', '-c', 'printf "a\\n\\nb\\n"; echo "$LC_ALL" >&2']);
    expect(result.stdout).toBe('a\n\nb');
    expect(result.stderr).toBe('C');
  });
});
