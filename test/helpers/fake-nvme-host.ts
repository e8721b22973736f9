import { mkdir, rm, symlink, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { CommandFailed } from '../../src/errors.js';
import type { Exec, ExecOptions, ExecResult } from '../../src/exec.js';

/** An NVM subsystem of the fake array: where it listens, whom it lets in, what it serves. */
export interface FakeSubsystem {
  /** "address:port" the array listens on; a connect anywhere else is refused. */
  portals: Set<string>;
  allowedHosts: Set<string>;
  /** NGUIDs of its namespaces; a disabled one is not reported to hosts. */
  namespaces: Array<{ nguid: string; enabled: boolean }>;
}

/**
 * The host side of NVMe/TCP for unit tests of the NVMe attacher: nvme-cli answered from a small
 * model of an array, and a sysfs tree under `root` laid out as Linux 6.1 shows it with native
 * multipath (/sys/class/nvme/nvmeN with transport, address, subsysnqn, state;
 * /sys/class/nvme-subsystem/nvme-subsysK with the namespace heads; /sys/block/nvmeKnY/nguid and
 * wwid). `settle()` (the attacher's injected sleep) plays the kernel's asynchronous
 * namespace scan after a connect. Its real counterpart is nvmet in the VM lab.
 */
export class FakeNvmeHost implements Exec {
  readonly calls: string[][] = [];
  readonly subsystems = new Map<string, FakeSubsystem>();
  /** gen-hostnqn's answer. */
  generatedNqn = 'nqn.2014-08.org.nvmexpress:uuid:0f0e0d0c-0b0a-0908-0706-050403020100';
  private readonly controllers = new Map<string, { nqn: string; portal: string }>();
  private nextController = 0;
  private readonly subsystemIndex = new Map<string, number>();

  constructor(readonly root: string) {}

  get commands(): string[] {
    return this.calls.map((argv) => argv.join(' '));
  }

  private sys(...parts: string[]): string {
    return join(this.root, 'sys', ...parts);
  }

  async init(options: { hostNqn?: string; multipath?: boolean; tcpLoaded?: boolean } = {}): Promise<void> {
    for (const dir of [this.sys('class', 'nvme'), this.sys('class', 'nvme-subsystem'), this.sys('block'), this.sys('module', 'nvme_core', 'parameters')]) await mkdir(dir, { recursive: true });
    await writeFile(this.sys('module', 'nvme_core', 'parameters', 'multipath'), options.multipath === false ? 'N\n' : 'Y\n');
    if (options.tcpLoaded !== false) await mkdir(this.sys('module', 'nvme_tcp'), { recursive: true });
    if (options.hostNqn) {
      await mkdir(join(this.root, 'etc', 'nvme'), { recursive: true });
      await writeFile(join(this.root, 'etc', 'nvme', 'hostnqn'), `${options.hostNqn}\n`);
    }
  }

  async run(argv: readonly string[], options: ExecOptions = {}): Promise<ExecResult> {
    if (options.timeoutMs === undefined) throw new Error(`FakeNvmeHost: ${argv.join(' ')} has no timeout`);
    this.calls.push([...argv]);
    const flag = (name: string) => argv.find((a) => a.startsWith(`--${name}=`))?.slice(name.length + 3);
    const fail = (code: number, stderr: string): never => {
      throw new CommandFailed([...argv], code, stderr, false);
    };
    if (argv[0] === 'blockdev') return ok();
    if (argv[0] !== 'nvme') return fail(127, `${argv[0]}: not found`);
    switch (argv[1]) {
      case 'gen-hostnqn':
        return ok(`${this.generatedNqn}\n`);
      case 'ns-rescan':
        return ok();
      case 'connect': {
        const nqn = flag('nqn')!;
        const portal = `${flag('traddr')}:${flag('trsvcid')}`;
        const subsystem = this.subsystems.get(nqn);
        if (!subsystem?.portals.has(portal)) return fail(1, 'Failed to write to /dev/nvme-fabrics: Connection refused\ncould not add new controller: failed to write to nvme-fabrics device');
        if (!subsystem.allowedHosts.has(flag('hostnqn')!)) return fail(1, 'Failed to write to /dev/nvme-fabrics: Input/output error\ncould not add new controller: failed to write to nvme-fabrics device');
        const name = `nvme${this.nextController++}`;
        this.controllers.set(name, { nqn, portal });
        const [traddr, trsvcid] = [flag('traddr')!, flag('trsvcid')!];
        const dir = this.sys('class', 'nvme', name);
        await mkdir(dir, { recursive: true });
        for (const [file, value] of Object.entries({ transport: 'tcp', address: `traddr=${traddr},trsvcid=${trsvcid},src_addr=10.9.9.9`, subsysnqn: nqn, state: 'live' })) await writeFile(join(dir, file), `${value}\n`);
        return ok();
      }
      case 'disconnect': {
        const name = flag('device')!;
        if (!this.controllers.delete(name)) return fail(1, `Failed to open ${name}: No such file or directory`);
        await rm(this.sys('class', 'nvme', name), { recursive: true, force: true });
        await this.settle(); // delete_ctrl_sync: the last controller's namespaces go before disconnect returns
        return ok();
      }
      default:
        return fail(1, `nvme ${argv[1]}: not in the fake`);
    }
  }

  /** The kernel's asynchronous part: each subsystem with a live controller shows its enabled namespaces; one without loses them. */
  async settle(): Promise<void> {
    for (const [nqn, subsystem] of this.subsystems) {
      const index = this.subsystemIndex.get(nqn) ?? this.subsystemIndex.size;
      this.subsystemIndex.set(nqn, index);
      const dir = this.sys('class', 'nvme-subsystem', `nvme-subsys${index}`);
      const live = [...this.controllers.values()].some((c) => c.nqn === nqn);
      for (const [i, ns] of subsystem.namespaces.entries()) {
        const disk = `nvme${index}n${i + 1}`;
        if (live && ns.enabled) {
          await mkdir(this.sys('block', disk), { recursive: true });
          await writeNamespace(this.sys('block', disk), ns.nguid);
          await mkdir(dir, { recursive: true });
          await writeFile(join(dir, 'subsysnqn'), `${nqn}\n`);
          await symlink(join('..', '..', '..', 'block', disk), join(dir, disk)).catch(() => undefined);
        } else {
          await rm(this.sys('block', disk), { recursive: true, force: true });
          await rm(join(dir, disk), { force: true });
        }
      }
      if (!live) await rm(dir, { recursive: true, force: true });
    }
  }

  /** A second block device with the same WWID, as each controller gives one when native multipath is off. */
  async addPathDevice(disk: string, nguid: string): Promise<void> {
    await mkdir(this.sys('block', disk), { recursive: true });
    await writeNamespace(this.sys('block', disk), nguid);
  }

  connectedControllers(): string[] {
    return [...this.controllers.keys()].sort();
  }
}

/** A namespace head's IDs as nvmet gives them: a random UUID besides the NGUID, so the WWID is the UUID. */
async function writeNamespace(dir: string, nguid: string): Promise<void> {
  const dashed = `${nguid.slice(0, 8)}-${nguid.slice(8, 12)}-${nguid.slice(12, 16)}-${nguid.slice(16, 20)}-${nguid.slice(20)}`;
  await writeFile(join(dir, 'nguid'), `${dashed}\n`);
  await writeFile(join(dir, 'size'), '131072\n');
  await writeFile(join(dir, 'wwid'), `uuid.${[...nguid].reverse().join('').replace(/^(.{8})(.{4})(.{4})(.{4})/, '$1-$2-$3-$4-')}\n`);
}

function ok(stdout = ''): ExecResult {
  return { stdout, stderr: '', exitCode: 0 };
}
