import type { BackendDriver, VolumeRecord } from '../../../src/drivers/types.js';
import { hostIoLimits } from '../../../src/volumes/io-limits.js';

// The host's cgroup throttle applies a volume's limits only where the storage does not: a
// PowerFlex volume's limits are set on its SDC mapping, and throttling it again on the host
// would cap it twice (and at the wrong place for reads and writes together).
describe('hostIoLimits', () => {
  const limits = { writeBps: 2 * 1024 * 1024 };
  const record = { name: 'v', ioLimits: limits } as unknown as VolumeRecord;
  const driver = (ioLimitsBy?: string) => ({ kind: 'x', ...(ioLimitsBy ? { ioLimitsBy } : {}) }) as unknown as BackendDriver;

  it('are the record\'s limits on a backend without its own QoS', () => {
    expect(hostIoLimits({ driver: driver(), record })).toEqual(limits);
  });

  it('are none where the backend enforces them itself', () => {
    expect(hostIoLimits({ driver: driver('PowerFlex setMappedSdcLimits, per mapping'), record })).toBeUndefined();
  });

  it('are none for an unknown volume or one without limits', () => {
    expect(hostIoLimits(undefined)).toBeUndefined();
    expect(hostIoLimits({ driver: driver(), record: { name: 'w' } as unknown as VolumeRecord })).toBeUndefined();
  });
});
