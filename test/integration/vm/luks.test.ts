import { readFileSync } from 'node:fs';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { requireVmLab } from '../../lab/vm.js';
import { runScenario, scenarioScript, type Results } from '../../lab/vm-scenario.js';

// Needs root, qemu-system-x86, linux-image-amd64 (dm_crypt) and cryptsetup-bin
// (scripts/install-deps.sh installs them); fails loudly without them.
const MiB = 1024 * 1024;

describe('encrypted volumes (LUKS2 under the filesystem) and cgroup v2 IO limits in a real kernel (VM lab)', () => {
  let results: Results;
  let share: string;
  const said = (key: string) => readFileSync(join(share, 'out', key), 'utf8').trim();

  beforeAll(async () => {
    requireVmLab();
    share = mkdtempSync(join(tmpdir(), 'ballast-luks-'));
    ({ results } = await runScenario(scenarioScript('luks'), { name: 'vm1', timeoutMs: 400_000, shareDir: share, env: { SHARE: share } }));
    console.log('VM lab luks timings:', Object.fromEntries(Object.entries(results).filter(([k]) => k.endsWith('_ms') || k.endsWith('_s'))));
  }, 420_000);

  afterAll(() => {
    if (share) rmSync(share, { recursive: true, force: true });
  });

  it('refuses encrypted=true without a usable key, naming the file to make, and makes nothing', () => {
    expect(said('nokey_err')).toMatch(/option encrypted=true: volume nokey is encrypted, and its key file \/tmp\/ballast\/keys\/nokey\.key does not exist on this host; .*head -c 64 \/dev\/urandom/);
    expect(results.nokey_made).toBe('no');
    expect(said('openkey_err')).toMatch(/key file \/tmp\/ballast\/keys\/sec\.key is readable by others \(mode 644\): chmod 600 it/);
  });

  it('mounts the filesystem on a LUKS2 mapping, and closes it and detaches at Unmount', () => {
    expect(results.source).toBe('/dev/mapper/ballast-sec');
    expect(results.luks_version).toBe('2');
    expect(results.maps_mounted).toBe('1');
    expect([results.maps_after_unmount, results.loops_after_unmount]).toEqual(['0', '0']);
  });

  it('keeps only ciphertext at rest (a plain volume shows the same text), and reads the data back through ballast', () => {
    expect(results.plaintext_in_plain_image).toBe('1');
    expect(results.plaintext_in_image).toBe('0');
    expect(results.data_intact).toBe('yes');
  });

  it('a wrong or missing key is a clear Err that leaves nothing open or attached', () => {
    expect(said('wrongkey_err')).toMatch(/volume sec: its key file \/tmp\/ballast\/keys\/sec\.key opens none of the volume's LUKS key slots/);
    expect(said('missingkey_err')).toMatch(/key file \/tmp\/ballast\/keys\/sec\.key does not exist on this host/);
    expect([results.maps_after_wrong_key, results.loops_after_wrong_key, results.maps_after_missing_key, results.loops_after_missing_key]).toEqual(['0', '0', '0', '0']);
  });

  it('the documented key rotation works: the old key is refused, the new one opens the data', () => {
    expect(said('oldkey_err')).toMatch(/opens none of the volume's LUKS key slots/);
    expect(results.data_after_rotation).toBe('yes');
  });

  it('a volume grown while unmounted opens at its new size, and its filesystem grows', () => {
    expect(Number(results.mapped_bytes_grown)).toBe(128 * MiB - 16 * MiB); // LUKS2's header is 16 MiB
    expect(Number(results.fs_bytes_grown)).toBeGreaterThan(90 * MiB);
    expect(results.data_after_grow).toBe('yes');
  });

  it("uses a profile's key_file, and a clone opens with its source's key", () => {
    expect(results.team_header).toBe('luks');
    expect(results.clone_data).toBe('team');
  });

  it('caps direct writes to the encrypted volume through cgroup v2 io.max within 20 %, and leaves another cgroup uncapped', () => {
    // 6 MiB at 1 MiB/s: 6 s. Uncapped, the emulated CPU's software AES does it in 1 to 2 s.
    expect(results.io_max_line).toMatch(/^\d+:\d+,rbps=max,wbps=1048576,riops=max,wiops=max$/);
    expect(Number(results.capped_6mib_ms)).toBeGreaterThan(6000 * 0.8);
    expect(Number(results.capped_6mib_ms)).toBeLessThan(6000 * 1.2);
    expect(Number(results.free_6mib_ms)).toBeLessThan(6000 / 2);
  });

  it('leaves no mapping, loop device or volume behind', () => {
    expect([results.maps_end, results.loops_end, results.volumes_end, results.done]).toEqual(['0', '0', '0', 'yes']);
  });
});
