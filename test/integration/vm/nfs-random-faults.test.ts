import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Ganesha, requireGanesha } from '../../lab/ganesha.js';
import { describeRun, faultSeed, faultSteps, itHeldUnderFaults, runFaultScenario, type FaultRun } from '../../helpers/random-faults.js';
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
const STEPS = faultSteps(68);
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

  itHeldUnderFaults(() => run, STEPS);
});
