import { mkdir, readFile, writeFile } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import { AttachFailed, errorMessage } from '../../errors.js';
import type { Exec } from '../../exec.js';
import { exportOf, type Export, type NvmeTcpExport } from '../../export.js';
import type { Logger } from '../../log.js';
import type { AttachContext, Attacher } from '../types.js';
import { NvmeSysfs, type NvmeController } from './nvme-sysfs.js';

export interface NvmeAttacherOptions {
  /** Bound on each command (nvme connect / disconnect / gen-hostnqn, blockdev). */
  commandTimeoutMs: number;
  /** How long to wait for the namespace after connecting, and for it to go after disconnecting. Default 30 s. */
  deviceWaitMs?: number;
  pollMs?: number;
  /** "/" in production; a fixture tree (sys/, etc/nvme/) in unit tests. */
  root?: string;
  sleep?: (ms: number) => Promise<void>;
}

interface Portal {
  traddr: string;
  trsvcid: string;
  /** As configured, for messages. */
  text: string;
}

/** "10.0.0.5:4420" or "[fd00::5]:4420" -> address and port. */
export function parsePortal(text: string): Portal {
  const match = /^(?:\[([^\]]+)\]|([^:]+)):(\d+)$/.exec(text.trim());
  if (!match) throw new AttachFailed(`NVMe/TCP portal "${text}" is not address:port`);
  return { traddr: (match[1] ?? match[2])!, trsvcid: match[3]!, text };
}

const servesPortal = (c: NvmeController, nqn: string, p: Portal) => c.transport === 'tcp' && c.subsystemNqn === nqn && c.traddr === p.traddr && c.trsvcid === p.trsvcid;

/**
 * NVMe over TCP with nvme-cli, following os-brick's NVMeOFConnector: one controller per portal
 * (`nvme connect`), the namespace found by its NGUID (/sys/block/nvmeXnY/nguid),
 * native NVMe multipath joining the portals into one /dev/nvmeXnY. Detach flushes, then
 * disconnects the subsystem only when no other namespace of it is left on this host (arrays
 * such as PowerFlex serve every volume from one subsystem). The storage-side fence is the
 * array's: it disables the namespace for the former holder.
 */
export class NvmeTcpAttacher implements Attacher {
  readonly transport = 'nvme-tcp' as const;
  private readonly sysfs: NvmeSysfs;
  private readonly sleep: (ms: number) => Promise<void>;
  private readonly root: string;

  constructor(
    private readonly exec: Exec,
    private readonly log: Logger,
    private readonly options: NvmeAttacherOptions,
  ) {
    this.root = options.root ?? '/';
    this.sysfs = new NvmeSysfs(this.root);
    this.sleep = options.sleep ?? ((ms) => new Promise((r) => setTimeout(r, ms)));
  }

  /** This host's NQN from /etc/nvme/hostnqn, generated there (as nvme-cli's packaging does) when absent. */
  async identify(): Promise<{ nqn: string }> {
    return { nqn: await this.hostNqn() };
  }

  async attach(exp: Export, context: AttachContext): Promise<string> {
    const nvme = exportOf(exp, 'nvme-tcp');
    const portals = nvme.portals.map(parsePortal);
    if (portals.length === 0) throw new AttachFailed(`NVMe/TCP subsystem ${nvme.subsystemNqn}: no portal to connect to`);
    if (!(await this.sysfs.fabricsLoaded())) throw new AttachFailed('the nvme_tcp kernel module is not loaded: run `modprobe nvme-tcp` (and add it to /etc/modules)');
    const hostNqn = await this.hostNqn();
    const connected: string[] = [];
    try {
      const failures: string[] = [];
      for (const portal of portals) {
        const existing = (await this.sysfs.controllers()).find((c) => servesPortal(c, nvme.subsystemNqn, portal));
        if (existing) continue;
        try {
          await this.connect(nvme.subsystemNqn, portal, hostNqn);
          const made = (await this.sysfs.controllers()).find((c) => servesPortal(c, nvme.subsystemNqn, portal));
          if (made) connected.push(made.name);
        } catch (err) {
          failures.push(`${portal.text}: ${errorMessage(err)}`);
        }
      }
      if (failures.length === portals.length) {
        throw new AttachFailed(`cannot connect to NVMe/TCP subsystem ${nvme.subsystemNqn} as ${hostNqn} on any portal: ${failures.join('; ')}`);
      }
      if (failures.length) this.log.warn('NVMe/TCP: some portals did not connect; going on with the others', { nqn: nvme.subsystemNqn, failures });
      return `/dev/${await this.waitForNamespace(nvme)}`;
    } catch (err) {
      for (const name of connected.reverse()) await this.disconnectController(name).catch((e) => this.log.warn('undoing a connect failed', { controller: name, error: errorMessage(e) }));
      this.log.warn('NVMe/TCP attach failed', { nqn: nvme.subsystemNqn, nguid: nvme.nguid, hostId: context.hostId, error: errorMessage(err) });
      throw err instanceof AttachFailed ? err : new AttachFailed(`cannot attach NVMe namespace ${nvme.nguid} of ${nvme.subsystemNqn}: ${errorMessage(err)}`);
    }
  }

