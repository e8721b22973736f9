import { IMAGE } from '../../lab/busybox-image.js';
import { PLUGIN } from '../../lab/docker-harness.js';
import { loopScript } from '../../lab/docker-suite.js';
import { describeResult, waitFor } from '../../lab/command.js';
import { SQLITE_IMAGE } from '../../lab/busybox-image.js';
import { clusterSuite } from '../../lab/cluster.js';

// Two Docker hosts sharing one loop root: a SQLite database written on h1 is read back whole on
// h2 (and the other way), and while h1 has the volume mounted h2 cannot mount it: the Mount
// fails within its bound, naming h1, and h1's data is untouched.

const T = 150_000;
const suite = clusterSuite({ name: 'move', hosts: 2, sqliteImage: true }, T);
const it = suite.it;

const DB = '/data/app.db';
/** 20 transactions of 250 rows: 5,000 rows of random text, tagged with $HOST (the docker host). */
const WRITE = [
  `sqlite3 ${DB} 'CREATE TABLE t(id INTEGER PRIMARY KEY, host TEXT NOT NULL, v TEXT NOT NULL)'`,
  'for b in $(seq 0 19); do',
  `  sqlite3 ${DB} "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x+1 FROM c WHERE x<250) INSERT INTO t(id, host, v) SELECT $b*250+x, '$HOST', hex(randomblob(32)) FROM c" || exit 1`,
  'done',
].join('\n');
/** integrity_check, row count, and a checksum over every row in order. */
const CHECK = `sqlite3 ${DB} 'PRAGMA integrity_check; SELECT count(*), count(DISTINCT host) FROM t' && sqlite3 ${DB} 'SELECT id, host, v FROM t ORDER BY id' | sha256sum`;

