import { existsSync } from 'node:fs';
import { readFile } from 'node:fs/promises';
import { createServer, type Server } from 'node:net';
import { join } from 'node:path';
import { Writable } from 'node:stream';
import winston from 'winston';
import { SshExec } from '../../src/drivers/array-host/ssh-exec.js';
import { BackendUnavailable, CommandFailed } from '../../src/errors.js';
import { silentLogger } from '../../src/log.js';
import { scratch, settings, ssh, sshd, useSshd } from '../helpers/array-host-sshd.js';
import { processAlive } from '../lab/sshd.js';
import { freeTcpPort } from '../lab/net.js';

// The array host reached over SSH, against a private sshd on 127.0.0.1: SshExec's quoting,
// exit codes, timeouts, reconnects and host key check. RemoteFileStore and the loop driver's
// metadata kept through SSH are in array-host-ssh-store.test.ts.
// Needs root and openssh-server; fails (never skips) without them.
useSshd();

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

async function waitUntil(check: () => boolean, ms: number): Promise<boolean> {
  const deadline = Date.now() + ms;
  while (!check()) {
    if (Date.now() > deadline) return false;
    await sleep(20);
  }
  return true;
}

/** A logger that keeps every entry, to check what reaches the log. */
function capturingLogger(): { log: winston.Logger; entries: Record<string, unknown>[] } {
  const entries: Record<string, unknown>[] = [];
  const stream = new Writable({
    write(chunk: Buffer, _encoding, done) {
      entries.push(JSON.parse(chunk.toString()) as Record<string, unknown>);
      done();
    },
  });
  return { log: winston.createLogger({ level: 'debug', format: winston.format.json(), transports: [new winston.transports.Stream({ stream })] }), entries };
}

