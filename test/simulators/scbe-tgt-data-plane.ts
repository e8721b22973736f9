import { rm, truncate, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import type { ScbeDataPlane, ScbeSimHost, ScbeSimVolume } from './scbe.js';

// The SCBE simulator's storage system as a tgtd target: each volume a sparse file, a mapping its
// LUN on the one target (vendor IBM, serial from the WWN) and the host's IQN bound to the target,
// unbound again when the host has no mapping left.

export class TgtScbeDataPlane implements ScbeDataPlane {
  constructor(
    /** Runs `tgtadm --lld iscsi ARGS` against the test's tgtd. */
    private readonly tgtadm: (args: string[]) => Promise<string>,
    private readonly dir: string,
    private readonly tid: number,
    readonly target: string,
  ) {}

  async start(): Promise<void> {
    await this.tgtadm(['--mode', 'target', '--op', 'new', '--tid', String(this.tid), '--targetname', this.target]);
  }

  private file(volume: ScbeSimVolume): string {
    return join(this.dir, `${volume.wwn}.img`);
  }

  async created(volume: ScbeSimVolume): Promise<void> {
    await writeFile(this.file(volume), '');
    await truncate(this.file(volume), volume.sizeGiB * 2 ** 30);
  }

  async removed(volume: ScbeSimVolume): Promise<void> {
    await rm(this.file(volume), { force: true });
  }

  async mapped(volume: ScbeSimVolume, host: ScbeSimHost, lun: number): Promise<void> {
    const t = ['--tid', String(this.tid)];
    await this.tgtadm(['--mode', 'logicalunit', '--op', 'new', ...t, '--lun', String(lun), '--backing-store', this.file(volume)]);
    await this.tgtadm(['--mode', 'logicalunit', '--op', 'update', ...t, '--lun', String(lun), '--params', `vendor_id=IBM,product_id=2145,scsi_sn=${volume.wwn.slice(-16)}`]);
    await this.tgtadm(['--mode', 'target', '--op', 'bind', ...t, '--initiator-name', host.iqn]).catch((err: unknown) => {
      if (!/exist/i.test(String(err))) throw err; // bound already for another of its volumes
    });
  }

  async unmapped(_volume: ScbeSimVolume, host: ScbeSimHost, lun: number, hostStillMapped: boolean): Promise<void> {
    const t = ['--tid', String(this.tid)];
    await this.tgtadm(['--mode', 'logicalunit', '--op', 'delete', ...t, '--lun', String(lun)]);
    if (!hostStillMapped) await this.tgtadm(['--mode', 'target', '--op', 'unbind', ...t, '--initiator-name', host.iqn]);
  }
}
