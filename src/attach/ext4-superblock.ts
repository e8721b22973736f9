import { open } from 'node:fs/promises';

// The ext4 superblock: 1,024 bytes at byte 1,024 of the device, little-endian (the kernel's
// Documentation/filesystems/ext4/super.rst). Read in-process on every Mount of an existing
// volume, it spares a dumpe2fs child when the filesystem is plainly clean; anything else goes
// to dumpe2fs, whose fuller answer (the journal's own superblock too) decides.
export const SUPERBLOCK_OFFSET = 1024;
export const SUPERBLOCK_BYTES = 1024;

const MAGIC = 0xef53;
const STATE_VALID = 0x1; // cleanly unmounted; 0x2 errors detected, 0x4 orphans being recovered
const INCOMPAT_RECOVER = 0x4; // the journal holds transactions to replay
const INCOMPAT_EXTENTS = 0x40;
const INCOMPAT_64BIT = 0x80;
const RO_COMPAT_ORPHAN_PRESENT = 0x10000;

/** A superblock that shows, field by field, nothing e2fsck would act on. */
export interface CleanExt4 {
  blockCount: number;
  blockSize: number;
}

/**
 * The block count and size when the superblock is ext4 (magic and extents, as blkid tells ext4
 * from ext2/3) and clean by every field e2fsck's skip test reads: state exactly "clean", no
 * journal to replay, no orphans, no recorded error, the maximum mount count not reached, no
 * check interval due. Undefined otherwise: not ext4, not clean, or not plain enough to tell.
 */
export function cleanExt4(sb: Buffer): CleanExt4 | undefined {
  if (sb.length < SUPERBLOCK_BYTES || sb.readUInt16LE(0x38) !== MAGIC) return undefined;
  const incompat = sb.readUInt32LE(0x60);
  const roCompat = sb.readUInt32LE(0x64);
  if (!(incompat & INCOMPAT_EXTENTS) || incompat & INCOMPAT_RECOVER || roCompat & RO_COMPAT_ORPHAN_PRESENT) return undefined;
  if (sb.readUInt16LE(0x3a) !== STATE_VALID) return undefined;
  if (sb.readUInt32LE(0xe8) !== 0) return undefined; // s_last_orphan
  if (sb.readUInt32LE(0x194) !== 0 || sb.readUInt32LE(0x198) !== 0) return undefined; // s_error_count, s_first_error_time
  const mounts = sb.readUInt16LE(0x34);
  const maxMounts = sb.readInt16LE(0x36);
  if (maxMounts > 0 && mounts >= maxMounts) return undefined;
  const interval = sb.readUInt32LE(0x44);
  // Any interval at all goes to dumpe2fs, which weighs it against the last check as e2fsck does.
  if (interval !== 0) return undefined;
  const logBlockSize = sb.readUInt32LE(0x18);
  if (logBlockSize > 6) return undefined; // 1 KiB .. 64 KiB
  const blockSize = 1024 << logBlockSize;
  const high = incompat & INCOMPAT_64BIT ? sb.readUInt32LE(0x150) : 0;
  const blockCount = high * 2 ** 32 + sb.readUInt32LE(0x4);
  return blockCount > 0 ? { blockCount, blockSize } : undefined;
}

/** The superblock's bytes, read from the device without a child process. */
export async function readExt4Superblock(device: string): Promise<Buffer> {
  const handle = await open(device, 'r');
  try {
    const buffer = Buffer.alloc(SUPERBLOCK_BYTES);
    const { bytesRead } = await handle.read(buffer, 0, SUPERBLOCK_BYTES, SUPERBLOCK_OFFSET);
    return buffer.subarray(0, bytesRead);
  } finally {
    await handle.close();
  }
}
