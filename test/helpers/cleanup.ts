import { execFileSync } from 'node:child_process';
import { readFileSync } from 'node:fs';

/**
 * Leftover check and cleanup, limited to what a test made: mounts whose mount point is under
 * `dir` and loop devices whose backing file is under `dir`. Nothing else is ever touched.
 */
export function mountsUnder(dir: string, mountinfo = '/proc/self/mountinfo'): string[] {
  return readFileSync(mountinfo, 'utf8')
    .split('\n')
    .map((line) => line.split(' ')[4] ?? '')
    .map((field) => field.replace(/\\([0-7]{3})/g, (_, o: string) => String.fromCharCode(parseInt(o, 8))))
    .filter((mountPoint) => mountPoint === dir || mountPoint.startsWith(`${dir}/`));
}

export function loopDevicesUnder(dir: string): string[] {
  const out = execFileSync('losetup', ['--json', '--list', '--output', 'NAME,BACK-FILE'], { encoding: 'utf8' });
  if (!out.trim()) return [];
  const rows = (JSON.parse(out) as { loopdevices: { name: string; 'back-file': string | null }[] }).loopdevices;
  return rows.filter((r) => r['back-file']?.startsWith(`${dir}/`)).map((r) => r.name);
}

/** Unmounts and detaches whatever a test left under `dir`; returns what it had to clean. */
export function cleanUpUnder(dir: string): { mounts: string[]; loops: string[] } {
  // Loops first: once a filesystem holding their images (a tmpfs root) is unmounted, their
  // backing paths no longer lie under `dir` and they could not be found again.
  const loops = loopDevicesUnder(dir);
  const mounts = mountsUnder(dir).reverse();
  for (const mountPoint of mounts) execFileSync('umount', ['-l', mountPoint]);
  for (const device of loops) execFileSync('losetup', ['-d', device]);
  return { mounts, loops };
}
