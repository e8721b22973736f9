import { casProblems, decideFence, mountOf } from '../../drivers/loop-fence.js';
import { parseMountInfo } from '../../util/mountinfo.js';
import { info, problem, type DoctorContext, type Finding } from './types.js';

/**
 * The NFS mount options shared roots rely on, as the daemon checks them at start (hard,
 * lookupcache=positive; vers=4.1+ for the loop backend's nfs-lock fence).
 */
export async function checkSharedMounts({ probe, config, needs }: DoctorContext): Promise<Finding[]> {
  if (!needs.sharedRoots.length) return [];
  const entries = parseMountInfo((await probe.readText('/proc/self/mountinfo')) ?? '');
  const recovers = (await probe.readText('/sys/module/nfs/parameters/recover_lost_locks'))?.trim() === 'Y';
  const findings: Finding[] = [];
  for (const root of needs.sharedRoots) {
    const mount = mountOf(root.path, entries);
    if (root.kind === 'loop') {
      const decision = decideFence(config.backends.loop.fence, root.path, mount, recovers);
      findings.push(...decision.problems.map((p) => problem('mounts', `${p} (${root.setting})`)), info('mounts', `fence on ${root.path}: ${decision.fence}: ${decision.reason}`));
    } else {
      findings.push(...casProblems(root.path, mount).map((p) => problem('mounts', `${p} (${root.setting})`)));
    }
  }
  return findings;
}