describe('a volume moves between hosts', () => {
  const v = 'mvdb';

  it('a SQLite database written on h1 (5,000 rows) is read back on h2 with the same checksum, and back again', async () => {
    const { h1, h2 } = suite.c;
    await h1.ok(['volume', 'create', '-d', PLUGIN, '--opt', 'size=64M', v]);
    // Scope global on a shared root: h2 knows the volume without creating it.
    const seen = await h2.inspectVolume(v);
    expect(seen).toMatchObject({ Name: v, Driver: PLUGIN, Scope: 'global' });
    expect(seen.Status).toMatchObject({ size: '64 MiB', lease: { state: 'free' } });

    // h1 writes the database, then idles until stopped (SIGTERM -> Unmount on h1).
    await h1.run(['-d', '--name', 'mv-w1', '--stop-timeout', '5', '-e', 'HOST=h1', '-v', `${v}:/data`, SQLITE_IMAGE, 'sh', '-c', `${WRITE}\n{ ${CHECK}; } > /data/check.tmp && mv /data/check.tmp /data/check.h1\n${loopScript('true', 0.5)}`]);
    const written = await waitFor(
      async () => {
        const r = await h1.docker(['exec', 'mv-w1', 'cat', '/data/check.h1']);
        return r.code === 0 && /[0-9a-f]{64}/.test(r.stdout) ? r.stdout : '';
      },
      'h1 to write the database',
      60_000,
      250,
      () => suite.c.diagnostics(),
    );
    expect(written).toMatch(/^ok\n5000\|1\n[0-9a-f]{64} {2}-\n$/);
    await h1.ok(['stop', 'mv-w1']);
    await h1.ok(['rm', 'mv-w1']);
    expect(h1.ballastMounts(v)).toEqual([]);
    expect(h1.ballastLoops(v)).toEqual([]);
    // h2 answers from its volume index: h1's release shows within one lease.renew_every (2 s by default).
    await waitFor(async () => ((await h2.inspectVolume(v)).Status as { lease?: { state?: string } }).lease?.state === 'free', 'h2 to see the lease free', 3_000, 100);

    // h2 mounts the same volume (--volume-driver: h2 never created it) and reads every row.
    const read = await h2.run(['--rm', '--volume-driver', PLUGIN, '-v', `${v}:/data`, SQLITE_IMAGE, 'sh', '-c', CHECK]);
    expect(read).toBe(written);
    expect(h2.ballastMounts(v)).toEqual([]);

    // And back: h2 adds 5,000 rows of its own, h1 reads all 10,000.
    const APPEND = WRITE.replace(/^sqlite3 .*CREATE TABLE.*\n/, '').replace('$b*250+x', '5000+$b*250+x');
    const written2 = await h2.run(['--rm', '-e', 'HOST=h2', '--volume-driver', PLUGIN, '-v', `${v}:/data`, SQLITE_IMAGE, 'sh', '-c', `${APPEND}\n${CHECK}`]);
    expect(written2).toMatch(/^ok\n10000\|2\n[0-9a-f]{64} {2}-\n$/);
    const read2 = await h1.run(['--rm', '-v', `${v}:/data`, SQLITE_IMAGE, 'sh', '-c', CHECK]);
    expect(read2).toBe(written2);
    expect(await h1.run(['--rm', '-v', `${v}:/data`, SQLITE_IMAGE, 'sqlite3', DB, 'SELECT host, count(*) FROM t GROUP BY host ORDER BY host'])).toBe('h1|5000\nh2|5000\n');
  });

  it('exclusion: while h1 has the volume mounted, a mount on h2 fails within its bound naming h1, and h1 is untouched', async () => {
    const { h1, h2 } = suite.c;
    const lease = suite.c.lease;
    await h1.run(['-d', '--name', 'mv-hold', '--stop-timeout', '5', '-v', `${v}:/data`, SQLITE_IMAGE, 'sh', '-c', loopScript('date >> /data/ticks', 0.2)]);
    await h1.waitForMoreLines('mv-hold', '/data/ticks', 0, 'h1 to write');
    const before = await h1.ok(['exec', 'mv-hold', 'sh', '-c', CHECK]);
    const ticksBefore = await h1.lineCount('mv-hold', '/data/ticks');

    // A Mount waits up to lease.mount_wait for the holder to let go.
    const bound = lease.mount_wait * 1000 + 20_000;
    const started = Date.now();
    const attempt = await h2.docker(['run', '--rm', '--network', 'none', '--volume-driver', PLUGIN, '-v', `${v}:/data`, IMAGE, 'sh', '-c', 'echo h2 >> /data/ticks'], {
      timeoutMs: bound + 10_000,
    });
    const took = Date.now() - started;
    if (attempt.code === 0 || attempt.timedOut) throw new Error(`h2 mounted a volume h1 holds, or hung:\n${describeResult(attempt)}`);
    expect(attempt.stderr).toMatch(new RegExp(`volume ${v} is in use on host h1\\b`));
    expect(took).toBeLessThan(bound);
    if (lease) expect(took).toBeGreaterThanOrEqual((lease.mount_wait - 1) * 1000);

    // Remove is refused the same way; h2 attached nothing; the image is bound once (h1's).
    expect(await h2.fails(['volume', 'rm', v])).toMatch(new RegExp(`volume ${v} is in use on host h1\\b`));
    expect(h2.ballastMounts(v)).toEqual([]);
    expect(h1.ballastLoops(v)).toHaveLength(1);
    expect((await h2.inspectVolume(v)).Status).toMatchObject({ lease: { state: 'held', holder: expect.stringMatching(/^host h1\b/) } });

    // h1's database is as it was, and h1 kept writing all along; no line from h2.
    expect(await h1.ok(['exec', 'mv-hold', 'sh', '-c', CHECK])).toBe(before);
    expect(await h1.lineCount('mv-hold', '/data/ticks')).toBeGreaterThan(ticksBefore);
    expect(await h1.ok(['exec', 'mv-hold', 'sh', '-c', 'grep -c h2 /data/ticks || true'])).toBe('0\n');

    // Once h1 lets go, h2 mounts it at once.
    await h1.ok(['rm', '-f', 'mv-hold']);
    expect(await h2.run(['--rm', '--volume-driver', PLUGIN, '-v', `${v}:/data`, IMAGE, 'sh', '-c', 'echo h2 >> /data/ticks && tail -n 1 /data/ticks'])).toBe('h2\n');
  });

  it('nothing left behind on any host: no mount, loop device, reference or volume', async () => {
    await suite.c.assertNoLeftovers();
  });
});
