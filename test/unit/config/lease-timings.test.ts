import { parseConfig } from '../../../src/config/load.js';
import { ConfigError } from '../../../src/errors.js';

const lease = (set: Record<string, number>) => parseConfig({ lease: set }, 'f').lease;

describe('lease timings', () => {
  it('keeps the defaults and derives nothing when none is set', () => {
    expect(lease({})).toEqual({ seconds: 20, renew_every: 2, fence_after: 12, mount_wait: 60, derived: [] });
  });

  it('accepts seconds alone and derives fence_after and renew_every from it', () => {
    const l = lease({ seconds: 10 });
    expect(l).toMatchObject({ seconds: 10, fence_after: 6, renew_every: 2 });
    expect(l.derived).toEqual([expect.stringMatching(/^fence_after = 6 /), expect.stringMatching(/^renew_every = 2 /)]);
  });

  it('shortens renew_every when a short lease leaves no room for two renewals', () => {
    expect(lease({ seconds: 3 })).toMatchObject({ seconds: 3, fence_after: 1.8, renew_every: 0.9 });
  });

  it('derives seconds from fence_after, keeping fence_after <= seconds - 1', () => {
    expect(lease({ fence_after: 30 })).toMatchObject({ seconds: 50, fence_after: 30, renew_every: 2 });
    expect(lease({ fence_after: 1 })).toMatchObject({ seconds: 2, fence_after: 1, renew_every: 0.5 });
  });

  it('raises fence_after to two renewals when renew_every is set large', () => {
    expect(lease({ renew_every: 5 })).toMatchObject({ seconds: 50, fence_after: 30, renew_every: 5 });
    expect(lease({ seconds: 12, renew_every: 5 })).toMatchObject({ fence_after: 10 });
  });

  it('still refuses timings the user set that contradict each other', () => {
    expect(() => lease({ seconds: 10, fence_after: 10 })).toThrow(ConfigError);
    expect(() => lease({ seconds: 10, fence_after: 10 })).toThrow(/lease: expected renew_every \* 2 <= fence_after <= seconds - 1/);
    expect(() => lease({ seconds: 4, renew_every: 3 })).toThrow(/fence_after/);
  });

  it('refuses unknown keys and non-numbers', () => {
    expect(() => parseConfig({ lease: { second: 10 } }, 'f')).toThrow(/second/);
    expect(() => parseConfig({ lease: { seconds: '10' } }, 'f')).toThrow(/lease\.seconds/);
  });
});
