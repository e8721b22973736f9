import { requireVmLab } from '../../lab/vm.js';
import { runScenario, scenarioScript, type Results } from '../../lab/vm-scenario.js';

// Faults against a real kernel, iscsid and tgtd (VM lab). timeouts.command_seconds is 6 there.
describe('iSCSI faults in a real kernel: a clear Err within the bound, nothing half-attached', () => {
  let r: Results;
  const nothingLeft = '0,0,0,0'; // sessions, node records, SCSI disks, dm maps

  beforeAll(async () => {
    requireVmLab();
    ({ results: r } = await runScenario(scenarioScript('iscsi-faults'), { name: 'vm1', timeoutMs: 290_000, memoryMb: 1536 }));
    console.log('VM lab iscsi-faults (ms):', { chap: r.chap_ms, hung: r.hung_ms, down: r.down_ms, nolun: r.nolun_ms });
  }, 300_000);

  it('a wrong CHAP secret', () => {
    expect(r.chap_err).toMatch(/^mount_chap:_cannot_attach_iSCSI_target_iqn\.2026-11\.dev\.ballast:chap_LUN_1:_command_'iscsiadm.*--login'_exited_with_code_24/);
    expect(r.chap_err).not.toContain('not-the-arrays-secret');
    expect(r.chap_left).toBe(nothingLeft);
  });

  it('a hung iscsid: iscsiadm is killed at its timeout and the Mount fails in bounded time', () => {
    expect(r.hung_err).toMatch(/^mount_hung:.*timed_out/);
    expect(Number(r.hung_ms)).toBeLessThan(100_000);
    expect(r.hung_left).toBe(nothingLeft);
  });

  it('an unreachable array', () => {
    expect(r.down_err).toMatch(/^mount_hung:_cannot_.*on_the_iSCSI_array_\(tgtd,_control_port_0\):.*timed_out/);
    expect(Number(r.down_ms)).toBeLessThan(30_000);
    expect(r.down_left).toBe(nothingLeft);
  });

  it('a missing LUN (the target exists but serves nothing): refused before anything is attached', () => {
    expect(r.nolun_err).toMatch(/^mount_nolun:_target_iqn\.2026-11\.dev\.ballast:nolun_serves_no_LUN,_not_volume_nolun/);
    expect(Number(r.nolun_ms)).toBeLessThan(30_000);
    expect(r.nolun_left).toBe(nothingLeft);
  });

  it('recovers once the faults are gone', () => {
    expect(r.recovered).toBe('yes');
    expect(r.end_left).toBe(nothingLeft);
  });
});
