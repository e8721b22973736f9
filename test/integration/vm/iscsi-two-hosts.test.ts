import { chmod, copyFile, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { PrivateSshd } from '../../lab/sshd.js';
import { requireTgtTools, Tgtd } from '../../lab/tgtd.js';
import { requireVmLab } from '../../lab/vm.js';
import { runScenario, scenarioScript, waitForVmFile, type Results } from '../../lab/vm-scenario.js';

// Two VMs are two hosts with two kernels; the array is a private tgtd on this host, managed by
// both over a private sshd (127.0.0.1, reached from the VMs as 10.0.2.2 through qemu's user
// network, which ends in qemu). Needs root, the VM lab, tgt and openssh-server.

describe('two hosts (two VMs) on one iSCSI array: move, and a frozen holder fenced by the reservation', () => {
  let vm1: Results;
  let vm2: Results;
  let acked = 0;
  let frozenForMs = 0;

  beforeAll(async () => {
    requireVmLab();
    requireTgtTools();
    const tgtd = await Tgtd.start();
    const sshd = await PrivateSshd.start();
    const share = await mkdtemp(join(tmpdir(), 'ballast-2vm-share-'));
    const pool = await mkdtemp(join(tmpdir(), 'ballast-2vm-pool-'));
    // qemu PIDs while their VM runs (cleared when it ends, so a reused PID is never signalled).
    let vm1Pid: number | undefined;
    let vm2Pid: number | undefined;
    let frozen = false;
    try {
      // The VMs have a /tmp of their own; the share is the one host directory they see there.
      const key = join(share, 'array_key');
      await copyFile(sshd.privateKeyPath, key);
      await chmod(key, 0o600);
      const env = {
        SHARE: share,
        POOL: pool,
        ISCSI_PORT: String(tgtd.iscsiPort),
        TGT_CONTROL_PORT: String(tgtd.controlPort),
        SSH_PORT: String(sshd.port),
        SSH_KEY: key,
        SSH_HOST_KEY: sshd.hostKeySha256,
      };
      const common = { shareDir: share, network: true, memoryMb: 1536, timeoutMs: 520_000, env };
      const runs = Promise.all([
        runScenario(scenarioScript('two-hosts-vm1'), { ...common, name: 'vm1', onStart: (pid) => (vm1Pid = pid) }).finally(() => (vm1Pid = undefined)),
        runScenario(scenarioScript('two-hosts-vm2'), { ...common, name: 'vm2', onStart: (pid) => (vm2Pid = pid) }).finally(() => (vm2Pid = undefined)),
      ]);
      runs.catch(() => undefined);
      // The hung host: freeze all of vm1 (kernel, ballast, its watchdog) while it holds "fenced".
      await waitForVmFile(join(share, 'vm1-holding'), 400_000, runs);
      if (!vm1Pid) throw new Error('vm1 is not running');
      process.kill(vm1Pid, 'SIGSTOP');
      frozen = true;
      const frozenAt = Date.now();
      await writeFile(join(share, 'vm1-frozen'), '');
      await waitForVmFile(join(share, 'vm2-took'), 300_000, runs);
      frozenForMs = Date.now() - frozenAt;
      if (vm1Pid) process.kill(vm1Pid, 'SIGCONT');
      frozen = false;
      const [r1, r2] = await runs;
      vm1 = r1.results;
      vm2 = r2.results;
      acked = Number((await readFile(join(share, 'vm1.acked'), 'utf8')).trim());
      console.log('two-host VM lab:', { frozenForMs, vm2_takeover_ms: vm2.vm2_takeover_ms, vm2_move_mount_ms: vm2.vm2_move_mount_ms, vm1_unmount_ms: vm1.vm1_unmount_ms, vm1_fence_log: vm1.vm1_fence_log, vm2_log_cmp: vm2.vm2_log_cmp, vm2_log_bytes: vm2.vm2_log_bytes });
    } finally {
      if (frozen && vm1Pid) process.kill(vm1Pid, 'SIGCONT');
      // On failure the other VM may still run: stop both (qemu's own PIDs; harmless if gone).
      for (const pid of [vm1Pid, vm2Pid]) if (pid) try { process.kill(pid, 'SIGKILL'); } catch { /* exited */ }
      await sshd.stop();
      await tgtd.stop();
      await rm(share, { recursive: true, force: true });
      await rm(pool, { recursive: true, force: true });
    }
  }, 560_000);

  it('moves a volume from host 1 to host 2 with its data intact, and host 1 keeps nothing attached', () => {
    expect(vm2.moved_intact).toBe('yes');
    expect([vm1.vm1_sessions_after_unmount, vm1.vm1_disks_after_unmount]).toEqual(['0', '0']);
  });

  it('takes over from the frozen holder only after its lease, and then only host 2 is registered', () => {
    expect(frozenForMs).toBeGreaterThan(20_000); // lease.seconds in the scenario
    expect(vm2.vm2_pr_keys).toBe('1');
  });

  it('every line host 1 acknowledged before it froze is on the volume host 2 mounted', () => {
    expect(acked).toBeGreaterThan(0);
    expect(Number(vm2.vm2_lines_at_takeover)).toBeGreaterThanOrEqual(acked);
  });

  it('after it thaws, the array refuses host 1\'s writes (reservation preempted), and ballast fences it', () => {
    expect(vm1.vm1_raw_write_rc).not.toBe('0');
    // Refused by the reservation: EIO once dm-multipath failed the path, or the reservation
    // conflict itself (BLK_STS_NEXUS, which the kernel reports as EBADE, "Invalid exchange").
    expect(vm1.vm1_raw_write_error).toMatch(/Input\/output_error|Invalid_exchange/);
    expect(vm2.vm2_log_unchanged_after_vm1_thawed).toBe('yes');
    expect(vm1.vm1_fenced).toBe('1');
  });

  it('host 2 leaves nothing attached at the end', () => {
    expect([vm2.vm2_sessions_end, vm2.vm2_disks_end, vm2.vm2_maps_end]).toEqual(['0', '0', '0']);
  });
});
