// Lease bench figure 4a: what a daemon's host-lease renewal round costs the shared root in reads,
// measured by two in-process observers (beacon scheme and old scheme) and printed beside the
// daemons' own count (lease-scale.ts).
import { join } from 'node:path';
import { FileHostLeases } from '../../src/drivers/file-host-leases.js';
import { LocalFileStore } from '../../src/drivers/file-store.js';
import type { HostLease } from '../../src/ownership/types.js';
import { out } from './bench-run.js';
import { table } from './stats.js';
import { sleep } from './proc.js';

/** Host-lease reads: what a daemon's renewal round costs the shared root. */
export interface HostLeaseReads {
  hosts: number;
  renewEvery: number;
  /** The running daemons (beacon scheme), counted by inotify over the steady window. */
  daemons: {
    seconds: number;
    /** Opens of .hosts itself, less one per renewal (the fsync after each record replace). */
    listings: number;
    /** Opens of .hosts/<id>.json, the victim's left out (the bench's own observer reads it). */
    recordReads: number;
    victimRecordReads: number;
    overflow: boolean;
  };
  /** One in-process observer per scheme, both on the live root in the same rounds. */
  observers: {
    rounds: number;
    beacons: ObserverFigures;
    old: ObserverFigures;
  };
}

interface ObserverFigures {
  /** The first round: nothing known yet. */
  firstRound: number;
  /** Mean reads (listings + file reads) per round after the first. */
  perRound: number;
  /** Mean hosts whose renewSeq this observer saw move per round, after the first. */
  movedPerRound: number;
  hostsListed: number;
}

/** LocalFileStore counting its reads: listings, file reads and stats. */
class CountingReads extends LocalFileStore {
  reads = 0;
  override readdir(path: string) {
    this.reads += 1;
    return super.readdir(path);
  }
  override readFile(path: string) {
    this.reads += 1;
    return super.readFile(path);
  }
  override stat(path: string) {
    this.reads += 1;
    return super.stat(path);
  }
}

/** The listing every daemon made before beacons: the directory, then every host's record. */
async function oldSchemeListing(files: LocalFileStore, leaseDir: string): Promise<HostLease[]> {
  const entries = (await files.readdir(leaseDir)) ?? [];
  const leases = await Promise.all(
    entries
      .filter((e) => e.endsWith('.json') && !e.startsWith('.'))
      .map((e) => files.readFile(join(leaseDir, e)).then((text) => (text ? (JSON.parse(text) as HostLease) : undefined), () => undefined)),
  );
  return leases.filter((l): l is HostLease => l !== undefined);
}

/**
 * `rounds` renewal rounds, renewEvery apart, of two observers on the live root: FileHostLeases
 * (as each daemon's LeaseUpkeep.observeHosts calls it) and the old scheme, side by side.
 */
export async function measureObservers(shared: string, rounds: number, renewEvery: number): Promise<HostLeaseReads['observers']> {
  const leaseDir = join(shared, '.hosts');
  const beaconFiles = new CountingReads();
  const oldFiles = new CountingReads();
  const beacons = new FileHostLeases(shared, beaconFiles, shared);
  const schemes = [
    { files: beaconFiles, list: () => beacons.listHostLeases() },
    { files: oldFiles, list: () => oldSchemeListing(oldFiles, leaseDir) },
  ];
  const figures = schemes.map(() => ({ firstRound: 0, reads: 0, moved: 0, hostsListed: 0, last: new Map<string, number>() }));
  for (let round = 0; round < rounds; round += 1) {
    if (round > 0) await sleep(renewEvery * 1000);
    await Promise.all(
      schemes.map(async (scheme, k) => {
        const f = figures[k]!;
        const before = scheme.files.reads;
        const leases = await scheme.list();
        const reads = scheme.files.reads - before;
        f.hostsListed = leases.length;
        if (round === 0) f.firstRound = reads;
        else f.reads += reads;
        for (const l of leases) {
          if (round > 0 && f.last.get(l.hostId) !== l.renewSeq) f.moved += 1;
          f.last.set(l.hostId, l.renewSeq);
        }
      }),
    );
  }
  const steadyRounds = Math.max(1, rounds - 1);
  const [b, o] = figures.map((f) => ({ firstRound: f.firstRound, perRound: f.reads / steadyRounds, movedPerRound: f.moved / steadyRounds, hostsListed: f.hostsListed }));
  return { rounds, beacons: b!, old: o! };
}

/** Prints the reads section, after the scale section (lease-bench.ts printScale). */
export function printHostLeaseReads(r: HostLeaseReads): void {
  const { hosts, renewEvery } = r;
  const b = r.observers.beacons;
  const o = r.observers.old;
  const d = r.daemons;
  const perSecond = (perRound: number) => perRound / renewEvery;
  const row = (name: string, perDaemon: number, base: number) => [
    name,
    perDaemon.toFixed(1),
    perSecond(perDaemon).toFixed(1),
    (perDaemon * hosts).toFixed(0),
    perSecond(perDaemon * hosts).toFixed(0),
    `${(perDaemon / base).toFixed(3)}x`,
  ];
  const daemonPerRound = (d.listings + d.recordReads) / (d.seconds / renewEvery) / hosts;
  out(`4a. Host-lease reads per renewal round (renew_every ${renewEvery} s) with ${hosts} hosts: reads = directory listings + host-lease file reads`);
  out(
    table(
      ['', 'per daemon/round', 'per daemon/s', 'all daemons/round', 'all daemons/s', 'ratio to old'],
      [
        row(`old scheme: listing + every record (observer, ${r.observers.rounds} rounds)`, o.perRound, o.perRound),
        row(`beacons: FileHostLeases.listHostLeases (observer, same rounds)`, b.perRound, o.perRound),
        row(`beacons: the ${hosts} running daemons, inotify over ${d.seconds.toFixed(0)} s`, daemonPerRound, o.perRound),
      ],
    ),
  );
  out(`   (all daemons = per daemon x ${hosts} for the observers; the daemons' row is measured: ${d.listings} listings + ${d.recordReads} record reads in all,`);
  out(`    over ${hosts} daemons, the victim's record left out (${d.victimRecordReads} opens: the bench's own observer reads it 5 times a second)${d.overflow ? '; inotify OVERFLOWED: counts are low' : ''}.`);
  out(`    First round of a fresh observer: ${b.firstRound} reads (beacons; every record once) vs ${o.firstRound} (old). Hosts seen renewing per round:`);
  out(`    ${b.movedPerRound.toFixed(1)} of ${b.hostsListed} through beacons, ${o.movedPerRound.toFixed(1)} of ${o.hostsListed} through the records: the same progress seen with 1 read instead of ${o.perRound.toFixed(0)}.)`);
  out();
}
