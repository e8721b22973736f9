import type { Export } from '../export.js';
import { FileVolumes } from './file-volumes.js';

/** File-backed volumes attached with losetup: the successor of Flocker's loopback backend. */
export class LoopDriver extends FileVolumes {
  readonly kind = 'loop';
  readonly transport = 'loop' as const;

  async export(name: string): Promise<Export> {
    return { transport: 'loop', file: await this.imageAtRecordedSize(name) };
  }

  async unexport(): Promise<void> {
    // A file on a shared root needs no unmapping: the lease alone decides who attaches it.
  }
}
