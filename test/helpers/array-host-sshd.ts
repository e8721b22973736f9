import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { SshExec, type SshSettings } from '../../src/drivers/array-host/ssh-exec.js';
import { silentLogger } from '../../src/log.js';
import { PrivateSshd, requireSshd } from '../lab/sshd.js';

// What the array-host SSH suites (array-host-ssh.test.ts, array-host-ssh-store.test.ts) share:
// a private sshd on 127.0.0.1, one SshExec to it, and a scratch directory. `sshd`, `ssh` and
// `scratch` are live bindings, set by useSshd's beforeAll.

export let sshd: PrivateSshd;
export let ssh: SshExec;
export let scratch: string;

export const settings = (overrides: Partial<SshSettings> = {}): SshSettings => ({
  host: sshd.host,
  port: sshd.port,
  username: sshd.username,
  privateKeyPath: sshd.privateKeyPath,
  hostKeySha256: sshd.hostKeySha256,
  connectTimeoutMs: 3_000,
  ...overrides,
});

/** Needs root and openssh-server (fails, never skips, without them); starts sshd before the tests and stops it after. */
export function useSshd(): void {
  requireSshd();

  beforeAll(async () => {
    scratch = await mkdtemp(join(tmpdir(), 'ballast-ssh-'));
    sshd = await PrivateSshd.start();
    ssh = new SshExec(settings(), silentLogger(), 10_000);
  });

  afterAll(async () => {
    await ssh?.close();
    await sshd?.stop();
    await rm(scratch, { recursive: true, force: true });
  });
}
