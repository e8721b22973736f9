import { installHint } from './packages.js';
import { ok, problem, type DoctorContext, type Finding } from './types.js';

interface Daemon {
  name: string;
  why: string;
  /** The abstract Unix socket its tools talk to; systemd may hold it to start the daemon on demand. */
  controlSocket?: string;
  start: string;
}

const ISCSID: Daemon = {
  name: 'iscsid',
  why: 'iSCSI logins',
  controlSocket: 'ISCSIADM_ABSTRACT_NAMESPACE', // open-iscsi's iscsid_req.c; iscsid.socket listens on it
  start: 'systemctl enable --now iscsid (without systemd: run `iscsid`)',
};
const MULTIPATHD: Daemon = {
  name: 'multipathd',
  why: 'dm-multipath maps',
  controlSocket: '/org/kernel/linux/storage/multipathd', // multipath-tools' uxsock; multipathd.socket listens on it
  start: 'systemctl enable --now multipathd (without systemd: run `multipathd`)',
};
const TGTD: Daemon = { name: 'tgtd', why: 'the iscsi backend serving from this host', start: 'systemctl enable --now tgt (without systemd: run `tgtd`)' };

/**
 * A daemon counts as running when /proc shows a live process of that executable (its comm or
 * its exe), which needs no systemd and no pid file that may be stale; or when its control socket
 * is listening, which is how systemd socket activation looks before the first client.
 */
async function checkDaemon(context: DoctorContext, daemon: Daemon): Promise<Finding> {
  const { probe } = context;
  if (await probe.processRunning(daemon.name)) return ok('daemons', `${daemon.name} is running`);
  if (daemon.controlSocket && (await probe.abstractSocketListening(daemon.controlSocket))) {
    return ok('daemons', `${daemon.name} is not running, but its control socket @${daemon.controlSocket} listens (socket activation starts it on demand)`);
  }
  if (!(await probe.which(daemon.name))) return problem('daemons', `${daemon.name} is not installed (needed for ${daemon.why}): ${installHint(daemon.name)}, then ${daemon.start}`);
  return problem('daemons', `${daemon.name} is not running (needed for ${daemon.why}): start it: ${daemon.start}`);
}

/** iscsid for iSCSI profiles, multipathd for multipath ones, tgtd when the iscsi array is this host. */
export async function checkDaemons(context: DoctorContext): Promise<Finding[]> {
  const { needs } = context;
  const daemons = [...(needs.transports.has('iscsi') ? [ISCSID] : []), ...(needs.multipath ? [MULTIPATHD] : []), ...(needs.localTgt ? [TGTD] : [])];
  return Promise.all(daemons.map((d) => checkDaemon(context, d)));
}
