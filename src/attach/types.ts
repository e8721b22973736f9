import type { Export, Initiator } from '../export.js';

/** Who attaches, under which lease generation: what a storage-side fence keys on. */
export interface AttachContext {
  hostId: string;
  generation: number;
}

/** Host-side attach for one transport: turns an Export into a local block device and back. */
export interface Attacher {
  readonly transport: Export['transport'];
  /** What the array needs to know about this host to export to it (e.g. the iSCSI initiator name). */
  identify(): Promise<Omit<Initiator, 'hostId'>>;
  /** Returns the block device; attaching an already attached volume returns its device. */
  attach(exp: Export, context: AttachContext): Promise<string>;
  /** Detaches `device` if it still belongs to this volume; a no-op otherwise. */
  detach(exp: Export, device: string, context: AttachContext): Promise<void>;
  /**
   * After the array grew the volume: makes the attached device show the new size, if this
   * transport can while it is in use. False: the filesystem grows at the next mount instead.
   */
  refreshSize(exp: Export, device: string): Promise<boolean>;
  /**
   * True only when the volume's storage is known never to have been written: it reads as zeros,
   * so mkfs may skip blkid. Asked only on a volume's first acquisition ever. Optional: without
   * it, blkid decides.
   */
  neverWritten?(exp: Export): Promise<boolean>;
  /** True when `device` is attached and still belongs to this volume. */
  isAttached(exp: Export, device: string): Promise<boolean>;
}
