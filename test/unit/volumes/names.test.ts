import { InvalidOption, InvalidVolumeName } from '../../../src/errors.js';
import { assertVolumeName, isValidVolumeName, parseRequestedName } from '../../../src/volumes/names.js';

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

  it('reads inline options naming a volume (Portworx\'s convention), and a plain name as itself', () => {
    expect(parseRequestedName('db')).toEqual({ name: 'db' });
    expect(parseRequestedName('size=10G,fstype=xfs,name=db')).toEqual({ name: 'db', inline: { size: '10G', fstype: 'xfs' } });
    expect(parseRequestedName('Name=db, Size=1G')).toEqual({ name: 'db', inline: { size: '1G' } });
    expect(parseRequestedName('name=db')).toEqual({ name: 'db', inline: {} });
  });

  it.each([
    ['size=10G', /name=NAME is missing/],
    ['size=10G,,name=db', /"" is not KEY=VALUE/],
    ['=x,name=db', /"=x" is not KEY=VALUE/],
    ['name=db,name=other', /name is given twice/],
  ])('refuses inline options %j with a clear error', (raw, message) => {
    expect(() => parseRequestedName(raw)).toThrow(InvalidOption);
    expect(() => parseRequestedName(raw)).toThrow(message);
  });

  it.each(['name=../etc', 'size=1G,name=a/b', 'name='])('refuses a hostile name inside inline options: %j', (raw) => {
    expect(() => parseRequestedName(raw)).toThrow(InvalidVolumeName);
  });
});
