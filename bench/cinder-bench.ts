// `npm run bench:cinder`: the cinder backend against a real Cinder (test/lab/cinder.ts).
// Per operation (create, attach, detach, destroy): wall time and Block Storage API round trips
// of ballast's driver (lease included), beside the least a plugin must ask Cinder for the same
// operation, made by hand through the same client. Attach is the API side only (Cinder makes the
// target and returns its CHAP secret); the iSCSI login is the attacher's, measured in
// bench/iscsi-bench.ts. Asserts nothing.
import { CinderClient, type CinderAuth } from '../src/drivers/cinder/client.js';
import { CinderDriver } from '../src/drivers/cinder/cinder-driver.js';
import { silentLogger } from '../src/log.js';
import { HostLeaseKeeper } from '../src/ownership/host-lease.js';
import { HostMonitor } from '../src/ownership/host-monitor.js';
import { OwnershipLease } from '../src/ownership/lease.js';
import { startCinderLab } from '../test/lab/cinder.js';
import { exitWith, intFromEnv, out, progress, runBench } from './lib/bench-run.js';
import { comparison, measure, type Sample } from './lib/api-calls.js';
import { median, ms } from './lib/stats.js';

const RUNS = intFromEnv('BENCH_CINDER_RUNS', 10);
const OPS = ['create', 'attach', 'detach', 'destroy'] as const;
type Op = (typeof OPS)[number];

/** Polls GET /volumes/{id} every 100 ms until `done` says so (or 404 when waiting for deletion). */
async function until(client: CinderClient, id: string, done: (status: string | undefined) => boolean): Promise<void> {
  for (;;) {
    const status = await client
      .call<{ volume: { status: string } }>('GET', `/volumes/${id}`, 'read volume')
      .then((r) => r.data.volume.status)
      .catch(() => undefined);
    if (done(status)) return;
    await new Promise((r) => setTimeout(r, 100));
  }
}

async function main(): Promise<number> {
  return runBench({
    prefix: 'ballast-cinder-bench',
    title: 'ballast cinder benchmark (a real Cinder on loopback)',
    intro: [`${RUNS} runs of each operation on 1 GiB volumes; Debian's Cinder (Zed), one cinder-volume with the lab's file driver behind tgt.`],
    deadlineSeconds: intFromEnv('BENCH_DEADLINE_SECONDS', 600),
    cleanOk: 'Cinder lab stopped',
    body: async () => {
      const lab = await startCinderLab();
      try {
        const auth: CinderAuth = { kind: 'noauth', projectId: lab.projectId };
        const client = new CinderClient({ url: lab.url, auth, timeoutMs: 60_000 }, silentLogger());
        const backend = { url: lab.url, auth: { type: 'noauth' as const, project_id: lab.projectId }, multipath: false, reservations: true, timeout_seconds: 60 };
        const driver = new CinderDriver(client, backend, new Map(), '127.0.0.1', silentLogger());
        await driver.start();
        const me = { hostId: 'bench-host', bootId: 'b1', hostname: 'bench-host' };
        const timing = { leaseSeconds: 20, renewEverySeconds: 2 };
        const keeper = new HostLeaseKeeper(driver, me, timing, silentLogger());
        const lease = new OwnershipLease(driver, me, silentLogger(), { store: driver, keeper, monitor: new HostMonitor(timing.leaseSeconds) });
        const initiator = { hostId: me.hostId, iqn: 'iqn.2026-12.dev.ballast:bench' };
        await keeper.register();

        const rtt: number[] = [];
        for (let i = 0; i < 30; i++) rtt.push((await measure(client.calls, () => client.call('GET', '/volumes?limit=1', 'list'))).ms);

        const ballast: Record<Op, Sample[]> = { create: [], attach: [], detach: [], destroy: [] };
        for (let i = 0; i < RUNS; i++) {
          const name = `bench-${i}`;
          ballast.create.push(await measure(client.calls, () => driver.create({ name, profile: 'default', sizeBytes: 2 ** 30, fstype: 'ext4', mkfsOpts: [], mountOpts: [], readonly: false })));
          ballast.attach.push(await measure(client.calls, async () => {
            await lease.acquire(name);
            await driver.export(name, initiator);
          }));
          ballast.detach.push(await measure(client.calls, async () => {
            await driver.unexport(name, initiator);
            await lease.release(name);
          }));
          ballast.destroy.push(await measure(client.calls, () => driver.destroy(name)));
        }
        progress('ballast runs done');

        // By hand: the least a plugin asks Cinder for (create and wait; attach with a connector and
        // complete; delete the attachment; delete and wait), with no record, lease or name lookup.
        const byHand = new CinderClient({ url: lab.url, auth, timeoutMs: 60_000 }, silentLogger());
        const connector = { initiator: initiator.iqn, ip: '127.0.0.1', host: me.hostId, multipath: false, platform: 'x86_64', os_type: 'linux' };
        const hand: Record<Op, Sample[]> = { create: [], attach: [], detach: [], destroy: [] };
        for (let i = 0; i < RUNS; i++) {
          let id = '';
          let attachment = '';
          hand.create.push(await measure(byHand.calls, async () => {
            id = (await byHand.call<{ volume: { id: string } }>('POST', '/volumes', 'create', { volume: { name: `hand-${i}`, size: 1 } })).data.volume.id;
            await until(byHand, id, (s) => s === 'available');
          }));
          hand.attach.push(await measure(byHand.calls, async () => {
            attachment = (await byHand.call<{ attachment: { id: string } }>('POST', '/attachments', 'attach', { attachment: { volume_uuid: id, connector } })).data.attachment.id;
            await byHand.call('POST', `/attachments/${attachment}/action`, 'complete', { 'os-complete': null });
          }));
          hand.detach.push(await measure(byHand.calls, () => byHand.call('DELETE', `/attachments/${attachment}`, 'detach')));
          hand.destroy.push(await measure(byHand.calls, async () => {
            await byHand.call('DELETE', `/volumes/${id}`, 'delete');
            await until(byHand, id, (s) => s === undefined);
          }));
        }
        progress('by-hand runs done');

        out(`Cinder API round trip (GET /volumes?limit=1): median ${ms(median(rtt))} ms`);
        out();
        out('Per operation, median of runs (calls = Block Storage API round trips, status polls included):');
        out(comparison(OPS, ballast, hand));
        out();
        out(`Round trips of all ${RUNS} ballast runs (and the start), by call:`);
        for (const [call, n] of [...client.calls].sort((a, b) => b[1] - a[1])) out(`  ${String(n).padStart(5)}  ${call}`);
      } finally {
        await lab.stop();
      }
    },
  });
}

exitWith(main);
