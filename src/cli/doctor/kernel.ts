import type { ModuleState } from './probe.js';
import { ok, problem, type DoctorContext, type Finding } from './types.js';

function moduleFinding(module: string, why: string, state: ModuleState): Finding {
  const load = `run \`modprobe ${module}\` and add ${module} to /etc/modules-load.d/ballast.conf so it loads at boot`;
  switch (state) {
    case 'loaded':
    case 'builtin':
      return ok('kernel', `module ${module} is ${state === 'loaded' ? 'loaded' : 'built in'}`);
    case 'available':
      return problem('kernel', `module ${module} is not loaded (needed for ${why}): ${load}`);
    case 'absent':
      return problem('kernel', `module ${module} is neither built in nor installed for this kernel (needed for ${why}): install the kernel's modules (e.g. linux-image-amd64) and reboot into it, then ${load}`);
    case 'unknown':
      return problem('kernel', `module ${module} is not loaded (needed for ${why}), and this kernel has no /lib/modules directory to tell whether it is built in: ${load}`);
  }
}

/** Kernel modules, device nodes and sysfs the transports in use rely on. */
export async function checkKernel(context: DoctorContext): Promise<Finding[]> {
  const { probe, needs } = context;
  const findings: Finding[] = [];
  const modules: [string, string][] = [];
  if (needs.transports.has('loop')) {
    findings.push(
      (await probe.exists('/dev/loop-control'))
        ? ok('kernel', '/dev/loop-control is present')
        : problem('kernel', '/dev/loop-control is missing (the loop backend attaches images through it): run `modprobe loop`; in a container, give it the host\'s /dev/loop-control and /dev/loop*'),
    );
    modules.push(['loop', 'the loop backend']);
  }
  if (needs.transports.has('iscsi')) modules.push(['iscsi_tcp', 'iSCSI profiles']);
  if (needs.multipath) modules.push(['dm_multipath', 'multipath profiles']);
  if (needs.transports.has('nvme-tcp')) modules.push(['nvme_tcp', 'powerflex profiles over NVMe/TCP']);
  for (const [module, why] of modules) findings.push(moduleFinding(module, why, await probe.moduleState(module)));
  if (needs.transports.has('fc')) findings.push(await checkFcHosts(context));
  if (needs.localLio) {
    findings.push(
      (await probe.exists('/sys/kernel/config/target'))
        ? ok('kernel', 'LIO is loaded (/sys/kernel/config/target)')
        : problem('kernel', 'the lio backend serves from this host (no array.ssh), but /sys/kernel/config/target is missing: run `modprobe target_core_mod` (and `mount -t configfs none /sys/kernel/config` if configfs is not mounted)'),
    );
  }
  return findings;
}

/** The FC HBA ports: /sys/class/fc_host/hostN with port_state Online. */
async function checkFcHosts({ probe }: DoctorContext): Promise<Finding> {
  const hosts = (await probe.list('/sys/class/fc_host')).filter((h) => /^host\d+$/.test(h));
  if (!hosts.length) {
    return problem('kernel', 'no Fibre Channel port: /sys/class/fc_host is empty or missing (lio profiles over fc need one): load the HBA driver (e.g. `modprobe lpfc` or `modprobe qla2xxx`), or create an FCoE port');
  }
  const states = await Promise.all(hosts.map(async (h) => `${h} ${(await probe.readText(`/sys/class/fc_host/${h}/port_state`))?.trim() ?? 'unknown'}`));
  if (!states.some((s) => s.endsWith(' Online'))) {
    return problem('kernel', `no Fibre Channel port is Online (${states.join(', ')}): check the HBA's link (cabling, switch port, zoning)`);
  }
  return ok('kernel', `Fibre Channel ports: ${states.join(', ')}`);
}
