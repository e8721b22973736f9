import { ok, problem, type DoctorContext, type Finding } from './types.js';
import type { SharedRoot } from './needs.js';

/** Leases on a shared root compare this host's clock with times the file server stamps. */
export const MAX_SKEW_MS = 2_000;

/**
 * The file's mtime comes from the clock of whatever stores the root (an NFS server's); this
 * host's clock was read just before and after the write. Outside that window is skew.
 */
export function skewMs(before: number, after: number, mtimeMs: number): number {
  if (mtimeMs > after) return mtimeMs - after;
  if (mtimeMs < before) return mtimeMs - before;
  return 0;
}

async function checkRoot({ probe, timeoutMs }: DoctorContext, root: SharedRoot): Promise<Finding> {
  const result = await probe.writeTest(root.path, timeoutMs);
  const where = `shared root ${root.path} (${root.setting})`;
  switch (result.outcome) {
    case 'written': {
      const skew = skewMs(result.before, result.after, result.mtimeMs);
      const seconds = (Math.abs(skew) / 1000).toFixed(1);
      if (Math.abs(skew) > MAX_SKEW_MS) {
        return problem('clock', `${where}: its file times are ${seconds} s ${skew > 0 ? 'ahead of' : 'behind'} this host's clock (at most ${MAX_SKEW_MS / 1000} s; the lease depends on it): synchronise the clocks of this host and the file server (chrony or systemd-timesyncd on both)`);
      }
      return ok('clock', `${where}: file times agree with this host's clock (skew ${seconds} s)`);
    }
    case 'missing':
      return problem('clock', `${where} does not exist (is the shared storage mounted?): mount it there, or \`mkdir -p ${root.path}\``);
    case 'failed':
      return problem('clock', `${where} is not writable (${result.error}): fix its permissions or mount it read-write`);
    case 'timeout':
      return problem('clock', `${where} did not answer a file write within ${timeoutMs / 1000} s: check that its file server answers (a hard NFS mount waits for it)`);
  }
}

/** Clock skew against every shared root: loop roots marked shared, the arrays' metadata roots. */
export async function checkClock(context: DoctorContext): Promise<Finding[]> {
  return Promise.all(context.needs.sharedRoots.map((root) => checkRoot(context, root)));
}
