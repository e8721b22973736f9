import { createHash, randomBytes } from 'node:crypto';
import { open } from 'node:fs/promises';

// A volume's data as the array tests compare it: 64 KiB samples at a few offsets of the file that
// holds the volume (the start, the middle, the end), so that an 8 GiB sparse volume costs 192 KiB.
const SAMPLE = 64 * 1024;

/** Writes fresh random bytes at each offset of the file, as a host's writes land there. */
export async function writeSamples(path: string, offsets: readonly number[]): Promise<void> {
  const file = await open(path, 'r+');
  try {
    for (const offset of offsets) await file.write(randomBytes(SAMPLE), 0, SAMPLE, offset);
  } finally {
    await file.close();
  }
}

/** A hash of the bytes at each offset of the file. */
export async function samplesDigest(path: string, offsets: readonly number[]): Promise<string> {
  const file = await open(path, 'r');
  const hash = createHash('sha256');
  try {
    for (const offset of offsets) {
      const buffer = Buffer.alloc(SAMPLE);
      await file.read(buffer, 0, buffer.length, offset);
      hash.update(buffer);
    }
  } finally {
    await file.close();
  }
  return hash.digest('hex');
}
