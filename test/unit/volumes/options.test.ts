import { parseConfig } from '../../../src/config/load.js';
import { InvalidOption } from '../../../src/errors.js';
import { optionConflicts, parseVolumeOptions, resolveSpec } from '../../../src/volumes/options.js';

const config = parseConfig({ profiles: { default: { backend: 'loop' }, gold: { backend: 'loop', root: '/srv/gold' } }, limits: { max_size: '2T' } }, 'f');

describe('parseVolumeOptions', () => {
  it('treats Opts null and {} as no options', () => {
    expect(parseVolumeOptions(null, config)).toEqual({});
    expect(parseVolumeOptions({}, config)).toEqual({});
  });

  it('parses every option', () => {
    expect(
      parseVolumeOptions({ size: '10G', fstype: 'xfs', profile: 'gold', mkfsopts: '-b 4096', mountopts: 'noatime,discard', readonly: 'true' }, config),
    ).toEqual({ sizeBytes: 10 * 1024 ** 3, fstype: 'xfs', profile: 'gold', mkfsOpts: ['-b', '4096'], mountOpts: ['noatime', 'discard'], readonly: true });
  });

  it('parses IO limits: whole operations per second, and bytes per second with the size syntax', () => {
    expect(parseVolumeOptions({ read_iops: '100', WRITE_IOPS: '20', read_bps: '10M', write_bps: '1048576' }, config)).toEqual({
      ioLimits: { readIops: 100, writeIops: 20, readBps: 10 * 1024 ** 2, writeBps: 1024 ** 2 },
    });
    expect(() => parseVolumeOptions({ read_iops: 'fast' }, config)).toThrow(/option read_iops=fast: expected a whole number/);
    expect(() => parseVolumeOptions({ write_iops: '0' }, config)).toThrow(/write_iops=0/);
    expect(() => parseVolumeOptions({ write_bps: '-1' }, config)).toThrow(/option write_bps=-1: expected bytes per second/);
    expect(optionConflicts(resolveSpec('v', { ioLimits: { writeBps: 1024 ** 2 } }, config), { ioLimits: { writeBps: 2 * 1024 ** 2 } })).toEqual([
      'io limits is write_bps=1 MiB, asked write_bps=2 MiB',
    ]);
  });

  it('parses a clone source: a volume, or a volume and its snapshot', () => {
    expect(parseVolumeOptions({ from: 'pg' }, config)).toEqual({ from: { volume: 'pg' } });
    expect(parseVolumeOptions({ From: 'pg@before.upgrade' }, config)).toEqual({ from: { volume: 'pg', snapshot: 'before.upgrade' } });
    for (const bad of ['', '@s', 'pg@', 'a@b@c', '../pg', 'pg@../s', 'pg@s/x', '.pg']) {
      expect(() => parseVolumeOptions({ from: bad }, config)).toThrow(/expected VOLUME or VOLUME@SNAPSHOT/);
    }
  });

  it('takes option keys case-insensitively and a bare flag as true', () => {
    expect(parseVolumeOptions({ Size: '1g', ReadOnly: '' }, config)).toEqual({ sizeBytes: 1024 ** 3, readonly: true });
  });

  it.each([
    [{ bogus: '1' }, /unknown option "bogus": valid options are size, fstype, profile, mkfsopts, mountopts, readonly, from, read_iops, write_iops, read_bps, write_bps/],
    [{ size: 'lots' }, /option size=lots: expected a number of bytes/],
    [{ size: '0' }, /option size=0/],
    [{ fstype: 'ntfs' }, /option fstype=ntfs: expected one of ext4, xfs/],
    [{ profile: 'platinum' }, /option profile=platinum: no such profile; configured profiles: default, gold/],
    [{ mkfsopts: '-E root_owner /dev/sda' }, /mkfsopts: "\/dev\/sda" is not allowed/],
    [{ mkfsopts: '$(reboot)' }, /mkfsopts: "\$\(reboot\)" is not allowed/],
    [{ mountopts: 'bind' }, /mountopts: "bind" is not allowed/],
    [{ mountopts: 'noatime;rm' }, /mountopts: "noatime;rm" is not allowed/],
    [{ readonly: 'maybe' }, /option readonly=maybe: expected true or false/],
  ])('refuses %j with a clear message', (opts, message) => {
    expect(() => parseVolumeOptions(opts, config)).toThrow(InvalidOption);
    expect(() => parseVolumeOptions(opts, config)).toThrow(message);
  });
});

