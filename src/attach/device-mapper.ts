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

/**
 * The names of the multipath maps (dm uuid "mpath-...") at or beneath the block device with
 * kernel name `kernelName`, following sysfs slaves down (a LUKS mapping sits on a map).
 */
export async function multipathMapsBeneath(sysfsRoot: string, kernelName: string): Promise<string[]> {
  const dir = join(sysfsRoot, 'sys/block', kernelName);
  const uuid = await readFile(join(dir, 'dm/uuid'), 'utf8').catch(() => '');
  const here = uuid.startsWith('mpath-') ? [(await readFile(join(dir, 'dm/name'), 'utf8')).trim()] : [];
  const below = await Promise.all((await readdir(join(dir, 'slaves')).catch(() => [] as string[])).map((slave) => multipathMapsBeneath(sysfsRoot, slave)));
  return [...here, ...below.flat()];
}
