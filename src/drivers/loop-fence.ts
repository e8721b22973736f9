import { readFile } from 'node:fs/promises';
import type { MountEntry } from '../util/mountinfo.js';

/**
 * How a loop root shared by several hosts keeps a former holder from writing after a takeover:
 * - nfs-lock: the image is attached through a file holding an NFSv4 lock; the NFS server
 *   revokes it from a host it stopped hearing from, and refuses that host's queued writes.
 * - shutdown: the former holder shuts its filesystem down. Only sound where every "host"
 *   runs on this kernel (a local filesystem seen from several namespaces): no network can
 *   strand writes there.
 * - none: nothing can stop a former holder, so nobody takes a volume over automatically; an
 *   operator releases it (`ballast volume release NAME --force`) once the holder is known down.
 */
export type LoopFence = 'nfs-lock' | 'shutdown' | 'none';
export type ConfiguredFence = 'auto' | 'nfs-lock' | 'none';

/** Filesystems only the kernel that mounts them can write: hosts sharing one are one kernel. */
const LOCAL_FILESYSTEMS = new Set(['ext2', 'ext3', 'ext4', 'xfs', 'btrfs', 'tmpfs', 'overlay', 'f2fs', 'zfs']);

/** The mount that holds `path`: the deepest mount point above it (the last one mounted there). */
export function mountOf(path: string, entries: MountEntry[]): MountEntry | undefined {
  let best: MountEntry | undefined;
  for (const entry of entries) {
    const prefix = entry.mountPoint === '/' ? '/' : `${entry.mountPoint}/`;
    const holds = path === entry.mountPoint || path.startsWith(prefix);
    if (holds && (!best || entry.mountPoint.length >= best.mountPoint.length)) best = entry;
  }
  return best;
}

function optionsOf(text: string): Map<string, string> {
  return new Map(text.split(',').filter(Boolean).map((o) => {
    const eq = o.indexOf('=');
    return eq < 0 ? [o, ''] : [o.slice(0, eq), o.slice(eq + 1)];
  }));
}

export interface FenceDecision {
  fence: LoopFence;
  /** Why the root cannot be used as configured: the daemon refuses to start. */
  problems: string[];
  /** Said once at start: what was chosen and why. */
  reason: string;
}

/** What an NFS mount lacks for the metadata compare-and-swap (hard, lookupcache=positive); nothing for other filesystems. */
export function casProblems(root: string, mount: MountEntry | undefined): string[] {
  if (!mount || (mount.fstype !== 'nfs' && mount.fstype !== 'nfs4')) return [];
  const where = `${root} is on ${mount.fstype} (${mount.source} at ${mount.mountPoint})`;
  const options = optionsOf(mount.superOptions);
  const problems: string[] = [];
  if (options.has('soft') || options.has('softerr')) problems.push(`${where} is mounted soft: mount it hard (the default)`);
  const lookupcache = options.get('lookupcache');
  if (lookupcache !== 'none' && lookupcache !== 'pos' && lookupcache !== 'positive') {
    problems.push(`${where} caches negative lookups (files other hosts create can look absent for a minute): mount it with lookupcache=positive`);
  }
  return problems;
}

/**
 * Decides the fence of a shared loop root from the filesystem it is on and checks that the
 * mount gives what ballast's compare-and-swap and fence rely on (research/nfs-lab.md):
 * - hard: a soft mount turns a slow server into EIO in the middle of a metadata write;
 * - lookupcache=positive or none: with the default, a file another host just created can
 *   look absent here for up to a minute (a cached negative lookup);
 * - vers=4.1 or 4.2, for nfs-lock: sessions, so the server refuses what a cut-off client
 *   queued (NFSv3 locks are advisory NLM locks; 4.0 has no sessions);
 * - recover_lost_locks=N (the default), for nfs-lock: with Y a cut-off client takes its lock
 *   back after the heal and writes again.
 */
export function decideFence(configured: ConfiguredFence, root: string, mount: MountEntry | undefined, recoversLostLocks: boolean): FenceDecision {
  if (!mount) return { fence: configured === 'none' ? 'none' : 'shutdown', problems: [], reason: `no mount found for ${root}` };
  const where = `${root} is on ${mount.fstype} (${mount.source} at ${mount.mountPoint})`;
  const problems = casProblems(root, mount);
  const isNfs = mount.fstype === 'nfs' || mount.fstype === 'nfs4';
  if (isNfs) {
    const options = optionsOf(mount.superOptions);
    const version = options.get('vers') ?? (mount.fstype === 'nfs4' ? '4.0' : '3');
    const sessions = /^4\.[1-9]/.test(version);
    if (configured === 'none') return { fence: 'none', problems, reason: `${where}; backends.loop.fence is none` };
    if (configured === 'nfs-lock' || sessions) {
      if (!sessions) problems.push(`${where} with NFS version ${version}: the nfs-lock fence needs vers=4.1 or 4.2 (sessions); mount with vers=4.2, or set backends.loop.fence: none (manual takeover)`);
      if (recoversLostLocks) problems.push('the nfs module has recover_lost_locks=Y: a host cut off from the server would take its lock back and write again; set it to N (the default)');
      return { fence: 'nfs-lock', problems, reason: `${where}: NFSv4 locks on the images fence a host the server stopped hearing from` };
    }
    return { fence: 'none', problems, reason: `${where} with NFS version ${version}, which cannot fence a cut-off host: takeover is manual (mount with vers=4.2 for automatic takeover)` };
  }
  if (configured === 'nfs-lock') problems.push(`backends.loop.fence is nfs-lock, but ${where}, not NFS`);
  if (configured === 'none') return { fence: 'none', problems, reason: `${where}; backends.loop.fence is none` };
  if (LOCAL_FILESYSTEMS.has(mount.fstype)) {
    return { fence: 'shutdown', problems, reason: `${where}, a local filesystem: the hosts sharing it run on this kernel, and a filesystem shutdown fences` };
  }
  return { fence: 'none', problems, reason: `${where}, which ballast has no fence for: takeover is manual` };
}

/**
 * recover_lost_locks=Y would let a client that was cut off take its lock back after the server
 * gave it to another host, and write again: the fence then fails. Debian's default is N.
 */
export async function nfsRecoversLostLocks(path = '/sys/module/nfs/parameters/recover_lost_locks'): Promise<boolean> {
  try {
    return (await readFile(path, 'utf8')).trim() === 'Y';
  } catch {
    return false; // nfs not loaded: nothing on NFS here
  }
}
