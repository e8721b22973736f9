import { z } from 'zod';
import { parseSize, SIZE_SYNTAX } from './size.js';

/** A path from the root, as every file and directory setting takes. */
export const absolutePath = z.string().regex(/^\//, 'expected an absolute path');

/** A size as "10G", "512MiB" or a number of bytes. */
export const sizeText = z
  .union([z.string(), z.number().int().positive()])
  .transform((value, ctx) => {
    const bytes = typeof value === 'number' ? value : parseSize(value);
    if (bytes === undefined || bytes <= 0) {
      ctx.addIssue({ code: 'custom', message: `expected a size: ${SIZE_SYNTAX}; got ${JSON.stringify(value)}` });
      return z.NEVER;
    }
    return bytes;
  });

const iops = z.number().int().min(1).max(10_000_000);

/** What every profile may say, whatever its backend. */
export const profileCommon = {
  description: z.string().optional(),
  /** The key of this profile's encrypted volumes (a file of at least 32 random bytes); default encryption.key_dir/VOLUME.key. */
  key_file: absolutePath.optional(),
  /** IO limits for this profile's volumes that give none of their own (--opt read_iops ...). */
  read_iops: iops.optional(),
  write_iops: iops.optional(),
  read_bps: sizeText.optional(),
  write_bps: sizeText.optional(),
};