  async detach(exp: Export, device: string, _context: AttachContext): Promise<void> {
    const nvme = exportOf(exp, 'nvme-tcp');
    const disks = await this.sysfs.disksWithNguid(nvme.nguid);
    for (const disk of disks) await this.exec.run(['blockdev', '--flushbufs', `/dev/${disk}`], { timeoutMs: this.options.commandTimeoutMs });
    if (disks.length === 0 && device) this.log.debug('NVMe namespace already gone', { device, nguid: nvme.nguid });
    const others = (await this.sysfs.namespacesOf(nvme.subsystemNqn)).filter((ns) => ns.nguid !== nvme.nguid);
    if (others.length) {
      // Other volumes of this subsystem are attached here: keep the controllers; the array's unexport removes the namespace.
      this.log.debug('NVMe subsystem still serves other namespaces here; staying connected', { nqn: nvme.subsystemNqn, others: others.map((ns) => ns.disk) });
      return;
    }
    const controllers = (await this.sysfs.controllers()).filter((c) => c.subsystemNqn === nvme.subsystemNqn);
    for (const controller of controllers) await this.disconnectController(controller.name);
    await this.waitGone(nvme);
  }

  /** NVMe reports a namespace's new size by itself (a Namespace Attribute Changed event); a rescan makes sure. */
  async refreshSize(exp: Export, _device: string): Promise<boolean> {
    const nvme = exportOf(exp, 'nvme-tcp');
    const live = (await this.sysfs.controllers()).filter((c) => c.subsystemNqn === nvme.subsystemNqn && c.state === 'live');
    if (live.length === 0) return false;
    for (const controller of live) await this.exec.run(['nvme', 'ns-rescan', `/dev/${controller.name}`], { timeoutMs: this.options.commandTimeoutMs });
    return true;
  }

  async isAttached(exp: Export, device: string): Promise<boolean> {
    const nvme = exportOf(exp, 'nvme-tcp');
    return (await this.sysfs.nguid(device.replace(/^\/dev\//, ''))) === nvme.nguid;
  }

  private async hostNqn(): Promise<string> {
    const file = join(this.root, 'etc', 'nvme', 'hostnqn');
    const existing = (await readFile(file, 'utf8').catch(() => '')).trim();
    if (existing) return existing;
    const generated = (await this.exec.run(['nvme', 'gen-hostnqn'], { timeoutMs: this.options.commandTimeoutMs })).stdout.trim();
    if (!generated.startsWith('nqn.')) throw new AttachFailed(`nvme gen-hostnqn printed "${generated}", not an NQN; write this host's NQN to ${file}`);
    await mkdir(dirname(file), { recursive: true });
    await writeFile(file, `${generated}\n`, { mode: 0o644, flag: 'wx' }).catch(async (err: NodeJS.ErrnoException) => {
      if (err.code !== 'EEXIST') throw err; // another attach wrote it first: use theirs
    });
    return (await readFile(file, 'utf8')).trim();
  }

  private async connect(nqn: string, portal: Portal, hostNqn: string): Promise<void> {
    // --config none: only what ballast passes, not /etc/nvme/config.json; the kernel then keeps
    // reconnecting a lost controller for ctrl_loss_tmo (600 s) while native multipath uses the others.
    await this.exec.run(['nvme', 'connect', '--transport=tcp', `--traddr=${portal.traddr}`, `--trsvcid=${portal.trsvcid}`, `--nqn=${nqn}`, `--hostnqn=${hostNqn}`, '--config=none'], {
      timeoutMs: this.options.commandTimeoutMs,
    });
  }

  private async disconnectController(name: string): Promise<void> {
    await this.exec.run(['nvme', 'disconnect', `--device=${name}`], { timeoutMs: this.options.commandTimeoutMs });
  }

  /** The namespace's one device with its size, waited for (bounded): the kernel scans namespaces after connect, asynchronously. */
  private async waitForNamespace(nvme: NvmeTcpExport): Promise<string> {
    const waitMs = this.options.deviceWaitMs ?? 30_000;
    const deadline = Date.now() + waitMs;
    for (;;) {
      const disks = await this.sysfs.disksWithNguid(nvme.nguid);
      // The multipath head appears before a path has given it its capacity (size 0 for a moment).
      if (disks.length === 1 && (await this.sysfs.sectors(disks[0]!)) > 0) return disks[0]!;
      if (disks.length > 1 && !(await this.sysfs.nativeMultipath())) {
        throw new AttachFailed(`NVMe namespace ${nvme.nguid} shows as ${disks.join(', ')}: native NVMe multipath is off (nvme_core.multipath=N); ballast needs it on (the kernel's default)`);
      }
      if (Date.now() > deadline) {
        const seen = (await this.sysfs.namespacesOf(nvme.subsystemNqn)).map((ns) => `${ns.disk} NGUID ${ns.nguid || 'none'}`);
        throw new AttachFailed(
          `NVMe namespace with NGUID ${nvme.nguid} did not appear within ${waitMs / 1000} s on subsystem ${nvme.subsystemNqn} ` +
            `(namespaces this host sees there: ${seen.join(', ') || 'none'}); does the array allow this host's NQN and enable the namespace?`,
        );
      }
      await this.sleep(this.options.pollMs ?? 250);
    }
  }

  private async waitGone(nvme: NvmeTcpExport): Promise<void> {
    const deadline = Date.now() + (this.options.deviceWaitMs ?? 30_000);
    for (;;) {
      const left = (await this.sysfs.controllers()).filter((c) => c.subsystemNqn === nvme.subsystemNqn);
      if (left.length === 0) return;
      if (Date.now() > deadline) throw new AttachFailed(`NVMe controllers ${left.map((c) => c.name).join(', ')} of ${nvme.subsystemNqn} did not go away after disconnect`);
      await this.sleep(this.options.pollMs ?? 250);
    }
  }
}
