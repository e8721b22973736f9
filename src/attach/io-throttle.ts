import { readFile, stat, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import type { IoLimits } from '../drivers/types.js';

/** Where a process's block IO is throttled: a cgroup v1 blkio directory, or a cgroup v2 one (io.max). */
export type IoCgroup = { version: 1; dir: string } | { version: 2; dir: string };

/**
 * The block IO cgroup of `pid`, from /proc/PID/cgroup: the blkio controller's line on cgroup v1
 * ("4:blkio:/docker/ID"), else the unified line on v2 ("0::/system.slice/docker-ID.scope").
 */
export async function ioCgroupOf(pid: number, roots = { proc: '/proc', cgroup: '/sys/fs/cgroup' }): Promise<IoCgroup> {
  const lines = (await readFile(join(roots.proc, String(pid), 'cgroup'), 'utf8')).split('\n');
  for (const line of lines) {
    const [, controllers, path] = line.split(':');
    if (controllers?.split(',').includes('blkio') && path) return { version: 1, dir: join(roots.cgroup, 'blkio', path) };
  }
  const unified = lines.find((l) => l.startsWith('0::'));
  if (unified) return { version: 2, dir: join(roots.cgroup, unified.slice(3)) };
  throw new Error(`process ${pid} is in no block IO cgroup (${lines.filter(Boolean).join('; ') || 'no cgroups'})`);
}

/** The "MAJOR:MINOR" of a block device node. */
export async function deviceNumbers(device: string): Promise<string> {
  const { rdev } = await stat(device);
  const major = Math.floor(rdev / 256) & 0xfff;
  const minor = (rdev & 0xff) | ((Math.floor(rdev / 4096) & 0xfff00) >>> 0);
  return `${major}:${minor}`;
}

const V1_FILES: Record<keyof IoLimits, string> = {
  readBps: 'blkio.throttle.read_bps_device',
  writeBps: 'blkio.throttle.write_bps_device',
  readIops: 'blkio.throttle.read_iops_device',
  writeIops: 'blkio.throttle.write_iops_device',
};
const V2_KEYS: Record<keyof IoLimits, string> = { readBps: 'rbps', writeBps: 'wbps', readIops: 'riops', writeIops: 'wiops' };

/** Throttles IO to `device` from the processes of `cgroup`; limits not given are left as they are. */
export async function throttle(cgroup: IoCgroup, device: string, limits: IoLimits): Promise<void> {
  const numbers = await deviceNumbers(device);
  const given = (Object.keys(V1_FILES) as (keyof IoLimits)[]).filter((k) => limits[k] !== undefined);
  if (cgroup.version === 1) {
    for (const key of given) await writeFile(join(cgroup.dir, V1_FILES[key]), `${numbers} ${limits[key]}\n`);
  } else if (given.length) {
    await writeFile(join(cgroup.dir, 'io.max'), `${numbers} ${given.map((k) => `${V2_KEYS[k]}=${limits[k]}`).join(' ')}\n`);
  }
}
