import { Counter, Gauge, Histogram, Registry } from 'prom-client';
import { exitCodeLabel, LabelGuard, toolOf } from './labels.js';

export type Outcome = 'ok' | 'err';
export type LeaseState = 'held_here' | 'held_elsewhere' | 'free';
export type FilesystemOperation = 'mkfs' | 'fsck' | 'grow';

/** An ownership record as far as metrics care (structural: this module imports nothing of ballast). */
export type OwnershipLike = { state: 'free' } | { state: 'held'; holder: { hostId: string } };

const LEASE_STATES: readonly LeaseState[] = ['held_here', 'held_elsewhere', 'free'];
/** Volume names as the manager accepts them (src/volumes/names.ts). */
const VOLUME_NAME = /^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$/;

/** From a quick Get (ms) to a slow Mount that waits for another host's lease (minutes). */
const CALL_BUCKETS = [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120];
/** Attach, detach, mkfs, fsck, grow: tens of ms (loop) to minutes (a large xfs, a slow array). */
const STEP_BUCKETS = [0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300];

/**
 * The daemon's Prometheus metrics, in a registry of their own (never prom-client's global
 * one). Every label value goes through a guard, so series stay few whatever the input.
 */
export class MetricsRegistry {
  readonly registry = new Registry();
  private readonly methods = new LabelGuard(16);
  private readonly transports = new LabelGuard(16);
  private readonly fstypes = new LabelGuard(8);
  private readonly tools = new LabelGuard(48);
  private readonly exitCodes = new LabelGuard(64);
  private readonly backendLabels = new WeakMap<object, { profile: string; backend: string }[]>();
  /** Volumes that have a lease-state series. */
  private readonly leaseVolumes = new Set<string>();

  private readonly calls = new Histogram({
    name: 'ballast_protocol_call_duration_seconds',
    help: 'Docker volume plugin protocol calls, by method and outcome (err: the reply carried an Err)',
    labelNames: ['method', 'outcome'],
    buckets: CALL_BUCKETS,
    registers: [this.registry],
  });
  private readonly attaches = new Histogram({
    name: 'ballast_attach_duration_seconds',
    help: 'Attaching a volume\'s device to this host, by transport and outcome',
    labelNames: ['transport', 'outcome'],
    buckets: STEP_BUCKETS,
    registers: [this.registry],
  });
  private readonly detaches = new Histogram({
    name: 'ballast_detach_duration_seconds',
    help: 'Detaching a volume\'s device from this host, by transport and outcome',
    labelNames: ['transport', 'outcome'],
    buckets: STEP_BUCKETS,
    registers: [this.registry],
  });
  private readonly filesystem = new Histogram({
    name: 'ballast_filesystem_operation_duration_seconds',
    help: 'mkfs, fsck and grow of a volume\'s filesystem, by operation, fstype and outcome',
    labelNames: ['operation', 'fstype', 'outcome'],
    buckets: STEP_BUCKETS,
    registers: [this.registry],
  });
  private readonly leases = new Gauge({
    name: 'ballast_volume_lease_state',
    help: 'Ownership lease of each volume as this host last saw it: one series per volume, value 1, state held_here | held_elsewhere | free',
    labelNames: ['volume', 'state'],
    registers: [this.registry],
  });
  private readonly takeovers = new Counter({
    name: 'ballast_takeovers_total',
    help: 'Volumes this host took over from a holder judged dead',
    registers: [this.registry],
  });
  private readonly fences = new Counter({
    name: 'ballast_fences_total',
    help: 'Mounted volumes fenced on this host (filesystem shut down: this host may have lost the lease)',
    registers: [this.registry],
  });
  private readonly commandFailures = new Counter({
    name: 'ballast_command_failures_total',
    help: 'External commands that failed, by tool (argv[0] basename) and exit code (timeout: killed at its bound)',
    labelNames: ['tool', 'exit_code'],
    registers: [this.registry],
  });
  private readonly backends = new Gauge({
    name: 'ballast_backend_up',
    help: '1 when the backend\'s last host-lease renewal or metadata read succeeded, 0 when it failed',
    labelNames: ['profile', 'backend'],
    registers: [this.registry],
  });

