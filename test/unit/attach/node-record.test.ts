import { chmod, mkdir, mkdtemp, readFile, rm, stat, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { nodeRecordFile, parseRecord, setRecordValue } from '../../../src/attach/iscsi/node-record.js';

const IQN = 'iqn.2026-11.dev.ballast:pgdata';
// What iscsiadm 2.1.8 writes for `-m node -T IQN -p 10.0.0.5:3260 --op new` (trimmed).
const RECORD = ['# BEGIN RECORD 2.1.8', `node.name = ${IQN}`, 'node.tpgt = -1', 'iface.iscsi_ifacename = default', 'node.session.auth.authmethod = CHAP', 'node.session.auth.password_in = other-secret', 'node.conn[0].address = 10.0.0.5', 'node.conn[0].port = 3260', '# END RECORD', ''].join('\n');

describe('open-iscsi node records', () => {
  let root: string;
  beforeEach(async () => (root = await mkdtemp(join(tmpdir(), 'ballast-nodes-'))));
  afterEach(() => rm(root, { recursive: true, force: true }));

  async function put(...parts: string[]): Promise<string> {
    const file = join(root, ...parts);
    await mkdir(dirname(file), { recursive: true });
    await writeFile(file, RECORD, { mode: 0o600 });
    return file;
  }
  const shown = (over: Record<string, string> = {}) => new Map([...parseRecord(RECORD), ...Object.entries(over)]);

  it('parses what iscsiadm prints, key by key', () => {
    const record = parseRecord(`${RECORD.replace('# END', 'node.session.auth.password = <empty>\n# END')}`);
    expect(record.get('node.conn[0].address')).toBe('10.0.0.5');
    expect(record.get('node.session.auth.password')).toBe('<empty>');
    expect(record.has('# BEGIN RECORD 2.1.8')).toBe(false);
  });

  describe('nodeRecordFile', () => {
    it('finds the flat ADDRESS,PORT file that --op new writes without a tpgt', async () => {
      const file = await put('etc', 'iscsi', 'nodes', IQN, '10.0.0.5,3260');
      expect(await nodeRecordFile(root, shown())).toBe(file);
    });

    it('finds ADDRESS,PORT,TPGT/IFACE (a record discovery made), under /var/lib/iscsi too', async () => {
      const file = await put('var', 'lib', 'iscsi', 'nodes', IQN, '10.0.0.5,3260,1', 'default');
      expect(await nodeRecordFile(root, shown({ 'node.tpgt': '1' }))).toBe(file);
    });

    it('prefers the flat file, as iscsiadm does', async () => {
      const flat = await put('etc', 'iscsi', 'nodes', IQN, '10.0.0.5,3260');
      await put('etc', 'iscsi', 'nodes', IQN, '10.0.0.5,3260,1', 'default');
      expect(await nodeRecordFile(root, shown({ 'node.tpgt': '1' }))).toBe(flat);
    });

    it('refuses when there is no record file, naming where it looked', async () => {
      await expect(nodeRecordFile(root, shown())).rejects.toThrow(`cannot find the node record of ${IQN} at 10.0.0.5,3260 that iscsiadm made: looked under ${join(root, 'etc/iscsi/nodes', IQN)} and ${join(root, 'var/lib/iscsi/nodes', IQN)}`);
    });

    it('refuses when both databases hold one', async () => {
      await put('etc', 'iscsi', 'nodes', IQN, '10.0.0.5,3260');
      await put('var', 'lib', 'iscsi', 'nodes', IQN, '10.0.0.5,3260');
      await expect(nodeRecordFile(root, shown())).rejects.toThrow(/is in two places/);
    });
  });

  describe('setRecordValue', () => {
    it('adds the line before the end of the record, the file ending in a newline', async () => {
      const file = await put('rec');
      await setRecordValue(file, 'node.session.auth.password', 'secret-secret-12');
      expect(await readFile(file, 'utf8')).toBe(RECORD.replace('# END RECORD', 'node.session.auth.password = secret-secret-12\n# END RECORD'));
    });

    it('replaces the line of that key only (not password_in)', async () => {
      const file = await put('rec');
      await setRecordValue(file, 'node.session.auth.password', 'first-secret-1');
      await setRecordValue(file, 'node.session.auth.password', 'second-secret-2');
      const text = await readFile(file, 'utf8');
      expect(text.match(/^node\.session\.auth\.password = .*$/gm)).toEqual(['node.session.auth.password = second-secret-2']);
      expect(text).toContain('node.session.auth.password_in = other-secret\n');
    });

    it('makes a readable record 0600 before the secret goes in', async () => {
      const file = await put('rec');
      await chmod(file, 0o644);
      await setRecordValue(file, 'node.session.auth.password', 'secret-secret-12');
      expect((await stat(file)).mode & 0o777).toBe(0o600);
    });

    it.each(['two\nlines-secret', 'carriage\rreturn', ' leading-blank', 'trailing-blank '])('refuses %j, which iscsiadm could not read back as it is, without showing it', async (value) => {
      const file = await put('rec');
      const err = (await setRecordValue(file, 'node.session.auth.password', value).catch((e: unknown) => e)) as Error;
      expect(err.message).toBe('a node.session.auth.password with a line break or blanks at either end cannot be kept in an open-iscsi node record');
      expect(await readFile(file, 'utf8')).toBe(RECORD);
    });
  });
});
