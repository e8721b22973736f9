import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Ganesha, requireGanesha } from '../../lab/ganesha.js';
import { describeRun, faultSeed, faultSteps, runFaultScenario, type FaultRun } from '../../helpers/random-faults.js';
import { requireVmLab } from '../../lab/vm.js';

// Randomized faults on a shared loop root over NFS, fenced by NFSv4 image locks: two VMs (two
// hosts, two kernels) are clients of a private ganesha on this host (NFSv4.2, lease 12 s).
// Seeded steps (scripts/random-faults.mjs): mount, unmount, move, kill -9 and restart of a
// daemon, SIGSTOP/SIGCONT of a daemon, a whole VM frozen (SIGSTOP of its qemu) and thawed, a VM
// cut off from the NFS server and healed, clock jumps; writers append fsynced lines while a
// volume is mounted. The checker reads each image as the next holder would (journal replayed)
// and proves: no acknowledged line lost, and sessions never interleave (never two writers).
// Reproduce: BALLAST_RANDOM_FAULTS_SEED=<seed> (BALLAST_RANDOM_FAULTS_STEPS=<n>).
// BALLAST_RANDOM_FAULTS_CLI=<bundle> runs another build of the CLI in the VMs (a mutant, by hand).
// Needs root, the VM lab, nfs-ganesha (+ -vfs) and nfs-common.

const SEED = faultSeed(20261205);
const STEPS = faultSteps(50);
const VOLUMES = ['a', 'b'];

describe(`NFS loop root, two VMs: ${STEPS} random fault steps (seed ${SEED})`, () => {
  let run: FaultRun;

  beforeAll(async () => {
    requireVmLab();
    requireGanesha();
    const ganesha = await Ganesha.start({ leaseSeconds: 12 });
    const share = await mkdtemp(join(tmpdir(), 'ballast-nfs-faults-share-'));
    try {
      run = await runFaultScenario({
        scenario: 'nfs-random-faults',
        backend: 'nfs',
        seed: SEED,
        steps: STEPS,
        volumes: VOLUMES,
        images: (v) => join(ganesha.exportDir, 'loop', v, 'disk.img'),
        env: {
          SHARE: share,
          NFS_PORT: String(ganesha.port),
          ...(process.env.BALLAST_RANDOM_FAULTS_CLI ? { BALLAST_CLI: process.env.BALLAST_RANDOM_FAULTS_CLI } : {}),
        },
        vmTimeoutMs: 1_200_000, // ~5 min on a quiet 2-CPU machine; far longer when other VMs share it
        memoryMb: 1024,
        share,
      });
      console.log(describeRun('NFS random faults', run));
    } finally {
      await ganesha.stop();
      await rm(share, { recursive: true, force: true });
    }
  }, 1_260_000);

  it('ran the steps, with faults of every kind the NFS backend has, and takeovers', () => {
    expect(run.summary.steps).toBe(STEPS);
    for (const kind of ['mount', 'unmount']) expect(run.summary.faults[kind]).toBeGreaterThan(0);
    expect(run.summary.takeovers + (run.summary.faults.move ?? 0)).toBeGreaterThan(0);
  });

  it('every volume could be unmounted in the end, and neither host keeps anything attached', () => {
    expect(run.summary.leftMounted).toEqual([]);
    expect(run.summary.attachedAtEnd).toEqual({ vm1: '0 0 0 0', vm2: '0 0 0 0' });
  });

  it('no two hosts ever wrote one volume: sessions never interleave on disk (double mounts 0)', () => {
    expect(run.check.doubleMounts).toBe(0);
    for (const c of Object.values(run.check.volumes)) expect(c.malformed).toBe(0);
  });

  it('no acknowledged (fsynced) line is missing from the images (lost acknowledged writes 0)', () => {
    expect(run.check.ackedTotal).toBeGreaterThan(0);
    expect(run.check.lostAcked).toBe(0);
  });

  it('each image is a consistent filesystem once its journal is replayed', () => {
    for (const c of Object.values(run.check.volumes)) expect(c.fsckAfter).toBe(0);
  });
});
