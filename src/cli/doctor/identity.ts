import { info, ok, problem, type DoctorContext, type Finding } from './types.js';

export const INITIATOR_NAME_FILE = '/etc/iscsi/initiatorname.iscsi';
export const HOST_NQN_FILE = '/etc/nvme/hostnqn';

// RFC 3720 names: iqn.YYYY-MM.reversed.domain[:anything], eui. and naa. hex forms.
const ISCSI_NAME = /^(iqn\.\d{4}-\d{2}\.[a-z0-9]([a-z0-9.-]*[a-z0-9])?(:[^\s]*)?|eui\.[0-9A-Fa-f]{16}|naa\.([0-9A-Fa-f]{16}|[0-9A-Fa-f]{32}))$/;
const REGENERATE = `\`echo "InitiatorName=$(iscsi-iname)" > ${INITIATOR_NAME_FILE}\`, then restart iscsid`;

/** This host's iSCSI initiator name, which arrays put in their ACLs. */
async function checkInitiatorName({ probe }: DoctorContext): Promise<Finding> {
  const text = await probe.readText(INITIATOR_NAME_FILE);
  if (text === undefined) return problem('identity', `${INITIATOR_NAME_FILE} is missing (arrays grant access by this name): install open-iscsi, which writes one, or run ${REGENERATE}`);
  const lines = text.split('\n').map((l) => l.trim()).filter((l) => l && !l.startsWith('#'));
  const name = lines.map((l) => /^InitiatorName\s*=\s*(\S*)/.exec(l)?.[1]).find((n) => n !== undefined);
  if (name === undefined) {
    const pending = lines.some((l) => /^GenerateName\s*=\s*yes/i.test(l));
    return problem('identity', `${INITIATOR_NAME_FILE} holds ${pending ? 'GenerateName=yes and no name yet' : 'no InitiatorName= line'}: run ${REGENERATE}`);
  }
  if (!ISCSI_NAME.test(name)) return problem('identity', `${INITIATOR_NAME_FILE}: "${name}" is not an iSCSI name (iqn.YYYY-MM.domain:id): run ${REGENERATE}`);
  return ok('identity', `iSCSI initiator name ${name}`);
}

/** This host's NVMe NQN; the NVMe/TCP attacher generates it when the file is absent. */
async function checkHostNqn({ probe }: DoctorContext): Promise<Finding> {
  const text = await probe.readText(HOST_NQN_FILE);
  if (text === undefined) return info('identity', `${HOST_NQN_FILE} is absent: ballast generates it (nvme gen-hostnqn) at the first NVMe/TCP attach`);
  const nqn = text.trim();
  if (!/^nqn\.\d{4}-\d{2}\.\S+$/.test(nqn) || nqn.length > 223) {
    return problem('identity', `${HOST_NQN_FILE} holds "${nqn.slice(0, 80)}", not an NQN: run \`nvme gen-hostnqn > ${HOST_NQN_FILE}\``);
  }
  return ok('identity', `NVMe host NQN ${nqn}`);
}

export async function checkIdentity(context: DoctorContext): Promise<Finding[]> {
  const { transports } = context.needs;
  return Promise.all([...(transports.has('iscsi') ? [checkInitiatorName(context)] : []), ...(transports.has('nvme-tcp') ? [checkHostNqn(context)] : [])]);
}
