import { existsSync, readdirSync, readFileSync } from 'node:fs';
import { mkdir, mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { ARRAY_WWPNS, HOST_WWPNS, arraySshKeys, requireFcLab, runFcPair } from '../../lab/fc.js';
import { scenarioScript, type Results } from '../../lab/vm-scenario.js';

// A real Fibre Channel fabric: FCoE VN2VN between an "array" VM (LIO tcm_fc) and a "host" VM
// (fcoe initiator, scsi_mod.scan=manual) over two links = two fabrics, and ballast's FcAttacher
// (this checkout's dist/) on it. One run of both VMs (scripts/fc-fabric-{array,host}.sh); the
// host drives the attacher through scripts/fc-attach.mjs and prints RESULT lines, fences LUN 3
// between its two initiator ports (PREEMPT AND ABORT), then runs the daemon with backends.lio over
// FC, the array's LIO managed over SSH: mount, a path lost during a write, remount on the path
// left, a Mount with both ports gone, remove.
// The array: port LUN 0 (disk0) mapped to the host as LUN 3, port LUN 1 (disk1) as LUN 300,
// port LUN 7 (disk2) on both ports but mapped to nobody. Needs root and the FC lab.

/** vpd_unit_serials of disk0..2: LIO's WWID is naa.6001405 + the serial's first 25 hex digits. */
const SERIALS = ['6f1d0c2a-3b4c-4d5e-8f60-718293a4b5c6', '0b5e7a11-92cd-4e0f-a1b2-c3d4e5f60718', '7c2e4f60-1a3b-4c5d-8e9f-0a1b2c3d4e5f'];
const wwidOf = (serial: string) => `naa.6001405${serial.replace(/-/g, '').slice(0, 25)}`;
/** Docker gives a Mount 2 minutes: a failing attach must give up within that. */
const MOUNT_BUDGET_MS = 120_000;

describe('a real FC fabric (FCoE VN2VN, two VMs, two paths) and the FC attacher on it', () => {
  let host: Results = {};
  let array: Results = {};
  const out: Record<string, string> = {};
  let durations = { array: 0, host: 0 };

  beforeAll(async () => {
    requireFcLab();
    const attacher = join(process.cwd(), 'dist', 'attach', 'fc', 'fc-attacher.js');
    if (!existsSync(attacher)) throw new Error(`${attacher} is missing: run npm run build first`);
    const share = await mkdtemp(join(tmpdir(), 'ballast-fc-share-'));
    try {
      await mkdir(join(share, 'out'));
      const hostKey = await arraySshKeys(share);
      const pair = await runFcPair({
        arrayScript: scenarioScript('fc-fabric-array'),
        hostScript: scenarioScript('fc-fabric-host'),
        env: { FC_SERIALS: SERIALS.join(' '), SSH_HOST_KEY: hostKey },
        timeoutMs: 1_140_000,
        shareDir: share,
        memoryMb: 1280,
      });
      host = pair.host.results;
      array = pair.array.results;
      durations = { array: pair.array.run.durationMs, host: pair.host.run.durationMs };
      for (const f of readdirSync(join(share, 'out'))) out[f] = readFileSync(join(share, 'out', f), 'utf8').trim();
      console.log(
        [
          'FC fabric (FCoE VN2VN, 2 VMs, 2 paths):',
          `  VMs: array ran ${(durations.array / 1000).toFixed(0)} s (script at ${array.array_script_start_s} s uptime, LIO ${array.array_lio_s} s, ports ${array.array_fcoe_up_s} s, ready at ${array.array_ready_s} s); ` +
            `host ran ${(durations.host / 1000).toFixed(0)} s (script at ${host.host_script_start_s} s uptime, fabric from ${host.host_fabric_start_s} s)`,
          `  FCoE: ports up ${host.fcoe_up_s} s, both targets logged in (Online, FCP Target, target id) ${host.login_s} s after; IPv4 beside it: ${host.ip_reachable}`,
          `  attacher: identify ${host.identify_ms} ms; LUN 3 attach ${host.attach3_ms} ms, detach ${host.detach3_ms} ms, attach again ${host.reattach3_ms} ms, detach ${host.detach3b_ms} ms; ` +
            `LUN 300 attach ${host.attach300_ms} ms, detach ${host.detach300_ms} ms`,
          `  LUN 7 (unmapped): failed in ${host.lun7_ms} ms: ${out['lun7-error']}`,
          `  unknown WWPN: failed in ${host.bogus_ms} ms: ${out['bogus-error']}`,
          `  daemon over FC (LIO over SSH): started in ${host.ballast_start_s} s; Mount new ${host.d_mount_new_ms} ms, on one path ${host.d_mount_one_path_ms} ms; ` +
            `write through a path loss ${host.d_fault_write_s} s (the lost path drained in ${host.d_fault_drain_s} s); Mount with the ports gone failed in ${host.d_ports_gone_ms} ms: ${out['d-ports-gone-error']}`,
        ].join('\n'),
      );
    } finally {
      await rm(share, { recursive: true, force: true });
    }
  }, 1_200_000);

  describe('the fabric', () => {
    it('the host scans nothing by itself (scsi_mod scan=manual): no SCSI device after the FC login', () => {
      expect(host.scan_mode).toBe('manual');
      expect(host.fc_devices_at_login).toBe('');
    });

    it('both target ports log in on their own fabric: Online, FCP Target, with a SCSI target id', () => {
      expect(host.fc_host_port_names?.split(',')).toEqual(HOST_WWPNS.map((w) => `0x${w}`));
      expect(host.rports_online).toBe('2');
      expect(Number(host.login_s)).toBeLessThan(30);
    });

    it('IPv4 runs beside FCoE on the first link (the array answers)', () => {
      expect(host.ip_reachable).toBe('yes');
    });
  });

  describe('identify', () => {
    it('names the host\'s two initiator ports', () => {
      expect(host.identify_ok).toBe('1');
      expect(host.identify_wwpns?.split(',').sort()).toEqual(HOST_WWPNS);
    });
  });

  describe('attach and detach (LUN 3)', () => {
    it('attach makes one dm-multipath map over both paths, of the right LU', () => {
      expect(host.attach3_device).toMatch(/^\/dev\/mapper\//);
      expect(host.attach3_paths).toBe('2');
      expect(host.attach3_active).toBe('2');
      expect(host.attach3_wwid).toBe(wwidOf(SERIALS[0]!));
      expect(host.attached3).toBe('1');
    });

    it('scans only LUN 3, once per fabric (LUN 7 and the rest stay unscanned)', () => {
      const devices = host.attach3_fc_devices?.split(',') ?? [];
      expect(devices).toHaveLength(2);
      for (const d of devices) expect(d).toMatch(/^\d+:0:\d+:3$/);
      expect(new Set(devices.map((d) => d.split(':')[0])).size).toBe(2);
    });

    it('detach leaves no map and no SCSI device, and the fabric logged in', () => {
      expect(host.detach3_ok).toBe('1');
      expect([host.after_detach3_fc_devices, host.after_detach3_sd, host.after_detach3_maps]).toEqual(['', '0', '0']);
      expect(host.after_detach3_rports).toBe('2');
      expect(host.attached3_after_detach).toBe('0');
    });

    it('attaching again finds the data intact, and detaches clean', () => {
      expect(host.reattach3_paths).toBe('2');
      expect(host.reattach3_sha_ok).toBe('yes');
      expect(host.detach3b_ok).toBe('1');
      expect([host.after_detach3b_fc_devices, host.after_detach3b_sd, host.after_detach3b_maps, host.after_detach3b_rports]).toEqual(['', '0', '0', '2']);
    });
  });

  describe('LUN 300 (above 255)', () => {
    it('attaches over both paths and detaches clean', () => {
      expect(host.attach300_ok).toBe('1');
      expect(host.attach300_paths).toBe('2');
      expect(host.attach300_active).toBe('2');
      expect(host.attach300_wwid).toBe(wwidOf(SERIALS[1]!));
      for (const d of host.attach300_fc_devices?.split(',') ?? []) expect(d).toMatch(/^\d+:0:\d+:300$/);
      expect(host.detach300_ok).toBe('1');
      expect([host.after_300_fc_devices, host.after_300_sd, host.after_300_maps]).toEqual(['', '0', '0']);
    });
  });

  describe('failures', () => {
    it('a LUN the array does not map to this host: a clear error within the Mount budget, nothing left behind', () => {
      expect(host.lun7_ok).toBe('0');
      expect(Number(host.lun7_ms)).toBeLessThan(MOUNT_BUDGET_MS);
      expect(out['lun7-error']).toMatch(/\b7\b/);
      expect([host.lun7_fc_devices, host.lun7_sd, host.lun7_maps, host.lun7_rports]).toEqual(['', '0', '0', '2']);
      expect(Number(array.array_nonexistent_lun_logs)).toBeGreaterThan(0); // the host did ask the array
    });

    it('a target WWPN no port has: a clear error naming it, and no LUN scanned on the real ports', () => {
      expect(host.bogus_ok).toBe('0');
      expect(Number(host.bogus_ms)).toBeLessThan(MOUNT_BUDGET_MS);
      expect(out['bogus-error']).toMatch(/2000525400000199|20:00:52:54:00:00:01:99/);
      expect([host.bogus_fc_devices, host.bogus_sd, host.bogus_maps, host.bogus_rports]).toEqual(['', '0', '0', '2']);
    });
  });

  describe('PREEMPT AND ABORT over FC (the host\'s two initiator ports as two hosts)', () => {
    it('the second takes the reservation over, and LIO then refuses the first one\'s writes', () => {
      expect(host.pr_initiators?.split(',').map((w) => w.replace(/^0x/, '')).sort()).toEqual(HOST_WWPNS);
      expect([host.pr_take1_ok, host.pr_take2_ok]).toEqual(['1', '1']);
      expect(host.pr_holder1).toBe(host.pr_key1);
      expect(host.pr_preempted).toBe(host.pr_key1);
      expect(host.pr_holder2).toBe(host.pr_key2);
      expect(host.pr_keys_after).toBe(host.pr_key2);
      expect(host.pr_host1_write_rc).not.toBe('0');
      expect(host.pr_host1_write_error).toMatch(/Invalid_exchange/); // EBADE: the block layer's "reservation conflict"
      expect(host.pr_host2_write_rc).toBe('0');
    });
  });

  describe('the daemon over FC (backends.lio, transport fc, the array over SSH)', () => {
    it('mounts over both paths, on the first LUN number the array leaves free, mapped to this host only, reserved', () => {
      expect(host.d_device).toMatch(/^\/dev\/mapper\/36001405[0-9a-f]+$/);
      expect([host.d_paths, host.d_active]).toEqual(['2', '2']);
      const devices = host.d_fc_devices?.split(',') ?? [];
      expect(devices).toHaveLength(2);
      for (const d of devices) expect(d).toMatch(/^\d+:0:\d+:2$/);
      expect(host.d_array_luns).toBe('lun_0,lun_1,lun_2,lun_7,');
      expect(host.d_array_acl_maps).toBe('4'); // each port's ACL of each of this host's WWPNs
      expect(host.d_reservation).toMatch(/Write_Exclusive,_registrants_only/i);
      expect(host.d_pr_keys).toBe('2');
    });

    it('a write goes on through the loss of one path, with its data intact', () => {
      expect(host.d_fault_write_rc).toBe('0');
      expect([host.d_fault_active, host.d_fault_failed]).toEqual(['1', '1']);
      expect(host.d_fault_sha_ok).toBe('yes');
    });

    it('unmount leaves no SCSI device and no map on the host, no LUN and no storage object on the array', () => {
      expect([host.d_unmount_fc_devices, host.d_unmount_maps]).toEqual(['', '0']);
      expect([host.d_unmount_array_luns, host.d_unmount_objects]).toEqual(['lun_0,lun_1,lun_7,', '0']);
    });

    it('remounts on the path left with all the data', () => {
      expect(host.d_one_path_paths).toBe('1');
      expect([host.d_remount_a_ok, host.d_remount_b_ok]).toEqual(['yes', 'yes']);
    });

    it('with the target ports gone, a Mount fails within Docker\'s budget naming them, and nothing is left attached or exported', () => {
      expect(Number(host.d_ports_gone_ms)).toBeLessThan(MOUNT_BUDGET_MS);
      expect(out['d-ports-gone-error']).toMatch(new RegExp(`${ARRAY_WWPNS[0]}.*${ARRAY_WWPNS[1]}`));
      expect([host.d_ports_gone_fc_devices, host.d_ports_gone_maps]).toEqual(['', '0']);
      expect([host.d_ports_gone_array_luns, host.d_ports_gone_objects]).toEqual(['lun_0,lun_1,lun_7,', '0']);
    });

    it('remove leaves nothing on the array, and no key reaches the log', () => {
      expect([host.d_removed_objects, host.d_removed_pool]).toEqual(['0', '0']);
      expect([array.array_ballast_objects, array.array_port_luns]).toEqual(['0', '6']);
      expect(host.d_secret_key_in_log).toBe('0');
    });
  });
});
