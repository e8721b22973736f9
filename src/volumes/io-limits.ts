import type Docker from 'dockerode';
import { ioCgroupOf, throttle } from '../attach/io-throttle.js';
import type { BackendDriver, IoLimits, VolumeRecord } from '../drivers/types.js';
import { errorMessage } from '../errors.js';
import type { Logger } from '../log.js';
import { describeIoLimits } from './options.js';

/** A volume mounted here that has IO limits: its device and the limits. */
export interface Throttled {
  volume: string;
  device: string;
  limits: IoLimits;
}

/** The limits the host's cgroup throttle applies: none where the storage enforces them itself (driver.ioLimitsBy). */
export function hostIoLimits(entry: { driver: BackendDriver; record: VolumeRecord } | undefined): IoLimits | undefined {
  return entry && !entry.driver.ioLimitsBy ? entry.record.ioLimits : undefined;
}

const RECONNECT_MS = 1_000;
const CALL_TIMEOUT_MS = 5_000;
const SINCE_MARGIN_S = 5;

/**
 * Applies each volume's IO limits to every container that mounts it. dockerd names the
 * containers, not the Mount calls (a Mount's ID is not the container's), so this follows
 * dockerd's container start events and, at start, the containers already running: for each
 * ballast volume a container mounts, the volume's device is throttled in the container's block
 * IO cgroup. A container runs unthrottled for the moment between its start and its event.
 */
export class IoLimitEnforcer {
  private docker?: Docker;
  private stopped = false;
  private events?: Docker;
  private stream?: NodeJS.ReadableStream;
  private since?: number;

  constructor(
    private readonly socketPath: string,
    /** The volume Docker names (possibly inline options), if mounted here with limits. */
    private readonly throttledVolume: (dockerName: string) => Throttled | undefined,
    private readonly log: Logger,
    /** Whether a volume mounted here has limits: only then is dockerd followed. */
    private readonly anyLimits: () => boolean,
  ) {}

  /** Follows dockerd in the background; never throws (dockerd may not be up yet). */
  start(): void {
    void this.follow();
  }

  stop(): void {
    this.stopped = true;
    (this.stream as { destroy?: () => void } | undefined)?.destroy?.();
  }

  /** Throttles the ballast volumes of one container (by id); resolves to what it applied. */
  async containerStarted(id: string): Promise<Throttled[]> {
    const docker = await this.client();
    const info = await docker.getContainer(id).inspect();
    const pid = info.State?.Pid;
    if (!pid) return [];
    const applied: Throttled[] = [];
    for (const mount of info.Mounts ?? []) {
      if (mount.Type !== 'volume' || !mount.Name || mount.Driver === 'local') continue;
      const target = this.throttledVolume(mount.Name);
      if (!target) continue;
      try {
        await throttle(await ioCgroupOf(pid), target.device, target.limits);
        applied.push(target);
        this.log.info('io limits applied', { volume: target.volume, container: id.slice(0, 12), device: target.device, limits: describeIoLimits(target.limits) });
      } catch (err) {
        this.log.error('cannot apply io limits', { volume: target.volume, container: id.slice(0, 12), error: errorMessage(err) });
      }
    }
    return applied;
  }

  private async client(): Promise<Docker> {
    if (!this.docker) {
      const { default: Dockerode } = await import('dockerode');
      this.docker = new Dockerode({ socketPath: this.socketPath, timeout: CALL_TIMEOUT_MS });
    }
    return this.docker;
  }

  /** While any volume mounted here has limits: catch up with running containers, then follow start events. */
  private async follow(): Promise<void> {
    let caughtUp = false;
    while (!this.stopped) {
      if (this.anyLimits()) {
        try {
          const docker = await this.client();
          // A container started just before this connected is replayed: `since` reaches back.
          this.since ??= Math.floor(Date.now() / 1000) - SINCE_MARGIN_S;
          if (!caughtUp) {
            for (const c of await docker.listContainers()) await this.containerStarted(c.Id);
            caughtUp = true;
          }
          await this.eventsUntilClosed(await this.eventsClient());
        } catch (err) {
          this.log.debug('docker events: not connected; retrying', { error: errorMessage(err) });
        }
      }
      if (!this.stopped) await new Promise((r) => setTimeout(r, RECONNECT_MS).unref());
    }
  }

  /** The event stream stays open while dockerd runs: a client without the call timeout. */
  private async eventsClient(): Promise<Docker> {
    if (!this.events) {
      const { default: Dockerode } = await import('dockerode');
      this.events = new Dockerode({ socketPath: this.socketPath });
    }
    return this.events;
  }

  private async eventsUntilClosed(docker: Docker): Promise<void> {
    const stream = (await docker.getEvents({ since: this.since, filters: { type: ['container'], event: ['start'] } })) as NodeJS.ReadableStream;
    this.stream = stream;
    let pending = '';
    await new Promise<void>((resolve) => {
      stream.on('data', (chunk: Buffer) => {
        pending += chunk.toString('utf8');
        for (let nl = pending.indexOf('\n'); nl >= 0; nl = pending.indexOf('\n')) {
          const line = pending.slice(0, nl).trim();
          pending = pending.slice(nl + 1);
          if (!line) continue;
          const event = JSON.parse(line) as { id?: string; time?: number };
          if (event.time) this.since = event.time;
          if (event.id && this.anyLimits()) {
            this.containerStarted(event.id).catch((err) => this.log.warn('cannot inspect a started container', { container: event.id!.slice(0, 12), error: errorMessage(err) }));
          }
        }
      });
      stream.on('end', () => resolve());
      stream.on('error', () => resolve());
      stream.on('close', () => resolve());
    });
  }
}
