import { existsSync, readdirSync, readFileSync } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { execFile } from 'node:child_process';
import { promisify } from 'node:util';
import { REPO_ROOT } from '../../lab/ballast.js';
import { requireVmLab } from '../../lab/vm.js';
import { runScenario, scenarioScript, type Results } from '../../lab/vm-scenario.js';

// NVMe/TCP against Linux's nvmet in one VM (nvmet, nvmet-tcp and nvme-tcp exist only in the VM
// lab's kernel here): ballast's NvmeTcpAttacher through scripts/nvme-attach.mjs, two portals;
// then, in the same boot, the powerflex backend's data path behind the PowerFlex simulator with
// nvmet as its data plane (scripts/powerflex-nvme.sh). Needs root, the VM lab and nvme-cli.
const execFileAsync = promisify(execFile);
const NQN = 'nqn.2026-12.dev.ballast:array1';
const NGUID = '4f6e3a2b00000001a1b2c3d4e5f60718';
/** Docker gives a Mount 2 minutes: a failing attach must give up within that. */
const MOUNT_BUDGET_MS = 120_000;

describe('NVMe/TCP attacher against nvmet (VM lab)', () => {
  let r: Results;
  const out: Record<string, string> = {};

  beforeAll(async () => {
    requireVmLab();
    if (!existsSync('/usr/sbin/nvme')) throw new Error('nvme-cli is missing: apt-get install nvme-cli (scripts/install-deps.sh installs it)');
    await execFileAsync(join(REPO_ROOT, 'node_modules/.bin/tsc'), ['-p', join(REPO_ROOT, 'tsconfig.sim.json')], { timeout: 120_000 }); // the simulator, for the VM
    const share = await mkdtemp(join(tmpdir(), 'ballast-nvme-share-'));
    try {
      ({ results: r } = await runScenario(scenarioScript('nvme-tcp'), { name: 'vm1', timeoutMs: 560_000, shareDir: share, env: { SHARE: share } }));
      for (const f of readdirSync(join(share, 'out'))) out[f] = readFileSync(join(share, 'out', f), 'utf8').trim();
      console.log(`NVMe/TCP (TCG): attach over 2 portals ${r.attach_ms} ms, detach ${r.detach_ms} ms; refused host failed in ${r.refused_ms} ms; disabled namespace failed in ${r.disabled_ms} ms`);
      console.log(`PowerFlex over NVMe/TCP (TCG): create ${r.pf_create_ms} ms, lease + map + attach ${r.pf_attach_ms} ms, detach + unmap + release ${r.pf_detach_ms} ms`);
      console.log(`PowerFlex snapshots (TCG): snapshot ${r.pf_snapshot_ms} ms, clone of the snapshot ${r.pf_clone_snap_ms} ms, clone of the live volume (grown) ${r.pf_clone_live_ms} ms; the whole snapshot part (3 attaches) ${r.pf_snap_section_ms} ms`);
    } finally {
      await rm(share, { recursive: true, force: true });
    }
  }, 600_000);

  it('identifies the host by /etc/nvme/hostnqn', () => {
    expect([r.identify_ok, r.host_nqn_matches_file]).toEqual(['1', 'yes']);
  });

  it('a host the subsystem does not allow is refused on every portal, with nothing left connected', () => {
    expect(r.refused_ok).toBe('0');
    expect(out['refused-error']).toContain(`cannot connect to NVMe/TCP subsystem ${NQN} as `);
    expect(out['refused-error']).toMatch(/127\.0\.0\.1:4420: .*; 127\.0\.0\.2:4420: /);
    expect(r.refused_controllers).toBe('0');
  });

  it('attaches over both portals as one device (native multipath), found by the NGUID', () => {
    expect(r.device).toMatch(/^\/dev\/nvme\d+n1$/);
    expect([r.controllers, r.paths_live, r.namespaces]).toEqual(['2', '2', '1']);
    expect(r.nguid).toBe(NGUID);
    expect(r.wwid).toMatch(/^uuid\./); // nvmet sets a UUID too, which the kernel prefers for the WWID: ballast matches the NGUID
  });

  it('detach leaves no controller and no namespace', () => {
    expect(r.detach_ok).toBe('1');
    expect([r.controllers_after_detach, r.namespaces_after_detach]).toEqual(['0', '0']);
  });

  it('a namespace the array disabled: the attach fails within the bound naming it, and disconnects', () => {
    expect(r.disabled_ok).toBe('0');
    expect(Number(r.disabled_ms)).toBeLessThan(MOUNT_BUDGET_MS);
    expect(out['disabled-error']).toContain(`NVMe namespace with NGUID ${NGUID} did not appear within 15 s on subsystem ${NQN}`);
    expect(r.disabled_controllers).toBe('0');
  });

  it('attaching again finds the data; with the namespace disabled under it (the fence) its direct write fails', () => {
    expect(r.data_intact).toBe('yes');
    expect(r.fenced_write_rc).not.toBe('0');
    expect(r.fenced_write_rc).not.toBe('124'); // failed, not hung until timeout(1)
  });

  it('a fenced volume still detaches clean', () => {
    expect(r.fenced_detach_ok).toBe('1');
    expect([r.controllers_end, r.namespaces_end]).toEqual(['0', '0']);
  });

  describe('powerflex backend over NVMe/TCP, the simulator backed by nvmet', () => {
    it('creates an 8 GiB volume, maps it to this host only and attaches the namespace named by its NGUID', () => {
      expect(r.pf_size_kb).toBe(String(8 * 1024 * 1024));
      expect(r.pf_device).toMatch(/^\/dev\/nvme\d+n\d+$/);
      expect([r.pf_mapped, r.pf_controllers, r.pf_nguid_matches]).toEqual(['bl-vm-a', '2', 'yes']);
    });

    it('detach and unmap leave no controller and no mapping; attached again, the data is intact', () => {
      expect([r.pf_detach_ok, r.pf_mapped_after_detach, r.pf_controllers_after_detach]).toEqual(['1', 'none', '0']);
      expect(r.pf_data_intact).toBe('yes');
    });

    it("another host's takeover unmaps this host at the array, and this host's direct write fails", () => {
      expect(out['pf-takeover-error'] ?? '').toBe('');
      expect([r.pf_takeover_ok, r.pf_takeover_generation, r.pf_mapped_after_takeover]).toEqual(['1', '3', 'bl-vm-b']);
      expect(r.pf_fenced_write_rc).not.toBe('0');
      expect(r.pf_fenced_write_rc).not.toBe('124'); // failed, not hung until timeout(1)
      expect([r.pf_fenced_detach_ok, r.pf_fenced_controllers_after_detach]).toEqual(['1', '0']);
    });

    it('snapshots and clones: a clone of the snapshot has the data of that moment, a clone of the volume the data of now, each read over NVMe/TCP', () => {
      expect(out['pf-snapshot-error'] ?? '').toBe('');
      expect(out['pf-clone-snap-error'] ?? '').toBe('');
      expect(out['pf-clone-live-error'] ?? '').toBe('');
      expect([r.pf_snapshot_ok, r.pf_snapshot_ancestor_ok]).toEqual(['1', '1']);
      expect(r.pf_snapshot_name).toMatch(/^bs-[0-9a-f]{28}$/);
      expect(r.pf_a_differs_from_b).toBe('yes');
      expect([r.pf_clone_snap_ok, r.pf_clone_snap_ancestor_ok, r.pf_pfsnapc_matches]).toEqual(['1', '1', 'A']);
      expect([r.pf_clone_live_ok, r.pf_clone_live_ancestor_ok, r.pf_pflivec_matches]).toEqual(['1', '1', 'B']);
      expect([r.pf_clone_snap_size_kb, r.pf_pfsnapc_dev_bytes]).toEqual([String(8 * 1024 * 1024), String(8 * 2 ** 30)]);
      expect([r.pf_clone_live_size_kb, r.pf_pflivec_dev_bytes]).toEqual([String(16 * 1024 * 1024), String(16 * 2 ** 30)]); // 9 GiB asked: grown to two steps
    });

    it("the volume's io limits are set on its mapping at the array (2000 IOPS, 100 MiB/s); its clones have none", () => {
      expect(r.pf_src_limits).toBe('2000/102400');
      expect([r.pf_pfsnapc_limits, r.pf_pflivec_limits]).toEqual(['none', 'none']);
    });

    it('snapshot rm, then deleting the clones and the volume, leave nothing on the array, in its files or connected', () => {
      expect(out['pf-snap-destroy-error'] ?? '').toBe('');
      expect(r.pf_snapshot_rm_ok).toBe('1');
      expect([r.pf_snap_destroy_ok, r.pf_snap_volumes_end, r.pf_snap_files_end, r.pf_snap_controllers_end]).toEqual(['1', '0', '0', '0']);
    });

    it('release and delete leave nothing on the array, in its files or in nvmet', () => {
      expect(out['pf-destroy-error'] ?? '').toBe('');
      expect([r.pf_release_b_ok, r.pf_mapped_end, r.pf_destroy_ok, r.pf_volumes_end, r.pf_files_end]).toEqual(['1', 'none', '1', '0', '0']);
      expect([r.pf_subsystems_end, r.pf_namespaces_end]).toEqual(['0', '0']);
    });
  });
});