  /** A protocol call ended after `durationMs`. */
  observeCall(method: string, outcome: Outcome, durationMs: number): void {
    this.calls.observe({ method: this.methods.value(method), outcome }, durationMs / 1000);
  }

  timeAttach<T>(transport: string, fn: () => Promise<T>): Promise<T> {
    return timed(this.attaches, { transport: this.transports.value(transport) }, fn);
  }

  timeDetach<T>(transport: string, fn: () => Promise<T>): Promise<T> {
    return timed(this.detaches, { transport: this.transports.value(transport) }, fn);
  }

  timeFilesystem<T>(operation: FilesystemOperation, fstype: string, fn: () => Promise<T>): Promise<T> {
    return timed(this.filesystem, { operation, fstype: this.fstypes.value(fstype) }, fn);
  }

  /** A command failed: argv[0] as shown in logs (already masked), its exit code. */
  commandFailed(argv0: string | undefined, exitCode: number | undefined, timedOut: boolean): void {
    this.commandFailures.inc({ tool: this.tools.value(toolOf(argv0)), exit_code: this.exitCodes.value(exitCodeLabel(exitCode, timedOut)) });
  }

  takeover(): void {
    this.takeovers.inc();
  }

  fenced(): void {
    this.fences.inc();
  }

  /** The lease of `volume` as read or just written, seen from the host `hostId`. */
  observeLease(volume: string, ownership: OwnershipLike, hostId: string): void {
    if (!VOLUME_NAME.test(volume)) return;
    const state: LeaseState = ownership.state === 'free' ? 'free' : ownership.holder.hostId === hostId ? 'held_here' : 'held_elsewhere';
    for (const other of LEASE_STATES) if (other !== state) this.leases.remove({ volume, state: other });
    this.leases.set({ volume, state }, 1);
    this.leaseVolumes.add(volume);
  }

  /** The volume no longer exists: its series goes. */
  volumeGone(volume: string): void {
    if (!this.leaseVolumes.delete(volume)) return;
    for (const state of LEASE_STATES) this.leases.remove({ volume, state });
  }

  /** A full listing: volumes not in it are gone (removed from another host, say). */
  volumesListed(names: Iterable<string>): void {
    const present = new Set(names);
    for (const volume of [...this.leaseVolumes]) if (!present.has(volume)) this.volumeGone(volume);
  }

  /** Names the backends for ballast_backend_up: profile name -> driver (profiles may share a driver). */
  nameBackends(byProfile: ReadonlyMap<string, { kind: string }>): void {
    for (const [profile, driver] of byProfile) {
      const labels = this.backendLabels.get(driver) ?? [];
      if (!labels.some((l) => l.profile === profile)) labels.push({ profile, backend: driver.kind });
      this.backendLabels.set(driver, labels);
    }
  }

  /** A renewal or metadata round of `driver` ended: up (true) or not. */
  backendUp(driver: object, up: boolean): void {
    for (const labels of this.backendLabels.get(driver) ?? []) this.backends.set(labels, up ? 1 : 0);
  }

  /** Awaits a metadata round of `driver` and records whether it succeeded. */
  async backendRound<T>(driver: object, round: Promise<T>): Promise<T> {
    try {
      const value = await round;
      this.backendUp(driver, true);
      return value;
    } catch (err) {
      this.backendUp(driver, false);
      throw err;
    }
  }

  /** Zeroes every metric and forgets every series (tests). */
  reset(): void {
    this.registry.resetMetrics();
    this.leaseVolumes.clear();
  }

  /** The text exposition format, and its content type. */
  async scrape(): Promise<{ contentType: string; body: string }> {
    return { contentType: this.registry.contentType, body: await this.registry.metrics() };
  }
}

async function timed<T>(histogram: Histogram<string>, labels: Record<string, string>, fn: () => Promise<T>): Promise<T> {
  const end = histogram.startTimer(labels);
  try {
    const value = await fn();
    end({ outcome: 'ok' });
    return value;
  } catch (err) {
    end({ outcome: 'err' });
    throw err;
  }
}

/** The daemon's one registry; the hooks in the code record into it, the listener serves it. */
export const metrics = new MetricsRegistry();
