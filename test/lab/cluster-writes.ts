import { mkdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { IMAGE } from './busybox-image.js';
import type { Cluster } from './cluster.js';
import { sleep, waitFor } from './command.js';
import { PLUGIN, type DockerHarness } from './docker-harness.js';

// Acknowledged writes on a lab cluster (cluster.ts): a writer that records what is on disk, and
// the checks that a takeover kept every acknowledged write and nothing after a fence.

/**
 * A container command that appends "TAG i" lines to /data/log, fsyncing each one (busybox
 * `sync FILE`), and records i in /acks/acked only once it is on disk. A failed write is recorded
 * in /acks/failed (its error text in /acks/errors) and the writer keeps trying: a host that
 * resumed writing after a fence would show up. /acks is a host directory bound into the container.
 */
export function ackedWriterScript(tag: string, intervalSeconds = 0.1): string {
  return [
    "trap 'exit 0' TERM",
    'i=0',
    'while true; do',
    '  i=$((i+1))',
    `  if { echo "${tag} $i" >> /data/log && sync /data/log; } 2>>/acks/errors; then echo $i >> /acks/acked; else echo $i >> /acks/failed; fi`,
    `  sleep ${intervalSeconds} & wait $!`,
    'done',
  ].join('\n');
}

/** Lines of a file the test can read directly (an /acks dir); [] when it does not exist yet. */
export function readLines(file: string): string[] {
  try {
    return readFileSync(file, 'utf8').split('\n').filter(Boolean);
  } catch {
    return [];
  }
}

/** Numbers recorded in an acks file. */
export function readNumbers(file: string): number[] {
  return readLines(file).map(Number).filter(Number.isFinite);
}

/** A fresh directory for a container's /acks, under the cluster dir. */
export function ackDir(cluster: Cluster, name: string): string {
  const d = join(cluster.dir, 'acks', name);
  mkdirSync(d, { recursive: true });
  return d;
}

/**
 * The wall-clock time (ms) of the first line of `h`'s ballast log matching `match`, at or after
 * `since` (ms); undefined if none.
 */
export async function logTime(h: DockerHarness, match: (l: Record<string, unknown>) => boolean, since = 0): Promise<number | undefined> {
  for (const l of await h.logs()) {
    const t = Date.parse(String(l.timestamp ?? ''));
    if (Number.isFinite(t) && t >= since && match(l)) return t;
  }
  return undefined;
}

export interface TakeoverAttempts {
  /** The container that finally ran on `h` with the volume mounted. */
  container: string;
  /** Every failed attempt: when it ended (ms) and docker's error. */
  failures: { at: number; stderr: string }[];
  /** When the successful `docker run -d` returned (ms). */
  succeededAt: number;
}

/**
 * Tries `docker run -d` of an idle container mounting `volume` on `h` until one starts
 * (bounded by `timeoutMs`); each failed attempt is recorded and its container removed.
 */
export async function mountUntilItWorks(h: DockerHarness, volume: string, name: string, image: string, timeoutMs: number): Promise<TakeoverAttempts> {
  const failures: { at: number; stderr: string }[] = [];
  const deadline = Date.now() + timeoutMs;
  for (let n = 1; Date.now() < deadline; n += 1) {
    const container = `${name}-${n}`;
    const r = await h.docker(
      ['run', '-d', '--name', container, '--network', 'none', '--stop-timeout', '5', '--volume-driver', PLUGIN, '-v', `${volume}:/data`, image, 'sh', '-c', "trap 'exit 0' TERM; while true; do sleep 0.5 & wait $!; done"],
      { timeoutMs: 150_000 },
    );
    if (r.code === 0) return { container, failures, succeededAt: Date.now() };
    failures.push({ at: Date.now(), stderr: r.stderr.trim() });
    await h.docker(['rm', '-f', container], { timeoutMs: 30_000 });
    await sleep(300);
  }
  throw new Error(
    `${h.label} could not mount ${volume} within ${timeoutMs} ms; last errors:\n${failures.slice(-3).map((f) => f.stderr).join('\n')}\n${await h.diagnostics()}`,
  );
}

/** Polls (every 50 ms) until `file` has a line; `seenAt` is when it was first seen (ms). */
export class FirstLineWatch {
  seenAt?: number;
  private readonly timer: NodeJS.Timeout;

  constructor(readonly file: string) {
    this.timer = setInterval(() => {
      if (this.seenAt === undefined && readLines(file).length > 0) this.seenAt = Date.now();
    }, 50);
  }

  stop(): void {
    clearInterval(this.timer);
  }
}

/** The "TAG i" lines of a writer's log, checked to be TAG 1..N in order; returns N. */
export function checkSequence(lines: string[], tag: string): number {
  const mine = lines.filter((l) => l.startsWith(`${tag} `));
  mine.forEach((l, i) => {
    if (l !== `${tag} ${i + 1}`) throw new Error(`line ${i + 1} of ${tag}'s log is "${l}", expected "${tag} ${i + 1}"`);
  });
  return mine.length;
}

/**
 * Starts a container on h1 that appends acknowledged (fsynced) lines to volume `v`, waits for
 * 20 of them, checks that h2 cannot mount `v` meanwhile (the error names h1), and waits for 20
 * more. Returns the ack directory and the file of acknowledged numbers.
 */
export async function writeAckedOnH1(c: Cluster, v: string, container: string): Promise<{ acks: string; acked: string }> {
  const { h1, h2 } = c;
  const acks = ackDir(c, `${container}-h1`);
  const acked = join(acks, 'acked');
  await h1.ok(['volume', 'create', '-d', PLUGIN, '--opt', 'size=32M', v]);
  await h1.run(['-d', '--name', container, '--stop-timeout', '5', '-v', `${v}:/data`, '-v', `${acks}:/acks`, IMAGE, 'sh', '-c', ackedWriterScript('h1')]);
  await waitFor(() => readNumbers(acked).length >= 20, 'h1 to acknowledge 20 writes', 30_000, 100, () => c.diagnostics());
  const live = await h2.fails(['run', '--rm', '--network', 'none', '--volume-driver', PLUGIN, '-v', `${v}:/data`, IMAGE, 'true']);
  if (!new RegExp(`volume ${v} is in use on host h1\\b.*lease renewed`).test(live)) throw new Error(`h2's refusal does not name h1's live lease: ${live}`);
  const seen = readNumbers(acked).length;
  await waitFor(() => readNumbers(acked).length >= seen + 20, 'h1 to keep writing', 30_000, 100);
  return { acks, acked };
}

/**
 * After a takeover: h2's copy of the log holds every line h1 acknowledged, in order, and at
 * most one more (written, not yet acknowledged, when the fence came). Returns what was
 * acknowledged and the log's checksum on h2, for later comparisons.
 */
export async function expectAckedWritesOnH2(c: Cluster, container: string, acked: string): Promise<{ ackedAtTakeover: number[]; sumAtTakeover: string }> {
  const ackedAtTakeover = readNumbers(acked);
  const lastAcked = Math.max(...ackedAtTakeover);
  const onH2 = (await c.h2.ok(['exec', container, 'cat', '/data/log'])).split('\n').filter(Boolean);
  const n = checkSequence(onH2, 'h1');
  if (n < lastAcked || n > lastAcked + 1) throw new Error(`h2 holds ${n} of h1's lines; h1 acknowledged ${lastAcked}`);
  return { ackedAtTakeover, sumAtTakeover: await c.h2.ok(['exec', container, 'md5sum', '/data/log']) };
}
