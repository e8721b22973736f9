import { AttachFailed, CommandFailed } from '../../errors.js';
import type { Exec, ExecOptions } from '../../exec.js';
import { nodeRecordFile, parseRecord, setRecordValue } from './node-record.js';

/** One logged-in iSCSI session, as `iscsiadm -m session` lists it. */
export interface IscsiSession {
  id: number;
  portal: string;
  iqn: string;
}

export interface IscsiadmOptions {
  timeoutMs: number;
  /** Where open-iscsi's node records are found (a temp tree in tests). Default /. */
  root?: string;
  /** Attempts for a call that fails with exit code 6 ("iSCSI database failure", concurrent writers). */
  attempts?: number;
  retryDelayMs?: number;
  sleep?: (ms: number) => Promise<void>;
}

// iscsiadm exit codes (iscsi_err.h): 6 database failure, 15 session exists, 21 no objects found.
const DATABASE_FAILURE = 6;
const SESSION_EXISTS = 15;
const NO_OBJECTS = 21;

/** The iscsiadm calls ballast makes, each bounded and retried on a database failure. */
export class Iscsiadm {
  private readonly attempts: number;
  private readonly retryDelayMs: number;
  private readonly sleep: (ms: number) => Promise<void>;

  constructor(
    private readonly exec: Exec,
    private readonly options: IscsiadmOptions,
  ) {
    this.attempts = options.attempts ?? 3;
    this.retryDelayMs = options.retryDelayMs ?? 1_000;
    this.sleep = options.sleep ?? ((ms) => new Promise((r) => setTimeout(r, ms)));
  }

  private async run(args: string[], extra: ExecOptions = {}) {
    for (let attempt = 1; ; attempt++) {
      try {
        return await this.exec.run(['iscsiadm', ...args], { timeoutMs: this.options.timeoutMs, ...extra });
      } catch (err) {
        const retry = err instanceof CommandFailed && err.exitCode === DATABASE_FAILURE && attempt < this.attempts;
        if (!retry) throw err;
        await this.sleep(this.retryDelayMs * attempt);
      }
    }
  }

  private node(iqn: string, portal: string): string[] {
    return ['-m', 'node', '-T', iqn, '-p', portal];
  }

  /** Creates (or refreshes) the node record: no discovery, so no other targets are learnt. */
  async createNode(iqn: string, portal: string): Promise<void> {
    await this.run([...this.node(iqn, portal), '--interface', 'default', '--op', 'new']);
  }

  /** Never for a secret: every user of the host sees a command line in the process list. */
  async updateNode(iqn: string, portal: string, key: string, value: string): Promise<void> {
    await this.run([...this.node(iqn, portal), '--op', 'update', '-n', key, '-v', value]);
  }

  /** The node record, key by key as iscsiadm prints it (a secret that is set shows as ********). */
  async showNode(iqn: string, portal: string): Promise<Map<string, string>> {
    return parseRecord((await this.run([...this.node(iqn, portal), '--op', 'show'])).stdout);
  }

  /**
   * Sets a secret (node.session.auth.password) in the node record without any command line: it is
   * written into the record's file, which iscsiadm reads at login, then iscsiadm's own reading of
   * the record must show it set.
   */
  async updateNodeSecret(iqn: string, portal: string, key: string, secret: string): Promise<void> {
    const file = await nodeRecordFile(this.options.root ?? '/', await this.showNode(iqn, portal));
    await setRecordValue(file, key, secret);
    if ((await this.showNode(iqn, portal)).get(key) !== '********') {
      throw new AttachFailed(`iscsiadm does not see the ${key} ballast wrote into ${file}: is that where this open-iscsi keeps its node records?`);
    }
  }

  async login(iqn: string, portal: string): Promise<void> {
    await this.run([...this.node(iqn, portal), '--login'], { okExitCodes: [0, SESSION_EXISTS] });
  }

  async logout(iqn: string, portal: string): Promise<void> {
    await this.run([...this.node(iqn, portal), '--logout'], { okExitCodes: [0, NO_OBJECTS] });
  }

  async deleteNode(iqn: string, portal: string): Promise<void> {
    await this.run([...this.node(iqn, portal), '--op', 'delete'], { okExitCodes: [0, NO_OBJECTS] });
  }

  async sessions(): Promise<IscsiSession[]> {
    const { stdout } = await this.run(['-m', 'session'], { okExitCodes: [0, NO_OBJECTS] });
    return parseSessions(stdout);
  }
}

/** Parses lines like "tcp: [3] 127.0.0.1:3260,1 iqn.2026-11.dev.ballast:v1 (non-flash)". */
export function parseSessions(text: string): IscsiSession[] {
  const sessions: IscsiSession[] = [];
  for (const line of text.split('\n')) {
    const m = /^\S+: \[(\d+)\] (\S+),\d+ (\S+)/.exec(line.trim());
    if (m) sessions.push({ id: Number(m[1]), portal: m[2]!, iqn: m[3]! });
  }
  return sessions;
}
