import { execFileSync } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';
import { mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { basename, join } from 'node:path';
import { fingerprintOf } from './sshd.js';
import { findKernel, requireVmLab } from './vm.js';
import { runScenario, type Results } from './vm-scenario.js';
import type { VmRun } from './vm.js';

// A real Fibre Channel fabric in the VM lab: FCoE in VN2VN mode (no switch, no DCB) between an
// "array" VM and host VMs joined by point-to-point Ethernet links (qemu -netdev stream over Unix
// sockets), each link one fabric and one path. The array runs LIO's tcm_fc target, the hosts the
// fcoe initiator (libfc, scsi_transport_fc: real fc_host and fc_remote_ports). All share
// `shareDir` for signal files. Recipe, timings and pitfalls: /work/shared/research/fcoe-lab.md.
// The scripts' shell side is test/integration/vm/scripts/fc-lib.sh.

/** The array's link N (0-based) has MAC 52:54:00:00:01:0N+1; host K's link N has 52:54:00:00:0K+2:0N+1. */
const arrayMac = (link: number) => `52:54:00:00:01:${(link + 1).toString(16).padStart(2, '0')}`;
const hostMac = (host: number, link: number) => `52:54:00:00:${(host + 2).toString(16).padStart(2, '0')}:${(link + 1).toString(16).padStart(2, '0')}`;
/** An FCoE port's WWPN is 0x2000<mac> (its node name 0x1000<mac>). */
export const wwpnOfMac = (mac: string) => `2000${mac.replace(/:/g, '')}`;
/** In a pair (runFcPair): the array's target port WWPNs, fabric 1 and 2: ['2000525400000101', '2000525400000102']. */
export const ARRAY_WWPNS = [0, 1].map((l) => wwpnOfMac(arrayMac(l)));
/** In a pair: the host's initiator port WWPNs: ['2000525400000201', '2000525400000202']. */
export const HOST_WWPNS = [0, 1].map((l) => wwpnOfMac(hostMac(0, l)));
/** Host K's first link and the array's end of it share 192.168.(71+K).0/24 (FCoE and IP share a link): for SSH. */
const subnetIp = (host: number, end: 1 | 2) => `192.168.${71 + host}.${end}`;

const FC_MODULES = ['tcm_fc', 'fcoe', 'libfcoe', 'target_core_file'];
const SOCKET_WAIT_MS = 30_000;

export interface FcLabHost {
  /** The VM's name; its results come back under it. */
  name: string;
  /** Scenario script (see scenarioScript()). */
  script: string;
  /** How many links (fabrics, paths) join it to the array. */
  links: number;
}

export interface FcLabOptions {
  /** Scenario script run as root in the array VM. */
  arrayScript: string;
  /** The Docker hosts, each joined to the array by links of its own. */
  hosts: FcLabHost[];
  /** Exported in every VM, on top of the FC_* variables below. */
  env?: Record<string, string>;
  /** Bound on each VM (qemu is SIGKILLed by its PID when passed). */
  timeoutMs: number;
  /** Mounted in every VM at the same path, exported as SHARE: signal files, long outputs. */
  shareDir: string;
  /** Called with each qemu's PID once it runs ("array" or a host's name). */
  onStart?: (vm: string, pid: number) => void;
  /** Per VM; default 1024. */
  memoryMb?: number;
}

export interface FcVmResult {
  run: VmRun;
  results: Results;
}

interface VmPlan {
  name: string;
  script: string;
  macs: string[];
  listen: boolean;
  /** An address per link, "-" for none. */
  ips: string[];
  env: Record<string, string>;
}

/**
 * Runs the array VM and then every host VM to completion and returns their results by name
 * ("array" and each host's). The array listens on all links, so it starts first and the hosts
 * (which connect) only once every socket exists. Each VM gets, besides `env`: SHARE, FC_ROLE (its
 * name), FC_MACS, FC_NICS (its links' interfaces, in order, up with MTU 9000 before the script
 * runs), FC_LINK_IPS, FC_ARRAY_WWPNS and FC_HOST_WWPNS (all of them, space-separated); a host
 * also FC_MY_TARGETS (the array ports its links reach) and FC_PEER_IP (the array's address on its
 * first link); the array FC_LINK_PEERS (the host WWPN at the other end of each of its links). Hosts
 * run with scsi_mod.scan=manual. If one VM fails, the others are stopped at once and the error
 * carries the consoles' ends.
 */
export async function runFcLab(options: FcLabOptions): Promise<Record<string, FcVmResult>> {
  const dir = await mkdtemp(join(tmpdir(), 'ballast-fc-'));
  const arrayMacs: string[] = [];
  const linkPeers: string[] = [];
  const arrayIps: string[] = [];
  const hostPlans: VmPlan[] = options.hosts.map((host, k) => {
    const macs = Array.from({ length: host.links }, (_, l) => hostMac(k, l));
    const targets = macs.map((mac) => {
      arrayMacs.push(arrayMac(arrayMacs.length));
      linkPeers.push(wwpnOfMac(mac));
      arrayIps.push(mac === macs[0] ? `${subnetIp(k, 1)}/24` : '-');
      return wwpnOfMac(arrayMacs[arrayMacs.length - 1]!);
    });
    const ips = macs.map((_, l) => (l === 0 ? `${subnetIp(k, 2)}/24` : '-'));
    return { name: host.name, script: host.script, macs, listen: false, ips, env: { FC_MY_TARGETS: targets.join(' '), FC_PEER_IP: subnetIp(k, 1) } };
  });
  const arrayPlan: VmPlan = { name: 'array', script: options.arrayScript, macs: arrayMacs, listen: true, ips: arrayIps, env: { FC_LINK_PEERS: linkPeers.join(' ') } };
  const common = {
    SHARE: options.shareDir,
    FC_ARRAY_WWPNS: arrayMacs.map(wwpnOfMac).join(' '),
    FC_HOST_WWPNS: hostPlans.flatMap((h) => h.macs.map(wwpnOfMac)).join(' '),
    ...options.env,
  };
  const pids = new Map<string, number>();
  const failures: Array<{ vm: string; error: Error }> = [];
  const socket = (link: number) => join(dir, `fabric${link + 1}.sock`);
  let nextLink = 0;
  const start = async (plan: VmPlan): Promise<FcVmResult> => {
    const first = plan.listen ? 0 : nextLink;
    if (!plan.listen) nextLink += plan.macs.length;
    try {
      const result = await runScenario(await wrap(dir, plan.name, plan.script), {
        name: plan.name,
        shareDir: options.shareDir,
        timeoutMs: options.timeoutMs,
        memoryMb: options.memoryMb ?? 1024,
        links: plan.macs.map((mac, i) => ({ socket: socket(first + i), listen: plan.listen, mac })),
        // no_timer_check: see random-faults.ts (a loaded host can fail the boot-time timer check).
        kernelArgs: ['no_timer_check', ...(plan.listen ? [] : ['scsi_mod.scan=manual'])],
        env: { ...common, ...plan.env, FC_ROLE: plan.name, FC_MACS: plan.macs.join(' '), FC_LINK_IPS: plan.ips.join(' ') },
        onStart: (pid) => {
          pids.set(plan.name, pid);
          options.onStart?.(plan.name, pid);
        },
      });
      pids.delete(plan.name);
      return result;
    } catch (error) {
      pids.delete(plan.name);
      failures.push({ vm: plan.name, error: error as Error });
      stop(pids); // the others would only wait for a signal that never comes
      throw error;
    }
  };
  try {
    const runs = new Map<string, Promise<FcVmResult>>([['array', start(arrayPlan)]]);
    runs.get('array')!.catch(() => undefined);
    const deadline = Date.now() + SOCKET_WAIT_MS;
    while (!arrayMacs.every((_, i) => existsSync(socket(i))) && !failures.length) {
      if (Date.now() > deadline) {
        stop(pids);
        await runs.get('array')!.catch(() => undefined);
        throw new Error(`the array VM's link sockets did not appear in ${dir} within ${SOCKET_WAIT_MS / 1000} s`);
      }
      await new Promise((r) => setTimeout(r, 50));
    }
    for (const plan of hostPlans) {
      const run = failures.length ? Promise.reject(new Error('not started: another VM failed first')) : start(plan);
      run.catch(() => undefined);
      runs.set(plan.name, run);
    }
    const settled = await Promise.allSettled(runs.values());
    if (settled.every((s) => s.status === 'fulfilled')) {
      return Object.fromEntries([...runs.keys()].map((name, i) => [name, (settled[i] as PromiseFulfilledResult<FcVmResult>).value]));
    }
    // The first failure is the cause; the others were stopped because of it (their consoles' ends may still help).
    const [first, ...others] = failures;
    const tail = others.map((f) => `\n--- then the ${f.vm} VM (stopped because of it):\n${f.error.message.slice(-6_000)}`).join('');
    throw new Error(`FC lab: the ${first?.vm ?? '?'} VM failed first: ${first?.error.message ?? 'unknown'}${tail}`);
  } finally {
    stop(pids);
    await rm(dir, { recursive: true, force: true });
  }
}

/** Two VMs: the array and one host, joined by two links (two fabrics, two paths). */
export async function runFcPair(options: Omit<FcLabOptions, 'hosts'> & { hostScript: string }): Promise<{ array: FcVmResult; host: FcVmResult }> {
  const runs = await runFcLab({ ...options, hosts: [{ name: 'host', script: options.hostScript, links: 2 }] });
  return { array: runs.array!, host: runs.host! };
}

/**
 * Keys for the array VM's sshd (fc-lib.sh's array_sshd) and the hosts' client (on_array, the
 * daemon's array.ssh) in `shareDir`/ssh; returns the host key's fingerprint (SSH_HOST_KEY).
 */
export async function arraySshKeys(shareDir: string): Promise<string> {
  const dir = join(shareDir, 'ssh');
  await mkdir(dir);
  for (const key of ['host_key', 'client_key']) execFileSync('ssh-keygen', ['-q', '-t', 'ed25519', '-N', '', '-C', `ballast-fc-lab-${key}`, '-f', join(dir, key)]);
  await writeFile(join(dir, 'authorized_keys'), readFileSync(join(dir, 'client_key.pub')));
  return fingerprintOf(readFileSync(join(dir, 'host_key.pub'), 'utf8'));
}

/** SIGKILLs the qemu of each VM still running, by its own PID. */
function stop(pids: Map<string, number>): void {
  for (const pid of pids.values()) {
    try {
      process.kill(pid, 'SIGKILL');
    } catch {
      // already gone
    }
  }
}

/**
 * The script the VM runs: fc-lib.sh, the links up (MTU, the IPv4 address), then the scenario.
 * Named after the scenario, in its own folder, so runScenario's messages name the scenario.
 */
async function wrap(dir: string, vm: string, script: string): Promise<string> {
  const lib = join(process.cwd(), 'test', 'integration', 'vm', 'scripts', 'fc-lib.sh');
  await mkdir(join(dir, vm));
  const wrapper = join(dir, vm, basename(script));
  await writeFile(wrapper, `. '${lib}'\nfc_links_up || die "the FC links did not come up"\n. '${script}'\n`);
  return wrapper;
}

/** Throws, naming every missing piece, unless the FC lab (on top of the VM lab) can run here. */
export function requireFcLab(): void {
  const missing: string[] = [];
  try {
    requireVmLab();
  } catch (err) {
    missing.push((err as Error).message);
  }
  try {
    const kernel = findKernel();
    const dep = readFileSync(join(kernel.modules, 'modules.dep'), 'utf8');
    for (const m of FC_MODULES) {
      if (!new RegExp(`(^|/)${m}\\.ko(\\.(xz|zst|gz))?:`, 'm').test(dep)) missing.push(`kernel module ${m} in ${kernel.modules} (a Debian linux-image-amd64 has it)`);
    }
  } catch (err) {
    missing.push((err as Error).message);
  }
  if (!existsSync('/usr/bin/sg_persist')) missing.push('/usr/bin/sg_persist (apt-get install sg3-utils)');
  if (!existsSync('/usr/sbin/tc') && !existsSync('/sbin/tc')) missing.push('tc, for the links\' lossless qdisc (apt-get install iproute2)');
  if (missing.length) throw new Error(`the FC lab is incomplete; missing:\n  ${missing.join('\n  ')}`);
}
