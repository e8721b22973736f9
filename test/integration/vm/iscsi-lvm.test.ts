import { requireVmLab } from '../../helpers/vm.js';
import { runScenario, scenarioScript, type Results } from '../../helpers/vm-scenario.js';

// The array keeps volumes as LVM logical volumes (profile volume_group). LVM needs
// device-mapper, which only the VM lab's kernel has here. Needs lvm2 besides the VM lab.
const MiB = 1024 * 1024;

describe('iSCSI volumes as LVM logical volumes on the array (VM lab)', () => {
  let r: Results;

  beforeAll(async () => {
    requireVmLab();
    ({ results: r } = await runScenario(scenarioScript('iscsi-lvm'), { name: 'vm1', timeoutMs: 290_000, memoryMb: 1536 }));
  }, 300_000);

  it('creates a logical volume of the requested size and exports it as the LUN', () => {
    expect(Number(r.lv_bytes_created)).toBe(64 * MiB);
    expect(r.backing).toBe('/dev/ballastvg/ballast-lv1');
    expect(r.device).toMatch(/^\/dev\/mapper\/3[0-9a-f]+$/);
  });

  it('grows the logical volume and the mounted filesystem online', () => {
    expect(Number(r.lv_bytes_grown)).toBe(128 * MiB);
    expect(Number(r.fs_bytes_grown)).toBeGreaterThan(100 * MiB);
  });

  it('keeps the data across unmount and mount, and remove deletes the logical volume', () => {
    expect(r.data_intact).toBe('yes');
    expect(r.lvs_after_remove).toBe('0');
    expect([r.sessions_end, r.disks_end, r.maps_end]).toEqual(['0', '0', '0']);
  });
});
