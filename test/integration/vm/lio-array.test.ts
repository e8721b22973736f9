import { requireVmLab } from '../../lab/vm.js';
import { runScenario, scenarioScript, type Results } from '../../lab/vm-scenario.js';

// LIO (the kernel's SCSI target) as the array, in the VM lab (configfs and target_core_mod
// exist only there): the daemon over iSCSI with CHAP and reservations, then the driver's FC
// LUNs and ACLs. The FC data path runs on a real fabric in fc-fabric.test.ts.
const MiB = 1024 * 1024;

describe('LIO array (VM lab)', () => {
  let r: Results;

  beforeAll(async () => {
    requireVmLab();
    ({ results: r } = await runScenario(scenarioScript('lio-array'), { name: 'vm1', timeoutMs: 400_000, memoryMb: 1536 }));
    console.log(`LIO over iSCSI, one VM (TCG): mount new ${r.mount_new_ms} ms, unmount ${r.unmount_ms} ms, mount existing ${r.mount_existing_ms} ms`);
  }, 410_000);

  it('exports a volume over iSCSI to this host only, with CHAP, on both portals, reserved', () => {
    expect(r.device).toMatch(/^\/dev\/mapper\/36001405[0-9a-f]+$/);
    expect([r.paths, r.sessions_mounted]).toEqual(['2', '2']);
    expect(r.acls).toBe('iqn.2026-11.dev.ballast:vm1,');
    expect([r.chap_user, r.auth]).toEqual(['ballast', '1']);
    expect(r.portals).toBe('127.0.0.1:3260,127.0.0.2:3260,');
    expect(r.reservation).toMatch(/Write_Exclusive,_registrants_only/i);
    expect(r.pr_keys).toBe('2'); // one registration per path
    expect(r.secret_in_log).toBe('0');
  });

  it('unmount leaves no session, disk or map, and no target or storage object on the array', () => {
    expect([r.sessions_after_unmount, r.disks_after_unmount, r.maps_after_unmount]).toEqual(['0', '0', '0']);
    expect([r.targets_after_unmount, r.objects_after_unmount]).toEqual(['0', '0']);
  });

  it('a volume grown while unmounted mounts at the new size with its data', () => {
    expect(r.data_intact).toBe('yes');
    expect(Number(r.device_bytes)).toBe(128 * MiB);
    expect(Number(r.size_after_grow)).toBeGreaterThan(100 * MiB);
  });

  it('a restarted daemon reuses the LIO objects it finds instead of adding more', () => {
    expect([r.targets_after_restart, r.objects_after_restart, r.luns_after_restart, r.acls_after_restart]).toEqual(['1', '1', '1', '1']);
  });

  it('remove leaves nothing on the array and nothing attached', () => {
    expect([r.targets_after_remove, r.objects_after_remove, r.pool_after_remove]).toEqual(['0', '0', '0']);
    expect([r.sessions_end, r.disks_end, r.maps_end]).toEqual(['0', '0', '0']);
  });

  describe('FC exports (configfs)', () => {
    it('two daemons creating one name at once: one wins', () => {
      expect(r.fc_create_winners).toBe('1');
      expect(r.fc_create_loser).toBe('VolumeAlreadyExists');
    });

    it('a volume is one LUN number on every target port, mapped in the holder\'s ACLs', () => {
      expect([r.fc_lun_f1, r.fc_lun_f2]).toEqual(['0', '1']);
      expect(r.fc_targets).toBe('2000525400000101,2000525400000102');
      expect(r.fc_port_luns).toBe('lun_0+lun_1,lun_0+lun_1');
      expect(r.fc_acl_a).toBe('lun_0+lun_1');
    });

    it('another host taking it over gets the mapping, the former holder loses it', () => {
      expect(r.fc_takeover_lun).toBe(r.fc_lun_f1);
      expect([r.fc_a_maps_f1_after, r.fc_b_maps_f1]).toEqual(['no', 'yes']);
    });

    it('a new daemon reconciles (same LUN, nothing added); unexport and destroy leave nothing', () => {
      expect([r.fc_restart_lun, r.fc_luns_after_restart, r.fc_objects_after_restart]).toEqual([r.fc_lun_f1, '2', '2']);
      expect([r.fc_luns_after_unexport, r.fc_objects_after_unexport]).toEqual(['1,1', '1']);
      expect([r.fc_luns_after_destroy, r.fc_objects_after_destroy, r.fc_pool_after_destroy]).toEqual(['0,0', '0', '0']);
    });

    it('refuses an export to a host without FC ports, naming it', () => {
      expect(r.fc_no_wwpn_error).toMatch(/host_c_has_no_FC_initiator_ports/);
    });
  });

  it('fences with PREEMPT AND ABORT: host 2 takes the reservation over from host 1, whose writes LIO then refuses', () => {
    expect(r.pr_holder_1).toBe('host1');
    expect(r.pr_preempted).toBe(r.pr_key1);
    expect(r.pr_fallback_logged).toBe('0'); // LIO took PREEMPT AND ABORT (tgt makes ballast fall back to PREEMPT)
    expect(r.pr_holder_2).toBe('host2');
    expect(r.pr_keys_after?.split(',')).toHaveLength(1);
    expect(r.pr_host1_write_rc).not.toBe('0');
    expect(r.pr_host1_write_error).toMatch(/Invalid_exchange/); // EBADE: the block layer's "reservation conflict"
    expect(r.pr_host2_write_rc).toBe('0');
    expect(r.pr_sessions_end).toBe('0');
  });
});
