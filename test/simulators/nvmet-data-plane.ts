import { mkdir, readdir, rmdir, symlink, truncate, unlink, writeFile } from 'node:fs/promises';
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { execFile } from 'node:child_process';
import { promisify } from 'node:util';
import type { DataPlane, SimHost, SimVolume } from './powerflex.js';

// The PowerFlex simulator's volumes made real with Linux's nvmet (configfs), in the VM lab:
// each volume a sparse file (a snapshot a sparse copy of its source's), the system one NVM subsystem on the given portals, a mapping a
// namespace (NGUID = volume id + system id) and the host in allowed_hosts, an unmap the namespace
// disabled and removed. nvmet has no per-host namespace views: every allowed host sees every
// namespace of the subsystem, where a real PowerFlex shows a host only its own (a gap of the
// lab, not of ballast, which maps a volume to one host at a time). So a former holder that is
// still connected would see the new holder's namespace (same file, same NGUID) at once: to show
// the fence, a test can hold new mappings back (hold) and expose them after it looked.

const NVMET = '/sys/kernel/config/nvmet';

export interface NvmetDataPlaneOptions {
  /** Where the volumes' files go: a tmpfs (nvmet reads a size of 0 on the VM's overlay root). */
  imageDir: string;
  /** "address:port" of each SDT portal, e.g. 127.0.0.1:4421. */
  portals: string[];
  /** First configfs port id to use (ids of other scenarios' ports stay untouched). */
  firstPortId: number;
}

const uuidForm = (hex: string) => `${hex.slice(0, 8)}-${hex.slice(8, 12)}-${hex.slice(12, 16)}-${hex.slice(16, 20)}-${hex.slice(20)}`;

export class NvmetDataPlane implements DataPlane {
  private subsystem = '';
  private systemId = '';
  private readonly namespaceIds = new Map<string, number>();
  /** Volume id -> the host NQN it is mapped to. */
  private readonly mappedTo = new Map<string, string>();
  private readonly madeHosts = new Set<string>();
  /** While true, mapped() only queues the namespace; expose() makes the queued ones. */
  hold = false;
  private readonly held: (() => Promise<void>)[] = [];

  constructor(private readonly options: NvmetDataPlaneOptions) {}

  /** The system's subsystem, served on every portal. */
  async start(systemId: string, subsystemNqn: string): Promise<void> {
    this.systemId = systemId;
    this.subsystem = join(NVMET, 'subsystems', subsystemNqn);
    await mkdir(this.subsystem);
    await writeFile(join(this.subsystem, 'attr_allow_any_host'), '0');
    for (const [i, portal] of this.options.portals.entries()) {
      const [address, port] = portal.split(':') as [string, string];
      const dir = join(NVMET, 'ports', String(this.options.firstPortId + i));
      await mkdir(dir);
      for (const [key, value] of [['addr_trtype', 'tcp'], ['addr_adrfam', 'ipv4'], ['addr_traddr', address], ['addr_trsvcid', port]]) await writeFile(join(dir, key!), value!);
      await symlink(this.subsystem, join(dir, 'subsystems', subsystemNqn));
    }
  }

  /** Takes down what start() and the mappings made: namespaces, hosts, ports, the subsystem. */
  async stop(): Promise<void> {
    if (!this.subsystem) return;
    const nqn = this.subsystem.split('/').at(-1)!;
    for (const i of this.options.portals.keys()) {
      const dir = join(NVMET, 'ports', String(this.options.firstPortId + i));
      await unlink(join(dir, 'subsystems', nqn)).catch(() => undefined);
      await rmdir(dir).catch(() => undefined);
    }
    for (const nsid of this.namespaceIds.values()) await this.removeNamespace(nsid);
    for (const host of (await readdir(join(this.subsystem, 'allowed_hosts')).catch(() => [])) as string[]) await unlink(join(this.subsystem, 'allowed_hosts', host));
    await rmdir(this.subsystem).catch(() => undefined);
    for (const host of this.madeHosts) await rmdir(join(NVMET, 'hosts', host)).catch(() => undefined);
  }

  private file(volume: SimVolume): string {
    return join(this.options.imageDir, `${volume.id}.img`);
  }

  async created(volume: SimVolume): Promise<void> {
    await writeFile(this.file(volume), '');
    await truncate(this.file(volume), volume.sizeInKb * 1024);
  }

  /** The snapshot's file a sparse copy of its source's as it is now (nvmet writes through the page cache cp reads). */
  async snapshotted(source: SimVolume, snapshot: SimVolume): Promise<void> {
    await promisify(execFile)('cp', ['--sparse=always', this.file(source), this.file(snapshot)], { timeout: 60_000 });
  }

  async resized(volume: SimVolume): Promise<void> {
    await truncate(this.file(volume), volume.sizeInKb * 1024);
    const nsid = this.namespaceIds.get(volume.id);
    if (nsid !== undefined) await writeFile(join(this.subsystem, 'namespaces', String(nsid), 'revalidate_size'), '1').catch(() => undefined);
  }

  async removed(volume: SimVolume): Promise<void> {
    await unlink(this.file(volume));
  }

  async mapped(volume: SimVolume, host: SimHost): Promise<void> {
    if (this.hold) return void this.held.push(() => this.makeNamespace(volume, host));
    await this.makeNamespace(volume, host);
  }

  /** Makes the namespaces held back while `hold` was set, and stops holding. */
  async expose(): Promise<void> {
    this.hold = false;
    for (const make of this.held.splice(0)) await make();
  }

  private async makeNamespace(volume: SimVolume, host: SimHost): Promise<void> {
    const hostDir = join(NVMET, 'hosts', host.nqn);
    if (!existsSync(hostDir)) {
      await mkdir(hostDir);
      this.madeHosts.add(host.nqn);
    }
    const allowed = join(this.subsystem, 'allowed_hosts', host.nqn);
    if (!existsSync(allowed)) await symlink(hostDir, allowed);
    const nsid = Math.max(0, ...this.namespaceIds.values()) + 1;
    const ns = join(this.subsystem, 'namespaces', String(nsid));
    await mkdir(ns);
    await writeFile(join(ns, 'device_path'), this.file(volume));
    await writeFile(join(ns, 'buffered_io'), '1'); // tmpfs has no O_DIRECT
    await writeFile(join(ns, 'device_nguid'), uuidForm(`${volume.id}${this.systemId}`));
    await writeFile(join(ns, 'enable'), '1');
    this.namespaceIds.set(volume.id, nsid);
    this.mappedTo.set(volume.id, host.nqn);
  }

  /** The fence: the namespace disabled and gone (a host's live controller outlives allowed_hosts). */
  async unmapped(volume: SimVolume, host: SimHost): Promise<void> {
    const nsid = this.namespaceIds.get(volume.id);
    if (nsid !== undefined) await this.removeNamespace(nsid);
    this.namespaceIds.delete(volume.id);
    this.mappedTo.delete(volume.id);
    if (![...this.mappedTo.values()].includes(host.nqn)) await unlink(join(this.subsystem, 'allowed_hosts', host.nqn)).catch(() => undefined);
  }

  private async removeNamespace(nsid: number): Promise<void> {
    const ns = join(this.subsystem, 'namespaces', String(nsid));
    await writeFile(join(ns, 'enable'), '0').catch(() => undefined);
    await rmdir(ns).catch(() => undefined);
  }
}
