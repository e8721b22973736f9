import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { startCinderLab, type CinderLab } from '../../lab/cinder.js';
import { requireVmLab } from '../../lab/vm.js';
import { runScenario, scenarioScript, type Results } from '../../lab/vm-scenario.js';

// The cinder backend's data path: a real Cinder on this host (test/lab/cinder.ts), its
// API and its tgt targets reached from two VMs (two hosts, two kernels) at 10.0.2.2. Host 1
// creates and mounts a volume through Cinder's attachment (the kernel's iSCSI login with the
// CHAP secret Cinder returned), writes and unmounts; host 2 mounts it with the data intact and
// removes it. Needs root, the VM lab and Cinder's packages.

describe('cinder: a volume moves between two VMs through a real Cinder', () => {
  let lab: CinderLab;
  let vm1: Results;
  let vm2: Results;
  let volumesAfter: unknown[] = [];

  beforeAll(async () => {
    requireVmLab();
    lab = await startCinderLab({ targetAddress: '10.0.2.2' });
    const share = await mkdtemp(join(tmpdir(), 'ballast-cinder-vm-share-'));
    // qemu PIDs while each VM runs: when one fails, the other (waiting on it) is stopped.
    const pids = new Map<string, number>();
    try {
      const env = { SHARE: share, CINDER_API_PORT: new URL(lab.url).port, CINDER_PROJECT: lab.projectId };
      const common = { shareDir: share, network: true, memoryMb: 1536, timeoutMs: 420_000, env };
      const [r1, r2] = await Promise.all([
        runScenario(scenarioScript('cinder-vm1'), { ...common, name: 'vm1', onStart: (pid) => pids.set('vm1', pid) }).finally(() => pids.delete('vm1')),
        runScenario(scenarioScript('cinder-vm2'), { ...common, name: 'vm2', onStart: (pid) => pids.set('vm2', pid) }).finally(() => pids.delete('vm2')),
      ]);
      vm1 = r1.results;
      vm2 = r2.results;
      volumesAfter = (await lab.request<{ volumes: { name: string }[] }>('GET', '/volumes')).body.volumes.filter((v) => v.name === 'ballast-cmoved');
      console.log('cinder VM lab:', { vm1_mount_ms: vm1.vm1_mount_ms, vm1_unmount_ms: vm1.vm1_unmount_ms, vm2_mount_ms: vm2.vm2_mount_ms });
    } finally {
      for (const pid of pids.values()) try { process.kill(pid, 'SIGKILL'); } catch { /* exited */ }
      await lab.stop();
      await rm(share, { recursive: true, force: true });
    }
  }, 480_000);

  it("host 1 logs in to Cinder's target with the CHAP secret Cinder returned, and leaves no session after Unmount", () => {
    expect(vm1.vm1_chap).toMatch(/^CHAP\/\S+$/);
    expect(vm1.vm1_sessions_mounted).toBe('1');
    expect([vm1.vm1_sessions_after_unmount, vm1.vm1_disks_after_unmount]).toEqual(['0', '0']);
  });

  it('host 2 mounts the volume with its data intact, then unmounts and removes it: nothing left in Cinder or on the host', () => {
    expect(vm2.vm2_chap).toMatch(/^CHAP\/\S+$/);
    expect(vm2.moved_intact).toBe('yes');
    expect([vm2.vm2_sessions_after_unmount, vm2.vm2_disks_after_unmount, vm2.vm2_removed]).toEqual(['0', '0', 'yes']);
    expect(volumesAfter).toEqual([]);
  });
});
