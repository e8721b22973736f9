import { ConfigError } from '../errors.js';
import { MountTable } from '../util/mountinfo.js';
import { casProblems, mountOf } from './loop-fence.js';

/**
 * For arrays whose volumes carry no compare-and-swap metadata (powerflex, dellsc): refuses a
 * metadata_root whose NFS mount would break the records' compare-and-swap, naming the option.
 */
export async function checkMetadataRoot(root: string, key: string, mountTable = new MountTable()): Promise<void> {
  const problems = casProblems(root, mountOf(root, await mountTable.entries()));
  if (problems.length) throw new ConfigError(`${key} cannot be used: ${problems.join('; ')}`);
}
