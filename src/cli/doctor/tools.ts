import type { Fstype } from '../../config/schema.js';
import { installHint } from './packages.js';
import { ok, problem, type DoctorContext, type Finding } from './types.js';

const FILESYSTEM_TOOLS: Record<Fstype, readonly string[]> = {
  ext4: ['mkfs.ext4', 'fsck.ext4', 'resize2fs'],
  xfs: ['mkfs.xfs', 'fsck.xfs', 'xfs_growfs'],
};

/** The executables the configured transports and filesystems run, each with why. */
export function toolsNeeded({ config, needs }: Pick<DoctorContext, 'config' | 'needs'>): Map<string, string> {
  const tools = new Map<string, string>();
  const add = (why: string, ...names: string[]) => names.forEach((n) => tools.has(n) || tools.set(n, why));
  add('every volume', 'blkid', 'mount', 'umount', 'fsck', 'blockdev');
  for (const fstype of needs.fstypes) add(`${fstype} volumes`, ...FILESYSTEM_TOOLS[fstype]);
  const t = needs.transports;
  if (t.has('loop')) add('the loop backend', 'losetup');
  // Shared loop roots fence a former holder: an NFSv4 lock taken through perl, or a filesystem shutdown.
  if (t.has('loop') && config.backends.loop.shared && config.backends.loop.fence !== 'none') add('fencing on the shared loop root', 'perl', 'xfs_io');
  if (t.has('iscsi')) add('iSCSI profiles', 'iscsiadm');
  if (needs.multipath) add('multipath profiles', 'multipath', 'multipathd', 'dmsetup');
  if (needs.reservations) add('fencing with SCSI-3 reservations', 'sg_persist');
  if (t.has('nvme-tcp')) add('powerflex profiles over NVMe/TCP', 'nvme');
  if (needs.localTgt) add('the iscsi backend serving from this host', 'tgtadm');
  return tools;
}

/** Each tool the configuration needs is on PATH; a missing one names its Debian package. */
export async function checkTools(context: DoctorContext): Promise<Finding[]> {
  const findings: Finding[] = [];
  const found: string[] = [];
  for (const [tool, why] of toolsNeeded(context)) {
    if (await context.probe.which(tool)) found.push(tool);
    else findings.push(problem('tools', `${tool} is not on PATH (needed for ${why}): ${installHint(tool)}`));
  }
  if (found.length) findings.unshift(ok('tools', `on PATH: ${found.join(', ')}`));
  return findings;
}
