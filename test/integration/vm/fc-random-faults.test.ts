import { mkdir, mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { arraySshKeys, requireFcLab, runFcLab } from '../../lab/fc.js';
import { scenarioScript } from '../../lab/vm-scenario.js';
import { runInPriorityLane } from '../../lab/priority-lane.js';
import { describeRun, faultSeed, faultSteps, itHeldUnderFaults, runFaultScenario, type FaultRun } from '../../helpers/random-faults.js';

// Randomized faults on Fibre Channel, fenced by SCSI-3 persistent reservations: a real FC fabric
// (FCoE VN2VN, test/lab/fc.ts) of three VMs, an array (LIO tcm_fc, managed over SSH) and two
// Docker hosts, each joined to the array by two links (two fabrics, two paths, dm-multipath).
// Seeded steps (scripts/random-faults.mjs): mount, unmount, move, kill -9 and restart of a daemon,
// SIGSTOP/SIGCONT of a daemon, a host cut off from the array (both FCoE ports down and its SSH
// dropped) and healed, one path lost (the second link's FCoE port down) and back, clock jumps.
// No whole-VM freeze (random-faults.mjs's backendFaults: a twice-frozen host VM stopped answering
// once). No array restart: LIO's configuration lives in configfs, so a restarted array VM would
// have to be rebuilt by hand. Writers append fsynced
// lines while a volume is mounted; the array VM copies the images out at the end, and the checker
// reads each as the next holder would (journal replayed) and proves: no acknowledged line lost,
// sessions never interleave.
// Reproduce: BALLAST_RANDOM_FAULTS_SEED=<seed> (BALLAST_RANDOM_FAULTS_STEPS=<n>);
// BALLAST_RANDOM_FAULTS_CLI=<bundle> runs another build of the CLI in the host VMs (mutant runs).
// Needs root and the FC lab (the VM lab with the FCoE modules, sg3-utils).

const SEED = faultSeed(20261207);
const STEPS = faultSteps(12);
const VOLUMES = ['a', 'b'];

runInPriorityLane();

describe(`FC (FCoE), an array and two host VMs over two paths each: ${STEPS} random fault steps (seed ${SEED})`, () => {
  let run: FaultRun;

  beforeAll(async () => {
    requireFcLab();
    const share = await mkdtemp(join(tmpdir(), 'ballast-fc-faults-share-'));
    try {
      await mkdir(join(share, 'out'));
      const env = {
        SSH_HOST_KEY: await arraySshKeys(share),
        ...(process.env.BALLAST_RANDOM_FAULTS_CLI ? { BALLAST_CLI: process.env.BALLAST_RANDOM_FAULTS_CLI } : {}),
      };
      const vmTimeoutMs = 1_500_000; // ~8 min on a quiet 2-CPU machine; far longer when other VMs share it
      run = await runFaultScenario({
        scenario: 'fc-random-faults',
        backend: 'fc',
        seed: SEED,
        steps: STEPS,
        volumes: VOLUMES,
        images: (v) => join(share, 'images', `${v}.img`),
        env,
        vmTimeoutMs,
        memoryMb: 1536,
        share,
        vms: (onStart) =>
          runFcLab({
            arrayScript: scenarioScript('fc-random-faults-array'),
            hosts: ['vm1', 'vm2'].map((name) => ({ name, script: scenarioScript('fc-random-faults'), links: 2 })),
            env,
            timeoutMs: vmTimeoutMs,
            shareDir: share,
            memoryMb: 1536,
            onStart,
          }),
      });
      console.log(describeRun('FC random faults', run));
    } finally {
      await rm(share, { recursive: true, force: true });
    }
  }, 1_560_000);

  itHeldUnderFaults(() => run, STEPS);
});
