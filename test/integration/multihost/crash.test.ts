import { IMAGE } from '../../lab/busybox-image.js';
import { sleep, waitFor } from '../../lab/command.js';
import { FirstLineWatch, expectAckedWritesOnH2, logTime, mountUntilItWorks, readLines, readNumbers, writeAckedOnH1 } from '../../lab/cluster-writes.js';
import { clusterSuite } from '../../lab/cluster.js';
import { join } from 'node:path';

// A host crash: h1's ballast AND dockerd are killed with SIGKILL while a container on h1 writes
// (fsyncing every line, acknowledging each in a file outside the volume). The container lives on
// (its shim survives), so only the fence keeps it from writing: ballast's fence watchdog must
// shut the filesystem down before the lease expires. h2's mounts fail while h1's lease is live,
// and succeed only once it expired (lease.seconds after h1's last renewal); h2 sees
// every acknowledged write; h1 writes nothing more, also after its ballast and dockerd restart.
//
// mount_wait is 2 s here (LEASE has 20): each mount attempt on h2 fails fast while the lease is
// live, so the test sees the failures and the first success.

const T = 180_000;
const suite = clusterSuite({ name: 'crash', hosts: 2, leaseSettings: { mount_wait: 2 } }, T);
const it = suite.it;

describe('h1 crashes (kill -9 of ballast and dockerd) with a volume mounted and written', () => {
  const v = 'crv';

  it('h2 takes over only after the lease expired, sees every acknowledged write, and h1 writes nothing more', async () => {
    const c = suite.c;
    const { h1, h2 } = c;
    const lease = c.lease;
    // h1 writes; while it is alive h2 cannot mount (the error names h1); h1 writes on.
    const { acks, acked } = await writeAckedOnH1(c, v, 'cw');

    const fence = new FirstLineWatch(join(acks, 'failed'));
    let killedAt = 0;
    let attempts;
    try {
      killedAt = Date.now();
      await h1.stopBallast('SIGKILL');
      await h1.killDockerd();
      expect(h1.ballastRunning()).toBe(false);
      attempts = await mountUntilItWorks(h2, v, 'cr-h2', IMAGE, 60_000);
    } finally {
      fence.stop();
    }
    const takenAt = await logTime(h2, (l) => l.volume === v && /taking over a volume from a dead holder/.test(String(l.message)), killedAt);
    if (takenAt === undefined) throw new Error(`h2 mounted ${v} without logging a takeover from h1`);

    // Failed while the lease was live, every failure naming h1; the takeover never came earlier
    // than lease.seconds after the kill, and not much later either.
    expect(attempts.failures.length).toBeGreaterThan(0);
    for (const f of attempts.failures) expect(f.stderr).toMatch(new RegExp(`volume ${v} is in use on host h1\\b`));
    // Measured from the holder's last renewal as the observer saw it, which may precede the
    // kill by up to one renewal interval (the fence-before-takeover order is checked below).
    expect(takenAt - killedAt).toBeGreaterThanOrEqual((lease.seconds - lease.renew_every) * 1000);
    expect(takenAt - killedAt).toBeLessThan(lease.seconds * 1000 + 15_000);

    // h1's container lived on, and was fenced before h2 took over: its writes fail with EIO.
    expect(fence.seenAt).toBeDefined();
    expect(fence.seenAt!).toBeLessThan(takenAt);
    expect(readLines(join(acks, 'errors')).join('\n')).toMatch(/I\/O error|Input\/output error/);

    // h2 sees every write h1 acknowledged (fsynced), in order, and at most one more.
    const { ackedAtTakeover, sumAtTakeover } = await expectAckedWritesOnH2(c, attempts.container, acked);

    // h1 comes back: its ballast, then its dockerd. It learns it lost the volume and writes
    // nothing more to it: h2's copy does not change, h1 acknowledges nothing new.
    await h1.startBallast();
    await h1.startDockerd();
    await sleep(lease.renew_every * 3000 + 1000);
    expect(await h2.ok(['exec', attempts.container, 'md5sum', '/data/log'])).toBe(sumAtTakeover);
    expect(readNumbers(acked)).toEqual(ackedAtTakeover);
    expect((await h1.inspectVolume(v)).Status).toMatchObject({ lease: { state: 'held', holder: expect.stringMatching(/^host h2\b/) } });
    expect(await h1.fails(['run', '--rm', '--network', 'none', '-v', `${v}:/data`, IMAGE, 'true'])).toMatch(new RegExp(`volume ${v} is in use on host h2\\b|volume ${v} was fenced on this host`));

    // h2 lets go; the data at rest is what h2 saw at the takeover.
    await h2.ok(['rm', '-f', attempts.container]);
    expect(await h2.run(['--rm', '-v', `${v}:/data`, IMAGE, 'md5sum', '/data/log'])).toBe(sumAtTakeover);

    // h1's container is gone (h1's new dockerd killed it, or rm -f does now). Docker sends no
    // Unmount for a container that died with its dockerd: h1's ballast must still drop its
    // fenced mount and the loop device, and the volume can then be removed.
    await h1.removeAllContainers();
    await waitFor(
      () => h1.ballastMounts(v).length === 0 && h1.ballastLoops(v).length === 0,
      `h1 to drop its fenced mount of ${v} once no container uses it`,
      30_000,
      250,
      async () => `h1 mounts: ${h1.ballastMounts(v).join(', ')}; loop devices of ${v}: ${h1.ballastLoops(v).join(', ')}\n${await c.diagnostics()}`,
    );
    await h2.ok(['volume', 'rm', v]);
  });

  it('nothing left behind on any host: no mount, loop device, reference or volume', async () => {
    await suite.c.assertNoLeftovers();
  });
});
