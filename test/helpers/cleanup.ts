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

interface LoopRow {
  name: string;
  'back-file': string | null;
  'back-ino': string | number | null;
  'back-maj:min': string | null;
}

function loopRows(): LoopRow[] {
  const out = execFileSync('losetup', ['--json', '--list', '--output', 'NAME,BACK-FILE,BACK-INO,BACK-MAJ:MIN'], { encoding: 'utf8' });
  return out.trim() ? (JSON.parse(out) as { loopdevices: LoopRow[] }).loopdevices : [];
}

/** A loop device and the file it holds: a name another test reuses holds another file. */
const identity = (r: LoopRow) => `${r.name} ${r['back-ino']} ${r['back-maj:min']}`;

export function loopDevicesUnder(dir: string): string[] {
  return loopRows().filter((r) => r['back-file']?.startsWith(`${dir}/`)).map((r) => r.name);
}

/** Unmounts and detaches whatever a test left under `dir`; returns what it had to clean. */
export function cleanUpUnder(dir: string): { mounts: string[]; loops: string[] } {
  // Loops first: once a filesystem holding their images (a tmpfs root) is unmounted, their
  // backing paths no longer lie under `dir` and they could not be found again.
  const ours = loopRows().filter((r) => r['back-file']?.startsWith(`${dir}/`));
  const mounts = mountsUnder(dir).reverse();
  for (const mountPoint of mounts) execFileSync('umount', ['-l', mountPoint]);
  // An unmount detaches an autoclear loop by itself: detach only those still holding our files.
  const left = new Set(loopRows().map(identity));
  const loops = ours.filter((r) => left.has(identity(r))).map((r) => r.name);
  for (const device of loops) execFileSync('losetup', ['-d', device]);
  return { mounts, loops };
}
