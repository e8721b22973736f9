import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { readPasswordFile } from '../../../src/drivers/index.js';

describe('readPasswordFile (every backend password_file: arrays, Cinder, vCenter)', () => {
  let dir: string;
  beforeAll(async () => (dir = await mkdtemp(join(tmpdir(), 'ballast-pw-'))));
  afterAll(() => rm(dir, { recursive: true, force: true }));

  it.each([
    ['a Unix file', 's3cret\n', 's3cret'],
    ['a file edited on Windows', 's3cret\r\n', 's3cret'],
    ['a file without a final line end', 's3cret', 's3cret'],
    ['a file with more lines', 's3cret\r\ncomment\r\n', 's3cret'],
  ])('reads the first line of %s', async (_what, text, password) => {
    const file = join(dir, 'pw');
    await writeFile(file, text);
    expect(readPasswordFile(file, 'backends.vmdk.vcenter.password_file')).toBe(password);
  });

  it('names the setting when the file cannot be read', () => {
    expect(() => readPasswordFile(join(dir, 'missing'), 'backends.vmdk.vcenter.password_file')).toThrow(/missing \(backends\.vmdk\.vcenter\.password_file\): .*ENOENT/);
  });
});
