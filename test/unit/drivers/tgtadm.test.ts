import { Tgtadm } from '../../../src/drivers/iscsi/tgtadm.js';
import type { ExecOptions, ExecResult } from '../../../src/exec.js';
import { FakeExec } from '../../helpers/fake-exec.js';

/** FakeExec that keeps what each call asked to be masked. */
class RedactingExec extends FakeExec {
  readonly redacted: (readonly string[] | undefined)[] = [];
  override run(argv: readonly string[], options: ExecOptions = {}): Promise<ExecResult> {
    this.redacted.push(options.redact);
    return super.run(argv, options);
  }
}

describe('Tgtadm.newAccount', () => {
  // tgtadm takes an account's password only as --password (tgt 1.0.97 usr/tgtadm.c): it is on
  // the command line, so it must at least be masked wherever ballast shows the command.
  it('has the runner mask the password in what it logs and in errors', async () => {
    const exec = new RedactingExec();
    await new Tgtadm(exec, 3260, 1_000).newAccount('ballast', 'secret-secret-12');
    expect(exec.commands).toEqual(['tgtadm -C 3260 --lld iscsi --mode account --op new --user ballast --password secret-secret-12']);
    expect(exec.redacted).toEqual([['secret-secret-12']]);
  });
});