describe('resolveSpec', () => {
  it('fills in configured defaults', () => {
    expect(resolveSpec('v', {}, config)).toEqual({
      name: 'v', profile: 'default', sizeBytes: 1024 ** 3, fstype: 'ext4', mkfsOpts: [], mountOpts: [], readonly: false,
    });
  });

  it('refuses sizes below the filesystem minimum and above the configured maximum', () => {
    expect(() => resolveSpec('v', { sizeBytes: 1024 ** 2 }, config)).toThrow(/an ext4 volume must be at least 16 MiB/);
    expect(() => resolveSpec('v', { sizeBytes: 100 * 1024 ** 2, fstype: 'xfs' }, config)).toThrow(/an xfs volume must be at least 300 MiB/);
    expect(() => resolveSpec('v', { sizeBytes: 3 * 1024 ** 4 }, config)).toThrow(/the largest volume allowed is 2 TiB \(limits.max_size\)/);
  });
});

describe('optionConflicts', () => {
  const existing = resolveSpec('v', { sizeBytes: 1024 ** 3 }, config);

  it('finds none when only matching options, or none, are given', () => {
    expect(optionConflicts(existing, {})).toEqual([]);
    expect(optionConflicts(existing, { sizeBytes: 1024 ** 3, fstype: 'ext4' })).toEqual([]);
  });

  it('names each option that differs', () => {
    expect(optionConflicts(existing, { sizeBytes: 2 * 1024 ** 3, fstype: 'xfs', readonly: true })).toEqual([
      'size is 1 GiB, asked 2 GiB',
      'fstype is ext4, asked xfs',
      'readonly is false, asked true',
    ]);
  });
});

describe('encryption and profile defaults', () => {
  const withDefaults = parseConfig(
    { profiles: { default: { backend: 'loop' }, slow: { backend: 'loop', read_iops: 50, write_bps: '1M' } } },
    'f',
  );

  it('parses encrypted as a boolean and names it in a conflict', () => {
    expect(parseVolumeOptions({ encrypted: 'true' }, config)).toEqual({ encrypted: true });
    expect(() => parseVolumeOptions({ encrypted: 'maybe' }, config)).toThrow(/option encrypted=maybe: expected true or false/);
    const plain = resolveSpec('v', {}, config);
    expect(optionConflicts(plain, { encrypted: true })).toEqual(['encrypted is false, asked true']);
    expect(optionConflicts({ ...plain, encryption: { key: 'key_dir', name: 'v' } }, { encrypted: true })).toEqual([]);
  });

  it("gives a volume its profile's IO limits unless it names its own", () => {
    expect(resolveSpec('v', { profile: 'slow' }, withDefaults).ioLimits).toEqual({ readIops: 50, writeBps: 1024 ** 2 });
    expect(resolveSpec('v', { profile: 'slow', ioLimits: { writeIops: 9 } }, withDefaults).ioLimits).toEqual({ writeIops: 9 });
    expect(resolveSpec('v', {}, withDefaults).ioLimits).toBeUndefined();
  });

  it('refuses profile IO limits on a backend that cannot keep them', () => {
    const cinder = { url: 'https://cinder.example:8776/v3', auth: { type: 'noauth', project_id: 'a'.repeat(32) } };
    expect(() => parseConfig({ backends: { cinder }, profiles: { c: { backend: 'cinder', read_iops: 5 } } }, 'f')).toThrow(
      /profiles\.c\.read_iops: the cinder backend cannot keep per-volume IO limits yet/,
    );
  });
});
