// Sizes as users write them: "1073741824", "512M", "10g", "1.5GiB", "2TB".
// Every unit is binary (K = 1024), as Docker's own size options are.

const UNIT_SHIFT: Record<string, number> = { '': 0, k: 10, m: 20, g: 30, t: 40 };
const SIZE_PATTERN = /^(\d+(?:\.\d+)?)\s*(?:([kmgt])i?b?|b?)$/i;

export const SIZE_SYNTAX = 'a number of bytes, or a number with K, M, G or T (binary units; "i" and "B" optional), e.g. 512M, 10G, 1.5TiB';

/** Parses a size, or returns undefined when the text is not one. */
export function parseSize(text: string): number | undefined {
  const match = SIZE_PATTERN.exec(text.trim());
  if (!match) return undefined;
  const [, digits = '', unit = ''] = match;
  const bytes = Number(digits) * 2 ** (UNIT_SHIFT[unit.toLowerCase()] ?? 0);
  if (!Number.isFinite(bytes) || bytes > Number.MAX_SAFE_INTEGER) return undefined;
  return Math.floor(bytes);
}

/** 1073741824 -> "1 GiB", 1610612736 -> "1.5 GiB". */
export function formatSize(bytes: number): string {
  const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];
  let value = bytes;
  let unit = 0;
  while (value >= 1024 && unit < units.length - 1) {
    value /= 1024;
    unit += 1;
  }
  const rounded = Math.round(value * 100) / 100;
  return `${rounded} ${units[unit]}`;
}
