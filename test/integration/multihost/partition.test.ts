import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { IMAGE } from '../../lab/busybox-image.js';
import { sleep, waitFor } from '../../lab/command.js';
import { FirstLineWatch, expectAckedWritesOnH2, logTime, mountUntilItWorks, readLines, readNumbers, writeAckedOnH1 } from '../../lab/cluster-writes.js';
import { clusterSuite } from '../../lab/cluster.js';

// A hung host: h1's ballast is stopped with SIGSTOP (alive, but renewing nothing) while its
// dockerd and a container writing to the volume keep running. h1 must fence itself (its
// container's writes fail with EIO) before h2 may take the volume over; h2 takes it only after
// the lease expired, and sees every write h1 acknowledged and nothing written after the fence.
// After SIGCONT, h1 does not resume writing.
//
// mount_wait is 2 s here (LEASE has 20): each mount attempt on h2 fails fast while the lease is
// live, so the test sees the failures and the first success.

const T = 180_000;
const suite = clusterSuite({ name: 'partition', hosts: 2, leaseSettings: { mount_wait: 2 } }, T);
const it = suite.it;

function processState(pid: number): string {
  return /^\d+ \(.*\) (\S)/.exec(readFileSync(`/proc/${pid}/stat`, 'utf8'))?.[1] ?? '?';
}

describe("h1's ballast hangs (SIGSTOP) with a volume mounted and written", () => {
  const v = 'ptv';

  it('h1 fences itself before h2 takes over; h2 sees every acknowledged write and nothing after; after SIGCONT h1 stays fenced', async () => {
    const c = suite.c;
    const { h1, h2 } = c;
    const lease = c.lease;
    const { acks, acked } = await writeAckedOnH1(c, v, 'pw');
    const failed = join(acks, 'failed');

    const pid = h1.ballast.child!.pid!;
    expect(readFileSync(`/proc/${pid}/cmdline`, 'utf8')).toContain('serve');
    const fence = new FirstLineWatch(failed);
    let stoppedAt = 0;
    let attempts;
    try {
      stoppedAt = Date.now();
      process.kill(pid, 'SIGSTOP');
      await waitFor(() => processState(pid) === 'T', "h1's ballast to stop", 5_000, 20);
      attempts = await mountUntilItWorks(h2, v, 'pt-h2', IMAGE, 60_000);
    } finally {
      fence.stop();
    }
    expect(processState(pid)).toBe('T');
    const takenAt = await logTime(h2, (l) => l.volume === v && /taking over a volume from a dead holder/.test(String(l.message)), stoppedAt);
    if (takenAt === undefined) throw new Error(`h2 mounted ${v} without logging a takeover from h1`);

    // Failed while h1's lease was live, naming h1; taken no earlier than lease.seconds after the stop.
    expect(attempts.failures.length).toBeGreaterThan(0);
    for (const f of attempts.failures) expect(f.stderr).toMatch(new RegExp(`volume ${v} is in use on host h1\\b`));
    // Measured from the holder's last renewal as the observer saw it, which may precede the
    // stop by up to one renewal interval (the fence-before-takeover order is checked below).
    expect(takenAt - stoppedAt).toBeGreaterThanOrEqual((lease.seconds - lease.renew_every) * 1000);
    expect(takenAt - stoppedAt).toBeLessThan(lease.seconds * 1000 + 15_000);

    // The fence came first: h1's container (still running, its dockerd untouched) saw its
    // writes fail with EIO before h2 took the volume.
    expect(await h1.ok(['inspect', '-f', '{{.State.Running}}', 'pw'])).toBe('true\n');
    expect(fence.seenAt).toBeDefined();
    expect(fence.seenAt!).toBeLessThan(takenAt);
    const fencedAt = await logTime(h1, (l) => l.volume === v && /^FENCING/.test(String(l.message)), stoppedAt);
    expect(fencedAt).toBeDefined();
    expect(fencedAt!).toBeLessThan(takenAt);
    expect(readLines(join(acks, 'errors')).join('\n')).toMatch(/I\/O error|Input\/output error/);

    // h2 has the last line h1 managed to write, every acknowledged one, and nothing after.
    const { ackedAtTakeover, sumAtTakeover } = await expectAckedWritesOnH2(c, attempts.container, acked);
    await sleep(2_000);
    expect(await h2.ok(['exec', attempts.container, 'md5sum', '/data/log'])).toBe(sumAtTakeover);
    expect(readNumbers(acked)).toEqual(ackedAtTakeover);

    // SIGCONT: h1's ballast runs again and learns the volume was taken; its container keeps
    // trying and failing, nothing more reaches the volume.
    const failedBefore = readNumbers(failed).length;
    process.kill(pid, 'SIGCONT');
    await sleep(lease.renew_every * 3000 + 1_000);
    expect(h1.ballastRunning()).toBe(true);
    expect(readNumbers(failed).length).toBeGreaterThan(failedBefore);
    expect(readNumbers(acked)).toEqual(ackedAtTakeover);
    expect(await h2.ok(['exec', attempts.container, 'md5sum', '/data/log'])).toBe(sumAtTakeover);
    expect((await h1.inspectVolume(v)).Status).toMatchObject({
      lease: { state: 'held', holder: expect.stringMatching(/^host h2\b/) },
      fenced: expect.any(String),
    });
    expect(await h1.fails(['run', '--rm', '--network', 'none', '-v', `${v}:/data`, IMAGE, 'true'])).toMatch(
      new RegExp(`volume ${v} is in use on host h2\\b|volume ${v} was fenced on this host`),
    );

    // h1's container stops: h1 unmounts its fenced copy and detaches its own device; h2 keeps
    // the volume until its container stops; the data at rest is what h2 saw.
    await h1.ok(['rm', '-f', 'pw']);
    await waitFor(() => h1.ballastMounts(v).length === 0, `h1 to unmount its fenced copy of ${v}`, 15_000, 100, () => c.diagnostics());
    expect(h2.ballastMounts(v)).toHaveLength(1);
    await h2.ok(['rm', '-f', attempts.container]);
    expect(await h2.run(['--rm', '-v', `${v}:/data`, IMAGE, 'md5sum', '/data/log'])).toBe(sumAtTakeover);
    expect(h1.ballastLoops(v)).toEqual([]);
    await h2.ok(['volume', 'rm', v]);
  });

  it('nothing left behind on any host: no mount, loop device, reference or volume', async () => {
    await suite.c.assertNoLeftovers();
  });
});
