import { requireVmLab } from '../../lab/vm.js';
import { runScenario, scenarioScript, type Results } from '../../lab/vm-scenario.js';

// Needs root, qemu-system-x86, linux-image-amd64, busybox-static, open-iscsi, multipath-tools,
// sg3-utils, tgt and lvm2 (scripts/install-deps.sh installs them); fails loudly without them.
// One VM run for both profiles: image files (default) and LVM logical volumes (lvm).
const MiB = 1024 * 1024;

describe('the ballast daemon on iSCSI with dm-multipath, in a real kernel (VM lab)', () => {
  let results: Results;

  beforeAll(async () => {
    requireVmLab();
    ({ results } = await runScenario(scenarioScript('iscsi-single'), { name: 'vm1', timeoutMs: 900_000, memoryMb: 1536 }));
    console.log('VM lab iscsi-single timings (ms):', Object.fromEntries(Object.entries(results).filter(([k]) => k.endsWith('_ms') || k.endsWith('_s'))));
  }, 920_000);

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

  describe('profile lvm: volumes as LVM logical volumes on the array', () => {
    it('creates a logical volume of the requested size and exports it as the LUN', () => {
      expect(Number(results.lv_bytes_created)).toBe(64 * MiB);
      expect(results.lv_backing).toBe('/dev/ballastvg/ballast-lv1');
      expect(results.lv_device).toMatch(/^\/dev\/mapper\/3[0-9a-f]+$/);
    });

    it('grows the logical volume and the mounted filesystem online', () => {
      expect(Number(results.lv_bytes_grown)).toBe(128 * MiB);
      expect(Number(results.lv_fs_bytes_grown)).toBeGreaterThan(100 * MiB);
    });

    it('an encrypted volume: LUKS2 on the multipath map, grown online, ciphertext only in the logical volume', () => {
      expect(results.enc_device).toBe('/dev/mapper/ballast-enc');
      expect(results.enc_under).toBe('mpath');
      expect(Number(results.enc_mapped_bytes_grown)).toBe(128 * MiB - 16 * MiB); // LUKS2's header is 16 MiB
      expect(Number(results.enc_fs_bytes_grown)).toBeGreaterThan(90 * MiB);
      expect([results.enc_plaintext_in_lv, results.enc_luks_on_lv, results.enc_data_intact]).toEqual(['0', 'yes', '500']);
      expect([results.enc_sessions_end, results.enc_maps_end]).toEqual(['0', '0']);
    });

    describe('snapshots (lvcreate -s) and clones (a new logical volume filled by dd on the array host)', () => {
      it('snapshots the mounted volume as an LVM snapshot whose copy-on-write area cannot overflow', () => {
        expect(results.snapshot_reply).toBe(`array,${32 * MiB},ext4`);
        expect(results.snap_lv).toMatch(/^ballast\.snap\.[0-9a-f]{24}$/);
        expect(Number(results.snap_lv_bytes)).toBeGreaterThanOrEqual(32 * MiB);
      });

      it('a clone of the snapshot holds the snapshot\'s data, byte for byte, not what was written after', () => {
        expect(results.clone_snapshot_raw_equal).toBe('yes');
        expect(results.clone_snapshot_a).toBe('snapshot');
        expect(results.clone_snapshot_b).toBe('absent');
        // Blocks of zeros copied too.
        expect(results.clone_snapshot_zeros).toBe('zero');
      });

      it('a clone of the live volume holds its data as it is now, grown to the size asked for, as a LUN of its own', () => {
        expect(results.clone_live_a).toBe('later');
        expect(results.clone_live_b).toBe('present');
        expect(Number(results.clone_live_fs_bytes)).toBeGreaterThan(50 * MiB);
        expect(results.clone_live_lun).toBe('1');
      });

      it('leaves no temporary snapshot behind a clone', () => {
        expect(results.lvs_after_clones).toBe(['ballast-cl', 'ballast-cs', 'ballast-src', results.snap_lv].sort().join(','));
      });

      it('lists the snapshot after a daemon restart (its record is in the LV tags), and Remove is refused meanwhile', () => {
        expect(results.snapshot_ls_after_restart).toBe(`src@s1:array:${32 * MiB}`);
        expect(results.remove_with_snapshot).toBe('has_1_snapshot(s)_(s1)');
        expect(results.remove_with_snapshot_lv).toBe('ballast-src');
      });

      it('snapshot rm removes the snapshot; at the end no logical volume is left', () => {
        expect(results.snapshot_ls_after_rm).toBe('0');
        expect(results.snap_lvs_end).toBe('0');
        expect([results.snap_sessions_end, results.snap_maps_end]).toEqual(['0', '0']);
      });
    });

    it('keeps the data across unmount and mount, and remove deletes the logical volume', () => {
      expect(results.lv_data_intact).toBe('yes');
      expect(results.lvs_after_remove).toBe('0');
      expect([results.lv_sessions_end, results.lv_disks_end, results.lv_maps_end]).toEqual(['0', '0', '0']);
    });
  });
});
