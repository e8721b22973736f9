import { IMAGE } from '../../lab/busybox-image.js';
import { PLUGIN } from '../../lab/docker-harness.js';
import { waitFor } from '../../lab/command.js';
import { clusterSuite } from '../../lab/cluster.js';

// Docker Swarm over the cluster network: h1 manager, h2 worker. A service with a ballast volume
// (created by the --mount's volume-opt on whichever node runs the task) writes data; its node is
// drained; the task is rescheduled on the other node and finds the data written before.

const T = 180_000;
const suite = clusterSuite({ name: 'swarm', hosts: 2 }, T);
const it = suite.it;

const SERVICE = 'sv';
const VOLUME = 'svdata';

/** First start writes a random marker and its checksum; every start verifies it, then ticks. */
const TASK = [
  "trap 'exit 0' TERM",
  'if [ ! -f /data/marker ]; then head -c 500000 /dev/urandom > /data/marker && sha256sum /data/marker > /data/marker.sha && sync; fi',
  'if sha256sum -c -s /data/marker.sha; then echo "start $NODE marker-ok" >> /data/starts; else echo "start $NODE marker-BAD" >> /data/starts; fi',
  'sync',
  'i=0',
  'while true; do i=$((i+1)); echo "$NODE $i" >> /data/ticks; sleep 0.2 & wait $!; done',
].join('\n');

interface Placement {
  node: string;
  container: string;
}

describe('Docker Swarm moves a service and its ballast volume off a drained node', () => {
  it('h1 and h2 form a swarm; both nodes list the ballast volume plugin', async () => {
    await suite.c.initSwarm();
    const nodes = (await suite.c.h1.ok(['node', 'ls', '--format', '{{.Hostname}} {{.Status}} {{.ManagerStatus}}'])).split('\n').map((l) => l.trim()).filter(Boolean).sort();
    expect(nodes).toEqual(['h1 Ready Leader', 'h2 Ready']);
  });

  it('drain: the task is rescheduled on the other node and reads the data written before', async () => {
    const c = suite.c;
    const manager = c.h1;
    await manager.ok([
      'service', 'create', '--detach', '--name', SERVICE, '--no-resolve-image',
      '--restart-condition', 'any', '--restart-delay', '1s', '--stop-grace-period', '5s',
      // No bridge on these engines (--bridge none) and "none" is not a swarm network: the
      // task shares its host's network namespace (hN's own, not the machine's).
      '--network', 'host',
      '--env', 'NODE={{.Node.Hostname}}',
      '--mount', `type=volume,source=${VOLUME},target=/data,volume-driver=${PLUGIN},volume-opt=size=64M`,
      IMAGE, 'sh', '-c', TASK,
    ]);

    const first = await runningOn(undefined, 'the service task to run');
    const firstHost = c.host(first.node);
    await firstHost.waitForMoreLines(first.container, '/data/ticks', 10, `the task on ${first.node} to write`);
    const marker = (await firstHost.ok(['exec', first.container, 'cat', '/data/marker.sha'])).split(/\s+/)[0];
    const ticksBefore = (await firstHost.ok(['exec', first.container, 'cat', '/data/ticks'])).trim().split('\n');
    expect(ticksBefore.length).toBeGreaterThan(10);
    expect((await firstHost.inspectVolume(VOLUME)).Status).toMatchObject({ size: '64 MiB', lease: { state: 'held', holder: expect.stringMatching(new RegExp(`^host ${first.node}\\b`)) } });

    await manager.ok(['node', 'update', '--availability', 'drain', first.node]);
    const second = await runningOn(first.node, `the task to be rescheduled off ${first.node}`);
    const secondHost = c.host(second.node);
    expect(second.node).not.toBe(first.node);
    await secondHost.waitForMoreLines(second.container, '/data/starts', 1, `the task on ${second.node} to start`);

    // The data written on the first node is all there: the marker verifies, every tick read
    // before the drain is there in order, and the new node appends after them.
    expect((await secondHost.ok(['exec', second.container, 'cat', '/data/starts'])).trim().split('\n')).toEqual([
      `start ${first.node} marker-ok`,
      `start ${second.node} marker-ok`,
    ]);
    expect((await secondHost.ok(['exec', second.container, 'sha256sum', '/data/marker'])).split(/\s+/)[0]).toBe(marker);
    await secondHost.waitForMoreLines(second.container, '/data/ticks', ticksBefore.length, `the task on ${second.node} to write`);
    const ticksAfter = (await secondHost.ok(['exec', second.container, 'cat', '/data/ticks'])).trim().split('\n');
    expect(ticksAfter.slice(0, ticksBefore.length)).toEqual(ticksBefore);
    const firstNodeTicks = ticksAfter.filter((l) => l.startsWith(`${first.node} `));
    expect(firstNodeTicks.map((l) => Number(l.split(' ')[1]))).toEqual(firstNodeTicks.map((_, i) => i + 1)); // none lost, none doubled
    expect(ticksAfter[ticksAfter.length - 1]).toMatch(new RegExp(`^${second.node} \\d+$`));

    // The drained node let go of the volume; the new one holds it.
    expect(firstHost.ballastMounts(VOLUME)).toEqual([]);
    expect(secondHost.ballastMounts(VOLUME)).toHaveLength(1);
    expect((await firstHost.inspectVolume(VOLUME)).Status).toMatchObject({ lease: { state: 'held', holder: expect.stringMatching(new RegExp(`^host ${second.node}\\b`)) } });

    await manager.ok(['node', 'update', '--availability', 'active', first.node]);
  });

  it('nothing left behind on any node: no service, mount, loop device, reference or volume', async () => {
    await suite.c.assertNoLeftovers();
  });
});

/**
 * Waits (bounded) until the service has exactly one task running, on a node other than
 * `notOn`, and its container is up on that node; returns where.
 */
async function runningOn(notOn: string | undefined, what: string): Promise<Placement> {
  const c = suite.c;
  let tasks = '';
  return waitFor<Placement | undefined>(
    async () => {
      const all = await c.serviceTasks(SERVICE);
      tasks = all.map((t) => `${t.node} desired=${t.desired} state=${t.state} ${t.error}`).join('\n');
      const running = all.filter((t) => t.desired === 'Running' && t.state.startsWith('Running'));
      if (running.length !== 1 || running[0]!.node === notOn) return undefined;
      const node = running[0]!.node;
      const container = await c.serviceContainer(c.host(node), SERVICE);
      return container ? { node, container } : undefined;
    },
    what,
    90_000,
    500,
    async () => `tasks:\n${tasks}\n${await c.diagnostics()}`,
  ) as Promise<Placement>;
}
