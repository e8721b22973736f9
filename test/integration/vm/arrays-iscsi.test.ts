import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { requireTgtTools, Tgtd } from '../../lab/tgtd.js';
import { requireVmLab } from '../../lab/vm.js';
import { runScenario, scenarioScript, type Results } from '../../lab/vm-scenario.js';
import { DellScSim } from '../../simulators/dellsc.js';
import { ScbeSim } from '../../simulators/scbe.js';
import { TgtScDataPlane } from '../../simulators/sc-tgt-data-plane.js';
import { TgtScbeDataPlane } from '../../simulators/scbe-tgt-data-plane.js';

// The dellsc and scbe backends' data path: their simulators on this host, their volumes LUNs of
// a tgtd of this test's own, and one VM (a host with its own kernel) running ballast with both
// backends, reaching the simulators and the portal at 10.0.2.2. Needs root, the VM lab and tgt.

const VM = 'arrays-vm';
const VM_IQN = `iqn.2026-11.dev.ballast:${VM}`;
const SSN = 64702;
const SCBE_TARGET = 'iqn.1986-03.com.ibm:2145.sim.node1';

describe('dellsc and scbe: a volume of each, mounted in a VM through the simulated arrays', () => {
  let r: Results;
  let sc: DellScSim;
  let scbe: ScbeSim;
  const after = { scVolumes: -1, scbeVolumes: -1, scbeMappings: -1, scServerIqns: [] as string[] };

  beforeAll(async () => {
    requireVmLab();
    requireTgtTools();
    const tgtd = await Tgtd.start();
    const dir = await mkdtemp(join(tmpdir(), 'ballast-arrays-vm-'));
    try {
      const tgtadm = (args: string[]) => tgtd.tgtadm(args);
      sc = new DellScSim({ username: 'Admin', password: 'sc-vm-secret', ssn: SSN, dataPlane: new TgtScDataPlane(tgtadm, dir, { address: '10.0.2.2', port: tgtd.iscsiPort }) });
      const scbePlane = new TgtScbeDataPlane(tgtadm, dir, 1, SCBE_TARGET);
      await scbePlane.start();
      scbe = new ScbeSim({ username: 'ballast', password: 'scbe-vm-secret', hosts: { [VM]: VM_IQN }, dataPlane: scbePlane });
      await Promise.all([sc.start(), scbe.start()]);
      const env = {
        SC_PORT: new URL(sc.url).port,
        SC_SSN: String(SSN),
        SC_PASSWORD: 'sc-vm-secret',
        SCBE_PORT: new URL(scbe.url).port,
        SCBE_PASSWORD: 'scbe-vm-secret',
        SCBE_TARGET,
        ISCSI_PORT: String(tgtd.iscsiPort),
      };
      ({ results: r } = await runScenario(scenarioScript('arrays-iscsi'), { name: VM, network: true, memoryMb: 1536, timeoutMs: 400_000, env }));
      Object.assign(after, {
        scVolumes: sc.volumes.size,
        scbeVolumes: scbe.volumes.size,
        scbeMappings: scbe.mappings.length,
        scServerIqns: [...sc.servers.values()].flatMap((s) => s.hbas),
      });
      console.log('dellsc/scbe VM lab (TCG):', { sc_mount_ms: r.default_mount_ms, sc_unmount_ms: r.default_unmount_ms, scbe_mount_ms: r.ibm_mount_ms, scbe_unmount_ms: r.ibm_unmount_ms });
    } finally {
      await sc?.stop();
      await scbe?.stop();
      await tgtd.stop();
      await rm(dir, { recursive: true, force: true });
    }
  }, 440_000);

  it.each([
    ['dellsc', 'default'],
    ['scbe', 'ibm'],
  ])('%s: Mount logs in over iSCSI through a multipath map; Unmount leaves no session, disk or map; the data is there at the next Mount', (_backend, p) => {
    expect([r[`${p}_sessions_mounted`], r[`${p}_maps_mounted`]]).toEqual(['1', '1']);
    expect([r[`${p}_sessions_after_unmount`], r[`${p}_disks_after_unmount`], r[`${p}_maps_after_unmount`]]).toEqual(['0', '0', '0']);
    expect(r[`${p}_intact`]).toBe('yes');
    expect([r[`${p}_removed`], r[`${p}_sessions_end`]]).toEqual(['yes', '0']);
  });

  it("the Storage Center got a server object with the VM's IQN; Remove left no volume or mapping on either array", () => {
    expect(after.scServerIqns).toEqual([VM_IQN]);
    expect([after.scVolumes, after.scbeVolumes, after.scbeMappings]).toEqual([0, 0, 0]);
  });
});
