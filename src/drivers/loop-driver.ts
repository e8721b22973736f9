import { ConfigError } from '../errors.js';
import type { Export } from '../export.js';
import type { Logger } from '../log.js';
import { MountTable } from '../util/mountinfo.js';
import { FileVolumes, type FileVolumesOptions } from './file-volumes.js';
import type { ImageCopier } from './image-copy.js';
import { ImageSnapshots, imageSnapshotsOf } from './image-snapshots.js';
import type { SnapshotCapable } from './types.js';
import { decideFence, mountOf, nfsRecoversLostLocks, type ConfiguredFence, type LoopFence } from './loop-fence.js';

export interface LoopDriverOptions extends FileVolumesOptions {
  /** backends.loop.fence; default auto. */
  fence?: ConfiguredFence;
  /** How long an attach waits for another host's image lock (nfs-lock). */
  lockWaitSeconds?: number;
  mountTable?: MountTable;
  /** Runs cp for snapshots and clones on a root without reflink; without it the driver has no snapshots. */
  copier?: ImageCopier;
}

/** File-backed volumes attached with losetup: the successor of Flocker's loopback backend. */
export class LoopDriver extends FileVolumes {
  readonly kind = 'loop';
  readonly transport = 'loop' as const;
  private fence: LoopFence = 'shutdown';
  /** Snapshots beside each volume's image; clones are volumes whose image starts as a copy. */
  readonly snapshots?: SnapshotCapable;

  constructor(private readonly options: LoopDriverOptions, log: Logger) {
    super(options, log);
    const copier = options.copier;
    if (!copier) return;
    this.snapshots = imageSnapshotsOf(this, new ImageSnapshots(this.root, this.files, copier, log), copier, log);
  }

  /** On a shared root: decides how a former holder is fenced, and refuses a root that cannot be shared safely. */
  async start(): Promise<void> {
    if (this.scope !== 'global') return;
    await this.checkHealth();
    const mount = mountOf(this.root, await (this.options.mountTable ?? new MountTable()).entries());
    const decision = decideFence(this.options.fence ?? 'auto', this.root, mount, await nfsRecoversLostLocks());
    if (decision.problems.length) throw new ConfigError(`the shared loop root cannot be used: ${decision.problems.join('; ')}`);
    this.fence = decision.fence;
    this.log.info('shared loop root: fence chosen', { root: this.root, fence: decision.fence, reason: decision.reason });
  }

  /** Without a fence, nobody may take a silent holder's volume: an operator decides. */
  get takeover(): 'automatic' | 'manual' {
    return this.fence === 'none' ? 'manual' : 'automatic';
  }

  async export(name: string): Promise<Export> {
    const file = await this.imageAtRecordedSize(name);
    if (this.fence !== 'nfs-lock') return { transport: 'loop', file };
    return { transport: 'loop', file, lock: { waitSeconds: this.options.lockWaitSeconds ?? 60 } };
  }

  async unexport(): Promise<void> {
    // A file on a shared root needs no unmapping: the lease (and the image lock) decide who attaches it.
  }
}
