import { spawn, type ChildProcess } from 'node:child_process';
import { createHash } from 'node:crypto';
import { chmod, copyFile, mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { freeTcpPort } from '../../lab/net.js';
import { PrivateSshd } from '../../lab/sshd.js';
import { parseShow, requireTgtTools, runTool, Tgtd } from '../../lab/tgtd.js';
import { requireVmLab } from '../../lab/vm.js';
import { describeRun, faultSeed, faultSteps, itHeldUnderFaults, runFaultScenario, type FaultRun } from '../../helpers/random-faults.js';

// Randomized faults on iSCSI, fenced by SCSI-3 persistent reservations: two VMs (two hosts, two
// kernels) on one tgtd array on this host, each over two portals (two paths, dm-multipath),
// managed over a private sshd. Seeded steps (scripts/random-faults.mjs): mount, unmount, move,
// kill -9 and restart of a daemon, SIGSTOP/SIGCONT of a daemon, a whole VM frozen (SIGSTOP of
// its qemu) and thawed, a VM cut off from the array (portals and SSH) and healed, one path lost
// and back, clock jumps, and the array restarted (tgtd killed and started again with the same
// targets, LUNs and ACLs: the reservations it held in memory are gone). Writers append fsynced
// lines while a volume is mounted; the checker reads each LUN's image as the next holder would
// (journal replayed) and proves: no acknowledged line lost, sessions never interleave.
// Reproduce: BALLAST_RANDOM_FAULTS_SEED=<seed> (BALLAST_RANDOM_FAULTS_STEPS=<n>).
// BALLAST_RANDOM_FAULTS_RESERVATIONS=false turns the array's fence off, and
// BALLAST_RANDOM_FAULTS_CLI=<bundle> runs another build of the CLI in the VMs (mutant runs, by hand).
// Needs root, the VM lab, tgt and openssh-server.

const SEED = faultSeed(20261206);
const STEPS = faultSteps(20);
const VOLUMES = ['a', 'b'];

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/**
 * The array restarted: tgtd killed (-9) and a new one started on the same control port and
 * portals, its targets recreated as they were (LUN, unit serial, ACL). What tgtd kept only in
 * memory, the persistent reservations, is lost, as on an array without APTPL.
 */
class RestartedArray {
  private child: ChildProcess | undefined;

  constructor(private readonly first: Tgtd, readonly secondPortal: number) {}

  private tgtadm(args: string[]) {
    return runTool(['tgtadm', '-C', String(this.first.controlPort), '--lld', 'iscsi', ...args]);
  }

  async addSecondPortal(): Promise<void> {
    const r = await this.tgtadm(['--mode', 'portal', '--op', 'new', '--param', `portal=127.0.0.1:${this.secondPortal}`]);
    if (r.exitCode !== 0) throw new Error(`cannot add portal ${this.secondPortal}: ${r.stderr}`);
  }

  async restart(): Promise<void> {
    const shown = await this.tgtadm(['--mode', 'target', '--op', 'show']);
    const targets = parseShow(shown.stdout);
    const pid = this.child?.pid ?? this.first.pid;
    const exited = this.child ? new Promise((r) => this.child!.once('exit', r)) : (async () => { while (this.first.running) await sleep(20); })();
    process.kill(pid, 'SIGKILL');
    await exited;
    this.child = spawn('tgtd', ['-f', '-C', String(this.first.controlPort), '--iscsi', `portal=127.0.0.1:${this.first.iscsiPort}`], { stdio: 'ignore' });
    for (let i = 0; ; i++) {
      if ((await this.tgtadm(['--mode', 'target', '--op', 'show'])).exitCode === 0) break;
      if (i > 200) throw new Error('the restarted tgtd does not answer');
      await sleep(50);
    }
    await this.addSecondPortal();
    for (const t of targets) {
      const steps = [
        ['--mode', 'target', '--op', 'new', '--tid', String(t.tid), '--targetname', t.iqn],
        ...[...t.luns].filter(([, path]) => path).flatMap(([lun, path]) => [
          ['--mode', 'logicalunit', '--op', 'new', '--tid', String(t.tid), '--lun', String(lun), '--backing-store', path!],
          // ballast names the unit serial after the target (iscsi-driver createTarget): the same disk again
          ['--mode', 'logicalunit', '--op', 'update', '--tid', String(t.tid), '--lun', String(lun), '--params', `scsi_sn=${createHash('sha256').update(t.iqn).digest('hex').slice(0, 16)}`],
        ]),
        ...t.acl.map((a) => ['--mode', 'target', '--op', 'bind', '--tid', String(t.tid), '--initiator-name', a]),
      ];
      for (const args of steps) {
        const r = await this.tgtadm(args);
        if (r.exitCode !== 0) throw new Error(`restarting the array: tgtadm ${args.join(' ')}: ${r.stderr}`);
      }
    }
  }

  /** Stops the restarted tgtd (the first one stops itself through Tgtd.stop). */
  async stop(): Promise<void> {
    if (!this.child || this.child.exitCode !== null || this.child.signalCode !== null) return;
    const shown = await this.tgtadm(['--mode', 'target', '--op', 'show']);
    for (const t of shown.exitCode === 0 ? parseShow(shown.stdout) : []) await this.tgtadm(['--mode', 'target', '--op', 'delete', '--force', '--tid', String(t.tid)]);
    const exited = new Promise((r) => this.child!.once('exit', r));
    this.child.kill('SIGKILL');
    await exited;
    await rm(`/run/tgtd/socket.${this.first.controlPort}`, { force: true });
    await rm(`/run/tgtd/socket.${this.first.controlPort}.lock`, { force: true });
  }
}

describe(`iSCSI, two VMs over two paths: ${STEPS} random fault steps (seed ${SEED})`, () => {
  let run: FaultRun;

  beforeAll(async () => {
    requireVmLab();
    requireTgtTools();
    const tgtd = await Tgtd.start();
    const sshd = await PrivateSshd.start();
    const share = await mkdtemp(join(tmpdir(), 'ballast-iscsi-faults-share-'));
    const pool = await mkdtemp(join(tmpdir(), 'ballast-iscsi-faults-pool-'));
    const array = new RestartedArray(tgtd, await freeTcpPort());
    try {
      await array.addSecondPortal();
      const key = join(share, 'array_key'); // the VMs' /tmp is their own; the share is the host's
      await copyFile(sshd.privateKeyPath, key);
      await chmod(key, 0o600);
      run = await runFaultScenario({
        scenario: 'iscsi-random-faults',
        backend: 'iscsi',
        seed: SEED,
        steps: STEPS,
        volumes: VOLUMES,
        images: (v) => join(pool, v, 'disk.img'),
        env: {
          SHARE: share,
          POOL: pool,
          ISCSI_PORT: String(tgtd.iscsiPort),
          ISCSI_PORT2: String(array.secondPortal),
          TGT_CONTROL_PORT: String(tgtd.controlPort),
          SSH_PORT: String(sshd.port),
          SSH_KEY: key,
          SSH_HOST_KEY: sshd.hostKeySha256,
          ...(process.env.BALLAST_RANDOM_FAULTS_RESERVATIONS ? { RESERVATIONS: process.env.BALLAST_RANDOM_FAULTS_RESERVATIONS } : {}),
          ...(process.env.BALLAST_RANDOM_FAULTS_CLI ? { BALLAST_CLI: process.env.BALLAST_RANDOM_FAULTS_CLI } : {}),
        },
        vmTimeoutMs: 1_200_000, // ~5 min on a quiet 2-CPU machine; far longer when other VMs share it
        memoryMb: 1536,
        share,
        arrayRestart: () => array.restart(),
      });
      console.log(describeRun('iSCSI random faults', run));
    } finally {
      await array.stop();
      await sshd.stop();
      await tgtd.stop();
      await rm(share, { recursive: true, force: true });
      await rm(pool, { recursive: true, force: true });
    }
  }, 1_260_000);

  itHeldUnderFaults(() => run, STEPS);
});
