import { CommandFailed } from '../../errors.js';
import type { Exec, ExecOptions } from '../../exec.js';

/** A target as `tgtadm --op show --mode target` describes it. */
export interface TgtTarget {
  tid: number;
  iqn: string;
  luns: { lun: number; path?: string; sizeBytes: number }[];
  /** Initiator names (and addresses) allowed to log in. */
  acl: string[];
  /** Incoming CHAP accounts bound to the target. */
  accounts: string[];
  /** Initiators logged in right now. */
  sessions: string[];
}

/** tgtadm, tgtd's management command, for one tgtd (its control port). Every call bounded. */
export class Tgtadm {
  constructor(
    private readonly exec: Exec,
    private readonly controlPort: number,
    private readonly timeoutMs: number,
  ) {}

  private async run(args: string[], options: ExecOptions = {}) {
    return this.exec.run(['tgtadm', '-C', String(this.controlPort), '--lld', 'iscsi', ...args], { timeoutMs: this.timeoutMs, ...options });
  }

  async targets(): Promise<TgtTarget[]> {
    return parseTargets((await this.run(['--mode', 'target', '--op', 'show'])).stdout);
  }

  async accounts(): Promise<string[]> {
    const { stdout } = await this.run(['--mode', 'account', '--op', 'show']);
    return stdout.split('\n').slice(1).map((l) => l.trim()).filter(Boolean);
  }

  async newTarget(tid: number, iqn: string): Promise<void> {
    await this.run(['--mode', 'target', '--op', 'new', '--tid', String(tid), '--targetname', iqn]);
  }

  async deleteTarget(tid: number): Promise<void> {
    await this.run(['--mode', 'target', '--op', 'delete', '--force', '--tid', String(tid)]);
  }

  async newLun(tid: number, lun: number, path: string): Promise<void> {
    await this.run(['--mode', 'logicalunit', '--op', 'new', '--tid', String(tid), '--lun', String(lun), '--backing-store', path]);
  }

  async updateLun(tid: number, lun: number, params: string): Promise<void> {
    await this.run(['--mode', 'logicalunit', '--op', 'update', '--tid', String(tid), '--lun', String(lun), '--params', params]);
  }

  /** Idempotent: another daemon exporting the same volume may have bound it a moment ago. */
  async bindInitiator(tid: number, initiatorIqn: string): Promise<void> {
    await this.run(['--mode', 'target', '--op', 'bind', '--tid', String(tid), '--initiator-name', initiatorIqn]).catch((err: unknown) => {
      if (!tgtError(err, /already exists/)) throw err;
    });
  }

  /** Idempotent, like bind. */
  async unbindInitiator(tid: number, initiatorIqn: string): Promise<void> {
    await this.run(['--mode', 'target', '--op', 'unbind', '--tid', String(tid), '--initiator-name', initiatorIqn]).catch((err: unknown) => {
      if (!tgtError(err, /does not exist/)) throw err;
    });
  }

  /**
   * tgtadm takes the password only as --password (usr/tgtadm.c reads no stdin or file for it), so
   * the array host's users can see it in the process list while the command runs; ballast's logs
   * and errors show it masked.
   */
  async newAccount(username: string, password: string): Promise<void> {
    await this.run(['--mode', 'account', '--op', 'new', '--user', username, '--password', password], { redact: [password] });
  }

  async bindAccount(tid: number, username: string): Promise<void> {
    await this.run(['--mode', 'account', '--op', 'bind', '--tid', String(tid), '--user', username]);
  }
}

/** tgtadm fails with exit code 22 for every error; the message says which. */
export function tgtError(err: unknown, message: RegExp): boolean {
  return err instanceof CommandFailed && message.test(err.stderr);
}

export function parseTargets(text: string): TgtTarget[] {
  const targets: TgtTarget[] = [];
  let current: TgtTarget | undefined;
  let section = '';
  let lun: TgtTarget['luns'][number] | undefined;
  for (const raw of text.split('\n')) {
    const line = raw.trim();
    const head = /^Target (\d+): (\S+)$/.exec(raw);
    if (head) {
      current = { tid: Number(head[1]), iqn: head[2]!, luns: [], acl: [], accounts: [], sessions: [] };
      targets.push(current);
      continue;
    }
    if (!current || !line) continue;
    if (/^[A-Z_ ]+[a-z ]*information:$/i.test(line)) {
      section = line;
      continue;
    }
    if (section === 'LUN information:') {
      const lunHead = /^LUN: (\d+)$/.exec(line);
      if (lunHead) current.luns.push((lun = { lun: Number(lunHead[1]), sizeBytes: 0 }));
      const size = /^Size: (\d+) MB/.exec(line);
      if (size && lun) lun.sizeBytes = Number(size[1]) * 1000 * 1000;
      const path = /^Backing store path: (\/.*)$/.exec(line);
      if (path && lun) lun.path = path[1];
    } else if (section === 'ACL information:') {
      current.acl.push(line);
    } else if (section === 'Account information:') {
      current.accounts.push(line);
    } else if (section === 'I_T nexus information:') {
      const initiator = /^Initiator: (\S+)/.exec(line);
      if (initiator) current.sessions.push(initiator[1]!);
    }
  }
  return targets;
}