describe('the array host over SSH', () => {
  describe('SshExec', () => {
    it('passes every argument verbatim: spaces, quotes, $, ;, globs, backslashes, newlines', async () => {
      const words = ["a b'c$d;e", '', "'", '"$(id)"', '`id`', '*', '\\n\\', 'two\nlines', '-n', 'ünïcödé', "''\\''"];
      for (const word of words) expect((await ssh.run(['printf', '%s', word])).stdout).toBe(word);
      expect((await ssh.run(['printf', '%s|', ...words])).stdout).toBe(words.map((w) => `${w}|`).join(''));
    });

    it('reports exit codes, accepts okExitCodes, and keeps stdout and stderr apart', async () => {
      const failed = await ssh.run(['sh', '-c', 'echo out; echo err >&2; exit 3']).catch((e: unknown) => e);
      expect(failed).toBeInstanceOf(CommandFailed);
      expect(failed).toMatchObject({ exitCode: 3, timedOut: false, stderr: 'err\n' });
      expect(await ssh.run(['sh', '-c', 'echo out; echo err >&2; exit 3'], { okExitCodes: [0, 3] })).toEqual({ stdout: 'out\n', stderr: 'err\n', exitCode: 3 });
      await expect(ssh.run(['no-such-command-here'])).rejects.toMatchObject({ exitCode: 127 });
      // Like stdin: 'ignore' locally: a command reading stdin sees EOF at once.
      expect((await ssh.run(['cat'])).stdout).toBe('');
    });

    it('writes input to stdin (runWithInput), large and small', async () => {
      const big = 'x'.repeat(300_000) + 'ünï\n';
      expect((await ssh.runWithInput(['cat'], big)).stdout).toBe(big);
      expect((await ssh.runWithInput(['wc', '-c'], 'abc')).stdout.trim()).toBe('3');
    });

    it('masks redacted strings in errors and logs', async () => {
      const { log, entries } = capturingLogger();
      const exec = new SshExec(settings(), log, 10_000);
      try {
        const err = await exec.run(['sh', '-c', 'echo "bad s3cret" >&2; exit 1', 's3cret'], { redact: ['s3cret'] }).catch((e: unknown) => e);
        expect(err).toBeInstanceOf(CommandFailed);
        expect(JSON.stringify(err)).not.toContain('s3cret');
        expect((err as Error).message).not.toContain('s3cret');
        expect((err as CommandFailed).stderr).toContain('bad ***');
        const logged = entries.filter((e) => e.message === 'command');
        expect(logged).toHaveLength(1);
        expect(JSON.stringify(logged)).not.toContain('s3cret');
        expect(logged[0]).toMatchObject({ level: 'warn', exitCode: 1, target: `root@127.0.0.1:${sshd.port}` });
        await exec.run(['true']);
        expect(entries.filter((e) => e.message === 'command')[1]).toMatchObject({ level: 'debug', argv: ['true'], exitCode: 0 });
      } finally {
        await exec.close();
      }
    });

    it('times out within the bound and leaves no remote process behind', async () => {
      const pidFile = join(scratch, 'sleeper.pids');
      const started = performance.now();
      // The shell and a background grandchild: both must go.
      const err = await ssh
        .run(['sh', '-c', 'echo $$ > "$1"; sleep 30 & echo $! >> "$1"; wait', 'sh', pidFile], { timeoutMs: 700 })
        .catch((e: unknown) => e);
      const elapsed = performance.now() - started;
      expect(err).toBeInstanceOf(CommandFailed);
      expect(err).toMatchObject({ timedOut: true });
      expect(elapsed).toBeGreaterThanOrEqual(650);
      expect(elapsed).toBeLessThan(1_500);
      const pids = (await readFile(pidFile, 'utf8')).trim().split('\n').map(Number);
      expect(pids).toHaveLength(2);
      // Gone well before the remote `timeout` backstop (1 s after ours) would have fired: the
      // signal sent over the channel reached the whole process group.
      expect(await waitUntil(() => !pids.some(processAlive), 700)).toBe(true);
      expect((await ssh.run(['echo', 'still usable'])).stdout).toBe('still usable\n');
    });

    it('kills a command that ignores SIGTERM with SIGKILL two seconds later, like CommandRunner', async () => {
      const pidFile = join(scratch, 'stubborn.pids');
      const started = performance.now();
      // An ignored signal stays ignored in children: neither the shell nor its sleep will stop on TERM.
      const err = await ssh
        .run(['sh', '-c', 'trap "" TERM; echo $$ > "$1"; sleep 30 & echo $! >> "$1"; wait', 'sh', pidFile], { timeoutMs: 300 })
        .catch((e: unknown) => e);
      const elapsed = performance.now() - started;
      expect(err).toMatchObject({ timedOut: true });
      expect(elapsed).toBeGreaterThanOrEqual(2_250);
      expect(elapsed).toBeLessThan(3_500);
      const pids = (await readFile(pidFile, 'utf8')).trim().split('\n').map(Number);
      expect(await waitUntil(() => !pids.some(processAlive), 700)).toBe(true);
    });

    it('runs more commands at once than sshd allows sessions (MaxSessions 10)', async () => {
      const results = await Promise.all(Array.from({ length: 30 }, (_, i) => ssh.run(['sh', '-c', 'sleep 0.05; echo $1', 'sh', String(i)])));
      expect(results.map((r) => r.stdout)).toEqual(Array.from({ length: 30 }, (_, i) => `${i}\n`));
    });

    it('reconnects after its connection is killed on the server side, and after sshd restarts', async () => {
      await ssh.run(['true']);
      expect(await sshd.dropConnections()).toBeGreaterThan(0);
      expect((await ssh.run(['echo', 'one'])).stdout).toBe('one\n');
      await sshd.restart(); // same port, same host key; the old connection goes with the old sshd
      expect((await ssh.run(['echo', 'two'])).stdout).toBe('two\n');
      await ssh.close();
      expect((await ssh.run(['echo', 'three'])).stdout).toBe('three\n');
    });

    it('reports a command cut off by a lost connection as failed, not as success', async () => {
      const pending = ssh.run(['sleep', '5']).catch((e: unknown) => e);
      await sleep(300);
      await sshd.dropConnections();
      const err = await pending;
      expect(err).toBeInstanceOf(CommandFailed);
      expect((err as CommandFailed).message).toMatch(/SSH connection closed/);
      expect((await ssh.run(['echo', 'back'])).stdout).toBe('back\n');
    });

    it('fails fast, naming user@host:port, when nothing listens', async () => {
      const port = await freeTcpPort();
      const exec = new SshExec(settings({ port, connectTimeoutMs: 2_000 }), silentLogger());
      const started = performance.now();
      const err = await exec.run(['true']).catch((e: unknown) => e);
      expect(performance.now() - started).toBeLessThan(2_000);
      expect(err).toBeInstanceOf(BackendUnavailable);
      expect((err as Error).message).toContain(`root@127.0.0.1:${port}`);
      expect((err as Error).message).toContain('ECONNREFUSED');
      await exec.close();
    });

    it('gives up after connectTimeoutMs on a server that accepts but never speaks SSH', async () => {
      const sockets: import('node:net').Socket[] = [];
      const silent: Server = createServer((s) => sockets.push(s));
      await new Promise<void>((resolve) => silent.listen(0, '127.0.0.1', resolve));
      const port = (silent.address() as { port: number }).port;
      const exec = new SshExec(settings({ port, connectTimeoutMs: 800 }), silentLogger());
      try {
        const started = performance.now();
        const err = await exec.run(['true']).catch((e: unknown) => e);
        const elapsed = performance.now() - started;
        expect(elapsed).toBeGreaterThanOrEqual(750);
        expect(elapsed).toBeLessThan(1_800);
        expect(err).toBeInstanceOf(BackendUnavailable);
        expect((err as Error).message).toContain(`root@127.0.0.1:${port}`);
      } finally {
        await exec.close();
        for (const s of sockets) s.destroy();
        await new Promise((resolve) => silent.close(resolve));
      }
    });

    it('refuses a server whose host key does not match the configured fingerprint', async () => {
      const wrong = `SHA256:${Buffer.alloc(32, 7).toString('base64').replace(/=+$/, '')}`;
      const exec = new SshExec(settings({ hostKeySha256: wrong }), silentLogger());
      const marker = join(scratch, 'should-not-exist');
      const err = await exec.run(['touch', marker]).catch((e: unknown) => e);
      expect(err).toBeInstanceOf(BackendUnavailable);
      expect((err as Error).message).toContain(`root@127.0.0.1:${sshd.port}`);
      expect((err as Error).message).toContain(`host key ${sshd.hostKeySha256} does not match`);
      expect(existsSync(marker)).toBe(false);
      await exec.close();
      // Without the prefix, OpenSSH's bare base64 form is accepted as well.
      const bare = new SshExec(settings({ hostKeySha256: sshd.hostKeySha256.slice('SHA256:'.length) }), silentLogger());
      expect((await bare.run(['echo', 'ok'])).stdout).toBe('ok\n');
      await bare.close();
    });
  });
});
