import { InvalidVolumeName } from '../../../src/errors.js';
import { assertVolumeName, isValidVolumeName } from '../../../src/volumes/names.js';

describe('volume names', () => {
  it.each(['a', 'pgdata', 'db-1_copy.v2', 'A'.repeat(128), '0abc', 'x..y'])('accepts %j', (name) => {
    expect(isValidVolumeName(name)).toBe(true);
  });

  it.each(['', '.', '..', '../etc', 'a/b', '/abs', 'a\0b', '-lead', '_lead', '.hidden', 'sp ace', 'A'.repeat(129), 'é', 'a\nb'])(
    'refuses %j',
    (name) => {
      expect(isValidVolumeName(name)).toBe(false);
      expect(() => assertVolumeName(name)).toThrow(InvalidVolumeName);
    },
  );

  it('refuses non-strings', () => {
    expect(isValidVolumeName(undefined)).toBe(false);
    expect(isValidVolumeName(42)).toBe(false);
  });
});
