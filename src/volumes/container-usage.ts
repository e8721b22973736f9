import type Docker from 'dockerode';
import { errorMessage } from '../errors.js';
import type { Logger } from '../log.js';

/** Which volumes running containers use, as the local dockerd sees it. */
export interface ContainerUsage {
  /** Names of non-local volumes mounted by running, paused or restarting containers; undefined if dockerd cannot be asked. */
  volumesInUse(): Promise<Set<string> | undefined>;
}

/**
 * Asks dockerd's API over its Unix socket, with a bound on every call. dockerode is loaded on
 * first use: it is only needed after a dockerd restart, and loading it costs seconds on slow CPUs.
 */
export class DockerApiUsage implements ContainerUsage {
  private docker?: Docker;

  constructor(
    private readonly socketPath: string,
    private readonly log: Logger,
    private readonly timeoutMs = 5_000,
  ) {}

  async volumesInUse(): Promise<Set<string> | undefined> {
    try {
      if (!this.docker) {
        const { default: Dockerode } = await import('dockerode');
        this.docker = new Dockerode({ socketPath: this.socketPath, timeout: this.timeoutMs });
      }
      const containers = await this.docker.listContainers({ filters: { status: ['running', 'paused', 'restarting'] } });
      const names = containers.flatMap((c) => (c.Mounts ?? []).filter((m) => m.Type === 'volume' && m.Driver !== 'local' && m.Name).map((m) => m.Name!));
      return new Set(names);
    } catch (err) {
      this.log.debug('the Docker API did not answer', { error: errorMessage(err) });
      return undefined;
    }
  }
}
