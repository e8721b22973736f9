import { MetricsRegistry } from '../../../src/metrics/registry.js';
import { LabelGuard, OTHER, exitCodeLabel, toolOf } from '../../../src/metrics/labels.js';
import { seriesOf, valueOf } from './samples.js';

describe('MetricsRegistry', () => {
  let m: MetricsRegistry;
  beforeEach(() => (m = new MetricsRegistry()));

  describe('observeCall', () => {
    it('records a call under its method and outcome, in seconds', async () => {
      m.observeCall('VolumeDriver.Mount', 'ok', 1_500);
      m.observeCall('VolumeDriver.Mount', 'err', 3);
      m.observeCall('VolumeDriver.Create', 'ok', 2);
      const count = (labels: Record<string, string>) => valueOf(m, 'ballast_protocol_call_duration_seconds', labels, '_count');
      expect(await count({ method: 'VolumeDriver.Mount', outcome: 'ok' })).toBe(1);
      expect(await count({ method: 'VolumeDriver.Mount', outcome: 'err' })).toBe(1);
      expect(await count({ method: 'VolumeDriver.Create', outcome: 'ok' })).toBe(1);
      expect(await valueOf(m, 'ballast_protocol_call_duration_seconds', { method: 'VolumeDriver.Mount', outcome: 'ok' }, '_sum')).toBeCloseTo(1.5);
    });

    it('does not use the global prom-client registry', async () => {
      const { register } = await import('prom-client');
      m.observeCall('VolumeDriver.Get', 'ok', 1);
      expect(register.getSingleMetric('ballast_protocol_call_duration_seconds')).toBeUndefined();
    });
  });

  describe('timeAttach, timeDetach, timeFilesystem', () => {
    it('observes ok and err, and passes the result or the error through', async () => {
      await expect(m.timeAttach('loop', async () => '/dev/loop7')).resolves.toBe('/dev/loop7');
      await expect(m.timeAttach('loop', async () => Promise.reject(new Error('losetup failed')))).rejects.toThrow('losetup failed');
      await m.timeDetach('iscsi', async () => undefined);
      await m.timeFilesystem('mkfs', 'xfs', async () => undefined);
      expect(await valueOf(m, 'ballast_attach_duration_seconds', { transport: 'loop', outcome: 'ok' }, '_count')).toBe(1);
      expect(await valueOf(m, 'ballast_attach_duration_seconds', { transport: 'loop', outcome: 'err' }, '_count')).toBe(1);
      expect(await valueOf(m, 'ballast_detach_duration_seconds', { transport: 'iscsi', outcome: 'ok' }, '_count')).toBe(1);
      expect(await valueOf(m, 'ballast_filesystem_operation_duration_seconds', { operation: 'mkfs', fstype: 'xfs', outcome: 'ok' }, '_count')).toBe(1);
    });
  });

  describe('label values stay bounded', () => {
    it('reports a tool by its basename and never an argument', async () => {
      m.commandFailed('/usr/sbin/iscsiadm', 24, false);
      m.commandFailed('mkfs.ext4', undefined, true);
      const series = await seriesOf(m, 'ballast_command_failures_total');
      expect(series.map((s) => s.labels)).toEqual([
        { tool: 'iscsiadm', exit_code: '24' },
        { tool: 'mkfs.ext4', exit_code: 'timeout' },
      ]);
    });

    it('turns a free-form or unknown value into "other", and caps distinct values', () => {
      const guard = new LabelGuard(2);
      expect(guard.value('loop')).toBe('loop');
      expect(guard.value('iscsi')).toBe('iscsi');
      expect(guard.value('fc')).toBe(OTHER); // a third distinct value
      expect(guard.value('loop')).toBe('loop'); // known values stay
      expect(guard.value('chap secret=hunter2')).toBe(OTHER);
      expect(guard.value('x'.repeat(65))).toBe(OTHER);
      expect(guard.value(undefined)).toBe(OTHER);
      expect(toolOf('/usr/bin/ssh')).toBe('ssh');
      expect(exitCodeLabel(300, false)).toBe('none');
      expect(exitCodeLabel(undefined, false)).toBe('none');
      expect(exitCodeLabel(1, true)).toBe('timeout');
    });

    it('keeps a flood of distinct inputs to a fixed number of series', async () => {
      for (let i = 0; i < 500; i += 1) {
        m.commandFailed(`tool${i}`, i, false);
        m.observeCall(`Method.N${i}`, 'ok', 1);
        await m.timeAttach(`transport-${i}`, async () => undefined);
      }
      const tools = new Set((await seriesOf(m, 'ballast_command_failures_total')).map((s) => s.labels.tool));
      expect(tools.size).toBe(49); // 48 tools and "other"
      const methods = new Set((await seriesOf(m, 'ballast_protocol_call_duration_seconds', '_count')).map((s) => s.labels.method));
      expect(methods.size).toBe(17);
      const transports = new Set((await seriesOf(m, 'ballast_attach_duration_seconds', '_count')).map((s) => s.labels.transport));
      expect(transports.size).toBe(17);
    });

    it('never puts a secret in a label: text passed as argv[0] by mistake becomes "other"', async () => {
      m.commandFailed('sshpass -p hunter2', 5, false);
      const { body } = await m.scrape();
      expect(body).not.toContain('hunter2');
      expect(body).toContain('ballast_command_failures_total{tool="other",exit_code="5"} 1');
    });

    it('ignores a lease observation for a name no volume can have', async () => {
      m.observeLease('../etc', { state: 'free' }, 'node-a');
      m.observeLease('x'.repeat(129), { state: 'free' }, 'node-a');
      expect(await seriesOf(m, 'ballast_volume_lease_state')).toEqual([]);
    });
  });

  describe('lease state', () => {
    const heldBy = (hostId: string) => ({ state: 'held' as const, holder: { hostId } });

    it('keeps one series per volume, following its state', async () => {
      m.observeLease('db', { state: 'free' }, 'node-a');
      m.observeLease('db', heldBy('node-a'), 'node-a');
      m.observeLease('logs', heldBy('node-b'), 'node-a');
      expect((await seriesOf(m, 'ballast_volume_lease_state')).map((s) => [s.labels, s.value])).toEqual([
        [{ volume: 'db', state: 'held_here' }, 1],
        [{ volume: 'logs', state: 'held_elsewhere' }, 1],
      ]);
      m.observeLease('db', { state: 'free' }, 'node-a');
      expect(await valueOf(m, 'ballast_volume_lease_state', { volume: 'db', state: 'free' })).toBe(1);
      expect(await valueOf(m, 'ballast_volume_lease_state', { volume: 'db', state: 'held_here' })).toBeUndefined();
    });

    it('removes the series of removed volumes, and of volumes a full listing no longer has', async () => {
      for (const v of ['a', 'b', 'c']) m.observeLease(v, { state: 'free' }, 'node-a');
      m.volumeGone('a');
      m.volumesListed(['c']);
      expect((await seriesOf(m, 'ballast_volume_lease_state')).map((s) => s.labels.volume)).toEqual(['c']);
    });
  });

  describe('backend health', () => {
    it('sets one series per profile of the driver, 1 after a good round and 0 after a failed one', async () => {
      const loop = { kind: 'loop' };
      const iscsi = { kind: 'iscsi' };
      m.nameBackends(new Map([['default', loop], ['fast', loop], ['array', iscsi]]));
      await m.backendRound(loop, Promise.resolve([]));
      await expect(m.backendRound(iscsi, Promise.reject(new Error('array down')))).rejects.toThrow('array down');
      expect((await seriesOf(m, 'ballast_backend_up')).map((s) => [s.labels, s.value])).toEqual([
        [{ profile: 'default', backend: 'loop' }, 1],
        [{ profile: 'fast', backend: 'loop' }, 1],
        [{ profile: 'array', backend: 'iscsi' }, 0],
      ]);
      m.backendUp(iscsi, true);
      expect(await valueOf(m, 'ballast_backend_up', { profile: 'array', backend: 'iscsi' })).toBe(1);
    });
  });

  describe('takeovers and fences', () => {
    it('counts each', async () => {
      m.takeover();
      m.fenced();
      m.fenced();
      expect(await valueOf(m, 'ballast_takeovers_total', {})).toBe(1);
      expect(await valueOf(m, 'ballast_fences_total', {})).toBe(2);
    });
  });
});
