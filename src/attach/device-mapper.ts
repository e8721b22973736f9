import { readdir, readFile } from 'node:fs/promises';
import { join } from 'node:path';

/**
 * The kernel name (dm-N) of the device-mapper device named `name` (/dev/mapper/NAME), read from
 * sysfs: /dev/mapper/NAME is a link to it where udev runs, a node of its own where it does not.
 */
export async function dmKernelName(sysfsRoot: string, name: string): Promise<string | undefined> {
  for (const dm of await readdir(join(sysfsRoot, 'sys/block')).catch(() => [] as string[])) {
    if (!dm.startsWith('dm-')) continue;
    const dmName = await readFile(join(sysfsRoot, 'sys/block', dm, 'dm/name'), 'utf8').catch(() => '');
    if (dmName.trim() === name) return dm;
  }
  return undefined;
}
