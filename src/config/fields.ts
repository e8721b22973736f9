import { z } from 'zod';

/** A path from the root, as every file and directory setting takes. */
export const absolutePath = z.string().regex(/^\//, 'expected an absolute path');
