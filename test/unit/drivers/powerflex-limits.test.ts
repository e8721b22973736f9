import { mappingLimits } from '../../../src/drivers/powerflex/powerflex-driver.js';
import { snapshotPowerflexName } from '../../../src/drivers/powerflex/snapshots.js';
import type { IoLimits } from '../../../src/drivers/types.js';
import { InvalidOption } from '../../../src/errors.js';

const MiB = 2 ** 20;

describe('mappingLimits', () => {
  it.each<[IoLimits, { iopsLimit: number; bandwidthLimitInKbps: number }]>([
    [{ readIops: 2000, writeIops: 2000 }, { iopsLimit: 2000, bandwidthLimitInKbps: 0 }],
    [{ readBps: 50 * MiB, writeBps: 50 * MiB }, { iopsLimit: 0, bandwidthLimitInKbps: 51200 }],
    [{ readIops: 11, writeIops: 11, readBps: MiB, writeBps: MiB }, { iopsLimit: 11, bandwidthLimitInKbps: 1024 }],
    [{}, { iopsLimit: 0, bandwidthLimitInKbps: 0 }],
  ])('turns equal read and write pairs into one PowerFlex limit each: %j', (limits, expected) => {
    expect(mappingLimits(limits)).toEqual(expected);
  });

  it.each<[IoLimits, RegExp]>([
    [{ writeIops: 300 }, /^options read_iops=unset, write_iops=300: PowerFlex limits a mapping's IOPS for reads and writes together; give read_iops and write_iops the same value/],
    [{ readIops: 100, writeIops: 200 }, /read_iops=100, write_iops=200/],
    [{ readBps: MiB }, /^options read_bps=1048576, write_bps=unset: PowerFlex limits a mapping's bandwidth/],
    [{ readIops: 5, writeIops: 5 }, /PowerFlex limits IOPS to more than 10/],
    [{ readBps: MiB + 1, writeBps: MiB + 1 }, /PowerFlex limits bandwidth in whole MiB\/s/],
  ])('refuses what PowerFlex cannot apply, naming the fix: %j', (limits, message) => {
    expect(() => mappingLimits(limits)).toThrow(InvalidOption);
    expect(() => mappingLimits(limits)).toThrow(message);
  });
});

describe('snapshotPowerflexName', () => {
  it('is 31 characters, "bs-" and a hash of volume and snapshot, distinct where either differs', () => {
    const names = [snapshotPowerflexName('pgdata', 's1'), snapshotPowerflexName('pgdata', 's2'), snapshotPowerflexName('pgdata@s', '1'), snapshotPowerflexName('x'.repeat(128), 'y'.repeat(128))];
    for (const n of names) expect(n).toMatch(/^bs-[0-9a-f]{28}$/);
    expect(new Set(names.slice(0, 2)).size).toBe(2);
    expect(snapshotPowerflexName('pgdata', 's1')).toBe(snapshotPowerflexName('pgdata', 's1'));
  });
});
