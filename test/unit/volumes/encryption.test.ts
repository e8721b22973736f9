import { randomBytes } from 'node:crypto';
import { chmod, mkdir, readdir, readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { managerFixture, type ManagerFixture } from '../../helpers/manager-fixture.js';

// The encrypted Mount's command sequence against FakeHost's cryptsetup; the real one (dm-crypt,
// ciphertext on disk, key rotation) runs in test/integration/vm/luks.test.ts.
describe('encrypted volumes (VolumeManager, FakeHost for commands)', () => {
  let f: ManagerFixture;
  const keyDir = () => join(f.dir, 'keys');
  const keyFile = (name: string) => join(keyDir(), `${name}.key`);
  const writeKey = async (path: string, bytes = randomBytes(64), mode = 0o600) => {
    await writeFile(path, bytes, { mode });
    await chmod(path, mode);
    return bytes;
  };

  beforeEach(async () => {
    f = await managerFixture((dir) => ({
      encryption: { key_dir: join(dir, 'keys') },
      profiles: { default: { backend: 'loop' }, team: { backend: 'loop', key_file: join(dir, 'team.key') } },
    }));
    await mkdir(keyDir(), { mode: 0o700 });
  });
  afterEach(() => f.cleanup());

  it('refuses encrypted=true without a usable key, naming the file and the fix, and creates nothing', async () => {
    await expect(f.manager.create('v', { encrypted: 'true' })).rejects.toThrow(
      `option encrypted=true: volume v is encrypted, and its key file ${keyFile('v')} does not exist on this host; a key is a file of 32 to 8192 random bytes, mode 0600`,
    );
    await writeKey(keyFile('v'), randomBytes(64), 0o640);
    await expect(f.manager.create('v', { encrypted: 'true' })).rejects.toThrow(/is readable by others \(mode 640\): chmod 600 it/);
    await writeKey(keyFile('v'), Buffer.from('hunter2'));
    await expect(f.manager.create('v', { encrypted: 'true' })).rejects.toThrow(/holds 7 bytes/);
    await expect(f.manager.create('t', { encrypted: 'true', profile: 'team' })).rejects.toThrow(`its key file ${join(f.dir, 'team.key')} does not exist`);
    expect(await readdir(join(f.dir, 'loop')).catch(() => [])).toEqual([]);
  });

  it('formats LUKS2 on the blank device, mounts the mapping, and closes it before the detach', async () => {
    const key = await writeKey(keyFile('v'));
    await f.manager.create('v', { encrypted: 'true', size: '64M' });
    const mountpoint = await f.manager.mount('v', 'c1');
    expect(f.host.calls.map((c) => c.replace(/ -L v .*/, ''))).toEqual([
      expect.stringMatching(/^losetup --find --show /),
      'cryptsetup isLuks /dev/loop0',
      'cryptsetup luksFormat --batch-mode --type luks2 --pbkdf pbkdf2 --iter-time 100 --key-file=- /dev/loop0',
      'cryptsetup open --type luks --key-file=- /dev/loop0 ballast-v',
      'mkfs.ext4 -F -q -m0 -E nodiscard,lazy_itable_init=1,lazy_journal_init=1',
      `mount -t ext4 /dev/mapper/ballast-v ${mountpoint}`,
    ]);
    expect(f.host.luksKeys.get(join(f.dir, 'loop', 'v', 'disk.img'))).toBe(key.toString('hex')); // the key went on stdin
    expect(f.host.calls.join('\n')).not.toContain(key.toString('hex'));
    f.host.calls.length = 0;
    await f.manager.unmount('v', 'c1');
    expect(f.host.calls).toEqual([`umount ${mountpoint}`, 'cryptsetup close ballast-v', 'losetup --detach /dev/loop0']);
    expect(await f.manager.get('v')).toMatchObject({ status: { encrypted: 'LUKS2' } });
  });

  it('a wrong key opens nothing, detaches and gives the lease back; the right key mounts the data', async () => {
    await writeKey(keyFile('v'));
    await f.manager.create('v', { encrypted: 'true', size: '64M' });
    await f.manager.mount('v', 'c1');
    await f.manager.unmount('v', 'c1');
    const right = await writeKey(join(f.dir, 'right.key'), await readFile(keyFile('v')));
    await writeKey(keyFile('v'));
    await expect(f.manager.mount('v', 'c2')).rejects.toThrow(`volume v: its key file ${keyFile('v')} opens none of the volume's LUKS key slots`);
    expect([f.host.attachedDevices, [...f.host.luksMappings.keys()]]).toEqual([[], []]);
    await writeKey(keyFile('v'), right);
    f.host.calls.length = 0;
    await f.manager.mount('v', 'c3'); // the lease was given back: no wait, no takeover
    expect(f.host.calls.filter((c) => /^(cryptsetup|mkfs|dumpe2fs)/.test(c))).toEqual([
      'cryptsetup isLuks /dev/loop2',
      'cryptsetup open --type luks --key-file=- /dev/loop2 ballast-v',
      'dumpe2fs -h /dev/mapper/ballast-v', // an existing filesystem in the mapping: never mkfs again
    ]);
  });

  it('never writes a LUKS header over a device that holds a filesystem', async () => {
    await f.manager.create('v', { size: '64M' });
    await f.manager.mount('v', 'c1');
    await f.manager.unmount('v', 'c1');
    // The same image, now claimed encrypted (as a record edited by hand would).
    await writeKey(keyFile('v'));
    const sidecar = join(f.dir, 'loop', 'v', 'meta.json');
    const doc = JSON.parse(await readFile(sidecar, 'utf8'));
    doc.volume.encryption = { key: 'key_dir', name: 'v' };
    await writeFile(sidecar, JSON.stringify(doc));
    await f.restart();
    await expect(f.manager.mount('v', 'c2')).rejects.toThrow('volume v is encrypted, but its device holds ext4 and no LUKS header; ballast will not format over it');
    expect(f.host.calls.some((c) => c.includes('luksFormat'))).toBe(false);
    expect(f.host.attachedDevices).toEqual([]);
  });

  it('closes a mapping left open by an interrupted Mount, then opens it again', async () => {
    await writeKey(keyFile('v'));
    await f.manager.create('v', { encrypted: 'true', size: '64M' });
    f.host.luksMappings.set('ballast-v', '/dev/loop9'); // a daemon died between open and mount
    await f.manager.mount('v', 'c1');
    expect(f.host.calls.filter((c) => c.startsWith('cryptsetup open') || c.startsWith('cryptsetup close'))).toEqual([
      'cryptsetup open --type luks --key-file=- /dev/loop0 ballast-v',
      'cryptsetup close ballast-v',
      'cryptsetup open --type luks --key-file=- /dev/loop0 ballast-v',
    ]);
    expect(f.host.luksMappings.get('ballast-v')).toBe('/dev/loop0');
  });
});
