import { requireVmLab } from '../../lab/vm.js';
import { runScenario, scenarioScript, type Results } from '../../lab/vm-scenario.js';

// The fence shuts a volume's filesystem down. Whatever a writer saw fsync acknowledge must
// survive it, as the host taking over sees the volume. On a slow device (dm-delay) an fsync waits
// on its data while the shutdown aborts ext4's journal, and in Debian's kernel that fsync can
// return 0 for a line the journal then drops. Needs root and the VM lab (dm_delay). The bare
// shutdown ballast's fence used before loses a line in some trials only (6 of 46 when this test
// was written): FENCE_FSYNC_NOLOGFLUSH_TRIALS=<n> measures it beside, by hand. On storage that
// does not answer (a multipath map with no path, its I/O queued) the freeze cannot finish, and a
// write queued before the fence that completed once the path returned could lose a line the same
// way. That race is narrow (0 of 6 trials lost without the fence's fail_if_no_path when this test
// was written), so the test also checks that the fence failed the queued I/O: the writer ends
// before the path returns (without fail_if_no_path it waits for the path in every trial).
describe('the fence keeps every fsync-acknowledged write (ext4 on a slow device, VM lab)', () => {
  let results: Results;

  beforeAll(async () => {
    requireVmLab();
    // FENCE_FSYNC_<MODE>_TRIALS=<n> (see the script) change the number of trials, by hand.
    const env = Object.fromEntries(Object.entries(process.env).filter((e): e is [string, string] => /^FENCE_FSYNC_/.test(e[0]) && e[1] !== undefined));
    const { run, results: said } = await runScenario(scenarioScript('fence-fsync'), { name: 'vm1', timeoutMs: 600_000, env });
    results = said;
    const trials = run.console.split('\n').filter((l) => l.startsWith('fence-fsync '));
    console.log(`fence-fsync (trials, and trials that lost an acknowledged line): ${JSON.stringify(results)}\n${trials.join('\n')}`);
  }, 620_000);

  it('the check sees a lost acknowledged line: a shutdown with a log flush loses one in some trials', () => {
    expect(Number(results.logflush_trials)).toBeGreaterThan(0);
    expect(Number(results.logflush_lost)).toBeGreaterThan(0);
  });

  it('ballast\'s fence (the watchdog\'s freeze, shutdown, thaw) loses none', () => {
    expect(Number(results.ballast_trials)).toBeGreaterThanOrEqual(5);
    expect(results.ballast_lost).toBe('0');
  });

  it('on a multipath map with no path left (its I/O queued), the fence fails that I/O and loses none when the path returns', () => {
    expect(Number(results.unreachable_trials)).toBeGreaterThanOrEqual(3);
    // Every trial fenced without the freeze, or it did not test storage that does not answer.
    expect(results.unreachable_without_freeze).toBe(results.unreachable_trials);
    // The queued I/O failed at the fence: no writer stayed blocked until the path came back.
    expect(results.unreachable_writer_held).toBe('0');
    expect(results.unreachable_lost).toBe('0');
  });
});
