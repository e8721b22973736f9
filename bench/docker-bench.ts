// Figure 3: `docker run --rm busybox:local true` with a ballast volume versus a `local` volume,
// through a private dockerd that finds ballast at /run/docker/plugins/ballast.sock.
import { mkdir } from 'node:fs/promises';
import { join } from 'node:path';
import { CleanupStack } from './lib/cleanup.js';
import { startPrivateDocker } from './lib/ballast.js';

export interface DockerBenchOptions {
  runs: number;
  log: (line: string) => void;
}

export interface DockerBenchResult {
  ballast: number[];
  local: number[];
  /** The same run without any volume: the floor both are measured against. */
  none: number[];
  ballastFirst: number;
  localFirst: number;
  /** Mount calls ballast served for its volume: a check that the runs really went through it. */
  ballastMounts: number;
  dockerVersion: string;
}

const BALLAST_VOLUME = 'bench-docker-ballast';
const LOCAL_VOLUME = 'bench-docker-local';

export async function dockerBench(root: string, options: DockerBenchOptions): Promise<DockerBenchResult> {
  const cleanup = new CleanupStack();
  const dir = join(root, 'docker');
  await mkdir(dir, { recursive: true });
  try {
    const h = await startPrivateDocker(dir, cleanup, options.log);
    const dockerVersion = (await h.ok(['version', '--format', '{{.Server.Version}}'], { timeoutMs: 10_000 })).trim();
    // The harness's teardown removes every container; the volumes go with its dir.
    await h.ok(['volume', 'create', '--driver', 'ballast', BALLAST_VOLUME]);
    await h.ok(['volume', 'create', LOCAL_VOLUME]);

    type Kind = 'ballast' | 'local' | 'none';
    const dockerRun = async (kind: Kind): Promise<number> => {
      const volume =
        kind === 'ballast' ? ['-v', `${BALLAST_VOLUME}:/data`, '--volume-driver', 'ballast'] : kind === 'local' ? ['-v', `${LOCAL_VOLUME}:/data`] : [];
      return h.timed(['run', '--rm', '--network', 'none', ...volume, 'busybox:local', 'true'], { timeoutMs: 120_000 });
    };

    options.log(`timing docker run: 1 first run per volume, then ${options.runs} runs each with ballast, local and no volume (interleaved)...`);
    // Untimed: the engine's very first container (runc, overlay and image set-up).
    await dockerRun('none');
    // The first run of the ballast volume formats it (mkfs): reported apart, as is the local one's.
    const ballastFirst = await dockerRun('ballast');
    const localFirst = await dockerRun('local');
    const samples: Record<Kind, number[]> = { ballast: [], local: [], none: [] };
    const orders: Kind[][] = [
      ['ballast', 'local', 'none'],
      ['local', 'none', 'ballast'],
      ['none', 'ballast', 'local'],
    ];
    for (let i = 0; i < options.runs; i++) {
      for (const kind of orders[i % orders.length]!) samples[kind].push(await dockerRun(kind));
    }
    const ballastMounts = await h.ballast.requestCount('VolumeDriver.Mount', BALLAST_VOLUME);
    return { ...samples, ballastFirst, localFirst, ballastMounts, dockerVersion };
  } finally {
    const failures = await cleanup.run();
    if (failures.length) options.log(`cleanup problems: ${failures.join('; ')}`);
  }
}
