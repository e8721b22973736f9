import { rm, truncate, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import type { ScDataPlane, ScSimVolume } from './dellsc.js';

// The Dell SC simulator's volumes as real LUNs of a tgtd: each volume a sparse file served as
// LUN 1 of a target of its own (vendor COMPELNT, serial = the volume's WWN), each mapping the
// server's IQNs bound to that target's ACL. tgtd here is the test's own (its control port).

export class TgtScDataPlane implements ScDataPlane {
  constructor(
    /** Runs `tgtadm --lld iscsi ARGS` against the test's tgtd. */
    private readonly tgtadm: (args: string[]) => Promise<string>,
    private readonly dir: string,
    private readonly portal: { address: string; port: number },
  ) {}

  target(volume: ScSimVolume) {
    return { iqn: `iqn.2002-03.com.compellent:5000d31000${volume.index}`, ...this.portal };
  }

  private file(volume: ScSimVolume): string {
    return join(this.dir, `${volume.instanceId}.img`);
  }

  async created(volume: ScSimVolume): Promise<void> {
    await writeFile(this.file(volume), '');
    await truncate(this.file(volume), volume.sizeBytes);
    const tid = String(volume.index);
    await this.tgtadm(['--mode', 'target', '--op', 'new', '--tid', tid, '--targetname', this.target(volume).iqn]);
    await this.tgtadm(['--mode', 'logicalunit', '--op', 'new', '--tid', tid, '--lun', '1', '--backing-store', this.file(volume)]);
    await this.tgtadm(['--mode', 'logicalunit', '--op', 'update', '--tid', tid, '--lun', '1', '--params', `vendor_id=COMPELNT,product_id=Compellent Vol,scsi_sn=${volume.deviceId.slice(-16)}`]);
  }

  async removed(volume: ScSimVolume): Promise<void> {
    await this.tgtadm(['--mode', 'target', '--op', 'delete', '--force', '--tid', String(volume.index)]);
    await rm(this.file(volume), { force: true });
  }

  async mapped(volume: ScSimVolume, iqns: string[]): Promise<void> {
    for (const iqn of iqns) await this.tgtadm(['--mode', 'target', '--op', 'bind', '--tid', String(volume.index), '--initiator-name', iqn]);
  }

  async unmapped(volume: ScSimVolume, iqns: string[]): Promise<void> {
    for (const iqn of iqns) await this.tgtadm(['--mode', 'target', '--op', 'unbind', '--tid', String(volume.index), '--initiator-name', iqn]);
  }
}
