import { requireVmLab } from '../../helpers/vm.js';
import { runScenario, scenarioScript, type Results } from '../../helpers/vm-scenario.js';

// Needs root, qemu-system-x86, linux-image-amd64, busybox-static, open-iscsi, multipath-tools,
// sg3-utils and tgt (scripts/install-deps.sh installs them); fails loudly without them.
const MiB = 1024 * 1024;

describe('the ballast daemon on iSCSI with dm-multipath, in a real kernel (VM lab)', () => {
  let results: Results;

  beforeAll(async () => {
    requireVmLab();
    ({ results } = await runScenario(scenarioScript('iscsi-single'), { name: 'vm1', timeoutMs: 290_000, memoryMb: 1536 }));
    console.log('VM lab iscsi-single timings (ms):', Object.fromEntries(Object.entries(results).filter(([k]) => k.endsWith('_ms') || k.endsWith('_s'))));
  }, 300_000);

  it('mounts a new volume on the multipath map over both portals, under a type 5 reservation', () => {
    expect(results.device).toMatch(/^\/dev\/mapper\/3[0-9a-f]+$/);
    expect(results.paths).toBe('2');
    expect(results.dm_uuid).toBe(`mpath-${results.device!.slice('/dev/mapper/'.length)}`);
    expect(results.sessions_mounted).toBe('2');
    expect(results.reservation).toBe('type:_Write_Exclusive,_registrants_only');
    expect(results.pr_keys).toBe('2'); // one registration per path
  });

  it('keeps writing when one path goes down, and the map takes the path back', () => {
    expect(results.write_with_path_down_rc).toBe('0');
    expect(results.during_intact).toBe('yes');
    expect(results.path_failed_seen).toBe('yes');
    expect(results.active_paths_while_down).toBe('1');
    expect(results.active_paths_after).toBe('2');
  });

  it('grows the mounted volume online: device and filesystem', () => {
    expect(Number(results.device_bytes)).toBe(128 * MiB);
    expect(Number(results.grow_after)).toBeGreaterThan(Number(results.grow_before) + 50 * MiB);
  });

  it('detach leaves no session, SCSI disk or dm map behind', () => {
    expect([results.sessions_after_unmount, results.disks_after_unmount, results.maps_after_unmount]).toEqual(['0', '0', '0']);
  });

  it('data survives an unmount and a remount; the grown size stays', () => {
    expect(results.data_intact).toBe('yes');
    expect(Number(results.size_after_remount)).toBe(Number(results.grow_after));
  });

  it('remove deletes the target and the image; nothing is left attached', () => {
    expect(results.targets_after_remove).toBe('0');
    expect(results.pool_after_remove).toBe('0');
    expect([results.sessions_end, results.disks_end, results.maps_end]).toEqual(['0', '0', '0']);
  });
});
