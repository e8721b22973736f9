import { formatSize, parseSize } from '../../../src/config/size.js';

describe('parseSize', () => {
  it.each([
    ['1073741824', 1073741824],
    ['512M', 512 * 1024 ** 2],
    ['10g', 10 * 1024 ** 3],
    ['10G', 10 * 1024 ** 3],
    ['1.5GiB', 1.5 * 1024 ** 3],
    ['2TB', 2 * 1024 ** 4],
    ['64mi', 64 * 1024 ** 2],
    ['100B', 100],
    ['4k', 4096],
  ])('reads %s as %d bytes', (text, bytes) => {
    expect(parseSize(text)).toBe(bytes);
  });

  it.each(['', 'lots', '-1G', '10X', '1e9', 'G', '10 G B', '512i', '1..5G'])('refuses %j', (text) => {
    expect(parseSize(text)).toBeUndefined();
  });
});

describe('formatSize', () => {
  it.each([
    [1024 ** 3, '1 GiB'],
    [1.5 * 1024 ** 3, '1.5 GiB'],
    [100, '100 B'],
    [64 * 1024 ** 2, '64 MiB'],
  ])('formats %d as %s', (bytes, text) => {
    expect(formatSize(bytes)).toBe(text);
  });
});
