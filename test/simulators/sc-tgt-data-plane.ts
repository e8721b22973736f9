import { execFile } from 'node:child_process';
import { rm, truncate, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { promisify } from 'node:util';
import type { ScDataPlane, ScSimReplay, ScSimVolume } from './dellsc.js';

const run = promisify(execFile);

// The Dell SC simulator's volumes as real LUNs of a tgtd: each volume a sparse file served as
// LUN 1 of a target of its own (vendor COMPELNT, serial = the volume's WWN), each mapping the
// server's IQNs bound to that target's ACL. A replay is a sparse copy of the volume's file, taken
// when it is made; a view volume's file starts as a copy of its replay's. tgtd here is the test's
// own (its control port).

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

  /** The file that holds the volume's data. */
  file(volume: ScSimVolume): string {
    return join(this.dir, `${volume.instanceId}.img`);
  }

  /** The file that holds the replay's frozen copy. */
  replayFile(replay: ScSimReplay): string {
    return join(this.dir, `${replay.instanceId}.replay.img`);
  }

  async created(volume: ScSimVolume, from?: ScSimReplay): Promise<void> {
    if (from) await run('cp', ['--sparse=always', '--', this.replayFile(from), this.file(volume)]);
    else await writeFile(this.file(volume), '');
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

  async replayed(volume: ScSimVolume, replay: ScSimReplay): Promise<void> {
    await run('cp', ['--sparse=always', '--', this.file(volume), this.replayFile(replay)]);
  }

  async expired(replay: ScSimReplay): Promise<void> {
    await rm(this.replayFile(replay), { force: true });
  }

  /** The file grown, and the LUN told (tgtd reads a backing file's size when its path is set). */
  async resized(volume: ScSimVolume): Promise<void> {
    await truncate(this.file(volume), volume.sizeBytes);
    const lun = ['--mode', 'logicalunit', '--op', 'update', '--tid', String(volume.index), '--lun', '1', '--params'];
    await this.tgtadm([...lun, 'online=0']);
    try {
      await this.tgtadm([...lun, `path=${this.file(volume)}`]);
    } finally {
      await this.tgtadm([...lun, 'online=1']);
    }
  }

  async mapped(volume: ScSimVolume, iqns: string[]): Promise<void> {
    for (const iqn of iqns) await this.tgtadm(['--mode', 'target', '--op', 'bind', '--tid', String(volume.index), '--initiator-name', iqn]);
  }

  async unmapped(volume: ScSimVolume, iqns: string[]): Promise<void> {
    for (const iqn of iqns) await this.tgtadm(['--mode', 'target', '--op', 'unbind', '--tid', String(volume.index), '--initiator-name', iqn]);
  }
}
