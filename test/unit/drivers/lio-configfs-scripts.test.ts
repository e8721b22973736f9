import { mkdir, mkdtemp, readFile, readdir, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { addLun, LioConfigfs, LunTaken, mapLun, removeAcl, removeLun, setAttribute, setSecret, unmapLun, type LioChange } from '../../../src/drivers/lio/configfs.js';
import { CommandRunner } from '../../../src/exec.js';
import { silentLogger } from '../../../src/log.js';

// The change scripts run for real (sh, mkdir, ln -s, find) on a plain directory laid out like
// LIO's configfs; configfs itself runs them in the VM lab (lio-array.test.ts).
describe('LioConfigfs change scripts', () => {
  let root: string;
  let lio: LioConfigfs;
  const calls: string[][] = [];
  const OBJECT = 'fileio_0/ballast-abc-v1';
  const TPG = 'fc/20:00:52:54:00:00:01:01/tpgt_1';
  const INITIATOR = '20:00:52:54:00:00:02:01';

  beforeEach(async () => {
    root = await mkdtemp(join(tmpdir(), 'ballast-lio-'));
    await mkdir(join(root, 'core', OBJECT), { recursive: true });
    await writeFile(join(root, 'core', OBJECT, 'udev_path'), '/pool/v1/disk.img');
    await writeFile(join(root, 'core', OBJECT, 'enable'), '1');
    await mkdir(join(root, TPG, 'lun'), { recursive: true });
    await mkdir(join(root, TPG, 'acls'), { recursive: true });
    const runner = new CommandRunner(silentLogger(), 5_000);
    lio = new LioConfigfs({ run: (argv, options) => (calls.push([...argv]), runner.run(argv, options)) }, 5_000, root);
    calls.length = 0;
  });
  afterEach(() => rm(root, { recursive: true, force: true }));

  it('maps a LUN in one command, and read() sees the LUN, the ACL and the mapping', async () => {
    await lio.apply(addLun(TPG, 3, OBJECT), mapLun(TPG, INITIATOR, 3));
    expect(calls).toHaveLength(1);
    const state = await lio.read();
    expect(state.storageObjects.get(OBJECT)).toEqual({ path: '/pool/v1/disk.img', enabled: true });
    expect(state.fc.get('2000525400000101')?.luns).toEqual(new Map([[3, OBJECT]]));
    expect(state.fc.get('2000525400000101')?.acls).toEqual(new Map([['2000525400000201', new Map([[3, 3]])]]));
  });

  it('reports a LUN number already in use as LunTaken, leaving the first LUN alone', async () => {
    await lio.apply(addLun(TPG, 0, OBJECT));
    await expect(lio.apply(addLun(TPG, 0, 'fileio_0/other'))).rejects.toBeInstanceOf(LunTaken);
    expect((await lio.read()).fc.get('2000525400000101')?.luns.get(0)).toBe(OBJECT);
  });

  it('passes each change its own arguments, beyond the ninth of the batch', async () => {
    const changes: LioChange[] = Array.from({ length: 12 }, (_, i) => setAttribute(`attr${i}`, `value ${i}; $(touch pwned)`));
    await lio.apply(...changes);
    for (let i = 0; i < 12; i++) expect(await readFile(join(root, `attr${i}`), 'utf8')).toBe(`value ${i}; $(touch pwned)`);
    expect(await readdir(root)).not.toContain('pwned');
  });

  it('writes a secret from stdin, never on the command line', async () => {
    await lio.apply(setAttribute('userid', 'ballast'), setSecret('password', 'chap-secret-123456'));
    expect(await readFile(join(root, 'password'), 'utf8')).toBe('chap-secret-123456');
    expect(calls.flat().join(' ')).not.toContain('chap-secret-123456');
  });

  it('unmaps, removes the LUN and removes an ACL; each is a no-op when already gone', async () => {
    await lio.apply(addLun(TPG, 1, OBJECT), mapLun(TPG, INITIATOR, 1));
    await lio.apply(unmapLun(TPG, INITIATOR, 1), removeLun(TPG, 1), removeAcl(TPG, INITIATOR));
    await lio.apply(unmapLun(TPG, INITIATOR, 1), removeLun(TPG, 1), removeAcl(TPG, INITIATOR));
    expect(await readdir(join(root, TPG, 'lun'))).toEqual([]);
    expect(await readdir(join(root, TPG, 'acls'))).toEqual([]);
  });

  it('stops at the first failing change', async () => {
    await expect(lio.apply(setAttribute('no/such/dir/attr', 'x'), setAttribute('after', 'y'))).rejects.toThrow();
    expect(await readdir(root)).not.toContain('after');
  });
});
