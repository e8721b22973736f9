import { readdir, readFile } from 'node:fs/promises';
import { join } from 'node:path';

/** An NVMe-oF controller: /sys/class/nvme/nvmeN. */
export interface NvmeController {
  /** "nvme0" */
  name: string;
  subsystemNqn: string;
  /** "tcp", "rdma", "fc", "pcie", "loop" */
  transport: string;
  /** From "traddr=10.0.0.5,trsvcid=4420,src_addr=...". */
  traddr: string;
  trsvcid: string;
  /** "live", "connecting", "resetting", "deleting", ... */
  state: string;
}

/** A namespace as the block layer shows it: /sys/block/nvmeXnY (with native multipath, the head of all paths). */
export interface NvmeNamespace {
  /** "nvme0n1" */
  disk: string;
  /** The kernel's preferred ID: "uuid.<...>" when the array set a UUID, else "eui.<nguid>", else "nvme.<...>". */
  wwid: string;
  /** 32 lower-case hex digits, "" when the array set none. */
  nguid: string;
}

const HEAD = /^nvme\d+n\d+$/;

async function read(path: string): Promise<string> {
  return (await readFile(path, 'utf8').catch(() => '')).trim();
}

async function list(dir: string): Promise<string[]> {
  return readdir(dir).catch(() => []);
}

/** "traddr=10.0.0.5,trsvcid=4420,src_addr=10.0.0.9" -> its fields. */
export function parseAddress(address: string): Record<string, string> {
  return Object.fromEntries(
    address
      .split(',')
      .map((pair) => pair.trim().split('='))
      .filter((kv): kv is [string, string] => kv.length === 2 && kv[0] !== ''),
  );
}

/**
 * The kernel's NVMe state as sysfs shows it. `root` is "/" in production and a fixture tree in
 * unit tests (the VM lab runs the same code against nvme-tcp and nvmet).
 */
export class NvmeSysfs {
  constructor(readonly root = '/') {}

  private sys(...parts: string[]): string {
    return join(this.root, 'sys', ...parts);
  }

  async controllers(): Promise<NvmeController[]> {
    const out: NvmeController[] = [];
    for (const name of await list(this.sys('class', 'nvme'))) {
      const dir = this.sys('class', 'nvme', name);
      const address = parseAddress(await read(join(dir, 'address')));
      out.push({
        name,
        subsystemNqn: await read(join(dir, 'subsysnqn')),
        transport: await read(join(dir, 'transport')),
        traddr: address.traddr ?? '',
        trsvcid: address.trsvcid ?? '',
        state: await read(join(dir, 'state')),
      });
    }
    return out.sort((a, b) => a.name.localeCompare(b.name, 'en', { numeric: true }));
  }

  /** The namespaces of the subsystem with this NQN that this host sees (/sys/class/nvme-subsystem/*). */
  async namespacesOf(subsystemNqn: string): Promise<NvmeNamespace[]> {
    for (const subsystem of await list(this.sys('class', 'nvme-subsystem'))) {
      const dir = this.sys('class', 'nvme-subsystem', subsystem);
      if ((await read(join(dir, 'subsysnqn'))) !== subsystemNqn) continue;
      const disks = (await list(dir)).filter((entry) => HEAD.test(entry));
      return Promise.all(disks.map(async (disk) => ({ disk, wwid: await this.wwid(disk), nguid: await this.nguid(disk) })));
    }
    return [];
  }

  /**
   * Every namespace block device of this host with that NGUID (more than one: native multipath
   * is off). By the NGUID, not the WWID: the kernel's WWID is the namespace UUID when the array
   * sets one too (nvmet makes a random one), and "eui.<nguid>" only otherwise.
   */
  async disksWithNguid(nguid: string): Promise<string[]> {
    const found: string[] = [];
    for (const disk of (await list(this.sys('block'))).filter((entry) => HEAD.test(entry))) {
      if ((await this.nguid(disk)) === nguid) found.push(disk);
    }
    return found.sort();
  }

  wwid(disk: string): Promise<string> {
    return read(this.sys('block', disk, 'wwid'));
  }

  /** /sys/block/nvmeXnY/nguid ("4f6e3a2b-0000-0001-a1b2-c3d4e5f60718") as 32 hex digits; "" for none (all zeros). */
  async nguid(disk: string): Promise<string> {
    const hex = (await read(this.sys('block', disk, 'nguid'))).replace(/-/g, '').toLowerCase();
    return /^0*$/.test(hex) ? '' : hex;
  }

  /** The device's size in 512-byte sectors; 0 while the kernel has not read the namespace's capacity yet. */
  async sectors(disk: string): Promise<number> {
    return Number(await read(this.sys('block', disk, 'size'))) || 0;
  }

  /** nvme_core's multipath parameter: "Y" when one device stands for every path. */
  async nativeMultipath(): Promise<boolean> {
    return (await read(this.sys('module', 'nvme_core', 'parameters', 'multipath'))) === 'Y';
  }

  async fabricsLoaded(): Promise<boolean> {
    return (await list(this.sys('module'))).includes('nvme_tcp');
  }
}
