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
  /** "eui.<32 hex digits>" when the array set an NGUID, "uuid.<...>" or "nvme.<...>" otherwise. */
  wwid: string;
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
      return Promise.all(disks.map(async (disk) => ({ disk, wwid: await this.wwid(disk) })));
    }
    return [];
  }

  /** Every namespace block device of this host with that WWID (more than one: native multipath is off). */
  async disksWithWwid(wwid: string): Promise<string[]> {
    const found: string[] = [];
    for (const disk of (await list(this.sys('block'))).filter((entry) => HEAD.test(entry))) {
      if ((await this.wwid(disk)) === wwid) found.push(disk);
    }
    return found.sort();
  }

  wwid(disk: string): Promise<string> {
    return read(this.sys('block', disk, 'wwid'));
  }

  /** nvme_core's multipath parameter: "Y" when one device stands for every path. */
  async nativeMultipath(): Promise<boolean> {
    return (await read(this.sys('module', 'nvme_core', 'parameters', 'multipath'))) === 'Y';
  }

  async fabricsLoaded(): Promise<boolean> {
    return (await list(this.sys('module'))).includes('nvme_tcp');
  }
}
