import { chmod, readFile, stat, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { AttachFailed } from '../../errors.js';

/** open-iscsi's ISCSI_DB_ROOT, a build setting: /etc/iscsi by default, /var/lib/iscsi in older distributions. */
const DB_ROOTS = [['etc', 'iscsi'], ['var', 'lib', 'iscsi']];

/**
 * Parses a node record as `iscsiadm -m node -T IQN -p PORTAL --op show` prints it:
 *
 *   # BEGIN RECORD 2.1.8
 *   node.name = iqn.2026-11.dev.ballast:pgdata
 *   node.tpgt = -1
 *   iface.iscsi_ifacename = default
 *   node.session.auth.password = <empty>
 *   node.conn[0].address = 10.0.0.5
 *   node.conn[0].port = 3260
 *   # END RECORD
 */
export function parseRecord(text: string): Map<string, string> {
  const record = new Map<string, string>();
  for (const line of text.split('\n')) {
    const m = /^(\S+) = (.*)$/.exec(line.trim());
    if (m) record.set(m[1]!, m[2]!);
  }
  return record;
}

/**
 * The file that holds a node record, looked up as open-iscsi's idbm_rec_read does: first the flat
 * nodes/IQN/ADDRESS,PORT, which `--op new` writes when no tpgt is given (ballast's case), then
 * nodes/IQN/ADDRESS,PORT,TPGT/IFACE (a record discovery made).
 */
export async function nodeRecordFile(root: string, record: ReadonlyMap<string, string>): Promise<string> {
  const [iqn, address, port, tpgt, iface] = ['node.name', 'node.conn[0].address', 'node.conn[0].port', 'node.tpgt', 'iface.iscsi_ifacename'].map((k) => record.get(k));
  if (!iqn || !address || !port) throw new AttachFailed('iscsiadm printed a node record without node.name, node.conn[0].address or node.conn[0].port');
  const names = [`${address},${port}`, ...(tpgt && tpgt !== '-1' && iface ? [join(`${address},${port},${tpgt}`, iface)] : [])];
  const found: string[] = [];
  for (const dbRoot of DB_ROOTS) {
    for (const name of names) {
      const file = join(root, ...dbRoot, 'nodes', iqn, name);
      if ((await stat(file).catch(() => undefined))?.isFile()) {
        found.push(file);
        break;
      }
    }
  }
  const where = DB_ROOTS.map((d) => join(root, ...d, 'nodes', iqn)).join(' and ');
  if (found.length === 0) throw new AttachFailed(`cannot find the node record of ${iqn} at ${address},${port} that iscsiadm made: looked under ${where}`);
  if (found.length > 1) throw new AttachFailed(`the node record of ${iqn} at ${address},${port} is in two places (${found.join(', ')}): delete the one this open-iscsi does not use`);
  return found[0]!;
}

/**
 * Sets `key = value` in a record file, in the form iscsiadm writes it and reads it back at login
 * (which also derives a password's length from it). The file is made 0600 before the value goes in.
 */
export async function setRecordValue(file: string, key: string, value: string): Promise<void> {
  // iscsiadm reads a record line by line and strips blanks at both ends.
  if (/[\r\n\0]/.test(value) || value !== value.trim()) throw new AttachFailed(`a ${key} with a line break or blanks at either end cannot be kept in an open-iscsi node record`);
  const lines = (await readFile(file, 'utf8')).replace(/\n$/, '').split('\n');
  const line = `${key} = ${value}`;
  const at = lines.findIndex((l) => l.startsWith(`${key} = `));
  if (at >= 0) lines[at] = line;
  else {
    const end = lines.indexOf('# END RECORD');
    lines.splice(end >= 0 ? end : lines.length, 0, line);
  }
  await chmod(file, 0o600);
  // A last line without its newline is one iscsiadm skips as too long.
  await writeFile(file, `${lines.join('\n')}\n`, { mode: 0o600 });
}
